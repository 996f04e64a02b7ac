-- Seed pipeline (b), the article's PyFlink job: keep values >= 50, then the average per
-- 3-second tumbling processing-time window over all records (global, not keyed). The
-- article divides the window's sum by 3 whatever the count; this computes the real average.
CREATE TABLE input (
  v BIGINT,
  pt AS PROCTIME()
) WITH (
  connector = 'kafka',
  topic = 'input-topic',
  format = 'raw',
  group_id = 'millrace-seed-b',
  scan_startup_mode = 'earliest',
  dlq_topic = 'input-topic-dlq'
);

CREATE TABLE output (
  avg_v DOUBLE
) WITH (
  connector = 'kafka',
  topic = 'output-topic',
  format = 'raw'
);

INSERT INTO output
SELECT AVG(v)
FROM input
WHERE v >= 50
GROUP BY tumble(pt, INTERVAL '3' SECOND);
