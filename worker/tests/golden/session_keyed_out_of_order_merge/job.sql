CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE sessions (
  user_id STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  clicks BIGINT,
  total BIGINT
) WITH (connector = 'kafka', topic = 'sessions', format = 'json');

INSERT INTO sessions
SELECT user_id,
       session(ts, INTERVAL '2' SECOND) AS window_start,
       window_end(ts) AS window_end,
       COUNT(*) AS clicks,
       SUM(amount) AS total
FROM clicks
GROUP BY user_id, session(ts, INTERVAL '2' SECOND);
