-- Seed pipeline (b) on event time: the same global 3-second tumbling average, with windows
-- taken from each Kafka record's timestamp and closed by the watermark (records may arrive
-- up to 1 second out of order). Results no longer depend on when the job runs.
CREATE TABLE input (
  v BIGINT,
  ts TIMESTAMP(3) METADATA FROM 'timestamp',
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  connector = 'kafka',
  topic = 'input-topic',
  format = 'raw',
  group_id = 'millrace-seed-b-event-time',
  scan_startup_mode = 'earliest',
  dlq_topic = 'input-topic-dlq'
);

CREATE TABLE output (
  avg_v DOUBLE
) WITH (
  connector = 'kafka',
  topic = 'output-topic',
  format = 'raw'
);

INSERT INTO output
SELECT AVG(v)
FROM input
WHERE v >= 50
GROUP BY tumble(ts, INTERVAL '3' SECOND);
