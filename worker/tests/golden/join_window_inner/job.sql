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

-- Flink's window join: both inputs windowed by the same 10 s tumbling window, joined on
-- the key, window_start and window_end; each window's rows come when it closes.
INSERT INTO per_window
SELECT COALESCE(v.user_id, c.user_id), COALESCE(v.window_start, c.window_start),
       COALESCE(v.window_end, c.window_end), v.views, c.clicks
FROM (SELECT user_id, tumble(ts, INTERVAL '10' SECOND) AS window_start, window_end(ts) AS window_end,
             COUNT(*) AS views
      FROM views GROUP BY user_id, tumble(ts, INTERVAL '10' SECOND)) v
JOIN
     (SELECT user_id, tumble(ts, INTERVAL '10' SECOND) AS window_start, window_end(ts) AS window_end,
             COUNT(*) AS clicks
      FROM clicks GROUP BY user_id, tumble(ts, INTERVAL '10' SECOND)) c
ON v.user_id = c.user_id AND v.window_start = c.window_start AND v.window_end = c.window_end;
