-- Nexmark q15, bidding statistics report: per day, how many bids, bidders and auctions fall
-- in three price ranges. An updating aggregate (GROUP BY without a window): every batch
-- upserts the current figures of the days it changed. Flink's `count(*) FILTER (WHERE …)`
-- is written `SUM(CASE … THEN 1 ELSE 0 END)` and `count(DISTINCT x) FILTER (WHERE …)` as
-- `COUNT(DISTINCT CASE … THEN x END)` (COUNT skips NULLs): the same values, because Millrace
-- does not take FILTER inside aggregates yet. `DATE_FORMAT(dateTime, 'yyyy-MM-dd')` is
-- `to_char(dateTime, '%Y-%m-%d')`. The file sink shows the changelog (`"op"`).
-- Source: the Nexmark generator (bids).
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q15 (
  "day" VARCHAR,
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
) WITH (connector = 'file', path = '/tmp/nexmark-q15.json', format = 'json');

INSERT INTO nexmark_q15
SELECT
  to_char(dateTime, '%Y-%m-%d') AS "day",
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
GROUP BY to_char(dateTime, '%Y-%m-%d');
