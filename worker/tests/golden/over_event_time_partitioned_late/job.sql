CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE sums (
  user_id STRING,
  ts TIMESTAMP(3),
  amount BIGINT,
  last_two BIGINT,
  last_2s BIGINT
) WITH (connector = 'kafka', topic = 'sums', format = 'json');

INSERT INTO sums
SELECT user_id, ts, amount,
       SUM(amount) OVER (PARTITION BY user_id ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS last_two,
       SUM(amount) OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL '2' SECOND PRECEDING AND CURRENT ROW) AS last_2s
FROM clicks;
