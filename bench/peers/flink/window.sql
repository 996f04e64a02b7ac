-- Workload 3 in Flink SQL: 10-second tumbling event-time windows, count and mean per key.
CREATE TABLE input (
  `key` STRING,
  `value` BIGINT,
  ts BIGINT,
  et AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR et AS et
) WITH (
  'connector' = 'kafka',
  'topic' = '${input}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'properties.group.id' = '${group}',
  'scan.startup.mode' = 'earliest-offset',
  'format' = 'json'
);

CREATE TABLE output (
  `key` STRING,
  window_start TIMESTAMP_LTZ(3),
  `count` BIGINT,
  `avg` DOUBLE
) WITH (
  'connector' = 'kafka',
  'topic' = '${output}',
  'properties.bootstrap.servers' = '${bootstrap}',
  'sink.delivery-guarantee' = 'at-least-once',
  'key.format' = 'raw',
  'key.fields' = 'key',
  'value.format' = 'json',
  'value.fields-include' = 'ALL'
);

INSERT INTO output
SELECT
  `key`,
  window_start,
  COUNT(*),
  AVG(CAST(`value` AS DOUBLE))
FROM TABLE(TUMBLE(TABLE input, DESCRIPTOR(et), INTERVAL '10' SECOND))
GROUP BY `key`, window_start, window_end;
