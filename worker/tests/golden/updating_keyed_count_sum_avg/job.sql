CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE per_user (
  user_id STRING,
  clicks BIGINT,
  total BIGINT,
  mean DOUBLE,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (connector = 'upsert-kafka', topic = 'per-user', format = 'json');

INSERT INTO per_user
SELECT user_id, COUNT(*) AS clicks, SUM(amount) AS total, AVG(amount) AS mean
FROM clicks
GROUP BY user_id;
