CREATE TABLE input (
  v BIGINT
) WITH (connector = 'kafka', topic = 'input', format = 'raw');

CREATE TABLE sliding (
  w BIGINT,
  total BIGINT,
  smallest BIGINT
) WITH (connector = 'kafka', topic = 'sliding', format = 'json');

INSERT INTO sliding
SELECT count_window(3, 2) AS w, SUM(v) AS total, MIN(v) AS smallest
FROM input
GROUP BY count_window(3, 2);
