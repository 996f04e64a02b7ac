CREATE TABLE bids (
  auction STRING, price BIGINT, bidder BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'bids', format = 'json');

-- The same bids again (a job reads each table once).
CREATE TABLE bids_windowed (
  auction STRING, price BIGINT, bidder BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'bids', format = 'json');

CREATE TABLE highest (auction STRING, price BIGINT, bidder BIGINT, ts TIMESTAMP(3), window_end TIMESTAMP(3))
  WITH (connector = 'kafka', topic = 'highest', format = 'json');

-- Nexmark q7's shape: an interval join of the bids with a tumbling window aggregate on its
-- window_end (an event-time attribute of the aggregate's rows); the bounds are in WHERE.
INSERT INTO highest
SELECT B.auction, B.price, B.bidder, B.ts, B1.window_end
FROM bids B
JOIN (SELECT MAX(price) AS maxprice, window_end(ts) AS window_end
      FROM bids_windowed GROUP BY tumble(ts, INTERVAL '10' SECOND)) B1
ON B.price = B1.maxprice
WHERE B.ts BETWEEN B1.window_end - INTERVAL '10' SECOND AND B1.window_end;
