CREATE TABLE input (
  v BIGINT
) WITH (connector = 'kafka', topic = 'input', format = 'raw');

CREATE TABLE pairs (
  w BIGINT,
  avg_v DOUBLE
) WITH (connector = 'kafka', topic = 'pairs', format = 'json');

INSERT INTO pairs
SELECT count_window(2) AS w, AVG(v) AS avg_v
FROM input
WHERE v > 1
GROUP BY count_window(2);
