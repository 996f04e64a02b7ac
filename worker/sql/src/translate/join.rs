//! Joins in the translation: a `JOIN … ON` between two inputs becomes a stage whose first
//! operator is the runtime's join, fed by the left input's chain (hash-exchanged on the left
//! equi-join keys) and by the right input's chain as a [`Branch`] (hash-exchanged on the
//! right keys), so rows of one key meet in one subtask; its watermark is the minimum of both.
//!
//! The equalities are split from the rest of the condition by DataFusion's own
//! `ExtractEquijoinPredicate` rule; which kind of join runs follows from the condition:
//!
//! - both inputs windowed by a window aggregate and the condition equating their
//!   `window_start` and `window_end` columns → a **window join**;
//! - otherwise bounds on both sides between the inputs' time attributes
//!   (`l.ts BETWEEN r.ts - INTERVAL … AND r.ts + INTERVAL …`, or `>=`/`<=` pairs) → an
//!   **interval join**;
//! - otherwise a **regular join** (inner only), whose state is kept for
//!   `table.exec.state.ttl` (a `SET` statement) or forever.
//!
//! What cannot run is refused here with the statement's position and a hint.

use std::sync::Arc;

use datafusion::common::NullEquality;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    Aggregate, BinaryExpr, Expr, Join, JoinType as DfJoinType, LogicalPlan, Operator,
};
use datafusion::optimizer::OptimizerContext;
use datafusion::optimizer::OptimizerRule;
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use millrace_runtime::operators::{JoinKind, JoinSpec, JoinType};
use millrace_runtime::{Branch, Exchange, OperatorSpec, Stage};

use super::{Partial, TimeKind, Translator};
use crate::catalog::interval_ms;
use crate::error::SqlError;
use crate::functions::{WINDOW_END, WindowFunctionKind};

const JOIN_HINT: &str = "join on equalities between the inputs, e.g. a JOIN b ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '5' SECOND AND b.ts + INTERVAL '5' SECOND";

/// What a column of a join input is, seen through projections and aliases down to the
/// window aggregate that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowRole {
    Start,
    End,
}

/// The role of output column `index` of `plan`, if it is a window aggregate's window start
/// or `window_end()`, or a GROUP BY column of a cascaded window aggregate that groups by
/// such columns (the window attributes propagate, as in Flink).
fn window_role(plan: &LogicalPlan, index: usize) -> Option<WindowRole> {
    match plan {
        LogicalPlan::Projection(p) => match p.expr.get(index)?.clone().unalias() {
            Expr::Column(c) => window_role(&p.input, p.input.schema().index_of_column(&c).ok()?),
            _ => None,
        },
        LogicalPlan::SubqueryAlias(a) => window_role(&a.input, index),
        LogicalPlan::Filter(f) => window_role(&f.input, index),
        LogicalPlan::Aggregate(a) => {
            let groups = a.group_expr.len();
            if index < groups {
                match &a.group_expr[index] {
                    Expr::ScalarFunction(f)
                        if WindowFunctionKind::from_name(f.name())
                            .is_some_and(|k| k != WindowFunctionKind::Count) =>
                    {
                        Some(WindowRole::Start)
                    }
                    Expr::Column(c) if attached_window(a).is_some() => {
                        window_role(&a.input, a.input.schema().index_of_column(c).ok()?)
                    }
                    _ => None,
                }
            } else {
                match a.aggr_expr.get(index - groups)?.clone().unalias() {
                    Expr::AggregateFunction(f) if f.func.name() == WINDOW_END => Some(WindowRole::End),
                    _ => None,
                }
            }
        }
        _ => None,
    }
}

/// For a GROUP BY without a window function that groups by the window start and the window
/// end of an upstream window aggregate (a cascaded window aggregate): the positions of those
/// two GROUP BY columns, (start, end).
pub(super) fn attached_window(aggregate: &Aggregate) -> Option<(usize, usize)> {
    let role_of = |expr: &Expr| match expr {
        Expr::Column(c) => window_role(&aggregate.input, aggregate.input.schema().index_of_column(c).ok()?),
        _ => None,
    };
    let start = aggregate.group_expr.iter().position(|e| role_of(e) == Some(WindowRole::Start))?;
    let end = aggregate.group_expr.iter().position(|e| role_of(e) == Some(WindowRole::End))?;
    Some((start, end))
}

/// `expr` as (column index in `schema`, offset in ms): `c`, `c + INTERVAL`, `c - INTERVAL`,
/// casts of `c` allowed.
fn column_plus_interval(expr: &Expr, schema: &datafusion::common::DFSchema) -> Option<(usize, i64)> {
    match expr {
        Expr::Column(c) => schema.index_of_column(c).ok().map(|i| (i, 0)),
        Expr::Cast(cast) => column_plus_interval(&cast.expr, schema),
        Expr::TryCast(cast) => column_plus_interval(&cast.expr, schema),
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::Plus | Operator::Minus), right }) => {
            let (column, offset) = column_plus_interval(left, schema)?;
            let ms = match right.as_ref() {
                Expr::Literal(v, _) => interval_ms(v)?,
                _ => return None,
            };
            Some((column, if *op == Operator::Plus { offset + ms } else { offset - ms }))
        }
        _ => None,
    }
}

/// Bounds on `left time - right time` the condition states: (lower, upper), each if given.
#[derive(Debug, Default)]
struct TimeBounds {
    lower: Option<i64>,
    upper: Option<i64>,
}

impl TimeBounds {
    /// Notes `a op b` when one side is the left time attribute and the other the right one.
    fn add(&mut self, a: &Expr, op: Operator, b: &Expr, join: &Join, left_time: usize, right_time: usize) {
        let left_width = join.left.schema().fields().len();
        let Some((ca, oa)) = column_plus_interval(a, &join.schema) else { return };
        let Some((cb, ob)) = column_plus_interval(b, &join.schema) else { return };
        // Normalise to `l - r  op'  constant`.
        let (op, constant) = if ca == left_time && cb == left_width + right_time {
            (op, ob - oa)
        } else if cb == left_time && ca == left_width + right_time {
            // r + oa op l + ob  ⇔  l - r  op^-1  oa - ob
            let flipped = match op {
                Operator::Lt => Operator::Gt,
                Operator::LtEq => Operator::GtEq,
                Operator::Gt => Operator::Lt,
                Operator::GtEq => Operator::LtEq,
                other => other,
            };
            (flipped, oa - ob)
        } else {
            return;
        };
        let tighter_lower = |b: i64, current: Option<i64>| Some(current.map_or(b, |c| c.max(b)));
        let tighter_upper = |b: i64, current: Option<i64>| Some(current.map_or(b, |c| c.min(b)));
        match op {
            Operator::GtEq => self.lower = tighter_lower(constant, self.lower),
            Operator::Gt => self.lower = tighter_lower(constant + 1, self.lower),
            Operator::LtEq => self.upper = tighter_upper(constant, self.upper),
            Operator::Lt => self.upper = tighter_upper(constant - 1, self.upper),
            _ => {}
        }
    }
}

impl Translator<'_> {
    pub(super) fn join(&self, join: &Join) -> Result<Partial, SqlError> {
        let join = match ExtractEquijoinPredicate::new()
            .rewrite(LogicalPlan::Join(join.clone()), &OptimizerContext::new())
            .map_err(|e| SqlError::from_datafusion(&e, self.at))?
            .data
        {
            LogicalPlan::Join(join) => join,
            _ => return Err(self.error("the join condition could not be split")),
        };
        let join_type = match join.join_type {
            DfJoinType::Inner => JoinType::Inner,
            DfJoinType::Left => JoinType::Left,
            DfJoinType::Right => JoinType::Right,
            DfJoinType::Full => JoinType::Full,
            other => {
                return Err(self
                    .error(format!("{other} joins are not supported in streaming jobs"))
                    .with_hint("use INNER, LEFT, RIGHT or FULL OUTER JOIN"));
            }
        };
        if join.on.is_empty() {
            return Err(self
                .error("a streaming join needs at least one equality between its inputs (no cross joins)")
                .with_hint(JOIN_HINT));
        }
        if join.null_equality != NullEquality::NullEqualsNothing {
            return Err(
                self.error("IS NOT DISTINCT FROM join keys are not supported (NULL keys never match)")
            );
        }
        let mut left = self.node(&join.left)?;
        let right = self.node(&join.right)?;
        for (side, partial) in [("left", &left), ("right", &right)] {
            if partial.changelog.is_some() {
                return Err(self
                    .error(format!(
                        "the {side} input of the join is an updating result (GROUP BY without a window); joins over updating inputs need retractions, which are not supported"
                    ))
                    .with_hint("join the source rows, or window the aggregate"));
            }
            if partial.late.is_some() {
                return Err(self.error("a late side output is not supported in a job with joins yet"));
            }
        }
        if !right.branches.is_empty() {
            return Err(self
                .error("the right input of a join may not itself be a join")
                .with_hint("write the joins one after another: a JOIN b ON … JOIN c ON …"));
        }
        if right.source == left.source || left.branches.iter().any(|b| b.source.table == right.source) {
            return Err(self
                .error(format!("table '{}' is read twice; a job reads each source table once", right.source))
                .with_hint("self-joins are not supported yet"));
        }

        let (left_schema, right_schema) = (join.left.schema(), join.right.schema());
        let mut left_keys = Vec::with_capacity(join.on.len());
        let mut right_keys = Vec::with_capacity(join.on.len());
        for (l, r) in &join.on {
            let (lk, rk) = (self.physical(l, left_schema)?, self.physical(r, right_schema)?);
            let lt =
                lk.data_type(left_schema.as_arrow()).map_err(|e| SqlError::from_datafusion(&e, self.at))?;
            let rt =
                rk.data_type(right_schema.as_arrow()).map_err(|e| SqlError::from_datafusion(&e, self.at))?;
            if lt != rt {
                return Err(self
                    .error(format!("join keys {l} ({lt}) and {r} ({rt}) have different types"))
                    .with_hint("CAST one of them"));
            }
            left_keys.push(lk);
            right_keys.push(rk);
        }
        let kind = match self.versioned.get(&right.source) {
            Some(read) => self.temporal_kind(&join, join_type, &left, &right, read)?,
            None => self.join_kind(&join, join_type, &left, &right)?,
        };
        let filter = match &join.filter {
            Some(f) => Some(self.physical(f, &join.schema)?),
            None => None,
        };
        let spec = JoinSpec {
            join_type,
            kind,
            left_schema: Arc::new(left_schema.as_arrow().clone()),
            right_schema: Arc::new(right_schema.as_arrow().clone()),
            left_keys: left_keys.clone(),
            right_keys: right_keys.clone(),
            filter,
            output_schema: Arc::new(join.schema.as_arrow().clone()),
        };
        let into = left.stages.len();
        left.stages
            .push(Stage { input: Exchange::Hash(left_keys), operators: vec![OperatorSpec::Join(spec)] });
        left.branches.push(Branch {
            source: self.source_spec(&right.source)?,
            stages: right.stages,
            into,
            exchange: Exchange::Hash(right_keys),
        });
        // Joined rows are not in time order: no window may follow on their times.
        left.time = vec![None; join.schema.fields().len()];
        Ok(left)
    }

    /// `JOIN versioned FOR SYSTEM_TIME AS OF l.ts`: the versioned table's primary key is the
    /// join key, its event time orders its versions, and `l.ts` is the left event time.
    fn temporal_kind(
        &self,
        join: &Join,
        join_type: JoinType,
        left: &Partial,
        right: &Partial,
        read: &crate::versioned::VersionedRead,
    ) -> Result<JoinKind, SqlError> {
        let fail = |message: String| {
            SqlError::at(read.location, message)
                .with_hint("JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency, rates with PRIMARY KEY (currency) NOT ENFORCED and a WATERMARK")
        };
        if !matches!(join_type, JoinType::Inner | JoinType::Left) {
            return Err(fail(format!("a temporal join is INNER or LEFT, not {join_type:?}")));
        }
        let table = &self.tables[&right.source];
        let event = |p: &Partial| p.time.iter().position(|t| *t == Some(TimeKind::Event));
        let Some(right_time) = event(right) else {
            return Err(fail(format!(
                "the versioned table '{}' needs a WATERMARK (its versions' event time)",
                table.name
            )));
        };
        let Some(left_time) = event(left) else {
            return Err(fail("the left input of a temporal join needs an event-time attribute".into()));
        };
        let left_time_name = join.left.schema().field(left_time).name().to_lowercase();
        if left_time_name != read.as_of.to_lowercase() {
            return Err(fail(format!(
                "FOR SYSTEM_TIME AS OF must name the left input's event-time attribute '{left_time_name}', not '{}'",
                read.as_of
            )));
        }
        let mut primary: Vec<String> =
            table.primary_key.iter().map(|&i| table.schema.field(i).name().to_lowercase()).collect();
        if primary.is_empty() {
            return Err(fail(format!(
                "the versioned table '{}' needs a PRIMARY KEY (… ) NOT ENFORCED",
                table.name
            )));
        }
        let mut keys: Vec<String> = join
            .on
            .iter()
            .map(|(_, r)| match r {
                Expr::Column(c) => c.name.to_lowercase(),
                Expr::Cast(cast) => match cast.expr.as_ref() {
                    Expr::Column(c) => c.name.to_lowercase(),
                    other => other.to_string(),
                },
                other => other.to_string(),
            })
            .collect();
        primary.sort();
        keys.sort();
        if primary != keys {
            return Err(fail(format!(
                "a temporal join's equalities must be on the versioned table's primary key ({}), not ({})",
                primary.join(", "),
                keys.join(", ")
            )));
        }
        Ok(JoinKind::Temporal { left_time, right_time })
    }

    fn join_kind(
        &self,
        join: &Join,
        join_type: JoinType,
        left: &Partial,
        right: &Partial,
    ) -> Result<JoinKind, SqlError> {
        // Window join: window_start = window_start and window_end = window_end.
        let roles = |plan: &LogicalPlan, expr: &Expr| -> Option<(WindowRole, usize)> {
            let Expr::Column(c) = expr else { return None };
            let index = plan.schema().index_of_column(c).ok()?;
            window_role(plan, index).map(|r| (r, index))
        };
        let mut starts = false;
        let mut ends = None;
        for (l, r) in &join.on {
            match (roles(&join.left, l), roles(&join.right, r)) {
                (Some((WindowRole::Start, _)), Some((WindowRole::Start, _))) => starts = true,
                (Some((WindowRole::End, le)), Some((WindowRole::End, re))) => ends = Some((le, re)),
                _ => {}
            }
        }
        let windowed = |plan: &LogicalPlan| {
            (0..plan.schema().fields().len()).any(|i| window_role(plan, i) == Some(WindowRole::Start))
        };
        if windowed(&join.left) && windowed(&join.right) {
            return match (starts, ends) {
                (true, Some((left_end, right_end))) => Ok(JoinKind::Window { left_end, right_end }),
                _ => Err(self
                    .error("a join of two windowed inputs must equate their window_start and their window_end")
                    .with_hint("select window_end(ts) on both sides and join ON l.window_start = r.window_start AND l.window_end = r.window_end AND …")),
            };
        }

        // Interval join: both bounds between the inputs' time attributes.
        let event = |p: &Partial| p.time.iter().position(|t| *t == Some(TimeKind::Event));
        let processing = |p: &Partial| p.time.iter().position(|t| *t == Some(TimeKind::Processing));
        let times = match (event(left), event(right)) {
            (Some(l), Some(r)) => Some((l, r)),
            _ => processing(left).zip(processing(right)),
        };
        if let (Some((left_time, right_time)), Some(filter)) = (times, &join.filter) {
            let mut bounds = TimeBounds::default();
            for conjunct in split_conjunction(filter) {
                match conjunct {
                    Expr::BinaryExpr(BinaryExpr { left: a, op, right: b }) => {
                        bounds.add(a, *op, b, join, left_time, right_time)
                    }
                    Expr::Between(between) if !between.negated => {
                        bounds.add(&between.expr, Operator::GtEq, &between.low, join, left_time, right_time);
                        bounds.add(&between.expr, Operator::LtEq, &between.high, join, left_time, right_time);
                    }
                    _ => {}
                }
            }
            if let (Some(lower_ms), Some(upper_ms)) = (bounds.lower, bounds.upper) {
                if lower_ms > upper_ms {
                    return Err(self.error(format!(
                        "the join's time bounds are empty: left time - right time between {lower_ms} ms and {upper_ms} ms"
                    )));
                }
                return Ok(JoinKind::Interval { left_time, right_time, lower_ms, upper_ms });
            }
        }

        if join_type != JoinType::Inner {
            return Err(self
                .error(format!(
                    "{join_type:?} outer joins run as interval or window joins only: a regular outer join would need retractions, which are not supported"
                ))
                .with_hint("bound the join in time (a.ts BETWEEN b.ts - INTERVAL … AND b.ts + INTERVAL …), or join two window aggregates on window_start and window_end"));
        }
        Ok(JoinKind::Regular { ttl_ms: self.state_ttl_ms })
    }
}
