//! The two-input streaming join: rows of input 0 (left) and input 1 (right), both hash-
//! exchanged on the equi-join key, are held per key ([`JoinSide`]) and joined with the other
//! input's held rows of the same key; a residual condition (a DataFusion physical expression
//! on the joined row) decides which pairs are emitted. Three kinds ([`JoinKind`]):
//!
//! - **Interval** (`l.ts BETWEEN r.ts + lower AND r.ts + upper`): a pair is emitted when its
//!   later row arrives; a row is held until the watermark (the minimum of both inputs') passes
//!   the last time a row of the other input could still match it, then dropped, or, for the
//!   outer side of an outer join, emitted padded with NULLs if it never matched. A row whose
//!   interval the watermark has already passed on arrival is joined with what is held, never
//!   held itself, and counted as late (as Flink's interval join: late rows are not dropped).
//! - **Window**: both inputs are windowed rows keyed by key, window start and end; a window's
//!   pairs (and padded rows) are emitted when the watermark passes its end. Rows for a window
//!   that has already closed are late: counted and dropped, as in Flink.
//! - **Regular**: no time; pairs are emitted on arrival, rows held until the state TTL (wall
//!   clock, from when the row was stored: Flink's `OnCreateAndWrite`) expires. Inner only.
//!
//! It must not evaluate SQL beyond the expressions it is given, and it does not know where
//! its inputs come from.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, new_null_array};
use arrow::compute::{cast, filter_record_batch, prep_null_mask_filter};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use millrace_types::Watermark;

use super::join_side::{HeldRow, JoinSide};
use super::state_table::{WatermarkTable, refuse_unknown_tables};
use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::state::TableSnapshot;

/// Which unmatched rows an outer join emits, padded with NULLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinType {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinType {
    fn pads_left(self) -> bool {
        matches!(self, JoinType::Left | JoinType::Full)
    }
    fn pads_right(self) -> bool {
        matches!(self, JoinType::Right | JoinType::Full)
    }
}

/// How rows meet in time; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// A left row at `l` and a right row at `r` may match when
    /// `r + lower_ms <= l <= r + upper_ms` (columns are each input's time attribute).
    Interval { left_time: usize, right_time: usize, lower_ms: i64, upper_ms: i64 },
    /// Both inputs' rows are windows; `*_end` is each input's window-end column (part of the
    /// key, as is the window start).
    Window { left_end: usize, right_end: usize },
    /// Unbounded inputs; rows kept `ttl_ms` after they were stored (forever without).
    Regular { ttl_ms: Option<i64> },
    /// Event-time temporal join (`FOR SYSTEM_TIME AS OF`): each left row, once the watermark
    /// passes its time, meets the right row of its key with the latest time at or before it
    /// (the version valid then). Runs in [`super::TemporalJoinOperator`].
    Temporal { left_time: usize, right_time: usize },
}

/// A join as planned.
#[derive(Clone, Debug)]
pub struct JoinSpec {
    pub join_type: JoinType,
    pub kind: JoinKind,
    pub left_schema: SchemaRef,
    pub right_schema: SchemaRef,
    /// The equi-join key on each input (the expressions its exchange hashes; same types).
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The rest of the join condition, on the joined row (`output_schema`).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The left columns then the right columns (outer sides nullable).
    pub output_schema: SchemaRef,
}

impl JoinSpec {
    pub fn describe(&self) -> String {
        let keys =
            |k: &[Arc<dyn PhysicalExpr>]| k.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", ");
        format!(
            "join {:?} {:?} left_keys=[{}] right_keys=[{}] filter={}",
            self.join_type,
            self.kind,
            keys(&self.left_keys),
            keys(&self.right_keys),
            self.filter.as_ref().map_or("none".to_string(), |f| f.to_string())
        )
    }
}

/// A held row's place: (batch id, row in it).
pub(super) type RowAt = (u64, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Left,
    Right,
}

/// The join operator; see the module docs.
pub struct JoinOperator {
    spec: JoinSpec,
    left: JoinSide,
    right: JoinSide,
    converter: RowConverter,
    watermark_table: WatermarkTable,
    /// The watermark restored from a checkpoint: expiry and lateness never go below it.
    watermark_floor: Watermark,
}

impl std::fmt::Debug for JoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.spec.describe())
    }
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A time column as milliseconds (any timestamp type); NULL stays NULL.
pub(super) fn millis(column: &ArrayRef) -> Result<Vec<Option<i64>>, OperatorError> {
    let ms = DataType::Timestamp(TimeUnit::Millisecond, None);
    let array = if column.data_type() == &ms { Arc::clone(column) } else { cast(column, &ms)? };
    Ok(array.as_primitive::<TimestampMillisecondType>().iter().collect())
}

impl JoinOperator {
    pub fn try_new(spec: JoinSpec) -> Result<Self, OperatorError> {
        if spec.left_keys.len() != spec.right_keys.len() || spec.left_keys.is_empty() {
            return Err(OperatorError::Invalid(
                "a join needs as many left keys as right keys, at least one".into(),
            ));
        }
        let mut fields = Vec::with_capacity(spec.left_keys.len());
        for (l, r) in spec.left_keys.iter().zip(&spec.right_keys) {
            let (lt, rt) = (l.data_type(&spec.left_schema)?, r.data_type(&spec.right_schema)?);
            if lt != rt {
                return Err(OperatorError::Invalid(format!("join keys of types {lt} and {rt} cannot meet")));
            }
            fields.push(SortField::new(lt));
        }
        if matches!(spec.kind, JoinKind::Temporal { .. }) {
            return Err(OperatorError::Invalid("a temporal join runs in the temporal join operator".into()));
        }
        if matches!(spec.kind, JoinKind::Regular { .. }) && spec.join_type != JoinType::Inner {
            return Err(OperatorError::Invalid("a regular (updating) join is inner only".into()));
        }
        Ok(Self {
            left: JoinSide::new("join_left_rows", Arc::clone(&spec.left_schema), spec.left_keys.clone()),
            right: JoinSide::new("join_right_rows", Arc::clone(&spec.right_schema), spec.right_keys.clone()),
            converter: RowConverter::new(fields)?,
            watermark_table: WatermarkTable::new("join_watermark", StateScope::KeyGroups),
            watermark_floor: Watermark::MIN,
            spec,
        })
    }

    fn side(&mut self, input: Input) -> (&mut JoinSide, &mut JoinSide) {
        match input {
            Input::Left => (&mut self.left, &mut self.right),
            Input::Right => (&mut self.right, &mut self.left),
        }
    }

    fn pads(&self, input: Input) -> bool {
        match input {
            Input::Left => self.spec.join_type.pads_left(),
            Input::Right => self.spec.join_type.pads_right(),
        }
    }

    fn joined(&self, pairs: &[(RowAt, RowAt)]) -> Result<(Option<RecordBatch>, Vec<bool>), OperatorError> {
        join_pairs(&self.spec, &self.left, &self.right, pairs)
    }

    fn padded(&self, input: Input, rows: &[RowAt]) -> Result<Option<RecordBatch>, OperatorError> {
        pad_rows(&self.spec, &self.left, &self.right, input == Input::Left, rows)
    }

    /// The range of the other input's times a row of `input` at `time` may match, and when
    /// (watermark) the row can be dropped.
    fn interval_bounds(&self, input: Input, time: i64) -> ((i64, i64), i64) {
        let JoinKind::Interval { lower_ms, upper_ms, .. } = self.spec.kind else {
            return ((i64::MIN, i64::MAX), i64::MAX);
        };
        match input {
            // r in [l - upper, l - lower]; no right row can match once w >= l - lower.
            Input::Left => (
                (time.saturating_sub(upper_ms), time.saturating_sub(lower_ms)),
                time.saturating_sub(lower_ms),
            ),
            // l in [r + lower, r + upper]; no left row can match once w >= r + upper.
            Input::Right => (
                (time.saturating_add(lower_ms), time.saturating_add(upper_ms)),
                time.saturating_add(upper_ms),
            ),
        }
    }

    fn arrive(
        &mut self,
        input: Input,
        batch: RecordBatch,
        ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let watermark = ctx.watermark.max(self.watermark_floor).0;
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let (keys, nulls) = self.side(input).0.key_columns(&batch)?;
        let converted = self.converter.convert_columns(&keys)?;
        let times: Vec<Option<i64>> = match (self.spec.kind, input) {
            (JoinKind::Interval { left_time, .. }, Input::Left) => millis(batch.column(left_time))?,
            (JoinKind::Interval { right_time, .. }, Input::Right) => millis(batch.column(right_time))?,
            (JoinKind::Window { left_end, .. }, Input::Left) => millis(batch.column(left_end))?,
            (JoinKind::Window { right_end, .. }, Input::Right) => millis(batch.column(right_end))?,
            (JoinKind::Regular { .. }, _) => vec![Some(now_ms()); rows],
            (JoinKind::Temporal { .. }, _) => {
                return Err(OperatorError::Invalid(
                    "a temporal join runs in the temporal join operator".into(),
                ));
            }
        };
        if let JoinKind::Regular { ttl_ms: Some(_) } = self.spec.kind {
            self.expire_ttl()?;
        }
        let id = self.side(input).0.add_batch(batch);
        let me = |i: usize| (id, i as u32);
        if let JoinKind::Window { .. } = self.spec.kind {
            let mut late = 0;
            for (i, time) in times.iter().enumerate() {
                match time {
                    Some(end) if !Watermark(watermark).closes_window_ending_at(*end) => {
                        let row = HeldRow {
                            batch: id,
                            row: i as u32,
                            time: *end,
                            expires: end.saturating_sub(1),
                            matched: false,
                            unmatchable: nulls[i],
                        };
                        self.side(input).0.hold(converted.row(i).owned(), row);
                    }
                    _ => late += 1,
                }
            }
            ctx.late_records.inc_by(late);
            self.side(input).0.release_batch_if_unused(id);
            return Ok(());
        }

        // Probe the other input's held rows of each row's key.
        let mut pairs = Vec::new();
        let mut probes = Vec::new();
        for (i, time) in times.iter().enumerate() {
            let Some(time) = *time else { continue };
            if nulls[i] {
                continue;
            }
            let ((from, to), _) = self.interval_bounds(input, time);
            let key = converted.row(i).owned();
            let (_, other) = self.side(input);
            let Some(held) = other.rows_of_mut(&key) else { continue };
            for (position, row) in held.iter().enumerate() {
                if row.time >= from && row.time <= to {
                    probes.push((i, key.clone(), position));
                    let other_row = (row.batch, row.row);
                    pairs.push(match input {
                        Input::Left => (me(i), other_row),
                        Input::Right => (other_row, me(i)),
                    });
                }
            }
        }
        let (batch, passed) = self.joined(&pairs)?;
        out.extend(batch);
        let mut matched = vec![false; rows];
        for ((i, key, position), passed) in probes.into_iter().zip(passed) {
            if passed {
                matched[i] = true;
                if let Some(row) =
                    self.side(input).1.rows_of_mut(&key).and_then(|rows| rows.get_mut(position))
                {
                    row.matched = true;
                }
            }
        }

        // Hold each row while the other input may still match it.
        let ttl = match self.spec.kind {
            JoinKind::Regular { ttl_ms } => Some(ttl_ms),
            _ => None,
        };
        let mut unheld = Vec::new();
        for (i, time) in times.iter().enumerate() {
            let expires = match (ttl, time) {
                (Some(ttl), Some(now)) => ttl.map_or(i64::MAX, |ttl| now.saturating_add(ttl)),
                (None, Some(time)) => self.interval_bounds(input, *time).1,
                (_, None) => i64::MIN,
            };
            let keep = if ttl.is_some() { !nulls[i] } else { expires > watermark };
            if keep {
                let row = HeldRow {
                    batch: id,
                    row: i as u32,
                    time: time.unwrap_or(i64::MIN),
                    expires,
                    matched: matched[i],
                    unmatchable: nulls[i],
                };
                self.side(input).0.hold(converted.row(i).owned(), row);
            } else {
                if ttl.is_none() {
                    ctx.late_records.inc();
                }
                if !matched[i] {
                    unheld.push(me(i));
                }
            }
        }
        if self.pads(input) {
            out.extend(self.padded(input, &unheld)?);
        }
        self.side(input).0.release_batch_if_unused(id);
        Ok(())
    }

    /// Drops rows of a regular join whose TTL has passed (by the wall clock).
    fn expire_ttl(&mut self) -> Result<(), OperatorError> {
        let now = now_ms();
        for side in [&mut self.left, &mut self.right] {
            let gone = side.expire(now);
            side.release(&gone)?;
        }
        Ok(())
    }

    /// Interval join: drops the rows the watermark has made unmatchable, padding the outer
    /// sides' unmatched ones.
    fn expire_interval(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        for input in [Input::Left, Input::Right] {
            let gone = self.side(input).0.expire(watermark);
            if self.pads(input) {
                let unmatched: Vec<(u64, u32)> =
                    gone.iter().filter(|r| !r.matched).map(|r| (r.batch, r.row)).collect();
                out.extend(self.padded(input, &unmatched)?);
            }
            self.side(input).0.release(&gone)?;
        }
        Ok(())
    }

    /// Window join: joins and emits every window the watermark has closed.
    fn fire_windows(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<(), OperatorError> {
        let mut keys = self.left.due_keys(watermark);
        let mut seen: std::collections::HashSet<_> = keys.iter().cloned().collect();
        keys.extend(self.right.due_keys(watermark).into_iter().filter(|k| seen.insert(k.clone())));
        if keys.is_empty() {
            return Ok(());
        }
        let mut left_rows: Vec<HeldRow> = Vec::new();
        let mut right_rows: Vec<HeldRow> = Vec::new();
        let mut pairs = Vec::new();
        let mut pair_rows = Vec::new();
        for key in &keys {
            let (l0, r0) = (left_rows.len(), right_rows.len());
            left_rows.extend(self.left.take_key(key));
            right_rows.extend(self.right.take_key(key));
            for (li, l) in left_rows.iter().enumerate().skip(l0) {
                for (ri, r) in right_rows.iter().enumerate().skip(r0) {
                    if !l.unmatchable && !r.unmatchable {
                        pairs.push(((l.batch, l.row), (r.batch, r.row)));
                        pair_rows.push((li, ri));
                    }
                }
            }
        }
        let (batch, passed) = self.joined(&pairs)?;
        out.extend(batch);
        for ((li, ri), passed) in pair_rows.into_iter().zip(passed) {
            if passed {
                left_rows[li].matched = true;
                right_rows[ri].matched = true;
            }
        }
        let unmatched = |rows: &[HeldRow]| -> Vec<(u64, u32)> {
            rows.iter().filter(|r| !r.matched).map(|r| (r.batch, r.row)).collect()
        };
        if self.spec.join_type.pads_left() {
            out.extend(self.padded(Input::Left, &unmatched(&left_rows))?);
        }
        if self.spec.join_type.pads_right() {
            out.extend(self.padded(Input::Right, &unmatched(&right_rows))?);
        }
        self.left.release(&left_rows)?;
        self.right.release(&right_rows)?;
        Ok(())
    }
}

impl Operator for JoinOperator {
    fn name(&self) -> &'static str {
        match self.spec.kind {
            JoinKind::Interval { .. } => "interval_join",
            JoinKind::Window { .. } => "window_join",
            JoinKind::Regular { .. } => "regular_join",
            JoinKind::Temporal { .. } => "temporal_join",
        }
    }

    fn state_tables(&self) -> Vec<StateTable> {
        vec![self.left.table(), self.right.table(), self.watermark_table.table()]
    }

    fn state_bytes(&self) -> usize {
        self.left.state_bytes() + self.right.state_bytes()
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        self.arrive(Input::Left, batch, ctx, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        batch: RecordBatch,
        ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        match input {
            1 => self.arrive(Input::Right, batch, ctx, out),
            other => Err(OperatorError::Invalid(format!("a join has two inputs, not input {other}"))),
        }
    }

    fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let watermark = watermark.max(self.watermark_floor).0;
        match self.spec.kind {
            JoinKind::Interval { .. } => self.expire_interval(watermark, out),
            JoinKind::Window { .. } => self.fire_windows(watermark, out),
            JoinKind::Regular { ttl_ms } => {
                if ttl_ms.is_some() {
                    self.expire_ttl()?;
                }
                Ok(())
            }
            JoinKind::Temporal { .. } => Ok(()),
        }
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        Ok(vec![
            self.left.snapshot(ctx.max_parallelism)?,
            self.right.snapshot(ctx.max_parallelism)?,
            self.watermark_table.snapshot(ctx.watermark.max(self.watermark_floor), ctx)?,
        ])
    }

    fn restore_state(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        self.left.restore(&mut tables, ctx, &self.converter)?;
        self.right.restore(&mut tables, ctx, &self.converter)?;
        if let Some(watermark) = self.watermark_table.take_restored(&mut tables, ctx)? {
            self.watermark_floor = watermark;
        }
        refuse_unknown_tables(self.name(), &tables)
    }
}

/// The joined rows of `pairs` (left row, right row) that pass the residual condition, and
/// which pairs passed.
pub(super) fn join_pairs(
    spec: &JoinSpec,
    left: &JoinSide,
    right: &JoinSide,
    pairs: &[(RowAt, RowAt)],
) -> Result<(Option<RecordBatch>, Vec<bool>), OperatorError> {
    if pairs.is_empty() {
        return Ok((None, Vec::new()));
    }
    let left_rows: Vec<RowAt> = pairs.iter().map(|p| p.0).collect();
    let right_rows: Vec<RowAt> = pairs.iter().map(|p| p.1).collect();
    let mut columns = left.gather(&left_rows)?;
    columns.extend(right.gather(&right_rows)?);
    let batch = RecordBatch::try_new(Arc::clone(&spec.output_schema), columns)?;
    let Some(filter) = &spec.filter else {
        return Ok((Some(batch), vec![true; pairs.len()]));
    };
    let mask = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
    let mask = mask.as_boolean_opt().ok_or_else(|| {
        OperatorError::Invalid(format!("join condition is {}, not BOOLEAN", mask.data_type()))
    })?;
    let mask: BooleanArray = if mask.null_count() > 0 { prep_null_mask_filter(mask) } else { mask.clone() };
    let passed: Vec<bool> = mask.values().iter().collect();
    let kept = filter_record_batch(&batch, &mask)?;
    Ok(((kept.num_rows() > 0).then_some(kept), passed))
}

/// `rows` of the left (`of_left`) or right input, padded with NULLs for the other's columns.
pub(super) fn pad_rows(
    spec: &JoinSpec,
    left: &JoinSide,
    right: &JoinSide,
    of_left: bool,
    rows: &[RowAt],
) -> Result<Option<RecordBatch>, OperatorError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let n = rows.len();
    let nulls = |schema: &SchemaRef| -> Vec<ArrayRef> {
        schema.fields().iter().map(|f| new_null_array(f.data_type(), n)).collect()
    };
    let mut columns = if of_left { left.gather(rows)? } else { nulls(left.schema()) };
    columns.extend(if of_left { nulls(right.schema()) } else { right.gather(rows)? });
    Ok(Some(RecordBatch::try_new(Arc::clone(&spec.output_schema), columns)?))
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
