CREATE TABLE clicks (
  user_id STRING,
  page STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE visits (
  user_id STRING,
  page STRING
) WITH (connector = 'kafka', topic = 'visits', format = 'json');

INSERT INTO visits
SELECT DISTINCT user_id, page FROM clicks WHERE amount > 0;
