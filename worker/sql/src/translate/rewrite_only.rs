//! DataFusion functions that exist only as rewrites: `coalesce`, `nvl2`, `arrow_cast` and
//! friends have no kernel of their own (they fail at run time with "should have been
//! simplified") and are turned into CASE / CAST by the optimizer's expression simplifier,
//! which the streaming translation does not run (its other rewrites target batch queries,
//! and it would fold `now()` into a constant). So these functions, and only these, are
//! rewritten here with their own `simplify`, before physical planning.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};

/// The functions whose only implementation is their rewrite.
const REWRITE_ONLY: &[&str] =
    &["coalesce", "nvl2", "arrow_cast", "arrow_try_cast", "cast_to_type", "try_cast_to_type"];

/// `expr` with every rewrite-only function call replaced by its rewrite.
pub(super) fn rewrite(expr: &Expr, schema: &DFSchema) -> Result<Expr> {
    let mentions =
        expr.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if REWRITE_ONLY.contains(&f.name()))))?;
    if !mentions {
        return Ok(expr.clone());
    }
    #[allow(deprecated)]
    let context = SimplifyContext::default().with_schema(Arc::new(schema.clone()));
    expr.clone()
        .transform_up(|e| match e {
            Expr::ScalarFunction(f) if REWRITE_ONLY.contains(&f.name()) => {
                match f.func.simplify(f.args.clone(), &context)? {
                    ExprSimplifyResult::Simplified(rewritten) => Ok(Transformed::yes(rewritten)),
                    ExprSimplifyResult::Original(_) => Ok(Transformed::no(Expr::ScalarFunction(f))),
                }
            }
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
}
