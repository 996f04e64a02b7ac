//! The generator source: random rows of the table's schema, bounded (`count`) or unbounded,
//! at a rate or as fast as possible, for runs without Kafka and for benchmarks. Integers are
//! uniform in `[min, max]`; metadata timestamps and timestamp columns are the wall clock.
//!
//! An instance's position is the number of rows it has emitted. Its rows come in blocks of
//! [`BLOCK`]: column `c` of block `b` draws from its own random stream, seeded by (`seed`,
//! instance, `b`, `c`), so every row is a function of its number, and a job restored from a
//! checkpoint regenerates exactly the rows after it, the same values and offsets (timestamps
//! are the wall clock, so those differ); a restore mid-block redraws the block's earlier
//! rows once. Rows depend on the instance, so a restore at another parallelism is refused.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use millrace_types::{SourceEvent, SourcePartition};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::options::GeneratorConfig;
use crate::{ConnectorError, ConnectorTable, MetadataField, SourceContext};

/// Rows per block of random streams (see the module doc).
const BLOCK: i64 = 1024;

pub(crate) fn run_source(config: GeneratorConfig, ctx: SourceContext) -> Result<(), ConnectorError> {
    let partition = SourcePartition(ctx.subtask as i32);
    if !ctx.emit(SourceEvent::Assigned(vec![partition])) {
        return Ok(());
    }
    let mut offset = ctx.restored_instance_position()?;
    let mut streams = Streams::new(&config, &ctx.table, ctx.subtask, offset);
    let started = Instant::now();
    // Rows of this run, for pacing.
    let mut produced: u64 = 0;
    loop {
        if ctx.stop.is_stopped() {
            return Ok(());
        }
        if !ctx.barrier_if_due(|| [(partition, offset)].into()) {
            return Ok(());
        }
        let remaining = config.count.map_or(u64::MAX, |c| c.saturating_sub(offset as u64));
        if remaining == 0 {
            ctx.emit(SourceEvent::End { positions: [(partition, offset)].into() });
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
        let batch = generate(&ctx.table, ctx.subtask, &mut streams, rows, offset)?;
        offset += rows as i64;
        produced += rows as u64;
        if !ctx.emit(SourceEvent::Batch { partition, batch }) {
            return Ok(());
        }
    }
}

/// What a column draws per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draw {
    /// An integer in `[min, max]` (integer and text columns).
    Int,
    /// A float in `[min, max]`.
    Float,
    /// Nothing (metadata, timestamps, and types the generator refuses).
    Nothing,
}

impl Draw {
    fn of(field: &arrow::datatypes::Field, metadata: Option<MetadataField>) -> Self {
        match (metadata, field.data_type()) {
            (Some(_), _) | (None, DataType::Timestamp(_, _)) => Draw::Nothing,
            (None, t) if t.is_integer() => Draw::Int,
            (None, t) if t.is_floating() => Draw::Float,
            (None, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => Draw::Int,
            (None, _) => Draw::Nothing,
        }
    }
}

/// The per-column random streams of one instance, positioned at its next row.
struct Streams {
    seed: u64,
    instance: usize,
    min: i64,
    max: i64,
    rngs: Vec<SmallRng>,
}

impl Streams {
    /// Streams positioned at row `start` (redrawing its block's rows before it).
    fn new(config: &GeneratorConfig, table: &ConnectorTable, instance: usize, start: i64) -> Self {
        let columns = table.schema.fields().len();
        let block = start.div_euclid(BLOCK);
        let mut streams = Streams {
            seed: config.seed,
            instance,
            min: config.min,
            max: config.max,
            rngs: (0..columns).map(|c| block_rng(config.seed, instance, block, c)).collect(),
        };
        for (c, field) in table.schema.fields().iter().enumerate() {
            let metadata = table.metadata.iter().find(|(i, _)| *i == c).map(|(_, m)| *m);
            let draw = Draw::of(field, metadata);
            for _ in 0..start.rem_euclid(BLOCK) {
                match draw {
                    Draw::Int => _ = streams.rngs[c].random_range(config.min..=config.max),
                    Draw::Float => _ = streams.rngs[c].random_range(config.min as f64..=config.max as f64),
                    Draw::Nothing => break,
                }
            }
        }
        streams
    }

    /// Column `c`'s values of rows `first..first + rows` (the rows after the last drawn).
    fn column<T>(
        &mut self,
        c: usize,
        first: i64,
        rows: usize,
        mut draw: impl FnMut(&mut SmallRng) -> T,
    ) -> Vec<T> {
        let mut values = Vec::with_capacity(rows);
        for row in first..first + rows as i64 {
            if row.rem_euclid(BLOCK) == 0 {
                self.rngs[c] = block_rng(self.seed, self.instance, row.div_euclid(BLOCK), c);
            }
            values.push(draw(&mut self.rngs[c]));
        }
        values
    }

    fn ints(&mut self, c: usize, first: i64, rows: usize) -> Vec<i64> {
        let (min, max) = (self.min, self.max);
        self.column(c, first, rows, |rng| rng.random_range(min..=max))
    }

    fn floats(&mut self, c: usize, first: i64, rows: usize) -> Vec<f64> {
        let (min, max) = (self.min as f64, self.max as f64);
        self.column(c, first, rows, |rng| rng.random_range(min..=max))
    }
}

/// The random stream of column `column` in block `block` of instance `instance`.
fn block_rng(seed: u64, instance: usize, block: i64, column: usize) -> SmallRng {
    // SplitMix64's finalizer between the parts, so neighbouring blocks get unrelated streams.
    let mix = |x: u64| {
        let x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    SmallRng::seed_from_u64(mix(mix(mix(seed ^ instance as u64) ^ block as u64) ^ column as u64))
}

fn generate(
    table: &ConnectorTable,
    instance: usize,
    streams: &mut Streams,
    rows: usize,
    first_offset: i64,
) -> Result<RecordBatch, ConnectorError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let schema = &table.schema;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let metadata = table.metadata.iter().find(|(c, _)| *c == i).map(|(_, m)| *m);
        let array: ArrayRef = match (metadata, field.data_type()) {
            (Some(MetadataField::Timestamp), _) | (None, DataType::Timestamp(_, _)) => {
                Arc::new(TimestampMillisecondArray::from(vec![now; rows]))
            }
            (Some(MetadataField::Partition), _) => Arc::new(Int64Array::from(vec![instance as i64; rows])),
            (Some(MetadataField::Offset), _) => {
                Arc::new(Int64Array::from_iter_values(first_offset..first_offset + rows as i64))
            }
            (None, t) if t.is_integer() => Arc::new(Int64Array::from(streams.ints(i, first_offset, rows))),
            (None, t) if t.is_floating() => {
                Arc::new(Float64Array::from(streams.floats(i, first_offset, rows)))
            }
            (None, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                Arc::new(StringArray::from_iter_values(
                    streams.ints(i, first_offset, rows).iter().map(|v| format!("s{v}")),
                ))
            }
            (None, other) => {
                return Err(ConnectorError::Options {
                    table: table.name.clone(),
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

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Field, Schema};

    use super::*;

    fn table() -> ConnectorTable {
        ConnectorTable {
            name: "g".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("a", DataType::Int64, false),
                Field::new("off", DataType::Int64, false),
                Field::new("x", DataType::Float64, false),
                Field::new("s", DataType::Utf8, false),
            ])),
            metadata: vec![(1, MetadataField::Offset)],
            primary_key: Vec::new(),
            options: Default::default(),
        }
    }

    fn config() -> GeneratorConfig {
        GeneratorConfig {
            count: None,
            rows_per_second: None,
            min: 0,
            max: 1_000_000,
            seed: 7,
            batch_size: 700,
        }
    }

    /// Rows `from..to` of `instance`, generated in batches of `batch` starting at `from`.
    fn rows(instance: usize, from: i64, to: i64, batch: i64) -> Vec<RecordBatch> {
        let (table, config) = (table(), config());
        let mut streams = Streams::new(&config, &table, instance, from);
        let mut batches = Vec::new();
        let mut offset = from;
        while offset < to {
            let n = batch.min(to - offset);
            batches.push(generate(&table, instance, &mut streams, n as usize, offset).expect("generates"));
            offset += n;
        }
        batches
    }

    fn concat(batches: &[RecordBatch]) -> RecordBatch {
        arrow::compute::concat_batches(&batches[0].schema(), batches).expect("concat")
    }

    #[test]
    fn a_restored_generator_emits_the_rows_after_its_position() {
        let all = concat(&rows(0, 0, 3_000, 700));
        for restart in [0, 1_024, 1_500, 2_047, 2_999] {
            let resumed = concat(&rows(0, restart, 3_000, 333));
            assert_eq!(
                resumed,
                all.slice(restart as usize, 3_000 - restart as usize),
                "restart at {restart}"
            );
        }
        let other = concat(&rows(1, 0, 3_000, 700));
        assert_ne!(other.column(0), all.column(0), "instances draw different rows");
    }

    fn context(parallelism: usize, restore: &[(i32, i64)]) -> SourceContext {
        SourceContext {
            table: table(),
            subtask: 1,
            parallelism,
            out: tokio::sync::mpsc::channel(1).0,
            metrics: crate::ConnectorMetrics::register(&mut prometheus_client::registry::Registry::default()),
            stop: Default::default(),
            barriers: Default::default(),
            last_barrier: std::cell::Cell::new(0),
            restore: Some(restore.iter().map(|(p, o)| (SourcePartition(*p), *o)).collect()),
        }
    }

    #[test]
    fn a_restore_from_another_parallelism_is_refused() {
        assert_eq!(
            context(2, &[(0, 10), (1, 12)]).restored_instance_position().expect("same parallelism"),
            12
        );
        assert_eq!(context(2, &[]).restored_instance_position().expect("nothing restored"), 0);
        let err = context(3, &[(0, 10), (1, 12)])
            .restored_instance_position()
            .expect_err("3 instances, 2 restored");
        assert!(
            err.to_string().contains("at parallelism 3: its checkpoint was taken with 2 instance(s)"),
            "{err}"
        );
        assert!(context(1, &[(0, 10), (1, 12)]).restored_instance_position().is_err());
    }
}
