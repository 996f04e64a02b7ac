SET 'table.exec.state.ttl' = '5 s';

CREATE TABLE clicks (
  user_id STRING,
  amount BIGINT
) WITH (connector = 'kafka', topic = 'clicks', format = 'json');

CREATE TABLE per_user (
  user_id STRING,
  clicks BIGINT,
  total BIGINT,
  PRIMARY KEY (user_id) NOT ENFORCED
) WITH (connector = 'upsert-kafka', topic = 'per-user', format = 'json');

-- With a state TTL of 5 s and one click every 3 s: ann's second click (3 s) updates her row
-- and starts her TTL again (to 8 s); her third (12 s) comes after it expired, so it starts a
-- new group, emitted as +I; the expiry itself emitted nothing.
INSERT INTO per_user
SELECT user_id, COUNT(*) AS clicks, SUM(amount) AS total
FROM clicks
GROUP BY user_id;
