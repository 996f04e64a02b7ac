//! State TTL of the updating aggregate's groups: Flink's `table.exec.state.ttl` on a
//! non-windowed `GROUP BY` or `DISTINCT`, on the same time as the regular join's TTL — the wall
//! clock, counted from the group's last write (Flink's `OnCreateAndWrite`, processing time).
//! A group not written for the TTL is expired: it is never read again (a later row of its key
//! starts a fresh group, as Flink's `NeverReturnExpired`), and it is dropped from memory by a
//! sweep that runs at most every [`sweep_interval_ms`] (on a batch or watermark), and left out
//! of snapshots. Expiry emits nothing, as in Flink.
//!
//! Each group's expiry time is absolute (ms since the epoch), so it survives a checkpoint
//! and a restore at any parallelism unchanged: it is written, per key, to its own keyed table
//! `group_expiry` beside the accumulators. A snapshot without that table (taken before the
//! job had a TTL) restores with every group's TTL starting at the restore; a TTL dropped from
//! the job ignores the table. It owns no groups; the operator asks it when they expire.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type};
use arrow::record_batch::RecordBatch;

use super::state_table::StateLayout;
use crate::error::OperatorError;
use crate::operator::{OperatorContext, StateScope, StateTable};
use crate::state::TableSnapshot;

/// Expiry time of a group that never expires (no TTL).
pub(crate) const NEVER: i64 = i64::MAX;

/// How often expired groups are swept out of memory: a quarter of the TTL, between 10 ms and
/// a minute (a sweep walks every group).
pub(crate) fn sweep_interval_ms(ttl_ms: i64) -> i64 {
    (ttl_ms / 4).clamp(10, 60_000)
}

/// The TTL policy and its state table; see the module docs.
pub(crate) struct GroupTtl {
    ttl_ms: Option<i64>,
    next_sweep_ms: i64,
    layout: StateLayout,
}

impl GroupTtl {
    /// `key_fields`: the group key's columns as the accumulator table has them.
    pub fn new(ttl_ms: Option<i64>, scope: StateScope, key_fields: Vec<Field>) -> Self {
        let mut fields = key_fields;
        fields.push(Field::new("expires", DataType::Int64, false));
        Self {
            ttl_ms: ttl_ms.filter(|t| *t > 0),
            next_sweep_ms: i64::MIN,
            layout: StateLayout::new("group_expiry", scope, fields),
        }
    }

    pub fn table(&self) -> StateTable {
        self.layout.table()
    }

    pub fn ttl_ms(&self) -> Option<i64> {
        self.ttl_ms
    }

    /// When a group written at `now` expires.
    pub fn expires(&self, now: i64) -> i64 {
        self.ttl_ms.map_or(NEVER, |ttl| now.saturating_add(ttl))
    }

    /// Whether a group expiring at `expires` is gone at `now`.
    pub fn is_expired(expires: i64, now: i64) -> bool {
        expires <= now
    }

    /// Whether a sweep is due at `now` (then the next one is scheduled).
    pub fn sweep_due(&mut self, now: i64) -> bool {
        let Some(ttl) = self.ttl_ms else { return false };
        if now < self.next_sweep_ms {
            return false;
        }
        self.next_sweep_ms = now.saturating_add(sweep_interval_ms(ttl));
        true
    }

    /// The table: for each group, its key columns (`key_columns`, as the accumulator table
    /// has them; none for a global aggregate) and `expires`. Empty without a TTL.
    pub fn snapshot(
        &self,
        key_groups: Vec<u32>,
        key_columns: Vec<ArrayRef>,
        expires: Vec<i64>,
    ) -> Result<TableSnapshot, OperatorError> {
        if self.ttl_ms.is_none() {
            return self.layout.snapshot(Vec::new(), Vec::new(), 0);
        }
        let rows = expires.len();
        let mut columns = key_columns;
        columns.push(Arc::new(Int64Array::from(expires)));
        self.layout.snapshot(key_groups, columns, rows)
    }

    /// Takes the restored table out of `tables`, checked; its batches are the key columns
    /// then `expires`. Nothing when the job has no TTL (the table is dropped).
    pub fn take_restored(
        &self,
        tables: &mut Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<Vec<RecordBatch>, OperatorError> {
        if self.ttl_ms.is_none() {
            tables.retain(|t| t.name != self.layout.table().name);
            return Ok(Vec::new());
        }
        self.layout.take_restored(tables, ctx)
    }

    /// The `expires` column of a restored batch.
    pub fn expires_of(&self, batch: &RecordBatch) -> Result<Vec<i64>, OperatorError> {
        let column = batch.column(batch.num_columns() - 1);
        let expires = column
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| self.layout.error(format!("expires is {}, not BIGINT", column.data_type())))?;
        if expires.null_count() > 0 {
            return Err(self.layout.error("expires holds nulls"));
        }
        Ok(expires.values().to_vec())
    }

    /// An error about this table.
    pub fn error(&self, message: impl std::fmt::Display) -> OperatorError {
        self.layout.error(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_run_at_most_every_quarter_ttl() {
        let mut ttl = GroupTtl::new(Some(1_000), StateScope::KeyGroups, Vec::new());
        assert!(ttl.sweep_due(5_000));
        assert!(!ttl.sweep_due(5_249));
        assert!(ttl.sweep_due(5_250));
        assert_eq!(sweep_interval_ms(1), 10);
        assert_eq!(sweep_interval_ms(86_400_000), 60_000);
        let mut none = GroupTtl::new(None, StateScope::KeyGroups, Vec::new());
        assert!(!none.sweep_due(5_000), "no TTL: nothing to sweep");
        assert_eq!(none.expires(5_000), NEVER);
        assert_eq!(ttl.expires(5_000), 6_000);
        assert!(GroupTtl::is_expired(6_000, 6_000));
        assert!(!GroupTtl::is_expired(6_000, 5_999));
    }
}
