-- Workload 2 in Flink SQL: per-key mean of the last 3 values >= 50.
CREATE TABLE input (
  `key` STRING,
  `value` BIGINT,
  pt AS PROCTIME()
) WITH (
  'connector' = 'kafka',
  'topic' = '${input}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'properties.group.id' = '${group}',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json'
);

CREATE TABLE output (
  `key` STRING,
  `avg` DOUBLE
) WITH (
  'connector' = 'kafka',
  'topic' = '${output}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'sink.delivery-guarantee' = 'at-least-once',
  'key.format' = 'raw',
  'key.fields' = 'key',
  'value.format' = 'json',
  'value.fields-include' = 'ALL'
);

INSERT INTO output
SELECT `key`, avg_v
FROM (
  SELECT
    `key`,
    AVG(CAST(`value` AS DOUBLE)) OVER (PARTITION BY `key` ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg_v,
    COUNT(`value`) OVER (PARTITION BY `key` ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS n
  FROM input
  WHERE `value` >= 50
) AS last_three
WHERE n >= 3;
