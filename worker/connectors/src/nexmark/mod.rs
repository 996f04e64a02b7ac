//! The Nexmark source (`connector = 'nexmark'`): one table's rows are the persons, auctions
//! or bids (`event_type`) of one global, deterministic event sequence, generated as Beam's and
//! nexmark-flink's generators do. Instance `i` of `P` takes positions `i, i + P, i + 2P, …`
//! of the sequence, and every event is a pure function of its position and the options, so
//! the multiset of rows is the same at any parallelism and every instance's event time
//! advances at the same pace.
//!
//! An instance's checkpoint position is the number of its sequence positions it has taken
//! (events of every kind: those of other tables are skipped, not emitted). A restored
//! instance resumes after them and, events being functions of their position, emits exactly
//! the rows that followed the checkpoint. The split depends on the parallelism, so a
//! restore at another parallelism is refused.
//!
//! The module owns the source loop (pacing, stopping, end of input); [`config`] the sequence
//! arithmetic, [`model`] the columns, [`random`] the random draws and [`generate`] the Arrow
//! batches.

pub mod config;
mod generate;
pub mod model;
mod random;

use std::time::{Duration, Instant};

use millrace_types::{SourceEvent, SourcePartition};

pub use config::{EventKind, NexmarkConfig};
use generate::BatchGenerator;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::{ConnectorError, MetadataField, SourceContext};

/// Every row instance `instance` of `instances` produces for a bounded sequence, at once:
/// the reference for tests that check a job's output against the generator.
pub fn generate_bounded(
    config: &NexmarkConfig,
    schema: SchemaRef,
    metadata: &[(usize, MetadataField)],
    instance: usize,
    instances: usize,
) -> Result<Vec<RecordBatch>, ConnectorError> {
    let options = |message| ConnectorError::Options { table: "nexmark".into(), message };
    if config.events.is_none() {
        return Err(options("generate_bounded needs a bounded sequence (events)".to_string()));
    }
    let columns = model::map_columns(config.kind, &schema, metadata).map_err(options)?;
    let generator = BatchGenerator::new(config.clone(), schema, columns, instance);
    let mut positions = config.positions(instance, instances);
    let mut batches = Vec::new();
    while !positions.is_done() {
        let generated = generator
            .next_batch(&mut positions, u64::MAX)
            .map_err(ConnectorError::arrow("generating a Nexmark batch"))?;
        batches.extend(generated.batch);
    }
    Ok(batches)
}

pub(crate) fn run_source(config: NexmarkConfig, ctx: SourceContext) -> Result<(), ConnectorError> {
    let partition = SourcePartition(ctx.subtask as i32);
    if !ctx.emit(SourceEvent::Assigned(vec![partition])) {
        return Ok(());
    }
    let columns = model::map_columns(config.kind, &ctx.table.schema, &ctx.table.metadata)
        .map_err(|message| ConnectorError::Options { table: ctx.table.name.clone(), message })?;
    let restored = ctx.restored_instance_position()?;
    let mut positions = config.positions(ctx.subtask, ctx.parallelism).resumed(restored as u64);
    let generator = BatchGenerator::new(config.clone(), ctx.table.schema.clone(), columns, ctx.subtask);
    let started = Instant::now();
    // Positions taken in this run (pacing starts anew after a restore).
    let mut taken: u64 = 0;
    loop {
        if ctx.stop.is_stopped() {
            return Ok(());
        }
        if !ctx.barrier_if_due(|| [(partition, restored + taken as i64)].into()) {
            return Ok(());
        }
        if positions.is_done() {
            ctx.emit(SourceEvent::End { positions: [(partition, restored + taken as i64)].into() });
            return Ok(());
        }
        // Pace by the schedule since the start, so a slow batch does not lower the rate.
        let allowed = match config.positions_due(started.elapsed(), ctx.parallelism) {
            None => u64::MAX,
            Some(due) => due.saturating_sub(taken),
        };
        if allowed == 0 {
            let due = config.position_due_at(taken + 1, ctx.parallelism).unwrap_or_default();
            std::thread::sleep(
                (started + due).saturating_duration_since(Instant::now()).min(Duration::from_millis(100)),
            );
            continue;
        }
        let generated = generator
            .next_batch(&mut positions, allowed)
            .map_err(ConnectorError::arrow("generating a Nexmark batch"))?;
        taken += generated.positions;
        if let Some(batch) = generated.batch
            && !ctx.emit(SourceEvent::Batch { partition, batch })
        {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::{AsArray, RecordBatch};
    use arrow::datatypes::{
        DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMillisecondType,
    };

    use super::model::{columns, map_columns};
    use super::*;

    fn schema(kind: EventKind) -> SchemaRef {
        let fields: Vec<Field> =
            columns(kind).iter().map(|(name, field)| Field::new(*name, field.data_type(), false)).collect();
        Arc::new(Schema::new(fields))
    }

    /// Every batch one instance of `parallelism` generates.
    fn generate_all(config: &NexmarkConfig, instance: usize, parallelism: usize) -> Vec<RecordBatch> {
        generate_bounded(config, schema(config.kind), &[], instance, parallelism).expect("generates")
    }

    fn rows_as_text(batches: &[RecordBatch]) -> Vec<String> {
        let mut rows = Vec::new();
        for batch in batches {
            let columns: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| {
                    arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &Default::default())
                        .expect("fmt")
                })
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(columns.iter().map(|c| c.value(row).to_string()).collect::<Vec<_>>().join("|"));
            }
        }
        rows
    }

    fn config(kind: EventKind, events: u64) -> NexmarkConfig {
        let mut c = NexmarkConfig::new(kind, 1_700_000_000_000);
        c.events = Some(events);
        c.batch_size = 1_000;
        c
    }

    #[test]
    fn the_three_tables_split_the_sequence_one_to_three_to_46() {
        let count =
            |kind| generate_all(&config(kind, 10_000), 0, 1).iter().map(|b| b.num_rows()).sum::<usize>();
        assert_eq!(count(EventKind::Person), 200);
        assert_eq!(count(EventKind::Auction), 600);
        assert_eq!(count(EventKind::Bid), 9_200);
    }

    #[test]
    fn rows_are_deterministic_per_seed() {
        for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
            let a = rows_as_text(&generate_all(&config(kind, 3_000), 0, 1));
            let b = rows_as_text(&generate_all(&config(kind, 3_000), 0, 1));
            assert_eq!(a, b, "{kind:?}");
            let mut other = config(kind, 3_000);
            other.seed = 99;
            assert_ne!(a, rows_as_text(&generate_all(&other, 0, 1)), "{kind:?}: the seed matters");
        }
    }

    #[test]
    fn parallel_instances_produce_the_same_rows_as_one() {
        for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
            let mut c = config(kind, 20_000);
            c.out_of_order_group_size = 7;
            let mut one = rows_as_text(&generate_all(&c, 0, 1));
            let mut three: Vec<String> = (0..3).flat_map(|i| rows_as_text(&generate_all(&c, i, 3))).collect();
            one.sort();
            three.sort();
            assert_eq!(one.len(), three.len());
            assert_eq!(one, three, "{kind:?}");
        }
    }

    #[test]
    fn ids_and_references_follow_the_sequence() {
        let persons = generate_all(&config(EventKind::Person, 5_000), 0, 1);
        let ids: Vec<i64> =
            persons.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(ids, (1000..1100).collect::<Vec<_>>(), "a person every 50 events, ids from 1000");
        let bids = generate_all(&config(EventKind::Bid, 50_000), 0, 1);
        let mut per_auction: HashMap<i64, usize> = HashMap::new();
        for b in &bids {
            for a in b.column(0).as_primitive::<Int64Type>().values() {
                *per_auction.entry(*a).or_default() += 1;
            }
            for p in b.column(2).as_primitive::<Int64Type>().values() {
                assert!((100..=100_000_000).contains(p));
            }
        }
        // Half the bids go to the hot auction of the current block of 100 auctions (about
        // 46,000 / 2 / 30 each), the rest spread over the ~100 in flight.
        let hottest = per_auction.values().max().copied().unwrap_or(0);
        assert!(hottest > 400, "hot auctions: {hottest}");
    }

    #[test]
    fn event_times_are_out_of_order_within_a_group_only() {
        let mut c = config(EventKind::Bid, 100_000);
        c.first_event_rate = 10_000;
        c.out_of_order_group_size = 500;
        let ts_column = 5;
        let times: Vec<i64> = generate_all(&c, 0, 1)
            .iter()
            .flat_map(|b| b.column(ts_column).as_primitive::<TimestampMillisecondType>().values().to_vec())
            .collect();
        let mut max_seen = i64::MIN;
        let mut out_of_order = 0;
        for t in &times {
            if *t < max_seen {
                out_of_order += 1;
            }
            max_seen = max_seen.max(*t);
            // 500 events at 10,000 events/s span 50 ms.
            assert!(max_seen - t < 50, "{max_seen} - {t}");
        }
        assert!(out_of_order > 0);
        assert_eq!(times.iter().min().copied(), Some(1_700_000_000_000));
        // 100,000 events at 10,000 events/s span 10 s.
        assert_eq!(times.iter().max().copied(), Some(1_700_000_000_000 + 9_999));
    }

    #[test]
    fn resumed_positions_continue_the_sequence() {
        let c = config(EventKind::Bid, 1_000);
        let all: Vec<u64> = c.positions(1, 3).collect();
        let resumed: Vec<u64> = c.positions(1, 3).resumed(10).collect();
        assert_eq!(resumed, all[10..].to_vec());
        assert!(c.positions(1, 3).resumed(1_000).is_done());
    }

    #[test]
    fn declared_types_are_cast_and_subsets_are_filled_by_name() {
        let c = config(EventKind::Bid, 500);
        let schema = Arc::new(Schema::new(vec![
            Field::new("price", DataType::Float64, false),
            Field::new("channel", DataType::Utf8View, false),
            Field::new("datetime", DataType::Timestamp(TimeUnit::Microsecond, None), false),
        ]));
        let columns = map_columns(c.kind, &schema, &[]).expect("valid");
        let generator = BatchGenerator::new(c.clone(), schema.clone(), columns, 0);
        let batch = generator.next_batch(&mut c.positions(0, 1), u64::MAX).expect("ok").batch.expect("rows");
        assert_eq!(batch.schema(), schema);
        assert_eq!(batch.num_rows(), 460);
    }
}
