//! Group keys as comparable, hashable rows: the key expressions of a keyed operator (window
//! aggregates, updating aggregates, OVER partitions) evaluated on a batch, cast to the key's
//! output type so that emitted keys round-trip exactly, and encoded with Arrow's row format.
//! A global operator (no keys) gets one constant key. For checkpoints it also computes the
//! key group of decoded keys exactly as the hash exchange in front of the operator does: over
//! the types the key expressions evaluate to on the operator's input, which the output types
//! may differ from. It owns no state.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion_physical_expr::PhysicalExpr;

use crate::error::OperatorError;
use crate::state::key_groups_as;

/// The key expressions of an operator and the row converter for them.
pub(crate) struct GroupKeys {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    types: Vec<DataType>,
    /// The type each key expression evaluates to on the operator's input: what the hash
    /// exchange hashes.
    exchange_types: Vec<DataType>,
    converter: RowConverter,
}

impl GroupKeys {
    /// `types`: the output type of each key expression (same length as `exprs`); `input`: the
    /// schema of the batches the operator receives (the exchange's output).
    pub fn try_new(
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        types: Vec<DataType>,
        input: &Schema,
    ) -> Result<Self, OperatorError> {
        if exprs.len() != types.len() {
            return Err(OperatorError::Invalid(format!(
                "{} key expressions but {} key types",
                exprs.len(),
                types.len()
            )));
        }
        let fields = if types.is_empty() {
            vec![SortField::new(DataType::Int8)]
        } else {
            types.iter().cloned().map(SortField::new).collect()
        };
        let exchange_types = exprs.iter().map(|e| e.data_type(input)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { exprs, types, exchange_types, converter: RowConverter::new(fields)? })
    }

    /// How many key columns (0 for a global operator).
    pub fn count(&self) -> usize {
        self.exprs.len()
    }

    pub fn is_keyed(&self) -> bool {
        !self.exprs.is_empty()
    }

    /// The key of every row of `batch` (a constant when there are no keys).
    pub fn rows(&self, batch: &RecordBatch) -> Result<Rows, OperatorError> {
        let rows = batch.num_rows();
        if self.exprs.is_empty() {
            let constant: ArrayRef = Arc::new(Int8Array::from(vec![0i8; rows]));
            return Ok(self.converter.convert_columns(&[constant])?);
        }
        let mut columns = Vec::with_capacity(self.exprs.len());
        for (expr, field) in self.exprs.iter().zip(&self.types) {
            let array = expr.evaluate(batch)?.into_array(rows)?;
            columns.push(if array.data_type() == field { array } else { cast(&array, field)? });
        }
        Ok(self.converter.convert_columns(&columns)?)
    }

    /// The key columns of `keys`, decoded (only meaningful when keyed).
    pub fn columns<'a>(
        &self,
        keys: impl IntoIterator<Item = Row<'a>>,
    ) -> Result<Vec<ArrayRef>, OperatorError> {
        Ok(self.converter.convert_rows(keys)?)
    }

    /// The keys of `rows` rows given as decoded key columns (output types), as rows again;
    /// for a global operator the constant key.
    pub fn rows_of_columns(&self, columns: &[ArrayRef], rows: usize) -> Result<Rows, OperatorError> {
        if self.exprs.is_empty() {
            let constant: ArrayRef = Arc::new(Int8Array::from(vec![0i8; rows]));
            return Ok(self.converter.convert_columns(&[constant])?);
        }
        Ok(self.converter.convert_columns(columns)?)
    }

    /// The key group of every decoded key (`columns` in output types), as the hash exchange
    /// computes it for the rows that carry these keys: cast back to the types the key
    /// expressions evaluate to, then [`crate::state::key_groups_of`].
    pub fn key_groups(&self, columns: &[ArrayRef], max_parallelism: u32) -> Result<Vec<u32>, OperatorError> {
        key_groups_as(columns, &self.exchange_types, max_parallelism)
    }
}
