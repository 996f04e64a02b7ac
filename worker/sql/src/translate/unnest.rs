//! `UNNEST(list)`: DataFusion plans `SELECT …, UNNEST(tags) …` as an `Unnest` node over a
//! projection; it becomes an [`OperatorSpec::Unnest`] chained into the current stage (no
//! exchange: each row unnests on its own). Lists unnest one level; struct unnesting and
//! recursive (depth > 1) unnesting are refused. SQL's UNNEST drops NULL and empty lists
//! (DataFusion's `preserve_nulls = false`), which is what the operator implements.
//! DataFusion 55 plans `FROM t CROSS JOIN UNNEST(t.tags)` as a join, which is refused with a
//! hint to write the UNNEST in the SELECT list.

use std::sync::Arc;

use datafusion::common::NullHandling;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Join, LogicalPlan, Unnest};
use millrace_runtime::OperatorSpec;
use millrace_runtime::operators::UnnestSpec;

use super::{Partial, Translator};
use crate::error::SqlError;

impl Translator<'_> {
    pub(super) fn unnest(&self, unnest: &Unnest) -> Result<Partial, SqlError> {
        let mut partial = self.node(&unnest.input)?;
        self.refuse_updating_input(&partial, "UNNEST")?;
        if !unnest.struct_type_columns.is_empty() {
            return Err(self.error("UNNEST of a struct column is not supported yet; UNNEST takes arrays"));
        }
        if unnest.options.null_handling != NullHandling::Drop {
            return Err(self
                .error("UNNEST that keeps NULL lists is not supported; NULL and empty lists yield no rows"));
        }
        let mut list_columns = Vec::with_capacity(unnest.list_type_columns.len());
        for (column, list) in &unnest.list_type_columns {
            if list.depth != 1 || list_columns.contains(column) {
                return Err(self.error(format!(
                    "UNNEST of {} more than one level deep is not supported yet",
                    list.output_column
                )));
            }
            list_columns.push(*column);
        }
        if list_columns.is_empty() {
            return Err(self.error("UNNEST needs an array column"));
        }
        partial.time = unnest
            .dependency_indices
            .iter()
            .map(|d| if list_columns.contains(d) { None } else { partial.time.get(*d).copied().flatten() })
            .collect();
        partial.push(OperatorSpec::Unnest(UnnestSpec {
            list_columns,
            dependencies: unnest.dependency_indices.clone(),
            output_schema: Arc::new(unnest.schema.as_arrow().clone()),
        }));
        Ok(partial)
    }
}

/// Whether a join unnests a column of its other side (`FROM t CROSS JOIN UNNEST(t.tags)`).
pub(super) fn is_lateral_unnest(join: &Join) -> bool {
    let mut found = false;
    let _ = join.right.apply(|plan| {
        found |= matches!(plan, LogicalPlan::Unnest(_));
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}
