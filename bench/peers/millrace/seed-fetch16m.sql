-- An experiment, not an example: examples/seed/seed-a-rolling-average.sql with one client
-- property added to the source, librdkafka's per-partition fetch raised from 1 MB to 16 MB.
-- On one partition the default leaves the engine waiting on fetches (~0.1 core busy).
--
-- Seed pipeline (a), the article's plain consumer loop: keep values >= 50, then emit the
-- mean of the last 3 kept values, starting with the 3rd kept value (as the article does;
-- Flink's OVER window alone would also emit partial means for the 1st and 2nd value, which
-- the `n >= 3` filter drops).
CREATE TABLE input (
  v BIGINT,
  pt AS PROCTIME()
) WITH (
  connector = 'kafka',
  topic = 'input-topic',
  format = 'raw',
  group_id = 'millrace-seed-a',
  scan_startup_mode = 'earliest',
  dlq_topic = 'input-topic-dlq',
  "properties.max.partition.fetch.bytes" = '16777216'
);

CREATE TABLE output (
  avg_v DOUBLE
) WITH (
  connector = 'kafka',
  topic = 'output-topic',
  format = 'raw'
);

INSERT INTO output
SELECT avg_v
FROM (
  SELECT
    AVG(v) OVER (ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg_v,
    COUNT(v) OVER (ORDER BY pt ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS n
  FROM input
  WHERE v >= 50
) AS last_three
WHERE n >= 3;
