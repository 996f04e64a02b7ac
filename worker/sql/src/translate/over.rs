//! OVER windows: a DataFusion `Window` node becomes one [`OperatorSpec::OverWindow`] stage
//! behind a keyed (PARTITION BY) or global exchange. Accepted: aggregate functions over
//! `ROWS` or `RANGE` frames from `n PRECEDING` / `INTERVAL 'n' … PRECEDING` / `UNBOUNDED
//! PRECEDING` / `CURRENT ROW` to `CURRENT ROW`, ordered ascending by one time attribute (the
//! table's `WATERMARK` column for event time, a `PROCTIME()` column for processing time), as
//! Flink accepts them. Everything else is refused here with the statement's position.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction, WindowFunctionParams};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Window, WindowFrame, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use millrace_runtime::operators::{OverFrame, OverFunction, OverTime, OverWindowSpec};
use millrace_runtime::{Exchange, OperatorSpec, Stage};

use super::{Partial, TimeKind, Translator};
use crate::catalog::interval_ms;
use crate::error::SqlError;
use crate::functions::WINDOW_END;

const ORDER_HINT: &str = "ORDER BY the source table's WATERMARK column (event time) or a `pt AS PROCTIME()` column, e.g. OVER (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW)";

impl Translator<'_> {
    pub(super) fn window(&self, window: &Window) -> Result<Partial, SqlError> {
        let mut partial = self.node(&window.input)?;
        self.refuse_updating_input(&partial, "an OVER window")?;
        let input = window.input.schema();
        let mut functions = Vec::new();
        // The PARTITION BY and ORDER BY every function of the node shares.
        let mut shared: Option<(Vec<Expr>, Expr, TimeKind)> = None;
        for (i, expr) in window.window_expr.iter().enumerate() {
            let name = window.schema.field(input.fields().len() + i).name().clone();
            let Expr::WindowFunction(function) = expr.clone().unalias() else {
                return Err(self.error(format!("unexpected window expression {expr}")));
            };
            let WindowFunction { fun, params } = *function;
            let WindowFunctionParams {
                args,
                partition_by,
                order_by,
                window_frame,
                null_treatment,
                distinct,
                filter,
            } = params;
            if let WindowFunctionDefinition::WindowUDF(udf) = &fun
                && udf.name() == super::top_n::ROW_NUMBER
            {
                return Err(self
                    .error(format!("{name}: ROW_NUMBER() works as a Top-N: filter its row number in the enclosing query"))
                    .with_hint("SELECT … FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t) WHERE rn <= 3"));
            }
            let WindowFunctionDefinition::AggregateUDF(udaf) = fun.clone() else {
                return Err(self.error(format!(
                    "{name}: only aggregate functions (AVG, SUM, COUNT, MIN, MAX, …) work in OVER windows yet"
                )));
            };
            if udaf.name() == WINDOW_END {
                return Err(
                    self.error(format!("{WINDOW_END}() only works next to a window function in GROUP BY"))
                );
            }
            let (order, kind) = match order_by.as_slice() {
                [sort] => {
                    let kind = match &sort.expr {
                        Expr::Column(c) => input.index_of_column(c).ok().and_then(|i| partial.time[i]),
                        _ => None,
                    };
                    let Some(kind) = kind else {
                        return Err(self
                            .error(format!(
                                "{name}: OVER windows must ORDER BY a time attribute, not {}",
                                sort.expr
                            ))
                            .with_hint(ORDER_HINT));
                    };
                    if !sort.asc {
                        return Err(self.error(format!(
                            "{name}: OVER windows are ordered ascending by time; ORDER BY … DESC is not supported"
                        )));
                    }
                    (sort.expr.clone(), kind)
                }
                [] => {
                    return Err(self
                        .error(format!("{name}: OVER windows need ORDER BY a time attribute"))
                        .with_hint(ORDER_HINT));
                }
                _ => {
                    return Err(self
                        .error(format!("{name}: OVER windows ORDER BY exactly one time attribute"))
                        .with_hint(ORDER_HINT));
                }
            };
            let frame = self.frame(&name, &window_frame)?;
            match &shared {
                None => shared = Some((partition_by.clone(), order, kind)),
                Some((p, o, _)) if *p == partition_by && *o == order => {}
                Some(_) => {
                    return Err(self
                        .error("all OVER windows of one SELECT must share their PARTITION BY and ORDER BY"));
                }
            }
            let aggregate = Expr::AggregateFunction(AggregateFunction::new_udf(
                udaf,
                args,
                distinct,
                filter,
                Vec::new(),
                null_treatment,
            ));
            functions
                .push(OverFunction { aggregate: self.aggregate_function(&aggregate, &name, input)?, frame });
        }
        let Some((partition_by, order, kind)) = shared else {
            return Err(self.error("an OVER window without window functions"));
        };
        let partition_exprs =
            partition_by.iter().map(|e| self.physical(e, input)).collect::<Result<Vec<_>, _>>()?;
        let partition_types = partition_by
            .iter()
            .map(|e| e.get_type(input).map_err(|err| SqlError::from_datafusion(&err, self.at)))
            .collect::<Result<Vec<_>, _>>()?;
        let exchange = if partition_exprs.is_empty() {
            Exchange::Single
        } else {
            Exchange::Hash(partition_exprs.clone())
        };
        let spec = OverWindowSpec {
            partition_by: partition_exprs,
            partition_types,
            order_by: self.physical(&order, input)?,
            time: match kind {
                TimeKind::Event => OverTime::Event,
                TimeKind::Processing => OverTime::Processing,
            },
            functions,
            output_schema: Arc::new(window.schema.as_arrow().clone()),
        };
        partial.stages.push(Stage { input: exchange, operators: vec![OperatorSpec::OverWindow(spec)] });
        // The input columns pass through unchanged, time attributes included: event-time
        // rows leave at the watermark that released them, before it moves on downstream.
        partial.time.extend(std::iter::repeat_n(None, window.window_expr.len()));
        Ok(partial)
    }

    /// The frame of one window function, or why it is refused.
    fn frame(&self, name: &str, frame: &WindowFrame) -> Result<OverFrame, SqlError> {
        if matches!(frame.end_bound, WindowFrameBound::Following(_)) {
            return Err(self
                .error(format!("{name}: OVER frames end at CURRENT ROW; FOLLOWING bounds are not supported (as in Flink)"))
                .with_hint("ROWS BETWEEN n PRECEDING AND CURRENT ROW or RANGE BETWEEN INTERVAL 'n' SECOND PRECEDING AND CURRENT ROW"));
        }
        if frame.end_bound != WindowFrameBound::CurrentRow {
            return Err(self.error(format!("{name}: OVER frames must end at CURRENT ROW")));
        }
        match (frame.units, &frame.start_bound) {
            (_, WindowFrameBound::Following(_)) => Err(self.error(format!(
                "{name}: OVER frames start at a PRECEDING bound or CURRENT ROW; FOLLOWING is not supported"
            ))),
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) if v.is_null() => {
                Ok(OverFrame::Rows { preceding: None })
            }
            (WindowFrameUnits::Rows, WindowFrameBound::Preceding(ScalarValue::UInt64(Some(n)))) => {
                Ok(OverFrame::Rows { preceding: Some(*n) })
            }
            (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => {
                Ok(OverFrame::Rows { preceding: Some(0) })
            }
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) if v.is_null() => {
                Ok(OverFrame::Range { preceding_ms: None })
            }
            (WindowFrameUnits::Range, WindowFrameBound::Preceding(v)) => match interval_ms(v) {
                Some(ms) if ms >= 0 => Ok(OverFrame::Range { preceding_ms: Some(ms) }),
                _ => {
                    // DataFusion reads a bare number on a timestamp ORDER BY as months.
                    let got = match v {
                        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months != 0 => {
                            format!(
                                "{} month(s), which have no fixed length (a bare number is read as months)",
                                i.months
                            )
                        }
                        other => other.to_string(),
                    };
                    Err(self
                        .error(format!(
                            "{name}: RANGE frames need a non-negative day-time INTERVAL bound, got {got}"
                        ))
                        .with_hint("RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW"))
                }
            },
            (WindowFrameUnits::Range, WindowFrameBound::CurrentRow) => {
                Ok(OverFrame::Range { preceding_ms: Some(0) })
            }
            (units, start) => {
                Err(self.error(format!("{name}: unsupported OVER frame {units} BETWEEN {start}")))
            }
        }
    }
}
