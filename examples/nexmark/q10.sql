-- Nexmark q10, log to a file system: every bid with its date and hour:minute as text
-- (Flink's `DATE_FORMAT(dateTime, 'yyyy-MM-dd')` / `'HH:mm'`, here DataFusion's `to_char`).
-- Flink writes a file system sink partitioned by those columns; this writes one JSON file.
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

CREATE TABLE nexmark_q10 (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  dt VARCHAR,
  hm VARCHAR
) WITH (connector = 'file', path = '/tmp/nexmark-q10.json', format = 'json');

INSERT INTO nexmark_q10
SELECT auction, bidder, price, dateTime, extra,
       to_char(dateTime, '%Y-%m-%d') AS dt,
       to_char(dateTime, '%H:%M') AS hm
FROM bid;
