-- Nexmark q5, hot items: the auctions with the most bids in each hopping window (10 s
-- windows every 2 s); every auction tied at the top is kept (`num >= maxn`).
-- nexmark-flink's text (window TVFs) in Millrace's group functions: HOP(TABLE bid, …) with
-- GROUP BY auction, window_start, window_end is `GROUP BY auction, hop(dateTime, slide,
-- size)` with `window_end(dateTime)`; MaxBids groups CountBids again by its window
-- (starttime, endtime), which is a window aggregate over the first one's windows (the
-- window attributes propagate, as in Flink), and the two meet in a window join on
-- starttime and endtime with `num >= maxn` as its residual condition. Each window's rows
-- are emitted when the watermark passes its end.
-- Millrace reads each source table once (no self-joins yet), so the bid stream is declared
-- twice over the same generated sequence (same options, so the same rows): `bid` for
-- AuctionBids, `bid_counted` for CountBids.
-- Sources: the Nexmark generator (bids, twice); sink: a JSON file.
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE bid_counted (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q5 (
  auction BIGINT,
  num BIGINT
) WITH (connector = 'file', path = '/tmp/nexmark-q5.json', format = 'json');

INSERT INTO nexmark_q5
SELECT AuctionBids.auction, AuctionBids.num
FROM (
  SELECT auction, count(*) AS num,
         hop(dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS starttime,
         window_end(dateTime) AS endtime
  FROM bid
  GROUP BY auction, hop(dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
) AS AuctionBids
JOIN (
  SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime
  FROM (
    SELECT count(*) AS num,
           hop(dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS starttime,
           window_end(dateTime) AS endtime
    FROM bid_counted
    GROUP BY auction, hop(dateTime, INTERVAL '2' SECOND, INTERVAL '10' SECOND)
  ) AS CountBids
  GROUP BY CountBids.starttime, CountBids.endtime
) AS MaxBids
ON AuctionBids.starttime = MaxBids.starttime AND
   AuctionBids.endtime = MaxBids.endtime AND
   AuctionBids.num >= MaxBids.maxn;
