//! Updating aggregates in the translation: `GROUP BY` without a window function, `SELECT
//! DISTINCT`, and what may follow them.
//!
//! A non-windowed `GROUP BY` with aggregates produces an *upsert stream* keyed by its group
//! columns (Flink's changelog, without `-U` rows): the planner tracks that key through the
//! operators above it, so that projections keep it (or are refused), filters turn updates that
//! stop passing into deletes, and windows and further aggregates over it are refused (they
//! would need retractions). DISTINCT and `GROUP BY` without aggregates emit each key once and
//! stay append-only.

use std::sync::Arc;

use datafusion::common::DFSchema;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use millrace_runtime::operators::UpdatingAggregateSpec;
use millrace_runtime::{Exchange, OperatorSpec, Stage};

use super::{Partial, Translator};
use crate::error::SqlError;
use crate::functions::WINDOW_END;

/// The hint for a projection that loses the upsert key.
pub(super) const KEEP_KEY_HINT: &str = "select every GROUP BY column of the updating aggregate, or the partition columns and the row number of a Top-N (by name, optionally renamed or CAST)";

/// The upsert key's positions in a projection's output, given its positions `key` in the
/// projection's input. A key column is kept when an output expression is that column (or a
/// CAST of it: the `INSERT` into a sink casts columns to the sink's types).
pub(super) fn projected_key(key: &[usize], exprs: &[Expr], input: &DFSchema) -> Result<Vec<usize>, String> {
    let source_column = |expr: &Expr| -> Option<usize> {
        let mut expr = expr.clone().unalias();
        loop {
            match expr {
                Expr::Column(c) => return input.index_of_column(&c).ok(),
                Expr::Cast(cast) => expr = *cast.expr,
                Expr::TryCast(cast) => expr = *cast.expr,
                Expr::Alias(alias) => expr = *alias.expr,
                _ => return None,
            }
        }
    };
    let outputs: Vec<Option<usize>> = exprs.iter().map(source_column).collect();
    key.iter()
        .map(|&k| {
            outputs.iter().position(|o| *o == Some(k)).ok_or_else(|| {
                format!(
                    "this projection drops the column '{}', part of the key of the updating result below it (the GROUP BY columns of an updating aggregate; the partition columns and the row number of a Top-N); every update must name its key",
                    input.field(k).name()
                )
            })
        })
        .collect()
}

impl Translator<'_> {
    /// Windows and aggregates cannot read an upsert stream: an update would have to retract
    /// what the earlier row contributed.
    pub(super) fn refuse_updating_input(&self, partial: &Partial, what: &str) -> Result<(), SqlError> {
        if partial.changelog.is_none() {
            return Ok(());
        }
        Err(self
            .error(format!(
                "{what} cannot read the result of an updating aggregate (GROUP BY without a window): its rows are updated later, and {what} would need retractions, which are not supported"
            ))
            .with_hint("aggregate the source rows directly, or window the input before the GROUP BY"))
    }

    /// `GROUP BY keys` without a window: keyed behind a hash exchange (global behind a single
    /// one), an upsert stream keyed by the group columns when it has aggregates.
    pub(super) fn updating_aggregate(
        &self,
        aggregate: &Aggregate,
        mut partial: Partial,
        keys: Vec<Expr>,
    ) -> Result<Partial, SqlError> {
        let input = aggregate.input.schema();
        let key_exprs = keys.iter().map(|k| self.physical(k, input)).collect::<Result<Vec<_>, _>>()?;
        let mut aggregates = Vec::with_capacity(aggregate.aggr_expr.len());
        for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
            if let Expr::AggregateFunction(f) = expr.clone().unalias()
                && f.func.name() == WINDOW_END
            {
                return Err(
                    self.error(format!("{WINDOW_END}() only works next to a window function in GROUP BY"))
                );
            }
            let name = aggregate.schema.field(keys.len() + i).name();
            aggregates.push(self.aggregate_function(expr, name, input)?);
        }
        let input_schema = Arc::new(input.as_arrow().clone());
        let exchange_types = key_exprs
            .iter()
            .map(|e| e.data_type(&input_schema).map_err(|err| SqlError::from_datafusion(&err, self.at)))
            .collect::<Result<Vec<_>, _>>()?;
        let spec = UpdatingAggregateSpec {
            keys: key_exprs.clone(),
            aggregates,
            output_schema: Arc::new(aggregate.schema.as_arrow().clone()),
            input_schema,
            ttl_ms: self.state_ttl_ms,
        };
        partial.changelog = (!spec.is_insert_only()).then(|| (0..keys.len()).collect());
        partial.changelog_exchange_types = exchange_types;
        let exchange = if key_exprs.is_empty() { Exchange::Single } else { Exchange::Hash(key_exprs) };
        partial
            .stages
            .push(Stage { input: exchange, operators: vec![OperatorSpec::UpdatingAggregate(spec)] });
        partial.time = vec![None; aggregate.schema.fields().len()];
        Ok(partial)
    }

    /// `SELECT DISTINCT …`: a key of every column, emitted once when first seen.
    pub(super) fn distinct(&self, input: &LogicalPlan) -> Result<Partial, SqlError> {
        let partial = self.node(input)?;
        self.refuse_updating_input(&partial, "DISTINCT")?;
        let schema = input.schema();
        let keys: Vec<Arc<dyn PhysicalExpr>> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Arc::new(Column::new(f.name(), i)) as Arc<dyn PhysicalExpr>)
            .collect();
        let spec = UpdatingAggregateSpec {
            keys: keys.clone(),
            aggregates: Vec::new(),
            output_schema: Arc::new(schema.as_arrow().clone()),
            input_schema: Arc::new(schema.as_arrow().clone()),
            ttl_ms: self.state_ttl_ms,
        };
        let mut partial = partial;
        partial.stages.push(Stage {
            input: Exchange::Hash(keys),
            operators: vec![OperatorSpec::UpdatingAggregate(spec)],
        });
        partial.time = vec![None; schema.fields().len()];
        Ok(partial)
    }
}
