-- Nexmark q9, winning bids: each auction with its winning bid, the highest bid made while it
-- was open (of equal prices, the earliest). nexmark-flink's text, with its comma join written
-- as JOIN … ON (Millrace refuses comma joins): the bids join their auction as a regular inner
-- join (the bound B.dateTime BETWEEN A.dateTime AND A.expires is not between the two time
-- attributes, so it is the join's residual condition, not an interval), then ROW_NUMBER()
-- partitioned by the auction, ordered by price DESC and bid time ASC, filtered to row 1: a
-- Top-1, whose output is an upsert stream keyed by the auction id ("op": "+I" an auction's
-- first winning bid, "+U" a higher one). State: every auction and every bid (the regular
-- join keeps both inputs' rows; set 'table.exec.state.ttl' to bound them), and one row per
-- auction in the Top-1. Sources: the Nexmark generator (auctions and bids); sink: a JSON file.
--   millrace-worker run -f examples/nexmark/q9.sql
CREATE TABLE auction (
  id BIGINT,
  itemName VARCHAR,
  description VARCHAR,
  initialBid BIGINT,
  reserve BIGINT,
  dateTime TIMESTAMP(3),
  expires TIMESTAMP(3),
  seller BIGINT,
  category BIGINT,
  extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', event_type = 'auction', events = '10000000');

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

CREATE TABLE nexmark_q9 (
  id BIGINT,
  itemName VARCHAR,
  description VARCHAR,
  initialBid BIGINT,
  reserve BIGINT,
  dateTime TIMESTAMP(3),
  expires TIMESTAMP(3),
  seller BIGINT,
  category BIGINT,
  extra VARCHAR,
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  bid_dateTime TIMESTAMP(3),
  bid_extra VARCHAR
) WITH (connector = 'file', path = '/tmp/nexmark-q9.json', format = 'json');

INSERT INTO nexmark_q9
SELECT id, itemName, description, initialBid, reserve, dateTime, expires, seller, category, extra,
       auction, bidder, price, bid_dateTime, bid_extra
FROM (
  SELECT A.*, B.auction, B.bidder, B.price, B.dateTime AS bid_dateTime, B.extra AS bid_extra,
         ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.dateTime ASC) AS rownum
  FROM auction A JOIN bid B
    ON A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND A.expires
)
WHERE rownum <= 1;
