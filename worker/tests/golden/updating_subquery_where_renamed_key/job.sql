CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE busy (
  clicks BIGINT,
  who STRING,
  PRIMARY KEY (who) NOT ENFORCED
) WITH (connector = 'upsert-kafka', topic = 'busy', format = 'json');

INSERT INTO busy
SELECT c, user_id AS who
FROM (SELECT user_id, COUNT(*) AS c FROM clicks GROUP BY user_id) AS per
WHERE c >= 2;
