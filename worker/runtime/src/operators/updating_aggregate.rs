//! `GROUP BY k1, k2` without a window (Flink's non-windowed group aggregate), `SELECT
//! DISTINCT` and `GROUP BY` without aggregates.
//!
//! Each key holds DataFusion accumulators, so every SQL aggregate DataFusion offers works
//! here, `COUNT(DISTINCT x)` included (its accumulator keeps the distinct values). The
//! operator works per batch (Flink's mini-batch): rows are grouped by key with Arrow's row
//! format, each changed key's accumulators are updated once, and the batch yields one output
//! row per changed key with its current value, as an upsert of that key (`+I` the first
//! time, `+U` after; see [`millrace_types::changelog`]). Without aggregates a key is emitted
//! once, when first seen, and the output is append-only (no row-kind column).
//!
//! State: the accumulators (or, for DISTINCT, the keys seen) per key; it grows with the
//! number of keys unless the job sets a state TTL (`table.exec.state.ttl`, see
//! [`super::group_ttl`]: a key not written for the TTL is dropped, without output, and a later
//! row of it starts afresh with `+I`). Watermarks pass through untouched (they only trigger
//! the TTL's sweep). At a checkpoint the table `group_accumulators` holds one row per key (the
//! key columns, then the accumulators' state); for DISTINCT, `distinct_keys` holds the keys
//! seen; with a TTL, `group_expiry` holds each key's expiry time. Its size in memory is kept
//! up to date for the process's state budget ([`crate::state_budget`]).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::row::{OwnedRow, Row};
use datafusion_common::ScalarValue;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;
use millrace_types::RowKind;
use millrace_types::changelog::{row_kind_array, with_row_kind};

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::accumulator_state::AccumulatorState;
use crate::operators::group_keys::GroupKeys;
use crate::operators::group_ttl::GroupTtl;
use crate::operators::join::now_ms;
use crate::operators::state_table::{StateLayout, refuse_unknown_tables};
use crate::operators::window_aggregate::{aggregate_arguments, update_group};
use crate::operators::window_output::{GroupState, WindowOutput};
use crate::state::TableSnapshot;

/// What the planner hands the updating aggregate.
#[derive(Clone)]
pub struct UpdatingAggregateSpec {
    /// Group keys; empty for a global aggregate (one instance, behind a single exchange).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Empty for DISTINCT / GROUP BY without aggregates: insert-only output.
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// The logical output: the keys, then the aggregates. With aggregates the operator emits
    /// it with the row-kind column appended.
    pub output_schema: SchemaRef,
    /// The schema of the rows the operator receives (what the hash exchange hashes keys of).
    pub input_schema: SchemaRef,
    /// `table.exec.state.ttl`: a key not written for this long is dropped (`None`: kept
    /// forever). Not part of the operator's fingerprint: changing it keeps the state.
    pub ttl_ms: Option<i64>,
}

impl UpdatingAggregateSpec {
    /// DISTINCT-like: every key is emitted once, as an insert, and never changes.
    pub fn is_insert_only(&self) -> bool {
        self.aggregates.is_empty()
    }

    /// The schema of the batches the operator emits.
    pub fn emitted_schema(&self) -> SchemaRef {
        if self.is_insert_only() {
            Arc::clone(&self.output_schema)
        } else {
            Arc::new(with_row_kind(&self.output_schema))
        }
    }
}

/// One key's state.
struct Group {
    /// Empty for insert-only aggregates: the key was seen.
    accumulators: GroupState,
    /// When the key expires (wall clock ms; [`super::group_ttl::NEVER`] without a TTL).
    expires: i64,
}

/// The updating aggregate operator; see the module docs.
pub struct UpdatingAggregateOperator {
    spec: UpdatingAggregateSpec,
    schema: SchemaRef,
    keys: GroupKeys,
    groups: HashMap<OwnedRow, Group>,
    accumulator_state: AccumulatorState,
    layout: StateLayout,
    ttl: GroupTtl,
    /// Heap bytes of the groups beyond the map's own table: key bytes, accumulators.
    heap_bytes: usize,
}

/// The heap bytes one group holds beyond its slot in the map.
fn group_heap_bytes(key: &OwnedRow, group: &Group) -> usize {
    key.row().as_ref().len()
        + group.accumulators.capacity() * std::mem::size_of::<Box<dyn datafusion_expr::Accumulator>>()
        + accumulators_size(&group.accumulators)
}

/// What DataFusion says the accumulators hold (their own size included).
fn accumulators_size(accumulators: &GroupState) -> usize {
    accumulators.iter().map(|a| a.size()).sum()
}

impl UpdatingAggregateOperator {
    pub fn try_new(spec: UpdatingAggregateSpec) -> Result<Self, OperatorError> {
        let key_types: Vec<DataType> =
            spec.output_schema.fields().iter().take(spec.keys.len()).map(|f| f.data_type().clone()).collect();
        if key_types.len() != spec.keys.len() {
            return Err(OperatorError::Invalid("the output schema lacks key columns".into()));
        }
        let keys = GroupKeys::try_new(spec.keys.clone(), key_types, &spec.input_schema)?;
        let schema = spec.emitted_schema();
        let accumulator_state = AccumulatorState::try_new(&spec.aggregates)?;
        let scope = if spec.keys.is_empty() { StateScope::Instance } else { StateScope::KeyGroups };
        let name = if spec.is_insert_only() { "distinct_keys" } else { "group_accumulators" };
        let mut fields: Vec<_> = spec
            .output_schema
            .fields()
            .iter()
            .take(spec.keys.len())
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let key_fields = fields.clone();
        fields.extend(accumulator_state.fields());
        let layout = StateLayout::new(name, scope, fields);
        let ttl = GroupTtl::new(spec.ttl_ms, scope, key_fields);
        Ok(Self { spec, schema, keys, groups: HashMap::new(), accumulator_state, layout, ttl, heap_bytes: 0 })
    }

    /// Drops every group expired at `now` (when a sweep is due).
    fn sweep(&mut self, now: i64) {
        if !self.ttl.sweep_due(now) {
            return;
        }
        let mut freed = 0;
        self.groups.retain(|key, group| {
            let keep = !GroupTtl::is_expired(group.expires, now);
            if !keep {
                freed += group_heap_bytes(key, group);
            }
            keep
        });
        self.heap_bytes = self.heap_bytes.saturating_sub(freed);
    }

    /// [`Operator::process_batch`] at wall-clock time `now` (ms).
    fn process_at(
        &mut self,
        batch: RecordBatch,
        now: i64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        self.sweep(now);
        let rows = self.keys.rows(&batch)?;
        let arguments = aggregate_arguments(&self.spec.aggregates, &batch)?;
        // The batch's keys in order of first appearance, each with its row indices.
        let mut position: HashMap<Row<'_>, usize> = HashMap::new();
        let mut changed: Vec<(Row<'_>, Vec<u32>)> = Vec::new();
        for i in 0..batch.num_rows() {
            let row = rows.row(i);
            let at = *position.entry(row).or_insert_with(|| {
                changed.push((row, Vec::new()));
                changed.len() - 1
            });
            changed[at].1.push(i as u32);
        }
        let expires = self.ttl.expires(now);
        let mut keys = Vec::with_capacity(changed.len());
        let mut values = Vec::with_capacity(changed.len());
        let mut kinds = Vec::with_capacity(changed.len());
        for (row, indices) in changed {
            let key = row.owned();
            // An expired key is gone: its row starts afresh, as a new key.
            let live = self.groups.get(&key).filter(|g| !GroupTtl::is_expired(g.expires, now)).is_some();
            let kind = if !live {
                let group =
                    Group { accumulators: WindowOutput::accumulators(&self.spec.aggregates)?, expires };
                let added = group_heap_bytes(&key, &group);
                if let Some(old) = self.groups.insert(key.clone(), group) {
                    self.heap_bytes = self.heap_bytes.saturating_sub(group_heap_bytes(&key, &old));
                }
                self.heap_bytes += added;
                RowKind::Insert
            } else if self.spec.is_insert_only() {
                // Seen before: a DISTINCT key's write refreshes its TTL, nothing is emitted.
                if let Some(group) = self.groups.get_mut(&key) {
                    group.expires = expires;
                }
                continue;
            } else {
                RowKind::UpdateAfter
            };
            let Some(group) = self.groups.get_mut(&key) else { continue };
            group.expires = expires;
            let before = accumulators_size(&group.accumulators);
            update_group(&mut group.accumulators, &arguments, &UInt32Array::from(indices))?;
            values.push(WindowOutput::evaluate(&mut group.accumulators)?);
            let after = accumulators_size(&group.accumulators);
            self.heap_bytes = (self.heap_bytes + after).saturating_sub(before);
            keys.push(key);
            kinds.push(kind);
        }
        if !keys.is_empty() {
            out.push(self.build(&keys, values, kinds)?);
        }
        Ok(())
    }

    /// [`Operator::snapshot_state`] at wall-clock time `now`: expired keys are left out.
    fn snapshot_at(&mut self, now: i64, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let mut keys = Vec::with_capacity(self.groups.len());
        let mut expiry = Vec::with_capacity(if self.ttl.ttl_ms().is_some() { self.groups.len() } else { 0 });
        let mut state = self.accumulator_state.builder(&self.layout);
        // The snapshot replaces every accumulator (see `accumulator_state`): the heap is
        // counted again on the way.
        let mut heap = 0;
        for (key, group) in &mut self.groups {
            if !GroupTtl::is_expired(group.expires, now) {
                keys.push(key.clone());
                if self.ttl.ttl_ms().is_some() {
                    expiry.push(group.expires);
                }
                state.push_all(&mut group.accumulators)?;
            }
            heap += group_heap_bytes(key, group);
        }
        self.heap_bytes = heap;
        let rows = keys.len();
        let (mut columns, mut key_groups) = (Vec::new(), Vec::new());
        if self.keys.is_keyed() && rows > 0 {
            columns = self.keys.columns(keys.iter().map(|k| k.row()))?;
            key_groups = self.keys.key_groups(&columns, ctx.max_parallelism)?;
        }
        let key_columns = columns.clone();
        let expiry_groups = if self.keys.is_keyed() { key_groups.clone() } else { Vec::new() };
        columns.extend(state.finish()?);
        Ok(vec![
            self.layout.snapshot(key_groups, columns, rows)?,
            self.ttl.snapshot(expiry_groups, key_columns, expiry)?,
        ])
    }

    /// [`Operator::restore_state`] at wall-clock time `now`: keys without a restored expiry
    /// (a snapshot taken without a TTL) start their TTL now.
    fn restore_at(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        now: i64,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        let batches = self.layout.take_restored(&mut tables, ctx)?;
        let expiry = self.ttl.take_restored(&mut tables, ctx)?;
        refuse_unknown_tables(self.name(), &tables)?;
        let k = self.keys.count();
        let fresh = self.ttl.expires(now);
        for batch in batches {
            let keys = self.keys.rows_of_columns(&batch.columns()[..k], batch.num_rows())?;
            let state = &batch.columns()[k..];
            for i in 0..batch.num_rows() {
                let accumulators = self.accumulator_state.restore_all(&self.layout, state, i)?;
                let key = keys.row(i).owned();
                let group = Group { accumulators, expires: fresh };
                self.heap_bytes += group_heap_bytes(&key, &group);
                if self.groups.insert(key, group).is_some() {
                    return Err(self.layout.error("a key appears twice"));
                }
            }
        }
        for batch in expiry {
            let keys = self.keys.rows_of_columns(&batch.columns()[..k], batch.num_rows())?;
            for (i, expires) in self.ttl.expires_of(&batch)?.into_iter().enumerate() {
                match self.groups.get_mut(&keys.row(i).owned()) {
                    Some(group) => group.expires = expires,
                    None => return Err(self.ttl.error("has the expiry of a key with no accumulators")),
                }
            }
        }
        Ok(())
    }

    /// One output batch: the keys, their aggregate values, and (updating) their row kinds.
    fn build(
        &self,
        keys: &[OwnedRow],
        values: Vec<Vec<ScalarValue>>,
        kinds: Vec<RowKind>,
    ) -> Result<RecordBatch, OperatorError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        if !self.spec.keys.is_empty() {
            columns = self.keys.columns(keys.iter().map(|k| k.row()))?;
        }
        let key_count = self.spec.keys.len();
        for a in 0..self.spec.aggregates.len() {
            let field_type = self.schema.field(key_count + a).data_type();
            let array = ScalarValue::iter_to_array(values.iter().map(|v| v[a].clone()))?;
            columns.push(if array.data_type() == field_type { array } else { cast(&array, field_type)? });
        }
        if !self.spec.is_insert_only() {
            columns.push(row_kind_array(kinds));
        }
        let options = RecordBatchOptions::new().with_row_count(Some(keys.len()));
        Ok(RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?)
    }
}

impl Operator for UpdatingAggregateOperator {
    fn name(&self) -> &'static str {
        if self.spec.is_insert_only() { "distinct" } else { "updating_aggregate" }
    }

    fn state_tables(&self) -> Vec<StateTable> {
        vec![self.layout.table(), self.ttl.table()]
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        self.process_at(batch, now_ms(), out)
    }

    fn handle_watermark(
        &mut self,
        _watermark: millrace_types::Watermark,
        _ctx: &OperatorContext,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        self.sweep(now_ms());
        Ok(())
    }

    fn state_bytes(&self) -> usize {
        // The map's table (each slot a key, a group and a control byte), then the heap.
        self.groups.capacity() * (std::mem::size_of::<(OwnedRow, Group)>() + 1) + self.heap_bytes
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        self.snapshot_at(now_ms(), ctx)
    }

    fn restore_state(
        &mut self,
        tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        self.restore_at(tables, now_ms(), ctx)
    }
}

#[cfg(test)]
#[path = "updating_aggregate_tests.rs"]
mod tests;
