-- Nexmark q12, processing-time windows: how many bids each bidder makes in every 10-second
-- tumbling window of processing time. Results depend on when rows arrive. Source: the
-- Nexmark generator (bids); sink: a JSON file.
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  p_time AS PROCTIME()
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q12 (
  bidder BIGINT,
  bid_count BIGINT,
  starttime TIMESTAMP(3),
  endtime TIMESTAMP(3)
) WITH (connector = 'file', path = '/tmp/nexmark-q12.json', format = 'json');

INSERT INTO nexmark_q12
SELECT bidder, COUNT(*) AS bid_count,
       tumble(p_time, INTERVAL '10' SECOND) AS starttime,
       window_end(p_time) AS endtime
FROM bid
GROUP BY bidder, tumble(p_time, INTERVAL '10' SECOND);
