-- Nexmark q19, auction top-10 price: the 10 highest bids of each auction. nexmark-flink's
-- text: ROW_NUMBER() partitioned by auction, ordered by price DESC, filtered to rows 1-10.
-- Millrace runs it as a Top-10; its output is an upsert stream keyed by (auction,
-- rank_number): each batch emits every rank position it changed with the bid now there
-- ("op": "+I" a position filled for the first time, "+U" after). Bids at an equal price keep
-- their order of arrival. State: up to 10 bids per auction.
-- Source: the Nexmark generator (bids); sink: a JSON file.
--   millrace-worker run -f examples/nexmark/q19.sql
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

CREATE TABLE nexmark_q19 (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  rank_number BIGINT
) WITH (connector = 'file', path = '/tmp/nexmark-q19.json', format = 'json');

INSERT INTO nexmark_q19
SELECT * FROM
(SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number FROM bid)
WHERE rank_number <= 10;
