-- Nexmark q7, highest bid: the bids at the highest price of each 10-second tumbling window;
-- every bid tied at that price is kept. nexmark-flink's text (window TVFs) in Millrace's
-- group functions: the subquery is `GROUP BY tumble(dateTime, INTERVAL '10' SECOND)` with
-- `window_end(dateTime) AS dateTime`. A window aggregate's `window_end` is an event-time
-- attribute of its rows (Flink's window_time, but the end itself, as the TVF text uses
-- window_end), so the join is an interval join on the price: a bid at `t` meets the window
-- row ending at `e` when `e - 10 s <= t <= e` (BETWEEN is inclusive on both ends, so a bid
-- at exactly `e`, the first instant of the next window, matches too if its price equals the
-- maximum), and state is dropped as the watermark passes. The WHERE over the inner join is
-- part of its condition, as in Flink's planner.
-- Millrace reads each source table once (no self-joins yet), so the bid stream is declared
-- twice over the same generated sequence (same options, so the same rows): `bid` for B,
-- `bid_windowed` for B1.
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

CREATE TABLE bid_windowed (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q7 (
  auction BIGINT,
  price BIGINT,
  bidder BIGINT,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'file', path = '/tmp/nexmark-q7.json', format = 'json');

INSERT INTO nexmark_q7
SELECT B.auction, B.price, B.bidder, B.dateTime, B.extra
FROM bid B
JOIN (
  SELECT MAX(price) AS maxprice, window_end(dateTime) AS dateTime
  FROM bid_windowed
  GROUP BY tumble(dateTime, INTERVAL '10' SECOND)
) B1
ON B.price = B1.maxprice
WHERE B.dateTime BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime;
