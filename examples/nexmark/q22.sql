-- Nexmark q22, split the URL: the first three path segments of every bid's URL (Flink's
-- 0-based `SPLIT_INDEX(url, '/', 3..5)`, here DataFusion's 1-based `split_part(url, '/', 4..6)`).
-- Source: the Nexmark generator (bids); sink: a JSON file.
CREATE TABLE bid (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  url VARCHAR,
  dateTime TIMESTAMP(3),
  extra VARCHAR
) WITH (connector = 'nexmark', event_type = 'bid', events = '10000000');

CREATE TABLE nexmark_q22 (
  auction BIGINT,
  bidder BIGINT,
  price BIGINT,
  channel VARCHAR,
  dir1 VARCHAR,
  dir2 VARCHAR,
  dir3 VARCHAR
) WITH (connector = 'file', path = '/tmp/nexmark-q22.json', format = 'json');

INSERT INTO nexmark_q22
SELECT auction, bidder, price, channel,
       split_part(url, '/', 4) AS dir1,
       split_part(url, '/', 5) AS dir2,
       split_part(url, '/', 6) AS dir3
FROM bid;
