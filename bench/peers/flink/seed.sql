-- Workload 1 in Flink SQL: the same query as examples/seed/seed-a-rolling-average.sql,
-- in Flink's dialect (AVG of BIGINT is BIGINT in Flink, hence the cast to DOUBLE).
CREATE TABLE input (
  txt STRING,
  pt AS PROCTIME()
) WITH (
  'connector' = 'kafka',
  'topic' = '${input}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'properties.group.id' = '${group}',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'raw'
);

CREATE TABLE output (
  avg_v STRING
) WITH (
  'connector' = 'kafka',
  'topic' = '${output}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'sink.delivery-guarantee' = 'at-least-once',
  'format' = 'raw'
);

INSERT INTO output
SELECT CAST(avg_v AS STRING)
FROM (
  SELECT
    AVG(v) OVER (ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg_v,
    COUNT(v) OVER (ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS n
  FROM (SELECT CAST(CAST(txt AS BIGINT) AS DOUBLE) AS v, pt FROM input)
  WHERE v >= 50
) AS last_three
WHERE n >= 3;
