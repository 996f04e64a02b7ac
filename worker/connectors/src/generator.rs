//! The generator source: random rows of the table's schema, bounded (`count`) or unbounded,
//! at a rate or as fast as possible, for runs without Kafka and for benchmarks. Integers are
//! uniform in `[min, max]`; metadata timestamps and timestamp columns are the wall clock.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use millrace_types::{SourceEvent, SourcePartition};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::options::GeneratorConfig;
use crate::{ConnectorError, MetadataField, SourceContext};

pub(crate) fn run_source(config: GeneratorConfig, ctx: SourceContext) -> Result<(), ConnectorError> {
    let partition = SourcePartition(ctx.subtask as i32);
    if !ctx.emit(SourceEvent::Assigned(vec![partition])) {
        return Ok(());
    }
    let mut rng = StdRng::seed_from_u64(config.seed.wrapping_add(ctx.subtask as u64));
    let started = Instant::now();
    let mut produced: u64 = 0;
    let mut offset: i64 = 0;
    loop {
        if ctx.stop.is_stopped() {
            return Ok(());
        }
        let remaining = config.count.map_or(u64::MAX, |c| c.saturating_sub(produced));
        if remaining == 0 {
            ctx.emit(SourceEvent::End);
            return Ok(());
        }
        let rows = (config.batch_size as u64).min(remaining) as usize;
        let rows = match config.rows_per_second.filter(|r| *r > 0.0) {
            None => rows,
            Some(rate) => {
                // Pace by the schedule since the start, so slow batches do not lower the rate.
                let allowed = ((started.elapsed().as_secs_f64() * rate) as u64).saturating_sub(produced);
                if allowed == 0 {
                    let due = started + Duration::from_secs_f64((produced + 1) as f64 / rate);
                    std::thread::sleep(
                        due.saturating_duration_since(Instant::now()).min(Duration::from_millis(100)),
                    );
                    continue;
                }
                rows.min(allowed as usize)
            }
        };
        let batch = generate(&config, &ctx, &mut rng, rows, offset)?;
        offset += rows as i64;
        produced += rows as u64;
        if !ctx.emit(SourceEvent::Batch { partition, batch }) {
            return Ok(());
        }
    }
}

fn generate(
    config: &GeneratorConfig,
    ctx: &SourceContext,
    rng: &mut StdRng,
    rows: usize,
    first_offset: i64,
) -> Result<RecordBatch, ConnectorError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let schema = &ctx.table.schema;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let metadata = ctx.table.metadata.iter().find(|(c, _)| *c == i).map(|(_, m)| *m);
        let array: ArrayRef = match (metadata, field.data_type()) {
            (Some(MetadataField::Timestamp), _) | (None, DataType::Timestamp(_, _)) => {
                Arc::new(TimestampMillisecondArray::from(vec![now; rows]))
            }
            (Some(MetadataField::Partition), _) => Arc::new(Int64Array::from(vec![ctx.subtask as i64; rows])),
            (Some(MetadataField::Offset), _) => {
                Arc::new(Int64Array::from_iter_values(first_offset..first_offset + rows as i64))
            }
            (None, t) if t.is_integer() => Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|_| rng.random_range(config.min..=config.max)),
            )),
            (None, t) if t.is_floating() => Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|_| rng.random_range(config.min as f64..=config.max as f64)),
            )),
            (None, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|_| format!("s{}", rng.random_range(config.min..=config.max))),
                ))
            }
            (None, other) => {
                return Err(ConnectorError::Options {
                    table: ctx.table.name.clone(),
                    message: format!("the generator cannot produce {other} (column '{}')", field.name()),
                });
            }
        };
        let array = if array.data_type() == field.data_type() {
            array
        } else {
            cast(&array, field.data_type()).map_err(ConnectorError::arrow("generating a column"))?
        };
        columns.push(array);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(ConnectorError::arrow("generating a batch"))
}
