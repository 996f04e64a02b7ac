CREATE TABLE clicks (
  user_id STRING,
  page STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE per_user (
  user_id STRING,
  pages BIGINT,
  amounts BIGINT,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (connector = 'upsert-kafka', topic = 'per-user', format = 'json');

INSERT INTO per_user
SELECT user_id, COUNT(DISTINCT page) AS pages, SUM(DISTINCT amount) AS amounts
FROM clicks
GROUP BY user_id;
