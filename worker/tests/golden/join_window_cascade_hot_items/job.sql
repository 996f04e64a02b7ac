CREATE TABLE bids (
  auction STRING, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'bids', format = 'json');

-- The same bids again (a job reads each table once).
CREATE TABLE bids_counted (
  auction STRING, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'bids', format = 'json');

CREATE TABLE hot (auction STRING, num BIGINT, starttime TIMESTAMP(3))
  WITH (connector = 'kafka', topic = 'hot', format = 'json');

-- Nexmark q5's shape: per-auction counts in hopping windows, joined on the window with the
-- per-window maximum of those counts (a window aggregate over the first one's windows).
INSERT INTO hot
SELECT AuctionBids.auction, AuctionBids.num, AuctionBids.starttime
FROM (SELECT auction, COUNT(*) AS num, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS starttime,
             window_end(ts) AS endtime
      FROM bids GROUP BY auction, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)) AS AuctionBids
JOIN (SELECT MAX(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
      FROM (SELECT COUNT(*) AS num, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS starttime,
                   window_end(ts) AS endtime
            FROM bids_counted GROUP BY auction, hop(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)) AS CountBids
      GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
   AND AuctionBids.num >= MaxBids.maxn;
