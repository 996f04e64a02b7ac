CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE every_three (
  user_id STRING,
  w BIGINT,
  n BIGINT,
  total BIGINT
) WITH (connector = 'kafka', topic = 'every-three', format = 'json');

INSERT INTO every_three
SELECT user_id, count_window(3) AS w, COUNT(*) AS n, SUM(amount) AS total
FROM clicks
GROUP BY user_id, count_window(3);
