CREATE TABLE events (
  v BIGINT,
  ts TIMESTAMP(3) METADATA FROM 'timestamp',
  WATERMARK FOR ts AS ts
) WITH (connector = 'kafka', topic = 'events', format = 'raw');

CREATE TABLE counts (
  window_start TIMESTAMP(3),
  n BIGINT,
  total BIGINT,
  biggest BIGINT
) WITH (connector = 'kafka', topic = 'counts', format = 'json');

INSERT INTO counts
SELECT hop(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND), COUNT(*), SUM(v), MAX(v)
FROM events
GROUP BY hop(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND);
