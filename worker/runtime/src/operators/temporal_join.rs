//! The event-time temporal join (Flink's `JOIN versioned FOR SYSTEM_TIME AS OF l.ts`): the
//! right input is a versioned table, each of its rows a new version of its key valid from the
//! row's time on; each left row meets the version of its key valid at the left row's time
//! (the right row with the latest time at or before it). Left rows wait until the watermark
//! (the minimum of both inputs') passes their time, so every version up to it has arrived;
//! then they are joined (or, for a LEFT join, padded with NULLs when no version is valid yet
//! or the residual condition refuses the pair) and dropped. Versions superseded for every
//! later left row (older than the newest one at or before the watermark) are dropped. A left
//! row already at or below the watermark when it arrives is joined at once with the versions
//! held and counted late. Inner and LEFT only, as in Flink.
//!
//! State and its tables are those of [`super::JoinOperator`] ([`JoinSide`] per input).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use millrace_types::Watermark;

use super::join::{JoinKind, JoinSpec, JoinType, RowAt, join_pairs, millis, pad_rows};
use super::join_side::{HeldRow, JoinSide};
use super::state_table::{WatermarkTable, refuse_unknown_tables};
use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::state::TableSnapshot;

/// The temporal join operator; see the module docs.
pub struct TemporalJoinOperator {
    spec: JoinSpec,
    left_time: usize,
    right_time: usize,
    /// Left rows waiting for the watermark (`expires` = their time).
    left: JoinSide,
    /// The versions, by key.
    right: JoinSide,
    converter: RowConverter,
    watermark_table: WatermarkTable,
    watermark_floor: Watermark,
    /// Keys that may hold superseded versions.
    to_prune: HashSet<OwnedRow>,
}

impl TemporalJoinOperator {
    pub fn try_new(spec: JoinSpec) -> Result<Self, OperatorError> {
        let JoinKind::Temporal { left_time, right_time } = spec.kind else {
            return Err(OperatorError::Invalid("not a temporal join".into()));
        };
        if !matches!(spec.join_type, JoinType::Inner | JoinType::Left) {
            return Err(OperatorError::Invalid("a temporal join is INNER or LEFT".into()));
        }
        let mut fields = Vec::with_capacity(spec.left_keys.len());
        for (l, r) in spec.left_keys.iter().zip(&spec.right_keys) {
            let (lt, rt) = (l.data_type(&spec.left_schema)?, r.data_type(&spec.right_schema)?);
            if lt != rt {
                return Err(OperatorError::Invalid(format!("join keys of types {lt} and {rt} cannot meet")));
            }
            fields.push(SortField::new(lt));
        }
        if fields.is_empty() || spec.left_keys.len() != spec.right_keys.len() {
            return Err(OperatorError::Invalid("a temporal join needs the versioned table's key".into()));
        }
        Ok(Self {
            left_time,
            right_time,
            left: JoinSide::new("join_left_rows", Arc::clone(&spec.left_schema), spec.left_keys.clone()),
            right: JoinSide::new("join_right_rows", Arc::clone(&spec.right_schema), spec.right_keys.clone()),
            converter: RowConverter::new(fields)?,
            watermark_table: WatermarkTable::new("join_watermark", StateScope::KeyGroups),
            watermark_floor: Watermark::MIN,
            to_prune: HashSet::new(),
            spec,
        })
    }

    /// The version of `key` valid at `time`: the latest at or before it (of equal times, the
    /// last to arrive).
    fn version_at(&mut self, key: &OwnedRow, time: i64) -> Option<RowAt> {
        let versions = self.right.rows_of_mut(key)?;
        let mut best: Option<&HeldRow> = None;
        for v in versions.iter().filter(|v| v.time <= time) {
            if best.is_none_or(|b| v.time >= b.time) {
                best = Some(v);
            }
        }
        best.map(|v| (v.batch, v.row))
    }

    /// Joins left rows (key, row) with the versions valid at their times, padding for a
    /// LEFT join.
    fn emit(
        &mut self,
        rows: &[(OwnedRow, HeldRow)],
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let mut pairs = Vec::new();
        let mut paired = Vec::new();
        let mut unmatched = Vec::new();
        for (i, (key, left)) in rows.iter().enumerate() {
            let at = (left.batch, left.row);
            match if left.unmatchable { None } else { self.version_at(key, left.time) } {
                Some(version) => {
                    pairs.push((at, version));
                    paired.push(i);
                }
                None => unmatched.push(at),
            }
        }
        let (batch, passed) = join_pairs(&self.spec, &self.left, &self.right, &pairs)?;
        out.extend(batch);
        if self.spec.join_type == JoinType::Left {
            unmatched.extend(paired.iter().zip(passed).filter(|(_, ok)| !ok).map(|(i, _)| {
                let left = rows[*i].1;
                (left.batch, left.row)
            }));
            out.extend(pad_rows(&self.spec, &self.left, &self.right, true, &unmatched)?);
        }
        Ok(())
    }

    /// Drops the versions no left row after `watermark` can meet.
    fn prune(&mut self, watermark: i64) -> Result<(), OperatorError> {
        let keys: Vec<OwnedRow> = self.to_prune.drain().collect();
        for key in keys {
            let Some(versions) = self.right.rows_of_mut(&key) else { continue };
            let Some(newest) = versions.iter().filter(|v| v.time <= watermark).map(|v| v.time).max() else {
                self.to_prune.insert(key);
                continue;
            };
            let later = versions.iter().any(|v| v.time > watermark);
            let gone = self.right.take_where(&key, |v| v.time < newest);
            self.right.release(&gone)?;
            if later {
                // A later version becomes the valid one when the watermark passes it.
                self.to_prune.insert(key);
            }
        }
        Ok(())
    }
}

impl Operator for TemporalJoinOperator {
    fn name(&self) -> &'static str {
        "temporal_join"
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
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let watermark = ctx.watermark.max(self.watermark_floor).0;
        let (keys, nulls) = self.left.key_columns(&batch)?;
        let converted = self.converter.convert_columns(&keys)?;
        let times = millis(batch.column(self.left_time))?;
        let id = self.left.add_batch(batch);
        let mut late = Vec::new();
        for (i, time) in times.into_iter().enumerate() {
            // A row without a time has no version: it is late, as one behind the watermark.
            let row = HeldRow {
                batch: id,
                row: i as u32,
                time: time.unwrap_or(i64::MIN),
                expires: time.unwrap_or(i64::MIN),
                matched: false,
                unmatchable: nulls[i] || time.is_none(),
            };
            if row.time > watermark {
                self.left.hold(converted.row(i).owned(), row);
            } else {
                late.push((converted.row(i).owned(), row));
            }
        }
        ctx.late_records.inc_by(late.len() as u64);
        self.emit(&late, out)?;
        self.left.release_batch_if_unused(id);
        Ok(())
    }

    fn process_input(
        &mut self,
        input: usize,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        if input != 1 {
            return Err(OperatorError::Invalid(format!("a join has two inputs, not input {input}")));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let (keys, nulls) = self.right.key_columns(&batch)?;
        let converted = self.converter.convert_columns(&keys)?;
        let times = millis(batch.column(self.right_time))?;
        let id = self.right.add_batch(batch);
        for (i, time) in times.into_iter().enumerate() {
            // A version without a key or a time is valid for no row.
            let Some(time) = time.filter(|_| !nulls[i]) else { continue };
            let key = converted.row(i).owned();
            let row = HeldRow {
                batch: id,
                row: i as u32,
                time,
                expires: i64::MAX,
                matched: false,
                unmatchable: false,
            };
            self.right.hold(key.clone(), row);
            self.to_prune.insert(key);
        }
        self.right.release_batch_if_unused(id);
        Ok(())
    }

    fn handle_watermark(
        &mut self,
        watermark: Watermark,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let watermark = watermark.max(self.watermark_floor).0;
        let due = self.left.expire_keyed(watermark);
        self.emit(&due, out)?;
        let rows: Vec<HeldRow> = due.into_iter().map(|(_, row)| row).collect();
        self.left.release(&rows)?;
        self.prune(watermark)
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
        self.to_prune = self.right.keys().into_iter().collect();
        if let Some(watermark) = self.watermark_table.take_restored(&mut tables, ctx)? {
            self.watermark_floor = watermark;
        }
        refuse_unknown_tables(self.name(), &tables)
    }
}

#[cfg(test)]
#[path = "temporal_join_tests.rs"]
mod tests;
