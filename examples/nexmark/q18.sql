-- Nexmark q18, find the last bid: each bidder's last bid on each auction. nexmark-flink's
-- text: ROW_NUMBER() partitioned by (bidder, auction), ordered by dateTime DESC, filtered to
-- row 1. Millrace runs it as a Top-1 (a deduplication keeping the last row: of two bids at one
-- time, the later to arrive wins, as in Flink's deduplication); its output is an upsert
-- stream keyed by (bidder, auction), so the file sink writes a changelog ("op": "+I" the
-- first bid of a pair, "+U" a later one). State: one bid per (bidder, auction) pair.
-- Source: the Nexmark generator (bids); sink: a JSON file.
--   millrace-worker run -f examples/nexmark/q18.sql
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

CREATE TABLE nexmark_q18 (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'file', path = '/tmp/nexmark-q18.json', format = 'json');

INSERT INTO nexmark_q18
SELECT auction, bidder, price, channel, url, dateTime, extra
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY bidder, auction ORDER BY dateTime DESC) AS rank_number
      FROM bid)
WHERE rank_number <= 1;
