//! `WHERE`: keeps the rows for which a DataFusion physical predicate is true, vectorized over
//! the whole batch.

use std::sync::Arc;

use arrow::array::AsArray;
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext};

/// Filters rows by a boolean physical expression (NULL counts as false, as in SQL).
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self { predicate }
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let mask = self.predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
        if mask.data_type() != &DataType::Boolean {
            return Err(OperatorError::Invalid(format!("filter predicate has type {}", mask.data_type())));
        }
        let filtered = filter_record_batch(&batch, mask.as_boolean())?;
        if filtered.num_rows() > 0 {
            out.push(filtered);
        }
        Ok(())
    }
}
