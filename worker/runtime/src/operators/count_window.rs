//! `GROUP BY …, count_window(size[, slide])`: row-count windows (Flink's Table API row-count
//! windows), keyed or global. A key's rows are numbered in arrival order at this operator
//! (0, 1, 2, …; a processing-time notion); window `n` holds the key's rows `n*slide …
//! n*slide + size - 1` and fires once, when its last row arrives, emitting the key, `n` (the
//! window's sequence number per key, at the group function's position) and the aggregates.
//! Tumbling windows are `slide = size`. A window that never fills never fires, so incomplete
//! windows are dropped at end of input (a Flink CountTrigger never fires an incomplete
//! window). Each window holds plain DataFusion accumulators, updated once per batch with its
//! rows of the batch, so every aggregate works; a row updates the `ceil(size/slide)` windows
//! it lies in.
//!
//! State (`count_windows`): per key its row count and one row per open window (sequence
//! number and accumulators' state); a key without an open window has one row with a NULL
//! sequence.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array, UInt64Array};
use arrow::datatypes::{DataType, Field, SchemaRef, UInt64Type};
use arrow::record_batch::RecordBatch;
use arrow::row::OwnedRow;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::accumulator_state::AccumulatorState;
use crate::operators::state_table::{StateLayout, refuse_unknown_tables};
use crate::operators::window_aggregate::{aggregate_arguments, update_group};
use crate::operators::window_output::{EmittedRow, GroupState, WindowOutput, WindowOutputColumn};
use crate::state::TableSnapshot;

/// What the planner hands the count window operator.
#[derive(Clone)]
pub struct CountWindowSpec {
    /// Rows per window.
    pub size: u64,
    /// Rows between the starts of consecutive windows (`size` for tumbling windows);
    /// `0 < slide <= size`.
    pub slide: u64,
    /// Group keys besides the window; empty for a global count window.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Where the window's sequence number sits among the group columns of the output.
    pub window_position: usize,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Group columns (keys with the sequence number, BIGINT, at `window_position`), then the
    /// aggregates.
    pub output_schema: SchemaRef,
    /// The schema of the rows the operator receives (what the hash exchange hashes keys of).
    pub input_schema: SchemaRef,
}

/// One open window of one key.
struct OpenWindow {
    sequence: u64,
    accumulators: GroupState,
    /// Rows of the current batch not yet in the accumulators.
    batch_rows: Vec<u32>,
}

/// One key's count and open windows, oldest first.
#[derive(Default)]
struct KeyWindows {
    rows_seen: u64,
    open: VecDeque<OpenWindow>,
}

/// The count window operator; see the module docs.
pub struct CountWindowOperator {
    spec: CountWindowSpec,
    output: WindowOutput,
    keys: HashMap<OwnedRow, KeyWindows>,
    accumulator_state: AccumulatorState,
    layout: StateLayout,
}

impl CountWindowOperator {
    pub fn try_new(spec: CountWindowSpec) -> Result<Self, OperatorError> {
        if spec.size == 0 || spec.slide == 0 || spec.slide > spec.size {
            return Err(OperatorError::Invalid(format!(
                "count window size {} and slide {} must satisfy 0 < slide <= size",
                spec.size, spec.slide
            )));
        }
        let columns = (0..spec.aggregates.len()).map(WindowOutputColumn::Aggregate).collect();
        let output = WindowOutput::try_new(
            spec.keys.clone(),
            spec.window_position,
            columns,
            Arc::clone(&spec.output_schema),
            &spec.input_schema,
        )?;
        let accumulator_state = AccumulatorState::try_new(&spec.aggregates)?;
        let scope = if output.is_keyed() { StateScope::KeyGroups } else { StateScope::Instance };
        let mut fields = output.key_fields();
        fields.push(Field::new("rows_seen", DataType::UInt64, false));
        fields.push(Field::new("sequence", DataType::UInt64, true));
        fields.extend(accumulator_state.fields());
        let layout = StateLayout::new("count_windows", scope, fields);
        Ok(Self { spec, output, keys: HashMap::new(), accumulator_state, layout })
    }
}

impl Operator for CountWindowOperator {
    fn name(&self) -> &'static str {
        "count_window"
    }

    fn state_tables(&self) -> Vec<StateTable> {
        vec![self.layout.table()]
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let keys = self.output.key_rows(&batch)?;
        let arguments = aggregate_arguments(&self.spec.aggregates, &batch)?;
        let mut by_key: HashMap<arrow::row::Row<'_>, Vec<u32>> = HashMap::new();
        for i in 0..batch.num_rows() {
            by_key.entry(keys.row(i)).or_default().push(i as u32);
        }
        let (size, slide) = (self.spec.size, self.spec.slide);
        // (batch row that completed the window, the window's row); sorted so output follows
        // arrival order across keys.
        let mut fired: Vec<(u32, EmittedRow)> = Vec::new();
        for (key, indices) in by_key {
            let owned = key.owned();
            let windows = self.keys.entry(owned.clone()).or_default();
            for row in indices {
                let position = windows.rows_seen;
                windows.rows_seen += 1;
                if position.is_multiple_of(slide) {
                    windows.open.push_back(OpenWindow {
                        sequence: position / slide,
                        accumulators: WindowOutput::accumulators(&self.spec.aggregates)?,
                        batch_rows: Vec::new(),
                    });
                }
                for window in &mut windows.open {
                    window.batch_rows.push(row);
                }
                let complete =
                    windows.open.front().is_some_and(|w| w.sequence * slide + size - 1 == position);
                if complete && let Some(mut window) = windows.open.pop_front() {
                    let rows = UInt32Array::from(std::mem::take(&mut window.batch_rows));
                    update_group(&mut window.accumulators, &arguments, &rows)?;
                    let values = WindowOutput::evaluate(&mut window.accumulators)?;
                    let sequence = i64::try_from(window.sequence).unwrap_or(i64::MAX);
                    fired.push((row, EmittedRow { start: sequence, end: 0, key: owned.clone(), values }));
                }
            }
            for window in &mut windows.open {
                if !window.batch_rows.is_empty() {
                    let rows = UInt32Array::from(std::mem::take(&mut window.batch_rows));
                    update_group(&mut window.accumulators, &arguments, &rows)?;
                }
            }
        }
        fired.sort_by_key(|(row, _)| *row);
        if let Some(batch) = self.output.build(fired.into_iter().map(|(_, r)| r).collect())? {
            out.push(batch);
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let (mut keys, mut rows_seen, mut sequences) = (Vec::new(), Vec::new(), Vec::new());
        let mut state = self.accumulator_state.builder(&self.layout);
        for (key, windows) in &mut self.keys {
            if windows.open.is_empty() {
                keys.push(key.clone());
                rows_seen.push(windows.rows_seen);
                sequences.push(None);
                state.push_nulls()?;
            }
            for window in &mut windows.open {
                keys.push(key.clone());
                rows_seen.push(windows.rows_seen);
                sequences.push(Some(window.sequence));
                state.push_all(&mut window.accumulators)?;
            }
        }
        let rows = keys.len();
        let (mut columns, key_groups) = self.output.key_columns(&keys, ctx.max_parallelism)?;
        columns.push(Arc::new(UInt64Array::from(rows_seen)) as ArrayRef);
        columns.push(Arc::new(UInt64Array::from(sequences)));
        columns.extend(state.finish()?);
        Ok(vec![self.layout.snapshot(key_groups, columns, rows)?])
    }

    fn restore_state(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        let batches = self.layout.take_restored(&mut tables, ctx)?;
        refuse_unknown_tables(self.name(), &tables)?;
        let k = self.output.keys().count();
        for batch in batches {
            let keys = self.output.keys().rows_of_columns(&batch.columns()[..k], batch.num_rows())?;
            let rows_seen = batch.column(k).as_primitive::<UInt64Type>();
            let sequences = batch.column(k + 1).as_primitive::<UInt64Type>();
            let state = &batch.columns()[k + 2..];
            for i in 0..batch.num_rows() {
                let windows = self.keys.entry(keys.row(i).owned()).or_default();
                windows.rows_seen = rows_seen.value(i);
                if sequences.is_valid(i) {
                    let accumulators = self.accumulator_state.restore_all(&self.layout, state, i)?;
                    windows.open.push_back(OpenWindow {
                        sequence: sequences.value(i),
                        accumulators,
                        batch_rows: Vec::new(),
                    });
                }
            }
        }
        // Oldest window first, as processing keeps them.
        for windows in self.keys.values_mut() {
            windows.open.make_contiguous().sort_by_key(|w| w.sequence);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use millrace_types::{SubtaskIndex, Watermark};
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    fn operator(size: u64, slide: u64, keyed: bool) -> CountWindowOperator {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &input).expect("v")])
            .schema(Arc::clone(&input))
            .alias("s")
            .build()
            .expect("sum");
        let mut fields = Vec::new();
        if keyed {
            fields.push(Field::new("k", DataType::Utf8, false));
        }
        fields.push(Field::new("w", DataType::Int64, false));
        fields.push(Field::new("s", DataType::Int64, true));
        CountWindowOperator::try_new(CountWindowSpec {
            size,
            slide,
            keys: if keyed { vec![col("k", &input).expect("k")] } else { Vec::new() },
            window_position: usize::from(keyed),
            aggregates: vec![Arc::new(sum)],
            output_schema: Arc::new(Schema::new(fields)),
            input_schema: input,
        })
        .expect("operator")
    }

    fn feed(op: &mut CountWindowOperator, rows: &[(&str, i64)]) -> Vec<RecordBatch> {
        let ctx = OperatorContext {
            subtask: SubtaskIndex(0),
            parallelism: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            key_groups: crate::state::KeyGroupRange {
                first: 0,
                last: millrace_types::DEFAULT_MAX_PARALLELISM - 1,
            },
            watermark: Watermark::MIN,
            late_records: Counter::default(),
        };
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, false),
                Field::new("v", DataType::Int64, false),
            ])),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            ],
        )
        .expect("batch");
        let mut out = Vec::new();
        op.process_batch(batch, &ctx, &mut out).expect("process");
        op.handle_watermark(Watermark::MAX, &ctx, &mut out).expect("end of input");
        out
    }

    /// (sequence, sum) of every output row (the last two columns).
    fn fired(batches: &[RecordBatch]) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for b in batches {
            let n = b.num_columns();
            let w = b.column(n - 2).as_primitive::<Int64Type>();
            let s = b.column(n - 1).as_primitive::<Int64Type>();
            out.extend((0..b.num_rows()).map(|i| (w.value(i), s.value(i))));
        }
        out
    }

    #[test]
    fn tumbling_count_windows_fire_every_size_rows_per_key() {
        let mut op = operator(2, 2, true);
        let out = feed(&mut op, &[("a", 1), ("b", 10), ("a", 2), ("a", 4), ("b", 20), ("a", 8), ("a", 16)]);
        let keys: Vec<String> = out
            .iter()
            .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten().map(String::from))
            .collect();
        assert_eq!(keys, vec!["a", "b", "a"]);
        assert_eq!(fired(&out), vec![(0, 3), (0, 30), (1, 12)], "the incomplete window (16) never fires");
    }

    #[test]
    fn sliding_count_windows_fire_every_slide_rows_over_the_last_size_rows() {
        let mut op = operator(3, 1, false);
        let mut out = feed(&mut op, &[("x", 1), ("x", 2)]);
        assert!(fired(&out).is_empty(), "no window is complete before 3 rows");
        out.extend(feed(&mut op, &[("x", 4), ("x", 8), ("x", 16)]));
        assert_eq!(fired(&out), vec![(0, 7), (1, 14), (2, 28)]);
        let mut op = operator(4, 2, false);
        let out = feed(&mut op, &[("x", 1), ("x", 2), ("x", 4), ("x", 8), ("x", 16), ("x", 32), ("x", 64)]);
        assert_eq!(fired(&out), vec![(0, 15), (1, 60)]);
    }
}
