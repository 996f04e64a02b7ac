SET 'table.exec.state.ttl' = '1500 ms';

CREATE TABLE orders (id BIGINT, customer BIGINT, amount BIGINT)
  WITH (connector = 'kafka', topic = 'orders', format = 'json');

CREATE TABLE customers (cid BIGINT, name STRING)
  WITH (connector = 'kafka', topic = 'customers', format = 'json');

CREATE TABLE enriched (id BIGINT, name STRING, amount BIGINT)
  WITH (connector = 'kafka', topic = 'enriched', format = 'json');

-- With a state TTL of 1.5 s: the orders arrive at once, customer 7 at once (joined), customer
-- 8 three seconds later, when order 2 has expired (no row).
INSERT INTO enriched
SELECT o.id, c.name, o.amount FROM orders o JOIN customers c ON o.customer = c.cid;
