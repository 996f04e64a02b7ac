CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT,
  pt AS PROCTIME()
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE running (
  user_id STRING,
  amount BIGINT,
  last_hour BIGINT,
  n BIGINT
) WITH (connector = 'kafka', topic = 'running', format = 'json');

INSERT INTO running
SELECT user_id,
       amount,
       SUM(amount) OVER (PARTITION BY user_id ORDER BY pt RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS last_hour,
       COUNT(*) OVER (PARTITION BY user_id ORDER BY pt RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS n
FROM clicks;
