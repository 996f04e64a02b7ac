//! Group keys as comparable, hashable rows: the key expressions of a keyed operator (window
//! aggregates, updating aggregates, OVER partitions) evaluated on a batch, cast to the key's
//! output type so that emitted keys round-trip exactly, and encoded with Arrow's row format.
//! A global operator (no keys) gets one constant key. It owns no state.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion_physical_expr::PhysicalExpr;

use crate::error::OperatorError;

/// The key expressions of an operator and the row converter for them.
pub(crate) struct GroupKeys {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    types: Vec<DataType>,
    converter: RowConverter,
}

impl GroupKeys {
    /// `types`: the output type of each key expression (same length as `exprs`).
    pub fn try_new(exprs: Vec<Arc<dyn PhysicalExpr>>, types: Vec<DataType>) -> Result<Self, OperatorError> {
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
        Ok(Self { exprs, types, converter: RowConverter::new(fields)? })
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
}
