CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE small_spenders (
  user_id STRING,
  clicks BIGINT,
  total BIGINT,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (connector = 'upsert-kafka', topic = 'small-spenders', format = 'json');

INSERT INTO small_spenders
SELECT user_id, COUNT(*) AS clicks, SUM(amount) AS total
FROM clicks
GROUP BY user_id
HAVING SUM(amount) <= 10;
