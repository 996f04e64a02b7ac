-- Nexmark q0, pass through: every bid, unchanged. Measures the source, the engine and the
-- sink with no work in between. Source: the Nexmark generator (the bids of a 10 M event
-- sequence); sink: a JSON file.
--   millrace-worker run -f examples/nexmark/q0.sql
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q0 (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'file', path = '/tmp/nexmark-q0.json', format = 'json');

INSERT INTO nexmark_q0
SELECT auction, bidder, price, dateTime, extra FROM bid;
