CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json', dlq_topic = 'clicks-dlq');

CREATE TABLE per_user (
  user_id STRING,
  total BIGINT,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (connector = 'upsert-kafka', topic = 'per-user', format = 'json');

INSERT INTO per_user
SELECT user_id, SUM(amount) AS total FROM clicks GROUP BY user_id;
