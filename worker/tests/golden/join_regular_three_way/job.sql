CREATE TABLE orders (id BIGINT, customer BIGINT, amount BIGINT)
  WITH (connector = 'kafka', topic = 'orders', format = 'json');

CREATE TABLE customers (cid BIGINT, name STRING, region BIGINT)
  WITH (connector = 'kafka', topic = 'customers', format = 'json');

CREATE TABLE regions (rid BIGINT, region_name STRING)
  WITH (connector = 'kafka', topic = 'regions', format = 'json');

CREATE TABLE per_region (region_name STRING, orders BIGINT, total BIGINT, PRIMARY KEY (region_name) NOT ENFORCED)
  WITH (connector = 'upsert-kafka', topic = 'per-region', format = 'json');

-- Two regular joins, left-deep (two join stages, each fed by a branch), then an updating
-- aggregate over the joined rows into an upsert sink.
INSERT INTO per_region
SELECT r.region_name, COUNT(*) AS orders, SUM(o.amount) AS total
FROM orders o
JOIN customers c ON o.customer = c.cid
JOIN regions r ON c.region = r.rid
GROUP BY r.region_name;
