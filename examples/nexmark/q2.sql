-- Nexmark q2, selection: the bids on auctions whose id is a multiple of 123 (Flink's
-- `MOD(auction, 123) = 0`), with their price. Source: the Nexmark generator (bids); sink: a
-- JSON file.
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q2 (
  auction BIGINT,
  price BIGINT
) WITH (connector = 'file', path = '/tmp/nexmark-q2.json', format = 'json');

INSERT INTO nexmark_q2
SELECT auction, price FROM bid WHERE auction % 123 = 0;
