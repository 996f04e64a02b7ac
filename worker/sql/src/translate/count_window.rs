//! `GROUP BY …, count_window(size[, slide])`: an `Aggregate` node whose group function is
//! `count_window` becomes one [`OperatorSpec::CountWindow`] stage behind a keyed (other
//! GROUP BY keys) or global exchange. Sizes must be positive integer literals with
//! `slide <= size`; `window_end()` has no meaning here and is refused.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Aggregate, Expr};
use millrace_runtime::operators::CountWindowSpec;
use millrace_runtime::{Exchange, OperatorSpec, Stage};

use super::{Partial, Translator};
use crate::error::SqlError;
use crate::functions::WINDOW_END;

const USAGE: &str = "count_window(size) fires every `size` rows of a key; count_window(size, slide) every `slide` rows over the last `size` (0 < slide <= size)";

/// A positive integer literal.
fn row_count(expr: &Expr) -> Option<u64> {
    let Expr::Literal(value, _) = expr else { return None };
    match value.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(Some(n)) if n > 0 => u64::try_from(n).ok(),
        _ => None,
    }
}

impl Translator<'_> {
    pub(super) fn count_window(
        &self,
        mut partial: Partial,
        aggregate: &Aggregate,
        window_position: usize,
        args: &[Expr],
        keys: &[Expr],
    ) -> Result<Partial, SqlError> {
        let input = aggregate.input.schema();
        let counts = args.iter().map(row_count).collect::<Option<Vec<u64>>>().ok_or_else(|| {
            self.error("count_window() row counts must be positive integer literals").with_hint(USAGE)
        })?;
        let (size, slide) = match counts.as_slice() {
            [size] => (*size, *size),
            [size, slide] if slide <= size => (*size, *slide),
            _ => return Err(self.error("bad arguments to count_window()").with_hint(USAGE)),
        };
        let key_exprs = keys.iter().map(|k| self.physical(k, input)).collect::<Result<Vec<_>, _>>()?;
        let group_count = aggregate.group_expr.len();
        let mut aggregates = Vec::with_capacity(aggregate.aggr_expr.len());
        for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
            if let Expr::AggregateFunction(f) = expr.clone().unalias()
                && f.func.name() == WINDOW_END
            {
                return Err(self.error(format!(
                    "{WINDOW_END}() needs a time window; count windows have none (select count_window(…)'s sequence number instead)"
                )));
            }
            let name = aggregate.schema.field(group_count + i).name();
            aggregates.push(self.aggregate_function(expr, name, input)?);
        }
        let exchange =
            if key_exprs.is_empty() { Exchange::Single } else { Exchange::Hash(key_exprs.clone()) };
        let spec = CountWindowSpec {
            size,
            slide,
            keys: key_exprs,
            window_position,
            aggregates,
            output_schema: Arc::new(aggregate.schema.as_arrow().clone()),
            input_schema: Arc::new(input.as_arrow().clone()),
        };
        partial.stages.push(Stage { input: exchange, operators: vec![OperatorSpec::CountWindow(spec)] });
        partial.time = vec![None; aggregate.schema.fields().len()];
        Ok(partial)
    }
}
