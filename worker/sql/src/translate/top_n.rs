//! Top-N in the translation: Flink's pattern of `ROW_NUMBER() OVER (PARTITION BY … ORDER BY
//! …) AS rn` in a subquery, and `WHERE rn <= N` (or `rn < N`, `rn = 1`) over it.
//!
//! The filter, the subquery's projections and the `Window` node under them become one
//! [`OperatorSpec::TopN`] stage behind a keyed (PARTITION BY) or global exchange, followed by
//! the projections. Its output is an upsert stream keyed by the partition columns and the row
//! number (the partition columns alone for N = 1, so a deduplication may drop `rn`); a query
//! that drops the row number of a Top-N with N > 1 is refused, as the rows leaving the top N
//! would need retractions. `ORDER BY` one time attribute `DESC` with N = 1 is Flink's
//! deduplication keeping the last row: the later of two rows at one time wins.

use std::sync::Arc;

use arrow::compute::SortOptions;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Filter, LogicalPlan, Operator, Projection, Window,
    WindowFunctionDefinition,
};
use millrace_runtime::operators::TopNSpec;
use millrace_runtime::{Exchange, OperatorSpec, Stage};

use super::{Partial, Translator};
use crate::error::SqlError;

/// The window function a Top-N is built on.
pub(super) const ROW_NUMBER: &str = "row_number";

const HINT: &str =
    "SELECT … FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC) AS rn FROM t) WHERE rn <= 3";

/// The `Window` node of a ROW_NUMBER under `filter` (through aliases and projections), with
/// those projections from the bottom up; `None` when `filter` is no rank filter.
pub(super) fn ranked_window(filter: &Filter) -> Option<(&Window, Vec<&Projection>)> {
    let mut node = filter.input.as_ref();
    let mut projections = Vec::new();
    loop {
        match node {
            LogicalPlan::SubqueryAlias(alias) => node = &alias.input,
            LogicalPlan::Projection(projection) => {
                projections.push(projection);
                node = &projection.input;
            }
            LogicalPlan::Window(window) if window.window_expr.iter().any(is_row_number) => {
                projections.reverse();
                return Some((window, projections));
            }
            _ => return None,
        }
    }
}

fn is_row_number(expr: &Expr) -> bool {
    matches!(expr.clone().unalias(), Expr::WindowFunction(f)
        if matches!(&f.fun, WindowFunctionDefinition::WindowUDF(udf) if udf.name() == ROW_NUMBER))
}

/// The column an expression is, under any casts.
fn uncast(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(cast) => uncast(&cast.expr),
        Expr::TryCast(cast) => uncast(&cast.expr),
        Expr::Alias(alias) => uncast(&alias.expr),
        other => other,
    }
}

/// An integer literal, under any casts.
fn integer(expr: &Expr) -> Option<i64> {
    match uncast(expr) {
        Expr::Literal(value, _) => match value.cast_to(&arrow::datatypes::DataType::Int64).ok()? {
            ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

impl Translator<'_> {
    /// The Top-N `filter` is the rank filter of; see the module docs.
    pub(super) fn top_n(&self, filter: &Filter) -> Result<Partial, SqlError> {
        let (window, projections) =
            ranked_window(filter).ok_or_else(|| self.error("no ROW_NUMBER() window"))?;
        if window.window_expr.len() != 1 {
            return Err(self
                .error("ROW_NUMBER() must be the only window function of its SELECT in a Top-N")
                .with_hint(HINT));
        }
        let (column, limit) = self.rank_bound(&filter.predicate)?;
        // The filtered column, followed down to the window's output: it must be the row number.
        let mut index = filter.input.schema().index_of_column(&column).ok();
        for projection in projections.iter().rev() {
            index = index.and_then(|i| match uncast(&projection.expr[i]) {
                Expr::Column(c) => projection.input.schema().index_of_column(c).ok(),
                _ => None,
            });
        }
        let input_schema = window.input.schema();
        let rank_index = input_schema.fields().len();
        if index != Some(rank_index) {
            return Err(self
                .error(format!("the WHERE over ROW_NUMBER() must bound the row number, not {column}"))
                .with_hint(HINT));
        }
        let Expr::WindowFunction(function) = window.window_expr[0].clone().unalias() else {
            return Err(self.error("unexpected window expression"));
        };
        let WindowFunction { params, .. } = *function;
        let mut partial = self.node(&window.input)?;
        self.refuse_updating_input(&partial, "a Top-N (ROW_NUMBER)")?;
        let mut key = Vec::with_capacity(params.partition_by.len());
        for expr in &params.partition_by {
            match expr {
                Expr::Column(c) => key.push(
                    input_schema.index_of_column(c).map_err(|e| SqlError::from_datafusion(&e, self.at))?,
                ),
                other => {
                    return Err(self
                        .error(format!("ROW_NUMBER() partitions by columns, not {other}"))
                        .with_hint("compute the expression as a column in a subquery first"));
                }
            }
        }
        if params.order_by.is_empty() {
            return Err(self.error("a Top-N needs ROW_NUMBER() OVER (… ORDER BY …)").with_hint(HINT));
        }
        let order_by = params
            .order_by
            .iter()
            .map(|sort| {
                let options = SortOptions { descending: !sort.asc, nulls_first: sort.nulls_first };
                Ok((self.physical(&sort.expr, input_schema)?, options))
            })
            .collect::<Result<Vec<_>, SqlError>>()?;
        let ties_to_latest = limit == 1
            && matches!(params.order_by.as_slice(), [sort] if !sort.asc && matches!(&sort.expr,
                Expr::Column(c) if input_schema.index_of_column(c).ok().and_then(|i| partial.time[i]).is_some()));
        let partition_by = params
            .partition_by
            .iter()
            .map(|e| self.physical(e, input_schema))
            .collect::<Result<Vec<_>, _>>()?;
        let partition_types = params
            .partition_by
            .iter()
            .map(|e| e.get_type(input_schema).map_err(|err| SqlError::from_datafusion(&err, self.at)))
            .collect::<Result<Vec<_>, _>>()?;
        let spec = TopNSpec {
            partition_by: partition_by.clone(),
            partition_types: partition_types.clone(),
            order_by,
            limit,
            ties_to_latest,
            input_schema: Arc::new(input_schema.as_arrow().clone()),
            output_schema: Arc::new(window.schema.as_arrow().clone()),
        };
        let exchange = if partition_by.is_empty() { Exchange::Single } else { Exchange::Hash(partition_by) };
        partial.stages.push(Stage { input: exchange, operators: vec![OperatorSpec::TopN(spec)] });
        partial.time = vec![None; window.schema.fields().len()];
        if limit > 1 {
            key.push(rank_index);
        }
        partial.changelog = Some(key);
        partial.changelog_exchange_types = partition_types;
        for projection in projections {
            partial = self.project(partial, projection)?;
        }
        Ok(partial)
    }

    /// The row-number column a rank filter bounds and the N it keeps: `rn <= N`, `rn < N`,
    /// `rn = 1` (either way round).
    fn rank_bound(&self, predicate: &Expr) -> Result<(datafusion::common::Column, usize), SqlError> {
        let refused = || {
            self.error(format!(
                "the WHERE over ROW_NUMBER() must be a bound on the row number alone (rn <= N, rn < N or rn = 1), not {predicate}"
            ))
            .with_hint(HINT)
        };
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else { return Err(refused()) };
        let (column, op, bound) = match (uncast(left), integer(right), uncast(right), integer(left)) {
            (Expr::Column(c), Some(n), _, _) => (c.clone(), *op, n),
            (_, _, Expr::Column(c), Some(n)) => (c.clone(), op.swap().ok_or_else(refused)?, n),
            _ => return Err(refused()),
        };
        let limit = match op {
            Operator::LtEq => bound,
            Operator::Lt => bound - 1,
            Operator::Eq if bound == 1 => 1,
            _ => return Err(refused()),
        };
        if limit < 1 {
            return Err(self.error(format!("a Top-N keeps at least one row: {predicate} keeps none")));
        }
        Ok((column, limit as usize))
    }
}
