-- Seed pipeline (a) without Kafka: the same query over the built-in generator (10 random
-- integers 0..99 per second), printed to stdout. Run it with
--   millrace-worker run -f examples/seed/seed-a-rolling-average-local.sql
CREATE TABLE input (
  v BIGINT,
  pt AS PROCTIME()
) WITH (
  connector = 'generator',
  rows_per_second = '10',
  min = '0',
  max = '99'
);

CREATE TABLE output (
  avg_v DOUBLE
) WITH (
  connector = 'stdout',
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
