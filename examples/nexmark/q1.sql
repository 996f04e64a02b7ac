-- Nexmark q1, currency conversion: every bid with its price converted from dollars to euros
-- (`0.908 * price`; a DOUBLE here, a DECIMAL in Flink). Source: the Nexmark generator (bids);
-- sink: a JSON file.
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q1 (
  auction BIGINT,
  bidder BIGINT,
  price DOUBLE,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'file', path = '/tmp/nexmark-q1.json', format = 'json');

INSERT INTO nexmark_q1
SELECT auction, bidder, 0.908 * price AS price, dateTime, extra FROM bid;
