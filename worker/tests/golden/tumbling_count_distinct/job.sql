CREATE TABLE clicks (
  user_id STRING,
  page STRING,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '0' SECOND
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE pages (
  user_id STRING,
  window_start TIMESTAMP(3),
  pages BIGINT,
  clicks BIGINT
) WITH (connector = 'kafka', topic = 'pages', format = 'json');

INSERT INTO pages
SELECT user_id, tumble(ts, INTERVAL '2' SECOND) AS window_start, COUNT(DISTINCT page) AS pages, COUNT(*) AS clicks
FROM clicks
GROUP BY user_id, tumble(ts, INTERVAL '2' SECOND);
