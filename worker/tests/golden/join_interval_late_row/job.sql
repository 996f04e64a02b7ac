CREATE TABLE orders (
  id BIGINT, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'orders', format = 'json');

CREATE TABLE payments (
  order_id BIGINT, paid BIGINT, pts TIMESTAMP(3),
  WATERMARK FOR pts AS pts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'payments', format = 'json');

CREATE TABLE paid_orders (id BIGINT, amount BIGINT, order_id BIGINT, paid BIGINT)
  WITH (connector = 'kafka', topic = 'paid-orders', format = 'json');

-- The last order (ts 1.5 s) arrives when the orders' watermark is at 11 s: its interval
-- [1.5 s, 6.5 s] is past, so it is joined with what is still held (nothing), padded at
-- once, never held, and counted late.
INSERT INTO paid_orders
SELECT o.id, o.amount, p.order_id, p.paid
FROM orders o FULL OUTER JOIN payments p
  ON o.id = p.order_id AND o.ts BETWEEN p.pts - INTERVAL '5' SECOND AND p.pts;
