//! `SELECT` lists: evaluates DataFusion physical expressions over a batch into a batch of the
//! planned output schema.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion_physical_expr::PhysicalExpr;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext};

/// Computes one output column per expression.
pub struct ProjectionOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectionOperator {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Self { exprs, schema }
    }
}

impl Operator for ProjectionOperator {
    fn name(&self) -> &'static str {
        "projection"
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let rows = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|expr| expr.evaluate(&batch).and_then(|value| value.into_array(rows)))
            .collect::<Result<Vec<_>, _>>()?;
        let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(rows));
        out.push(RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?);
        Ok(())
    }
}
