-- Nexmark q8, monitor new users: people who opened an auction in the same 10-second window
-- in which they registered. A window join of two tumbling window aggregates on the person id
-- and the window, as in nexmark-flink; TUMBLE_START/TUMBLE_END are tumble(…) and
-- window_end(…), and the join equates window_start and window_end as Flink's window join
-- does. Each window's pairs are emitted when the watermark passes its end.
-- Sources: the Nexmark generator (people and auctions); sink: a JSON file.
CREATE TABLE person (
  id BIGINT,
  name VARCHAR,
  emailAddress VARCHAR,
  creditCard VARCHAR,
  city VARCHAR,
  state VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', event_type = 'person', events = '10000000');

CREATE TABLE auction (
  id BIGINT,
  itemName VARCHAR,
  description VARCHAR,
  initialBid BIGINT,
  reserve BIGINT,
  dateTime TIMESTAMP(3),
  expires TIMESTAMP(3),
  seller BIGINT,
  category BIGINT,
  extra VARCHAR,
  WATERMARK FOR dateTime AS dateTime - INTERVAL '4' SECOND
) WITH (connector = 'nexmark', event_type = 'auction', events = '10000000');

CREATE TABLE nexmark_q8 (
  id BIGINT,
  name VARCHAR,
  starttime TIMESTAMP(3)
) WITH (connector = 'file', path = '/tmp/nexmark-q8.json', format = 'json');

INSERT INTO nexmark_q8
SELECT P.id, P.name, P.starttime
FROM (
  SELECT id, name,
         tumble(dateTime, INTERVAL '10' SECOND) AS starttime,
         window_end(dateTime) AS endtime
  FROM person
  GROUP BY id, name, tumble(dateTime, INTERVAL '10' SECOND)
) P
JOIN (
  SELECT seller,
         tumble(dateTime, INTERVAL '10' SECOND) AS starttime,
         window_end(dateTime) AS endtime
  FROM auction
  GROUP BY seller, tumble(dateTime, INTERVAL '10' SECOND)
) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime;
