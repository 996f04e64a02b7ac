CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE running (
  user_id STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  clicks BIGINT,
  total BIGINT
) WITH (connector = 'kafka', topic = 'running', format = 'json');

INSERT INTO running
SELECT user_id,
       cumulate(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) AS window_start,
       window_end(ts) AS window_end,
       COUNT(*) AS clicks,
       SUM(amount) AS total
FROM clicks
GROUP BY user_id, cumulate(ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND);
