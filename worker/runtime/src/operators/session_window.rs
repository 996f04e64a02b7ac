//! `GROUP BY session(ts, gap)`: event-time (or processing-time) session windows, keyed or
//! global. Each row opens the session `[ts, ts + gap)`; sessions of one key that overlap or
//! touch merge (Flink's merging windows), so an out-of-order row that bridges a gap joins two
//! sessions into one, their accumulators merged with DataFusion's `state`/`merge_batch`. A
//! session fires when the watermark passes its end. With allowed lateness it is kept that much
//! longer: a row that updates a fired session emits the session again at once (a merged
//! session is a new window: its row has the new start and end). Rows that can only form a
//! session already past its lateness are late: counted, and dropped or side-output.
//!
//! State (`session_accumulators`): one row per open session — the key, the session's start
//! and end, whether it changed since it was last emitted and its accumulators' state;
//! `session_watermark`: the watermark at the checkpoint (see [`WatermarkTable`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Int64Array, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Int64Type, SchemaRef, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::OwnedRow;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use millrace_types::Watermark;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::accumulator_state::AccumulatorState;
use crate::operators::state_table::{StateLayout, WatermarkTable, refuse_unknown_tables};
use crate::operators::window_aggregate::{aggregate_arguments, evaluate_time_ms, update_group};
use crate::operators::window_output::{EmittedRow, GroupState, WindowOutput, WindowOutputColumn};
use crate::state::TableSnapshot;

/// What the planner hands the session window operator.
#[derive(Clone)]
pub struct SessionWindowSpec {
    /// The time attribute (event time or processing time), any timestamp type.
    pub time: Arc<dyn PhysicalExpr>,
    /// Rows further apart than this (in ms) belong to different sessions.
    pub gap_ms: i64,
    /// Group keys besides the window; empty for a global session.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Where the window-start column sits among the group columns of the output.
    pub window_position: usize,
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// The output columns after the group columns: aggregates and window ends.
    pub output_columns: Vec<WindowOutputColumn>,
    pub output_schema: SchemaRef,
    /// How long after firing a session still accepts rows (and emits again), in ms.
    pub allowed_lateness_ms: i64,
    /// Whether late rows go to the side output.
    pub late_side_output: bool,
    /// The schema of the rows the operator receives (what the hash exchange hashes keys of).
    pub input_schema: SchemaRef,
}

/// One open session of one key.
struct Session {
    end: i64,
    accumulators: GroupState,
    /// Updated since it was last emitted (or never emitted).
    pending: bool,
    /// Rows of the current batch not yet in the accumulators.
    batch_rows: Vec<u32>,
}

/// The session window operator; see the module docs.
pub struct SessionWindowOperator {
    spec: SessionWindowSpec,
    output: WindowOutput,
    /// key (its row-format bytes) → its id, so that per-row bookkeeping never copies a key.
    key_ids: HashMap<Box<[u8]>, u64>,
    /// key id → (key, session start → session). A key's sessions never overlap.
    sessions: HashMap<u64, (OwnedRow, BTreeMap<i64, Session>)>,
    /// (end, key id, start) of every session, so firing is a prefix.
    by_end: BTreeSet<(i64, u64, i64)>,
    next_key_id: u64,
    /// Scratch space for the starts of the sessions a row touches (reused across rows).
    overlapping: Vec<i64>,
    late: Vec<RecordBatch>,
    accumulator_state: AccumulatorState,
    layout: StateLayout,
    watermark_table: WatermarkTable,
    /// The watermark restored from a checkpoint: lateness and firing never go below it.
    watermark_floor: Watermark,
}

impl SessionWindowOperator {
    pub fn try_new(spec: SessionWindowSpec) -> Result<Self, OperatorError> {
        let output = WindowOutput::try_new(
            spec.keys.clone(),
            spec.window_position,
            spec.output_columns.clone(),
            Arc::clone(&spec.output_schema),
            &spec.input_schema,
        )?;
        let accumulator_state = AccumulatorState::try_new(&spec.aggregates)?;
        let scope = if output.is_keyed() { StateScope::KeyGroups } else { StateScope::Instance };
        let mut fields = output.key_fields();
        fields.push(Field::new("session_start", DataType::Int64, false));
        fields.push(Field::new("session_end", DataType::Int64, false));
        fields.push(Field::new("pending", DataType::Boolean, false));
        fields.extend(accumulator_state.fields());
        let layout = StateLayout::new("session_accumulators", scope, fields);
        Ok(Self {
            spec,
            output,
            key_ids: HashMap::new(),
            sessions: HashMap::new(),
            by_end: BTreeSet::new(),
            next_key_id: 0,
            overlapping: Vec::new(),
            late: Vec::new(),
            accumulator_state,
            layout,
            watermark_table: WatermarkTable::new("session_watermark", scope),
            watermark_floor: Watermark::MIN,
        })
    }

    /// The id of `key`, registering it (and an empty session map) if it is new.
    fn key_id(&mut self, key: arrow::row::Row<'_>) -> u64 {
        if let Some(id) = self.key_ids.get(key.as_ref()) {
            return *id;
        }
        let id = self.next_key_id;
        self.next_key_id += 1;
        self.key_ids.insert(key.as_ref().into(), id);
        self.sessions.insert(id, (key.owned(), BTreeMap::new()));
        id
    }

    /// Adds row `index` (session `[start, end)`) to key `id`, merging every session it
    /// overlaps or touches. The row only joins the session's `batch_rows`; accumulators are
    /// updated once per batch. Returns false if the row is late.
    fn add_row(
        &mut self,
        id: u64,
        (start, end): (i64, i64),
        index: u32,
        watermark: Watermark,
    ) -> Result<bool, OperatorError> {
        let Some((_, sessions)) = self.sessions.get_mut(&id) else {
            return Err(OperatorError::Invalid(format!("session key {id} is not registered")));
        };
        // Sessions are disjoint and sorted by start, so their ends are sorted too: walk back
        // from the last one starting at or before `end` while they reach `start`.
        let overlapping = &mut self.overlapping;
        overlapping.clear();
        overlapping.extend(sessions.range(..=end).rev().take_while(|(_, s)| s.end >= start).map(|(s, _)| *s));
        if overlapping.is_empty()
            && watermark.closes_window_ending_at(end.saturating_add(self.spec.allowed_lateness_ms))
        {
            return Ok(false);
        }
        let mut merged = match overlapping.last() {
            // The oldest overlapping session absorbs the others and the row.
            Some(oldest) => match sessions.remove(oldest) {
                Some(session) => {
                    self.by_end.remove(&(session.end, id, *oldest));
                    (*oldest, session)
                }
                None => return Err(OperatorError::Invalid("a listed session is missing".into())),
            },
            None => (
                start,
                Session {
                    end,
                    accumulators: WindowOutput::accumulators(&self.spec.aggregates)?,
                    pending: true,
                    batch_rows: Vec::new(),
                },
            ),
        };
        merged.0 = merged.0.min(start);
        merged.1.end = merged.1.end.max(end);
        merged.1.batch_rows.push(index);
        merged.1.pending = true;
        for old_start in overlapping.iter().rev().skip(1) {
            let Some(old) = sessions.remove(old_start) else { continue };
            self.by_end.remove(&(old.end, id, *old_start));
            merged.1.end = merged.1.end.max(old.end);
            merged.1.batch_rows.extend(old.batch_rows);
            for (into, mut from) in merged.1.accumulators.iter_mut().zip(old.accumulators) {
                let state = from.state()?.into_iter().map(|v| v.to_array()).collect::<Result<Vec<_>, _>>()?;
                into.merge_batch(&state)?;
            }
        }
        self.by_end.insert((merged.1.end, id, merged.0));
        sessions.insert(merged.0, merged.1);
        Ok(true)
    }

    /// Emits the pending ones of `windows` (whose ends the watermark has passed), in the
    /// given order, then drops those past their allowed lateness.
    fn emit(
        &mut self,
        windows: Vec<(i64, u64, i64)>,
        watermark: Watermark,
    ) -> Result<Option<RecordBatch>, OperatorError> {
        let mut rows = Vec::new();
        for (end, id, start) in windows {
            let Some((key, sessions)) = self.sessions.get_mut(&id) else { continue };
            let Some(session) = sessions.get_mut(&start) else { continue };
            if session.pending {
                session.pending = false;
                rows.push(EmittedRow {
                    start,
                    end,
                    key: key.clone(),
                    values: WindowOutput::evaluate(&mut session.accumulators)?,
                });
            }
            if watermark.closes_window_ending_at(end.saturating_add(self.spec.allowed_lateness_ms)) {
                sessions.remove(&start);
                self.by_end.remove(&(end, id, start));
                if sessions.is_empty()
                    && let Some((key, _)) = self.sessions.remove(&id)
                {
                    self.key_ids.remove(key.row().as_ref());
                }
            }
        }
        self.output.build(rows)
    }
}

impl Operator for SessionWindowOperator {
    fn name(&self) -> &'static str {
        "session_window"
    }

    fn state_tables(&self) -> Vec<StateTable> {
        vec![self.layout.table(), self.watermark_table.table()]
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let watermark = ctx.watermark.max(self.watermark_floor);
        let time = evaluate_time_ms(&self.spec.time, &batch)?;
        let time = time.as_primitive::<TimestampMillisecondType>();
        let keys = self.output.key_rows(&batch)?;
        let arguments = aggregate_arguments(&self.spec.aggregates, &batch)?;

        // Rows per key in arrival order: merging follows the order rows arrive in (as in
        // Flink), while accumulators are updated once per session and batch.
        let mut per_key: HashMap<arrow::row::Row<'_>, Vec<(i64, u32)>> = HashMap::new();
        for (i, ts) in time.iter().enumerate() {
            if let Some(ts) = ts {
                per_key.entry(keys.row(i)).or_default().push((ts, i as u32));
            }
        }
        let gap = self.spec.gap_ms;
        let mut late_rows = Vec::new();
        let mut updated_fired = Vec::new();
        for (row, rows) in per_key {
            let id = self.key_id(row);
            for (ts, i) in rows {
                if !self.add_row(id, (ts, ts.saturating_add(gap)), i, watermark)? {
                    late_rows.push(i);
                }
            }
            let Some((_, sessions)) = self.sessions.get_mut(&id) else { continue };
            if sessions.is_empty() {
                // Only late rows: forget the key again.
                if let Some((key, _)) = self.sessions.remove(&id) {
                    self.key_ids.remove(key.row().as_ref());
                }
                continue;
            }
            for (start, session) in sessions.iter_mut().filter(|(_, s)| !s.batch_rows.is_empty()) {
                let indices = UInt32Array::from(std::mem::take(&mut session.batch_rows));
                update_group(&mut session.accumulators, &arguments, &indices)?;
                if watermark.closes_window_ending_at(session.end) {
                    updated_fired.push((session.end, id, *start));
                }
            }
        }
        if !late_rows.is_empty() {
            ctx.late_records.inc_by(late_rows.len() as u64);
            if self.spec.late_side_output {
                late_rows.sort_unstable();
                self.late.push(take_record_batch(&batch, &UInt32Array::from(late_rows))?);
            }
        }
        if !updated_fired.is_empty() {
            updated_fired.sort();
            if let Some(batch) = self.emit(updated_fired, watermark)? {
                out.push(batch);
            }
        }
        Ok(())
    }

    fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let watermark = watermark.max(self.watermark_floor);
        let fired: Vec<_> = self
            .by_end
            .iter()
            .take_while(|(end, _, _)| watermark.closes_window_ending_at(*end))
            .copied()
            .collect();
        if let Some(batch) = self.emit(fired, watermark)? {
            out.push(batch);
        }
        Ok(())
    }

    fn take_side_output(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late)
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let (mut keys, mut starts, mut ends, mut pending) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut state = self.accumulator_state.builder(&self.layout);
        // In firing order, so that a snapshot does not depend on hash-map order.
        for (end, id, start) in &self.by_end {
            let Some((key, sessions)) = self.sessions.get_mut(id) else { continue };
            let Some(session) = sessions.get_mut(start) else { continue };
            keys.push(key.clone());
            starts.push(*start);
            ends.push(*end);
            pending.push(session.pending);
            state.push_all(&mut session.accumulators)?;
        }
        let rows = keys.len();
        let (mut columns, key_groups) = self.output.key_columns(&keys, ctx.max_parallelism)?;
        columns.push(Arc::new(Int64Array::from(starts)) as ArrayRef);
        columns.push(Arc::new(Int64Array::from(ends)));
        columns.push(Arc::new(BooleanArray::from(pending)));
        columns.extend(state.finish()?);
        Ok(vec![
            self.layout.snapshot(key_groups, columns, rows)?,
            self.watermark_table.snapshot(ctx.watermark.max(self.watermark_floor), ctx)?,
        ])
    }

    fn restore_state(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        let batches = self.layout.take_restored(&mut tables, ctx)?;
        if let Some(watermark) = self.watermark_table.take_restored(&mut tables, ctx)? {
            self.watermark_floor = watermark;
        }
        refuse_unknown_tables(self.name(), &tables)?;
        let k = self.output.keys().count();
        for batch in batches {
            let keys = self.output.keys().rows_of_columns(&batch.columns()[..k], batch.num_rows())?;
            let starts = batch.column(k).as_primitive::<Int64Type>();
            let ends = batch.column(k + 1).as_primitive::<Int64Type>();
            let pending = batch.column(k + 2).as_boolean();
            let state = &batch.columns()[k + 3..];
            for i in 0..batch.num_rows() {
                let (start, end) = (starts.value(i), ends.value(i));
                let id = self.key_id(keys.row(i));
                let accumulators = self.accumulator_state.restore_all(&self.layout, state, i)?;
                let session =
                    Session { end, accumulators, pending: pending.value(i), batch_rows: Vec::new() };
                let Some((_, sessions)) = self.sessions.get_mut(&id) else {
                    return Err(self.layout.error("a restored key was not registered"));
                };
                let overlaps = sessions.range(..=end).next_back().is_some_and(|(_, s)| s.end >= start);
                if overlaps || end < start {
                    return Err(self
                        .layout
                        .error(format!("session [{start}, {end}) overlaps another of its key")));
                }
                sessions.insert(start, session);
                self.by_end.insert((end, id, start));
            }
        }
        Ok(())
    }
}
