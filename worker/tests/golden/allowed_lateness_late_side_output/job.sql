CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '0' SECOND
) WITH (connector = 'kafka', topic = 'clicks', format = 'json',
        allowed_lateness_ms = '2000', late_topic = 'clicks-late');

CREATE TABLE per_user (
  user_id STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  clicks BIGINT,
  total BIGINT
) WITH (connector = 'kafka', topic = 'per-user', format = 'json');

INSERT INTO per_user
SELECT user_id,
       tumble(ts, INTERVAL '2' SECOND) AS window_start,
       window_end(ts) AS window_end,
       COUNT(*) AS clicks,
       SUM(amount) AS total
FROM clicks
GROUP BY user_id, tumble(ts, INTERVAL '2' SECOND);
