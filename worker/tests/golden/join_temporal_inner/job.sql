CREATE TABLE sales (
  id BIGINT, currency STRING, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'sales', format = 'json');

-- A versioned table: every row is a new version of its currency's rate, valid from rts on.
CREATE TABLE rates (
  currency STRING, rate BIGINT, rts TIMESTAMP(3),
  PRIMARY KEY (currency) NOT ENFORCED,
  WATERMARK FOR rts AS rts - INTERVAL '1' SECOND
) WITH (connector = 'kafka', topic = 'rates', format = 'json');

CREATE TABLE priced (id BIGINT, currency STRING, amount BIGINT, rate BIGINT)
  WITH (connector = 'kafka', topic = 'priced', format = 'json');

-- Flink's event-time temporal join: each sale meets the rate of its currency valid at the
-- sale's time (the latest version at or before it), once the watermark passes the sale.
INSERT INTO priced
SELECT s.id, s.currency, s.amount, r.rate
FROM sales s JOIN rates FOR SYSTEM_TIME AS OF s.ts AS r ON s.currency = r.currency;
