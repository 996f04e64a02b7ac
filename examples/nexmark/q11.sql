-- Nexmark q11, user sessions: how many bids each bidder makes per session, a session ending
-- after 10 seconds (event time) without a bid. Watermark 4 s behind, as nexmark-flink's DDL.
-- Source: the Nexmark generator (bids); sink: a JSON file.
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

CREATE TABLE nexmark_q11 (
  bidder BIGINT,
  bid_count BIGINT,
  starttime TIMESTAMP(3),
  endtime TIMESTAMP(3)
) WITH (connector = 'file', path = '/tmp/nexmark-q11.json', format = 'json');

INSERT INTO nexmark_q11
SELECT bidder, COUNT(*) AS bid_count,
       session(dateTime, INTERVAL '10' SECOND) AS starttime,
       window_end(dateTime) AS endtime
FROM bid
GROUP BY bidder, session(dateTime, INTERVAL '10' SECOND);
