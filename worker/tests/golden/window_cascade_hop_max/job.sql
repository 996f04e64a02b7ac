CREATE TABLE bids (
  auction STRING, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'bids', format = 'json');

CREATE TABLE per_window (window_start TIMESTAMP(3), window_end TIMESTAMP(3), maxn BIGINT, auctions BIGINT, bids BIGINT)
  WITH (connector = 'kafka', topic = 'per-window', format = 'json');

-- A window aggregate over the windows of another: GROUP BY the window start and end of a
-- keyed hopping aggregate (the window attributes propagate, as in Flink).
INSERT INTO per_window
SELECT starttime, endtime, MAX(num), COUNT(*), SUM(num)
FROM (SELECT auction, COUNT(*) AS num, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS starttime,
             window_end(ts) AS endtime
      FROM bids GROUP BY auction, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND))
GROUP BY starttime, endtime;
