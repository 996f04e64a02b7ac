CREATE TABLE events (
  v BIGINT
) WITH (connector = 'kafka', topic = 'events', format = 'raw');

CREATE TABLE totals (
  n BIGINT,
  total BIGINT
) WITH (connector = 'stdout', format = 'json');

INSERT INTO totals
SELECT COUNT(*) AS n, SUM(v) AS total FROM events;
