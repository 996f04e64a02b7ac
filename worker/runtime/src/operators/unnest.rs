//! `UNNEST(list)`: one output row per element of a list column, the row's other columns
//! repeated, per batch with Arrow kernels (the lists' offsets give `take` indices). With
//! several list columns a row yields as many rows as its longest list, shorter lists padded
//! with NULL (DataFusion's semantics). A NULL or empty list yields no rows (DataFusion's
//! default for SQL, `preserve_nulls = false`). Stateless; it chains into its stage.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::RecordBatch;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext};

/// What the planner hands the unnest operator.
#[derive(Debug, Clone)]
pub struct UnnestSpec {
    /// The input columns holding the lists to unnest (one level deep).
    pub list_columns: Vec<usize>,
    /// For each output column, the input column it comes from: a list column yields its
    /// elements, any other column is repeated.
    pub dependencies: Vec<usize>,
    pub output_schema: SchemaRef,
}

/// The unnest operator; see the module docs.
pub struct UnnestOperator {
    spec: UnnestSpec,
}

/// One list column of a batch: per row its first element's position in `values` and its
/// length (0 for NULL).
struct Lists {
    starts: Vec<usize>,
    lengths: Vec<usize>,
    values: ArrayRef,
}

impl Lists {
    fn of(array: &ArrayRef) -> Result<Self, OperatorError> {
        let array = match array.data_type() {
            DataType::List(_) | DataType::LargeList(_) => Arc::clone(array),
            DataType::FixedSizeList(field, _)
            | DataType::ListView(field)
            | DataType::LargeListView(field) => cast(array, &DataType::LargeList(Arc::clone(field)))?,
            other => return Err(OperatorError::Invalid(format!("UNNEST needs a list column, got {other}"))),
        };
        let (starts, lengths, values) = if let Some(list) = array.as_list_opt::<i32>() {
            let offsets = list.value_offsets();
            let bounds =
                (0..list.len()).map(|i| (offsets[i] as usize, (offsets[i + 1] - offsets[i]) as usize));
            let (starts, lengths): (Vec<_>, Vec<_>) =
                bounds.enumerate().map(|(i, (s, l))| (s, if list.is_null(i) { 0 } else { l })).unzip();
            (starts, lengths, Arc::clone(list.values()))
        } else if let Some(list) = array.as_list_opt::<i64>() {
            let offsets = list.value_offsets();
            let bounds =
                (0..list.len()).map(|i| (offsets[i] as usize, (offsets[i + 1] - offsets[i]) as usize));
            let (starts, lengths): (Vec<_>, Vec<_>) =
                bounds.enumerate().map(|(i, (s, l))| (s, if list.is_null(i) { 0 } else { l })).unzip();
            (starts, lengths, Arc::clone(list.values()))
        } else {
            return Err(OperatorError::Invalid(format!("UNNEST cannot read {}", array.data_type())));
        };
        Ok(Self { starts, lengths, values })
    }
}

impl UnnestOperator {
    pub fn new(spec: UnnestSpec) -> Self {
        Self { spec }
    }
}

fn as_index(i: usize) -> Result<u32, OperatorError> {
    u32::try_from(i).map_err(|_| OperatorError::Invalid("an unnested batch exceeds 2^32 rows".into()))
}

impl Operator for UnnestOperator {
    fn name(&self) -> &'static str {
        "unnest"
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let lists = self
            .spec
            .list_columns
            .iter()
            .map(|&c| Lists::of(batch.column(c)))
            .collect::<Result<Vec<_>, _>>()?;
        let counts: Vec<usize> = (0..batch.num_rows())
            .map(|row| lists.iter().map(|l| l.lengths[row]).max().unwrap_or(0))
            .collect();
        let mut repeat = Vec::with_capacity(counts.iter().sum());
        for (row, &count) in counts.iter().enumerate() {
            let row = as_index(row)?;
            repeat.extend(std::iter::repeat_n(row, count));
        }
        if repeat.is_empty() {
            return Ok(());
        }
        let repeat = UInt32Array::from(repeat);
        let mut unnested: Vec<ArrayRef> = Vec::with_capacity(lists.len());
        for list in &lists {
            let mut indices = Vec::with_capacity(repeat.len());
            for (row, &count) in counts.iter().enumerate() {
                for j in 0..count {
                    indices.push(if j < list.lengths[row] {
                        Some(as_index(list.starts[row] + j)?)
                    } else {
                        None
                    });
                }
            }
            unnested.push(take(list.values.as_ref(), &UInt32Array::from(indices), None)?);
        }
        let schema = &self.spec.output_schema;
        let mut columns = Vec::with_capacity(self.spec.dependencies.len());
        for (field, &input) in schema.fields().iter().zip(&self.spec.dependencies) {
            let array = match self.spec.list_columns.iter().position(|&c| c == input) {
                Some(list) => Arc::clone(&unnested[list]),
                None => take(batch.column(input).as_ref(), &repeat, None)?,
            };
            columns.push(conform(array, field)?);
        }
        out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
        Ok(())
    }
}

fn conform(array: ArrayRef, field: &Field) -> Result<ArrayRef, OperatorError> {
    Ok(if array.data_type() == field.data_type() { array } else { cast(&array, field.data_type())? })
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, ListArray, StringArray};
    use arrow::datatypes::{Int64Type, Schema};
    use millrace_types::{SubtaskIndex, Watermark};
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn unnests_lists_and_drops_null_and_empty_ones() {
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
            Some(vec![]),
            Some(vec![Some(3), None]),
        ]);
        let input = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("xs", lists.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&input),
            vec![Arc::new(StringArray::from(vec!["a", "b", "c", "d"])), Arc::new(lists)],
        )
        .expect("batch");
        let output = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("x", DataType::Int64, true),
        ]));
        let mut op = UnnestOperator::new(UnnestSpec {
            list_columns: vec![1],
            dependencies: vec![0, 1],
            output_schema: output,
        });
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
        let mut out = Vec::new();
        op.process_batch(batch, &ctx, &mut out).expect("unnest");
        assert_eq!(out.len(), 1);
        let ids: Vec<_> = out[0].column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(ids, vec!["a", "a", "d", "d"]);
        let xs = out[0].column(1).as_primitive::<Int64Type>();
        assert_eq!(xs, &Int64Array::from(vec![Some(1), Some(2), Some(3), None]));
    }
}
