-- Nexmark q16, channel statistics report: q15's figures per channel and day, plus the last
-- minute (`HH:mm`) seen. An updating aggregate keyed by (channel, day); the same rewrites of
-- FILTER as q15 (see there). Source: the Nexmark generator (bids).
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q16 (
  channel VARCHAR,
  "day" VARCHAR,
  "minute" VARCHAR,
  total_bids BIGINT,
  rank1_bids BIGINT,
  rank2_bids BIGINT,
  rank3_bids BIGINT,
  total_bidders BIGINT,
  rank1_bidders BIGINT,
  rank2_bidders BIGINT,
  rank3_bidders BIGINT,
  total_auctions BIGINT,
  rank1_auctions BIGINT,
  rank2_auctions BIGINT,
  rank3_auctions BIGINT
) WITH (connector = 'file', path = '/tmp/nexmark-q16.json', format = 'json');

INSERT INTO nexmark_q16
SELECT
  channel,
  to_char(dateTime, '%Y-%m-%d') AS "day",
  MAX(to_char(dateTime, '%H:%M')) AS "minute",
  COUNT(*) AS total_bids,
  SUM(CASE WHEN price < 10000 THEN 1 ELSE 0 END) AS rank1_bids,
  SUM(CASE WHEN price >= 10000 AND price < 1000000 THEN 1 ELSE 0 END) AS rank2_bids,
  SUM(CASE WHEN price >= 1000000 THEN 1 ELSE 0 END) AS rank3_bids,
  COUNT(DISTINCT bidder) AS total_bidders,
  COUNT(DISTINCT CASE WHEN price < 10000 THEN bidder END) AS rank1_bidders,
  COUNT(DISTINCT CASE WHEN price >= 10000 AND price < 1000000 THEN bidder END) AS rank2_bidders,
  COUNT(DISTINCT CASE WHEN price >= 1000000 THEN bidder END) AS rank3_bidders,
  COUNT(DISTINCT auction) AS total_auctions,
  COUNT(DISTINCT CASE WHEN price < 10000 THEN auction END) AS rank1_auctions,
  COUNT(DISTINCT CASE WHEN price >= 10000 AND price < 1000000 THEN auction END) AS rank2_auctions,
  COUNT(DISTINCT CASE WHEN price >= 1000000 THEN auction END) AS rank3_auctions
FROM bid
GROUP BY channel, to_char(dateTime, '%Y-%m-%d');
