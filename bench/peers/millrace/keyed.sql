-- Workload 2 for Millrace: the seed job (examples/seed/seed-a-rolling-average.sql) keyed:
-- per-key mean of the last 3 values >= 50. The bench harness fills in ${input}, ${output}
-- and ${group}; the broker comes from --kafka-bootstrap.
CREATE TABLE input (
  "key" STRING,
  "value" BIGINT,
  pt AS PROCTIME()
) WITH (
  connector = 'kafka',
  topic = '${input}',
  format = 'json',
  group_id = '${group}',
  scan_startup_mode = 'earliest'
);

CREATE TABLE output (
  "key" STRING,
  "avg" DOUBLE
) WITH (
  connector = 'kafka',
  topic = '${output}',
  format = 'json',
  -- the record key is the "key" column: every output of a key lands on one partition, in order
  key_columns = 'key'
);

INSERT INTO output
SELECT "key", avg_v
FROM (
  SELECT
    "key",
    AVG("value") OVER (PARTITION BY "key" ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg_v,
    COUNT("value") OVER (PARTITION BY "key" ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS n
  FROM input
  WHERE "value" >= 50
) AS last_three
WHERE n >= 3;
