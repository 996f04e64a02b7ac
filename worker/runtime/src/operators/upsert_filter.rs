//! `WHERE` / `HAVING` on an upsert stream (downstream of an updating aggregate).
//!
//! Dropping a row that no longer passes would leave the key's previous row standing in the
//! sink, so the filter remembers which keys it has passed on (and not deleted since): an
//! upsert that passes is forwarded and its key remembered; an upsert that fails becomes a
//! delete (`-D`) of its key if that key was passed on before, and is dropped otherwise; a
//! delete from upstream is forwarded only for a key that was passed on. So a sink never sees
//! a delete for a key it was never given. The predicate is evaluated vectorized over the
//! batch; the key bookkeeping is one hash lookup per row.
//!
//! State (`passed_keys`): the keys passed on and not deleted since. The filter runs in the
//! stage of the updating aggregate it follows, behind the hash exchange on the aggregate's
//! group keys; its key columns are those keys, possibly cast by a projection in between, so
//! their key groups are computed over the types the exchange hashed (cast back to them).

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_physical_expr::PhysicalExpr;
use millrace_types::RowKind;
use millrace_types::changelog::{row_kind_array, split_row_kinds};

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};
use crate::operators::state_table::{StateLayout, refuse_unknown_tables};
use crate::state::{TableSnapshot, key_groups_as};

/// Filters an upsert stream keyed by `key` (column indices of its batches).
pub struct UpsertFilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
    key: Vec<usize>,
    converter: RowConverter,
    /// Keys whose last forwarded row was an upsert.
    passed: HashSet<OwnedRow>,
    /// The type the hash exchange hashed each key column as.
    exchange_key_types: Vec<DataType>,
    layout: StateLayout,
}

impl UpsertFilterOperator {
    /// `schema`: the logical input (without the row-kind column); `key`: the upsert key's
    /// column indices in it (empty for a global aggregate: one implicit key);
    /// `exchange_key_types`: the type the hash exchange in front of the updating aggregate
    /// hashed each key column as (the type its group expression evaluates to).
    pub fn try_new(
        predicate: Arc<dyn PhysicalExpr>,
        key: Vec<usize>,
        schema: &SchemaRef,
        exchange_key_types: Vec<DataType>,
    ) -> Result<Self, OperatorError> {
        if exchange_key_types.len() != key.len() {
            return Err(OperatorError::Invalid(format!(
                "{} upsert key columns but {} exchange key types",
                key.len(),
                exchange_key_types.len()
            )));
        }
        let layout = if key.is_empty() {
            StateLayout::new(
                "passed_keys",
                StateScope::Instance,
                vec![Field::new("passed", DataType::Boolean, false)],
            )
        } else {
            let fields = key
                .iter()
                .filter_map(|&i| schema.fields().get(i).map(|f| f.as_ref().clone().with_nullable(true)))
                .collect();
            StateLayout::new("passed_keys", StateScope::KeyGroups, fields)
        };
        let fields = if key.is_empty() {
            vec![SortField::new(DataType::Boolean)]
        } else {
            key.iter()
                .map(|&i| {
                    schema.fields().get(i).map(|f| SortField::new(f.data_type().clone())).ok_or_else(|| {
                        OperatorError::Invalid(format!("upsert key column {i} is not in the input"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Self {
            predicate,
            key,
            converter: RowConverter::new(fields)?,
            passed: HashSet::new(),
            exchange_key_types,
            layout,
        })
    }
}

impl Operator for UpsertFilterOperator {
    fn name(&self) -> &'static str {
        "upsert_filter"
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
        let (logical, kinds) = split_row_kinds(&batch)?;
        let rows = batch.num_rows();
        let kinds = kinds.unwrap_or_else(|| vec![RowKind::Insert; rows]);
        let mask = self.predicate.evaluate(&logical)?.into_array(rows)?;
        if mask.data_type() != &DataType::Boolean {
            return Err(OperatorError::Invalid(format!("filter predicate has type {}", mask.data_type())));
        }
        let mask = mask.as_boolean();
        let key_columns = if self.key.is_empty() {
            vec![Arc::new(BooleanArray::from(vec![true; rows])) as ArrayRef]
        } else {
            self.key.iter().map(|&i| Arc::clone(logical.column(i))).collect::<Vec<_>>()
        };
        let keys = self.converter.convert_columns(&key_columns)?;
        let mut indices = Vec::new();
        let mut out_kinds = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            // NULL counts as false, as in SQL.
            let passes = kind.is_upsert() && mask.is_valid(i) && mask.value(i);
            let key = keys.row(i).owned();
            if passes {
                self.passed.insert(key);
                indices.push(i as u32);
                out_kinds.push(*kind);
            } else if self.passed.remove(&key) {
                indices.push(i as u32);
                out_kinds.push(RowKind::Delete);
            }
        }
        if indices.is_empty() {
            return Ok(());
        }
        let mut kept = take_record_batch(&batch, &UInt32Array::from(indices))?;
        let kind_column = kept.num_columns() - 1;
        let schema = kept.schema();
        let mut columns = kept.columns().to_vec();
        if schema.field(kind_column).name() == millrace_types::changelog::ROW_KIND_COLUMN {
            columns[kind_column] = row_kind_array(out_kinds);
            kept = RecordBatch::try_new(schema, columns)?;
        } else if out_kinds.iter().any(|k| !k.is_upsert()) {
            return Err(OperatorError::Invalid("an append-only input cannot carry deletes".into()));
        }
        out.push(kept);
        Ok(())
    }

    fn snapshot_state(&mut self, ctx: &OperatorContext) -> Result<Vec<TableSnapshot>, OperatorError> {
        let rows = self.passed.len();
        if rows == 0 {
            return Ok(vec![self.layout.snapshot(Vec::new(), Vec::new(), 0)?]);
        }
        if self.key.is_empty() {
            let passed: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
            return Ok(vec![self.layout.snapshot(Vec::new(), vec![passed], 1)?]);
        }
        let columns = self.converter.convert_rows(self.passed.iter().map(|k| k.row()))?;
        let key_groups = key_groups_as(&columns, &self.exchange_key_types, ctx.max_parallelism)?;
        Ok(vec![self.layout.snapshot(key_groups, columns, rows)?])
    }

    fn restore_state(
        &mut self,
        mut tables: Vec<TableSnapshot>,
        ctx: &OperatorContext,
    ) -> Result<(), OperatorError> {
        let batches = self.layout.take_restored(&mut tables, ctx)?;
        refuse_unknown_tables(self.name(), &tables)?;
        for batch in batches {
            let keys = if self.key.is_empty() {
                // The one implicit key, as `process_batch` encodes it.
                let constant: ArrayRef = Arc::new(BooleanArray::from(vec![true; batch.num_rows()]));
                self.converter.convert_columns(&[constant])?
            } else {
                self.converter.convert_columns(batch.columns())?
            };
            self.passed.extend(keys.iter().map(|k| k.owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::logical_expr::Operator as BinaryOperator;
    use datafusion::physical_expr::expressions::{binary, col, lit};
    use millrace_types::changelog::with_row_kind;
    use millrace_types::{SubtaskIndex, Watermark};

    use super::*;

    fn logical_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]))
    }

    fn changelog(rows: &[(&str, i64, RowKind)]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(with_row_kind(&logical_schema())),
            vec![
                Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(Int64Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
                row_kind_array(rows.iter().map(|r| r.2)),
            ],
        )
        .expect("batch")
    }

    fn rows(batches: &[RecordBatch]) -> Vec<(String, i64, RowKind)> {
        let mut out = Vec::new();
        for b in batches {
            let (logical, kinds) = split_row_kinds(b).expect("split");
            let kinds = kinds.expect("kinds");
            for (i, kind) in kinds.iter().enumerate() {
                out.push((
                    logical.column(0).as_string::<i32>().value(i).to_string(),
                    logical.column(1).as_primitive::<Int64Type>().value(i),
                    *kind,
                ));
            }
        }
        out
    }

    #[test]
    fn an_update_that_stops_passing_deletes_its_key_once_and_only_if_emitted() {
        let schema = logical_schema();
        // HAVING n < 3
        let predicate =
            binary(col("n", &schema).expect("n"), BinaryOperator::Lt, lit(3i64), &schema).expect("predicate");
        let mut filter =
            UpsertFilterOperator::try_new(predicate, vec![0], &schema, vec![DataType::Utf8]).expect("filter");
        let ctx = OperatorContext {
            subtask: SubtaskIndex(0),
            parallelism: 1,
            max_parallelism: millrace_types::DEFAULT_MAX_PARALLELISM,
            key_groups: crate::state::KeyGroupRange {
                first: 0,
                last: millrace_types::DEFAULT_MAX_PARALLELISM - 1,
            },
            watermark: Watermark::MIN,
            late_records: Default::default(),
        };
        let mut out = Vec::new();
        filter
            .process_batch(changelog(&[("a", 1, RowKind::Insert), ("b", 5, RowKind::Insert)]), &ctx, &mut out)
            .expect("batch 1");
        filter
            .process_batch(
                changelog(&[("a", 3, RowKind::UpdateAfter), ("b", 6, RowKind::UpdateAfter)]),
                &ctx,
                &mut out,
            )
            .expect("batch 2");
        filter.process_batch(changelog(&[("a", 4, RowKind::UpdateAfter)]), &ctx, &mut out).expect("batch 3");
        assert_eq!(
            rows(&out),
            vec![("a".into(), 1, RowKind::Insert), ("a".into(), 3, RowKind::Delete)],
            "b never passed, so it is never deleted; a is deleted once"
        );
        assert_eq!(
            filter.state_tables(),
            vec![StateTable { name: "passed_keys", scope: StateScope::KeyGroups }]
        );
    }
}
