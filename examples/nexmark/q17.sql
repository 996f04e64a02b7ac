-- Nexmark q17, auction statistics report: per auction and day, bids in three price ranges and
-- the price's min, max, average and sum. An updating aggregate keyed by (auction, day); the
-- FILTER rewrite of q15. Source: the Nexmark generator (bids).
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q17 (
  auction BIGINT,
  "day" VARCHAR,
  total_bids BIGINT,
  rank1_bids BIGINT,
  rank2_bids BIGINT,
  rank3_bids BIGINT,
  min_price BIGINT,
  max_price BIGINT,
  avg_price DOUBLE,
  sum_price BIGINT
) WITH (connector = 'file', path = '/tmp/nexmark-q17.json', format = 'json');

INSERT INTO nexmark_q17
SELECT
  auction,
  to_char(dateTime, '%Y-%m-%d') AS "day",
  COUNT(*) AS total_bids,
  SUM(CASE WHEN price < 10000 THEN 1 ELSE 0 END) AS rank1_bids,
  SUM(CASE WHEN price >= 10000 AND price < 1000000 THEN 1 ELSE 0 END) AS rank2_bids,
  SUM(CASE WHEN price >= 1000000 THEN 1 ELSE 0 END) AS rank3_bids,
  MIN(price) AS min_price,
  MAX(price) AS max_price,
  AVG(price) AS avg_price,
  SUM(price) AS sum_price
FROM bid
GROUP BY auction, to_char(dateTime, '%Y-%m-%d');
