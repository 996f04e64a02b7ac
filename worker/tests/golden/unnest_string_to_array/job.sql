CREATE TABLE orders (
  id BIGINT,
  items STRING
) WITH (connector = 'kafka', topic = 'orders', format = 'json');

CREATE TABLE order_items (
  id BIGINT,
  item STRING,
  upper_item STRING
) WITH (connector = 'kafka', topic = 'order-items', format = 'json');

INSERT INTO order_items
SELECT id, item, upper(item) AS upper_item
FROM (SELECT id, UNNEST(string_to_array(items, ',')) AS item FROM orders) AS exploded
WHERE item <> 'skip';
