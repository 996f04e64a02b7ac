CREATE TABLE views (
  user_id STRING, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'views', format = 'json');

CREATE TABLE clicks (
  user_id STRING, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE per_window (user_id STRING, window_start TIMESTAMP(3), window_end TIMESTAMP(3), views BIGINT, clicks BIGINT)
  WITH (connector = 'kafka', topic = 'per-window', format = 'json');

-- A hopping window join (5 s slide, 10 s size): each row is in two windows.
INSERT INTO per_window
SELECT v.user_id, v.window_start, v.window_end, v.views, c.clicks
FROM (SELECT user_id, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS window_start,
             window_end(ts) AS window_end, COUNT(*) AS views
      FROM views GROUP BY user_id, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)) v
JOIN (SELECT user_id, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS window_start,
             window_end(ts) AS window_end, COUNT(*) AS clicks
      FROM clicks GROUP BY user_id, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)) c
ON v.user_id = c.user_id AND v.window_start = c.window_start AND v.window_end = c.window_end;
