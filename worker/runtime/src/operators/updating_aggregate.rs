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
//! number of keys (there is no state TTL yet). Watermarks pass through untouched. At a
//! checkpoint the table `group_accumulators` holds one row per key (the key columns, then the
//! accumulators' state); for DISTINCT, `distinct_keys` holds the keys seen.

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

/// The updating aggregate operator; see the module docs.
pub struct UpdatingAggregateOperator {
    spec: UpdatingAggregateSpec,
    schema: SchemaRef,
    keys: GroupKeys,
    /// Key → accumulators (empty for insert-only aggregates: the key was seen).
    groups: HashMap<OwnedRow, GroupState>,
    accumulator_state: AccumulatorState,
    layout: StateLayout,
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
        fields.extend(accumulator_state.fields());
        let layout = StateLayout::new(name, scope, fields);
        Ok(Self { spec, schema, keys, groups: HashMap::new(), accumulator_state, layout })
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
        vec![self.layout.table()]
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
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
        let mut keys = Vec::with_capacity(changed.len());
        let mut values = Vec::with_capacity(changed.len());
        let mut kinds = Vec::with_capacity(changed.len());
        for (row, indices) in changed {
            let key = row.owned();
            let kind = if !self.groups.contains_key(&key) {
                self.groups.insert(key.clone(), WindowOutput::accumulators(&self.spec.aggregates)?);
                RowKind::Insert
            } else if self.spec.is_insert_only() {
                continue;
            } else {
                RowKind::UpdateAfter
            };
            let Some(group) = self.groups.get_mut(&key) else { continue };
            update_group(group, &arguments, &UInt32Array::from(indices))?;
            values.push(WindowOutput::evaluate(group)?);
            keys.push(key);
            kinds.push(kind);
        }
        if !keys.is_empty() {
            out.push(self.build(&keys, values, kinds)?);
        }
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let mut keys = Vec::with_capacity(self.groups.len());
        let mut state = self.accumulator_state.builder(&self.layout);
        for (key, group) in &mut self.groups {
            keys.push(key.clone());
            state.push_all(group)?;
        }
        let rows = keys.len();
        let (mut columns, mut key_groups) = (Vec::new(), Vec::new());
        if self.keys.is_keyed() && rows > 0 {
            columns = self.keys.columns(keys.iter().map(|k| k.row()))?;
            key_groups = self.keys.key_groups(&columns, ctx.max_parallelism)?;
        }
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
        let k = self.keys.count();
        for batch in batches {
            let keys = self.keys.rows_of_columns(&batch.columns()[..k], batch.num_rows())?;
            let state = &batch.columns()[k..];
            for i in 0..batch.num_rows() {
                let accumulators = self.accumulator_state.restore_all(&self.layout, state, i)?;
                if self.groups.insert(keys.row(i).owned(), accumulators).is_some() {
                    return Err(self.layout.error("a key appears twice"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;
    use millrace_types::changelog::split_row_kinds;
    use millrace_types::{SubtaskIndex, Watermark};

    use super::*;

    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn batch(rows: &[(&str, i64)]) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            ],
        )
        .expect("batch")
    }

    fn ctx() -> OperatorContext {
        OperatorContext {
            subtask: SubtaskIndex(0),
            parallelism: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            key_groups: crate::state::KeyGroupRange {
                first: 0,
                last: millrace_types::DEFAULT_MAX_PARALLELISM - 1,
            },
            watermark: Watermark::MIN,
            late_records: Default::default(),
        }
    }

    fn aggregate(distinct_count: bool) -> UpdatingAggregateOperator {
        let schema = input_schema();
        let v = col("v", &schema).expect("v");
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![Arc::clone(&v)])
            .schema(Arc::clone(&schema))
            .alias("total")
            .build()
            .expect("sum");
        let count = AggregateExprBuilder::new(count_udaf(), vec![v])
            .schema(Arc::clone(&schema))
            .alias("n")
            .with_distinct(distinct_count)
            .build()
            .expect("count");
        UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
            keys: vec![col("k", &schema).expect("k")],
            aggregates: vec![Arc::new(sum), Arc::new(count)],
            output_schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("total", DataType::Int64, true),
                Field::new("n", DataType::Int64, false),
            ])),
            input_schema: Arc::clone(&schema),
        })
        .expect("operator")
    }

    /// (key, total, n, kind) per output row.
    fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, i64, RowKind)> {
        let mut out = Vec::new();
        for b in batches {
            let (logical, kinds) = split_row_kinds(b).expect("changelog");
            let kinds = kinds.expect("an updating aggregate emits row kinds");
            let k = logical.column(0).as_string::<i32>();
            let total = logical.column(1).as_primitive::<Int64Type>();
            let n = logical.column(2).as_primitive::<Int64Type>();
            for (i, kind) in kinds.into_iter().enumerate() {
                out.push((k.value(i).to_string(), total.value(i), n.value(i), kind));
            }
        }
        out
    }

    #[test]
    fn each_batch_emits_the_current_value_of_every_key_it_changed_once() {
        let mut op = aggregate(false);
        let mut out = Vec::new();
        op.process_batch(batch(&[("a", 1), ("b", 2), ("a", 3)]), &ctx(), &mut out).expect("batch 1");
        assert_eq!(
            rows(&out),
            vec![("a".into(), 4, 2, RowKind::Insert), ("b".into(), 2, 1, RowKind::Insert)]
        );
        out.clear();
        op.process_batch(batch(&[("c", 5), ("a", 10), ("a", 1)]), &ctx(), &mut out).expect("batch 2");
        assert_eq!(
            rows(&out),
            vec![("c".into(), 5, 1, RowKind::Insert), ("a".into(), 15, 4, RowKind::UpdateAfter)],
            "one row per changed key, b unchanged is not emitted"
        );
        let mut watermark_out = Vec::new();
        op.handle_watermark(Watermark(1000), &ctx(), &mut watermark_out).expect("watermark");
        assert!(watermark_out.is_empty(), "a watermark emits nothing");
    }

    #[test]
    fn count_distinct_counts_each_value_once() {
        let mut op = aggregate(true);
        let mut out = Vec::new();
        op.process_batch(batch(&[("a", 1), ("a", 1), ("a", 2)]), &ctx(), &mut out).expect("batch 1");
        op.process_batch(batch(&[("a", 2), ("a", 3)]), &ctx(), &mut out).expect("batch 2");
        assert_eq!(
            rows(&out),
            vec![("a".into(), 4, 2, RowKind::Insert), ("a".into(), 9, 3, RowKind::UpdateAfter)]
        );
    }

    #[test]
    fn distinct_emits_each_key_once_as_an_append_only_stream() {
        let schema = input_schema();
        let mut op = UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
            keys: vec![col("k", &schema).expect("k"), col("v", &schema).expect("v")],
            aggregates: Vec::new(),
            output_schema: Arc::clone(&schema),
            input_schema: Arc::clone(&schema),
        })
        .expect("operator");
        let mut out = Vec::new();
        op.process_batch(batch(&[("a", 1), ("a", 1), ("b", 1)]), &ctx(), &mut out).expect("batch 1");
        op.process_batch(batch(&[("a", 1), ("a", 2)]), &ctx(), &mut out).expect("batch 2");
        assert!(out.iter().all(|b| b.schema() == schema), "no row-kind column: insert-only");
        let got: Vec<(String, i64)> = out
            .iter()
            .flat_map(|b| {
                let k = b.column(0).as_string::<i32>().clone();
                let v = b.column(1).as_primitive::<Int64Type>().clone();
                (0..b.num_rows()).map(move |i| (k.value(i).to_string(), v.value(i)))
            })
            .collect();
        assert_eq!(got, vec![("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
        assert_eq!(op.name(), "distinct");
    }

    #[test]
    fn state_tables_are_per_key_group_when_keyed_and_per_instance_when_global() {
        assert_eq!(
            aggregate(false).state_tables(),
            vec![StateTable { name: "group_accumulators", scope: StateScope::KeyGroups }]
        );
        let schema = input_schema();
        let count = AggregateExprBuilder::new(count_udaf(), vec![col("v", &schema).expect("v")])
            .schema(Arc::clone(&schema))
            .alias("n")
            .build()
            .expect("count");
        let mut global = UpdatingAggregateOperator::try_new(UpdatingAggregateSpec {
            keys: Vec::new(),
            aggregates: vec![Arc::new(count)],
            output_schema: Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)])),
            input_schema: Arc::clone(&schema),
        })
        .expect("operator");
        assert_eq!(
            global.state_tables(),
            vec![StateTable { name: "group_accumulators", scope: StateScope::Instance }]
        );
        let mut out = Vec::new();
        global.process_batch(batch(&[("a", 1), ("b", 2)]), &ctx(), &mut out).expect("batch 1");
        global.process_batch(batch(&[("c", 3)]), &ctx(), &mut out).expect("batch 2");
        let counts: Vec<(i64, RowKind)> = out
            .iter()
            .map(|b| {
                let (logical, kinds) = split_row_kinds(b).expect("split");
                (logical.column(0).as_primitive::<Int64Type>().value(0), kinds.expect("kinds")[0])
            })
            .collect();
        assert_eq!(counts, vec![(2, RowKind::Insert), (3, RowKind::UpdateAfter)]);
    }
}
