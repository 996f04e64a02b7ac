//! DataFusion accumulators as state-table columns: a snapshot writes each accumulator's
//! intermediate state (`Accumulator::state`, one column per state field, as DataFusion's
//! partial aggregates do), and a restore gives a fresh accumulator that state through
//! `merge_batch` (how DataFusion's final aggregates combine partial ones), so every mergeable
//! aggregate checkpoints, `COUNT(DISTINCT …)` included (its state is a list of the values).
//!
//! `Accumulator::state` may consume what it returns (DataFusion documents it so, and the
//! string DISTINCT accumulators do), so a snapshot replaces every accumulator with a fresh one
//! merged from the state it just wrote: the operator keeps exactly the state it had. An
//! aggregate that cannot be merged fails the snapshot with an error naming it. It owns no
//! state and knows nothing of keys or windows.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::Field;
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::OperatorError;
use crate::operators::state_table::StateLayout;

/// The state columns of a list of aggregates.
pub(crate) struct AccumulatorState {
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Every aggregate's state fields, in order.
    fields: Vec<Field>,
    /// Where each aggregate's fields start in `fields` (and one past the last).
    offsets: Vec<usize>,
}

impl AccumulatorState {
    pub fn try_new(aggregates: &[Arc<AggregateFunctionExpr>]) -> Result<Self, OperatorError> {
        let mut fields = Vec::new();
        let mut offsets = vec![0];
        for aggregate in aggregates {
            for field in aggregate.state_fields()? {
                fields.push(field.as_ref().clone().with_nullable(true));
            }
            offsets.push(fields.len());
        }
        Ok(Self { aggregates: aggregates.to_vec(), fields, offsets })
    }

    /// The state columns' fields (all nullable).
    pub fn fields(&self) -> Vec<Field> {
        self.fields.clone()
    }

    /// A builder for the state columns of a table's rows.
    pub fn builder<'a>(&'a self, layout: &'a StateLayout) -> StateColumns<'a> {
        StateColumns { state: self, layout, values: vec![Vec::new(); self.fields.len()] }
    }

    /// Fresh accumulators for every aggregate holding the state at `row` of `columns` (the
    /// state columns, in [`AccumulatorState::fields`] order).
    pub fn restore_all(
        &self,
        layout: &StateLayout,
        columns: &[ArrayRef],
        row: usize,
    ) -> Result<Vec<Box<dyn Accumulator>>, OperatorError> {
        (0..self.aggregates.len()).map(|a| self.restore_one(layout, a, columns, row)).collect()
    }

    /// A fresh accumulator for aggregate `index` holding the state at `row` of `columns`.
    pub fn restore_one(
        &self,
        layout: &StateLayout,
        index: usize,
        columns: &[ArrayRef],
        row: usize,
    ) -> Result<Box<dyn Accumulator>, OperatorError> {
        let state: Vec<ArrayRef> =
            columns[self.offsets[index]..self.offsets[index + 1]].iter().map(|c| c.slice(row, 1)).collect();
        let aggregate = &self.aggregates[index];
        let mut accumulator = aggregate.create_accumulator()?;
        accumulator
            .merge_batch(&state)
            .map_err(|e| layout.error(format!("cannot restore aggregate {}: {e}", aggregate.name())))?;
        Ok(accumulator)
    }

    /// Aggregate `index`'s state, leaving `accumulator` (replaced by a fresh one merged from
    /// that state) as it was.
    fn take_state(
        &self,
        layout: &StateLayout,
        index: usize,
        accumulator: &mut Box<dyn Accumulator>,
    ) -> Result<Vec<ScalarValue>, OperatorError> {
        let aggregate = &self.aggregates[index];
        let unmergeable = |e: datafusion_common::DataFusionError| {
            layout.error(format!("aggregate {} cannot be checkpointed: {e}", aggregate.name()))
        };
        let state = accumulator.state().map_err(unmergeable)?;
        let arrays = state.iter().map(ScalarValue::to_array).collect::<Result<Vec<_>, _>>()?;
        let mut fresh = aggregate.create_accumulator()?;
        fresh.merge_batch(&arrays).map_err(unmergeable)?;
        *accumulator = fresh;
        Ok(state)
    }
}

/// The state columns of a table's rows, one row at a time.
pub(crate) struct StateColumns<'a> {
    state: &'a AccumulatorState,
    layout: &'a StateLayout,
    /// Per state field, one value per row.
    values: Vec<Vec<ScalarValue>>,
}

impl StateColumns<'_> {
    /// A row holding every aggregate's state from `accumulators` (one per aggregate).
    pub fn push_all(&mut self, accumulators: &mut [Box<dyn Accumulator>]) -> Result<(), OperatorError> {
        if accumulators.len() != self.state.aggregates.len() {
            return Err(self.layout.error(format!(
                "{} accumulators for {} aggregates",
                accumulators.len(),
                self.state.aggregates.len()
            )));
        }
        for (a, accumulator) in accumulators.iter_mut().enumerate() {
            let state = self.state.take_state(self.layout, a, accumulator)?;
            self.push_values(a, state)?;
        }
        Ok(())
    }

    /// A row holding only aggregate `index`'s state (NULL for the others).
    pub fn push_one(
        &mut self,
        index: usize,
        accumulator: &mut Box<dyn Accumulator>,
    ) -> Result<(), OperatorError> {
        let state = self.state.take_state(self.layout, index, accumulator)?;
        // Every column gets one value per row, so the order of the pushes does not matter.
        for a in (0..self.state.aggregates.len()).filter(|a| *a != index) {
            self.push_nulls_of(a)?;
        }
        self.push_values(index, state)
    }

    /// A row without accumulator state (NULL in every state column).
    pub fn push_nulls(&mut self) -> Result<(), OperatorError> {
        (0..self.state.aggregates.len()).try_for_each(|a| self.push_nulls_of(a))
    }

    fn push_values(&mut self, index: usize, state: Vec<ScalarValue>) -> Result<(), OperatorError> {
        let (from, to) = (self.state.offsets[index], self.state.offsets[index + 1]);
        if state.len() != to - from {
            return Err(self.layout.error(format!(
                "aggregate {} returned {} state values, it declares {}",
                self.state.aggregates[index].name(),
                state.len(),
                to - from
            )));
        }
        for (column, value) in self.values[from..to].iter_mut().zip(state) {
            column.push(value);
        }
        Ok(())
    }

    fn push_nulls_of(&mut self, index: usize) -> Result<(), OperatorError> {
        for f in self.state.offsets[index]..self.state.offsets[index + 1] {
            let null = ScalarValue::try_from(self.state.fields[f].data_type())?;
            self.values[f].push(null);
        }
        Ok(())
    }

    /// The state columns, in [`AccumulatorState::fields`] order (empty arrays for no rows).
    pub fn finish(self) -> Result<Vec<ArrayRef>, OperatorError> {
        self.values
            .into_iter()
            .zip(&self.state.fields)
            .map(|(values, field)| {
                if values.is_empty() {
                    Ok(arrow::array::new_empty_array(field.data_type()))
                } else {
                    Ok(ScalarValue::iter_to_array(values)?)
                }
            })
            .collect()
    }
}
