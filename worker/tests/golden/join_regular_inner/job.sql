CREATE TABLE orders (id BIGINT, customer BIGINT, amount BIGINT)
  WITH (connector = 'kafka', topic = 'orders', format = 'json');

CREATE TABLE customers (cid BIGINT, name STRING)
  WITH (connector = 'kafka', topic = 'customers', format = 'json');

CREATE TABLE enriched (id BIGINT, name STRING, amount BIGINT)
  WITH (connector = 'kafka', topic = 'enriched', format = 'json');

-- A regular (unbounded) inner join: every pair, whichever row comes first; no time needed.
INSERT INTO enriched
SELECT o.id, c.name, o.amount FROM orders o JOIN customers c ON o.customer = c.cid WHERE o.amount > 10;
