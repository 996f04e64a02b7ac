CREATE TABLE events (
  v BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'events', format = 'json');

CREATE TABLE sessions (
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  n BIGINT,
  total BIGINT
) WITH (connector = 'kafka', topic = 'sessions', format = 'json');

INSERT INTO sessions
SELECT session(ts, INTERVAL '2' SECOND) AS window_start,
       window_end(ts) AS window_end,
       COUNT(*) AS n,
       SUM(v) AS total
FROM events
GROUP BY session(ts, INTERVAL '2' SECOND);
