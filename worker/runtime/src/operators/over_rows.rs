//! `agg(x) OVER (PARTITION BY … ORDER BY <processing time> ROWS BETWEEN n PRECEDING AND
//! CURRENT ROW)`: a row-count sliding window evaluated in arrival order. Each partition keeps
//! DataFusion sliding accumulators (update on arrival, retract when a row leaves the frame)
//! and the argument values still inside the frame. Output = the input row plus one column per
//! window function, one output row per input row, as in Flink.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int8Array};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::PhysicalExpr;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext, StateScope, StateTable};

/// One window function of an OVER window.
#[derive(Clone)]
pub struct OverFunction {
    pub aggregate: Arc<AggregateFunctionExpr>,
    /// `ROWS BETWEEN n PRECEDING`: `Some(n)`; `UNBOUNDED PRECEDING`: `None`.
    pub preceding: Option<usize>,
}

/// What the planner hands the OVER operator.
#[derive(Clone)]
pub struct OverRowsSpec {
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub functions: Vec<OverFunction>,
    /// The input columns followed by one column per function.
    pub output_schema: SchemaRef,
}

struct FunctionState {
    accumulator: Box<dyn Accumulator>,
    /// Arguments of the rows inside the frame, oldest first (one-row slices).
    frame: VecDeque<Vec<ArrayRef>>,
}

/// The OVER ROWS operator; see the module docs.
pub struct OverRowsOperator {
    spec: OverRowsSpec,
    converter: RowConverter,
    partitions: HashMap<OwnedRow, Vec<FunctionState>>,
}

impl OverRowsOperator {
    pub fn try_new(
        spec: OverRowsSpec,
        partition_types: Vec<arrow::datatypes::DataType>,
    ) -> Result<Self, OperatorError> {
        let fields = if partition_types.is_empty() {
            vec![SortField::new(arrow::datatypes::DataType::Int8)]
        } else {
            partition_types.into_iter().map(SortField::new).collect()
        };
        Ok(Self { converter: RowConverter::new(fields)?, spec, partitions: HashMap::new() })
    }

    fn new_partition(&self) -> Result<Vec<FunctionState>, OperatorError> {
        self.spec
            .functions
            .iter()
            .map(|f| {
                let accumulator = match f.preceding {
                    Some(_) => f.aggregate.create_sliding_accumulator()?,
                    None => f.aggregate.create_accumulator()?,
                };
                Ok(FunctionState { accumulator, frame: VecDeque::new() })
            })
            .collect()
    }
}

impl Operator for OverRowsOperator {
    fn name(&self) -> &'static str {
        "over_rows"
    }

    fn state_tables(&self) -> Vec<StateTable> {
        let scope =
            if self.spec.partition_by.is_empty() { StateScope::Instance } else { StateScope::KeyGroups };
        vec![StateTable { name: "over_frames", scope }]
    }

    fn process_batch(
        &mut self,
        batch: RecordBatch,
        _ctx: &OperatorContext,
        out: &mut Vec<RecordBatch>,
    ) -> Result<(), OperatorError> {
        let rows = batch.num_rows();
        let partition_columns: Vec<ArrayRef> = if self.spec.partition_by.is_empty() {
            vec![Arc::new(Int8Array::from(vec![0i8; rows]))]
        } else {
            self.spec
                .partition_by
                .iter()
                .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(rows)))
                .collect::<Result<_, _>>()?
        };
        let keys = self.converter.convert_columns(&partition_columns)?;
        let arguments = self
            .spec
            .functions
            .iter()
            .map(|f| {
                f.aggregate
                    .expressions()
                    .iter()
                    .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(rows)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Rows of one partition are processed together (one state lookup per partition and
        // batch); results keep the input row order.
        let mut by_partition: HashMap<arrow::row::Row<'_>, Vec<usize>> = HashMap::new();
        for i in 0..rows {
            by_partition.entry(keys.row(i)).or_default().push(i);
        }
        let mut results: Vec<Vec<ScalarValue>> = self
            .spec
            .functions
            .iter()
            .map(|f| ScalarValue::try_from(f.aggregate.field().data_type()).map(|null| vec![null; rows]))
            .collect::<Result<_, _>>()?;
        for (key, indices) in by_partition {
            let owned = key.owned();
            if !self.partitions.contains_key(&owned) {
                let fresh = self.new_partition()?;
                self.partitions.insert(owned.clone(), fresh);
            }
            let Some(states) = self.partitions.get_mut(&owned) else {
                return Err(OperatorError::Invalid("partition state vanished".into()));
            };
            for (f, ((state, args), result)) in
                self.spec.functions.iter().zip(states.iter_mut().zip(&arguments).zip(results.iter_mut()))
            {
                for &i in &indices {
                    let row: Vec<ArrayRef> = args.iter().map(|a| a.slice(i, 1)).collect();
                    state.accumulator.update_batch(&row)?;
                    if let Some(preceding) = f.preceding {
                        state.frame.push_back(row);
                        if state.frame.len() > preceding + 1
                            && let Some(leaving) = state.frame.pop_front()
                        {
                            state.accumulator.retract_batch(&leaving)?;
                        }
                    }
                    result[i] = state.accumulator.evaluate()?;
                }
            }
        }

        let schema = &self.spec.output_schema;
        let mut columns = batch.columns().to_vec();
        for (i, values) in results.into_iter().enumerate() {
            let array = ScalarValue::iter_to_array(values)?;
            let field_type = schema.field(batch.num_columns() + i).data_type();
            columns.push(if array.data_type() == field_type { array } else { cast(&array, field_type)? });
        }
        out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
        Ok(())
    }
}
