-- Workload 3 for Millrace: 10-second tumbling event-time windows, count and mean per key.
-- Event time is the record's own `ts` field (epoch milliseconds); input is in order per
-- partition, so the watermark has no out-of-orderness bound.
CREATE TABLE input (
  "key" STRING,
  "value" BIGINT,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts
) WITH (
  connector = 'kafka',
  topic = '${input}',
  format = 'json',
  group_id = '${group}',
  scan_startup_mode = 'earliest'
);

CREATE TABLE output (
  "key" STRING,
  window_start TIMESTAMP(3),
  "count" BIGINT,
  "avg" DOUBLE
) WITH (
  connector = 'kafka',
  topic = '${output}',
  format = 'json',
  -- the record key is the "key" column: every window result of a key lands on one partition
  key_columns = 'key'
);

INSERT INTO output
SELECT "key", tumble(ts, INTERVAL '10' SECOND) AS window_start, COUNT(*), AVG("value")
FROM input
GROUP BY "key", tumble(ts, INTERVAL '10' SECOND);
