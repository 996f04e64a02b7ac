-- Nexmark q14, calculation: bids with a converted price between 1,000,000 and 50,000,000,
-- classified by the hour of their event time, and the number of 'c's in `extra` (Flink's
-- `count_char` UDF, here length minus the length without 'c'). Source: the Nexmark generator
-- (bids); sink: a JSON file.
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q14 (
  auction BIGINT,
  bidder BIGINT,
  price DOUBLE,
  bidTimeType VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR,
  c_counts BIGINT
) WITH (connector = 'file', path = '/tmp/nexmark-q14.json', format = 'json');

INSERT INTO nexmark_q14
SELECT auction, bidder, 0.908 * price AS price,
       CASE
         WHEN date_part('hour', dateTime) >= 8 AND date_part('hour', dateTime) <= 18 THEN 'dayTime'
         WHEN date_part('hour', dateTime) <= 6 OR date_part('hour', dateTime) >= 20 THEN 'nightTime'
         ELSE 'otherTime'
       END AS bidTimeType,
       dateTime, extra,
       character_length(extra) - character_length(replace(extra, 'c', '')) AS c_counts
FROM bid
WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000;
