CREATE TABLE orders (
  id BIGINT,
  product STRING,
  qty BIGINT,
  price DOUBLE
) WITH (connector = 'kafka', topic = 'orders', format = 'json');

CREATE TABLE priced (
  id BIGINT,
  product STRING,
  size STRING,
  total DOUBLE,
  qty_text STRING
) WITH (connector = 'kafka', topic = 'priced', format = 'json');

INSERT INTO priced
SELECT id,
       upper(product),
       CASE WHEN qty >= 10 THEN 'bulk' WHEN qty > 1 THEN 'few' ELSE 'single' END,
       CAST(qty AS DOUBLE) * price,
       CAST(qty AS STRING) || 'x'
FROM orders
WHERE price > 0 AND product IS NOT NULL;
