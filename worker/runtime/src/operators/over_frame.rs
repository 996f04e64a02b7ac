//! The frame bookkeeping of OVER windows, shared by every kind of OVER operator: a frame
//! (ROWS or RANGE, bounded or unbounded), and per partition and window function the
//! DataFusion accumulator plus the argument values still inside the frame, so rows can be
//! retracted (`retract_batch`) when they leave it. It knows nothing of time kinds, buffering
//! or watermarks: callers feed it one partition's rows in processing order with their order
//! values. For checkpoints a bounded frame is its retained rows (a restore replays them into a
//! fresh accumulator, which then holds exactly what the frame holds, so retraction goes on as
//! before), an unbounded one its accumulator.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, UInt32Array};
use arrow::compute::{concat, take};
use datafusion_common::ScalarValue;
use datafusion_expr::Accumulator;
use datafusion_physical_expr::aggregate::AggregateFunctionExpr;

use crate::error::OperatorError;

/// The frame of an OVER window function; the end is always CURRENT ROW.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW` (`Some(n)`), or `UNBOUNDED PRECEDING`
    /// (`None`): the row and the `n` rows before it in processing order.
    Rows { preceding: Option<u64> },
    /// `RANGE BETWEEN INTERVAL 'n' PRECEDING AND CURRENT ROW` (`Some(n ms)`), or `UNBOUNDED
    /// PRECEDING` (`None`): every row whose order value lies in `[t - n, t]`. Rows with equal
    /// order values are peers: they share one frame and one result.
    Range { preceding_ms: Option<i64> },
}

impl OverFrame {
    pub(crate) fn is_bounded(self) -> bool {
        matches!(self, OverFrame::Rows { preceding: Some(_) } | OverFrame::Range { preceding_ms: Some(_) })
    }
}

/// One window function of an OVER window.
#[derive(Clone)]
pub struct OverFunction {
    pub aggregate: Arc<AggregateFunctionExpr>,
    pub frame: OverFrame,
}

/// Rows of a frame: each row's order value, and the argument columns.
pub(crate) type FrameRows = (Vec<i64>, Vec<ArrayRef>);

/// One window function's state in one partition.
pub(crate) struct FunctionFrame {
    frame: OverFrame,
    accumulator: Box<dyn Accumulator>,
    /// The arguments of the rows inside a bounded frame, oldest first, with their order
    /// value: one row per entry for ROWS, one peer group per entry for RANGE.
    retained: VecDeque<(i64, Vec<ArrayRef>)>,
}

impl FunctionFrame {
    pub fn try_new(function: &OverFunction) -> Result<Self, OperatorError> {
        // Unbounded frames never retract, so the plain accumulator (which every aggregate
        // has) is enough.
        let accumulator = if function.frame.is_bounded() {
            function.aggregate.create_sliding_accumulator()?
        } else {
            function.aggregate.create_accumulator()?
        };
        Ok(Self { frame: function.frame, accumulator, retained: VecDeque::new() })
    }

    /// A frame restored from a checkpoint. Bounded: `times` and `arguments` are the rows
    /// inside the frame, oldest first ([`FunctionFrame::retained_rows`]); unbounded:
    /// `accumulator` holds the state and there are no rows.
    pub fn restored(
        function: &OverFunction,
        accumulator: Option<Box<dyn Accumulator>>,
        times: &[i64],
        arguments: &[ArrayRef],
    ) -> Result<Self, OperatorError> {
        let mut restored = Self::try_new(function)?;
        if !function.frame.is_bounded() {
            if let Some(accumulator) = accumulator {
                restored.accumulator = accumulator;
            }
            return Ok(restored);
        }
        // ROWS keeps one entry per row; RANGE one per peer group (rows of equal order value,
        // adjacent in processing order).
        let mut start = 0;
        while start < times.len() {
            let len = match restored.frame {
                OverFrame::Rows { .. } => 1,
                OverFrame::Range { .. } => times[start..].iter().take_while(|t| **t == times[start]).count(),
            };
            let entry: Vec<ArrayRef> = arguments.iter().map(|a| a.slice(start, len)).collect();
            restored.accumulator.update_batch(&entry)?;
            restored.retained.push_back((times[start], entry));
            start += len;
        }
        Ok(restored)
    }

    pub fn is_bounded(&self) -> bool {
        self.frame.is_bounded()
    }

    /// The rows inside a bounded frame, oldest first: their order values and argument
    /// columns (`None` when it holds none).
    pub fn retained_rows(&self) -> Result<Option<FrameRows>, OperatorError> {
        let Some((_, first)) = self.retained.front() else { return Ok(None) };
        let times = self
            .retained
            .iter()
            .flat_map(|(t, args)| std::iter::repeat_n(*t, args.first().map_or(1, |a| a.len())))
            .collect();
        let columns = (0..first.len())
            .map(|c| {
                let parts: Vec<&dyn Array> = self.retained.iter().map(|(_, args)| args[c].as_ref()).collect();
                concat(&parts)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((times, columns)))
    }

    /// The accumulator (of an unbounded frame, for its checkpointed state).
    pub fn accumulator_mut(&mut self) -> &mut Box<dyn Accumulator> {
        &mut self.accumulator
    }

    /// Adds one partition's rows `indices` (processing order) of a batch whose argument
    /// columns are `arguments` and whose order values are `times` (indexed like the batch),
    /// and writes each row's result into `results[row]`.
    pub fn add(
        &mut self,
        arguments: &[ArrayRef],
        times: &[i64],
        indices: &[u32],
        results: &mut [ScalarValue],
    ) -> Result<(), OperatorError> {
        match self.frame {
            OverFrame::Rows { preceding } => {
                for &i in indices {
                    let row: Vec<ArrayRef> = arguments.iter().map(|a| a.slice(i as usize, 1)).collect();
                    self.accumulator.update_batch(&row)?;
                    if let Some(preceding) = preceding {
                        self.retained.push_back((times[i as usize], row));
                        while self.retained.len() as u64 > preceding + 1 {
                            if let Some((_, leaving)) = self.retained.pop_front() {
                                self.accumulator.retract_batch(&leaving)?;
                            }
                        }
                    }
                    results[i as usize] = self.accumulator.evaluate()?;
                }
            }
            OverFrame::Range { preceding_ms } => {
                for peers in indices.chunk_by(|a, b| times[*a as usize] == times[*b as usize]) {
                    let t = times[peers[0] as usize];
                    let positions = UInt32Array::from(peers.to_vec());
                    let taken = arguments
                        .iter()
                        .map(|a| take(a.as_ref(), &positions, None))
                        .collect::<Result<Vec<_>, _>>()?;
                    self.accumulator.update_batch(&taken)?;
                    if let Some(preceding_ms) = preceding_ms {
                        self.retained.push_back((t, taken));
                        let oldest = t.saturating_sub(preceding_ms);
                        while self.retained.front().is_some_and(|(time, _)| *time < oldest) {
                            if let Some((_, leaving)) = self.retained.pop_front() {
                                self.accumulator.retract_batch(&leaving)?;
                            }
                        }
                    }
                    let value = self.accumulator.evaluate()?;
                    for &i in peers {
                        results[i as usize] = value.clone();
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;

    use super::*;

    fn sum_over(frame: OverFrame) -> FunctionFrame {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("v", &schema).expect("v")])
            .schema(schema)
            .alias("s")
            .build()
            .expect("sum");
        FunctionFrame::try_new(&OverFunction { aggregate: Arc::new(sum), frame }).expect("frame")
    }

    fn run(frame: OverFrame, values: &[i64], times: &[i64]) -> Vec<ScalarValue> {
        let mut state = sum_over(frame);
        let arguments: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(values.to_vec()))];
        let mut results = vec![ScalarValue::Int64(None); values.len()];
        let indices: Vec<u32> = (0..values.len() as u32).collect();
        state.add(&arguments, times, &indices, &mut results).expect("add");
        results
    }

    fn ints(values: &[i64]) -> Vec<ScalarValue> {
        values.iter().map(|v| ScalarValue::Int64(Some(*v))).collect()
    }

    #[test]
    fn rows_frames_retract_the_oldest_row() {
        let got = run(OverFrame::Rows { preceding: Some(1) }, &[1, 2, 3, 4], &[0, 0, 0, 0]);
        assert_eq!(got, ints(&[1, 3, 5, 7]));
        let got = run(OverFrame::Rows { preceding: None }, &[1, 2, 3], &[0, 1, 2]);
        assert_eq!(got, ints(&[1, 3, 6]));
    }

    #[test]
    fn range_frames_share_results_between_peers_and_retract_by_time() {
        // Frame [t - 1000, t]: at 1000 the rows at 0 stay (0 >= 0); at 2500 only 1500 and 2500.
        let got =
            run(OverFrame::Range { preceding_ms: Some(1000) }, &[1, 2, 4, 8, 16], &[0, 0, 1000, 1500, 2500]);
        assert_eq!(got, ints(&[3, 3, 7, 12, 24]));
        let got = run(OverFrame::Range { preceding_ms: Some(0) }, &[1, 2, 4], &[5, 5, 6]);
        assert_eq!(got, ints(&[3, 3, 4]));
        let got = run(OverFrame::Range { preceding_ms: None }, &[1, 2, 4], &[5, 5, 6]);
        assert_eq!(got, ints(&[3, 3, 7]));
    }
}
