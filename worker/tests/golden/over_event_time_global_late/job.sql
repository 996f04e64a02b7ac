CREATE TABLE readings (
  v BIGINT,
  ts TIMESTAMP(3) METADATA FROM 'timestamp',
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'readings', format = 'raw');

CREATE TABLE stats (
  ts TIMESTAMP(3),
  v BIGINT,
  n_1s BIGINT,
  max_3 BIGINT
) WITH (connector = 'kafka', topic = 'stats', format = 'json');

INSERT INTO stats
SELECT ts, v,
       COUNT(*) OVER (ORDER BY ts RANGE BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW) AS n_1s,
       MAX(v) OVER (ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS max_3
FROM readings;
