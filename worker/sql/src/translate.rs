//! Turns a DataFusion logical plan (of the `SELECT` under an `INSERT`) into a streaming
//! [`Dataflow`]: scans become the source, filters and projections chain into the current
//! stage, and every operator that needs all rows of a key or of the whole stream (OVER
//! windows, window aggregates) starts a new stage behind a keyed (`Hash`) or global
//! (`Single`) exchange. Expressions become DataFusion physical expressions; aggregates become
//! DataFusion aggregate functions with their accumulators.
//!
//! A GROUP BY without a window (or DISTINCT) becomes an updating aggregate; its output is an
//! upsert stream (see [`updating`]), and the operators after it are planned for one.
//!
//! Plans the streaming model cannot run yet (joins, ORDER BY, LIMIT, windows over updating
//! results) are refused here with a message and the statement's position, before anything
//! runs.
//!
//! OVER windows ([`over`]), count windows ([`count_window`]), UNNEST ([`unnest`]),
//! updating aggregates ([`updating`]) and joins ([`join`]) are translated in their own modules.

mod count_window;
mod join;
mod over;
mod rewrite_only;
mod top_n;
mod unnest;
mod updating;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::TreeNode;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Aggregate, Distinct, Expr, LogicalPlan, Projection};
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::sql::sqlparser::tokenizer::Location;
use millrace_runtime::operators::{
    SessionWindowSpec, WindowAggregateSpec, WindowAssigner, WindowOutputColumn,
};
use millrace_runtime::{
    Branch, Changelog, Dataflow, Exchange, LateOutput, OperatorSpec, SourceSpec, Stage, TimeAttribute,
};
use millrace_types::changelog::{ROW_KIND_COLUMN, with_row_kind};

use crate::catalog::{TableDef, interval_ms};
use crate::error::SqlError;
use crate::functions::{WINDOW_END, WindowFunctionKind};

/// Whether a column is a time attribute, and which kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimeKind {
    Event,
    Processing,
}

/// The dataflow built so far for a subtree of the logical plan.
struct Partial {
    source: String,
    stages: Vec<Stage>,
    /// Per output column of the subtree: is it a time attribute?
    time: Vec<Option<TimeKind>>,
    /// The window stage whose late rows feed the late side output, with its input schema.
    late: Option<LateOutput>,
    /// `Some(key)` when the subtree's output is an upsert stream keyed by these output
    /// columns (its batches carry the row-kind column after them); `None`: append-only.
    changelog: Option<Vec<usize>>,
    /// For an upsert stream, the type the hash exchange in front of the updating aggregate
    /// hashed each key column as (in key order; projections may cast the key columns).
    changelog_exchange_types: Vec<DataType>,
    /// The further inputs of the joins in the subtree (see [`join`]).
    branches: Vec<Branch>,
}

impl Partial {
    fn push(&mut self, operator: OperatorSpec) {
        if let Some(stage) = self.stages.last_mut() {
            stage.operators.push(operator);
        }
    }
}

/// Translates the query of an `INSERT` into a dataflow.
pub struct Translator<'a> {
    tables: &'a HashMap<String, TableDef>,
    props: ExecutionProps,
    planning: PhysicalPlanningContext,
    /// The statement's position, for errors the plan cannot place more precisely.
    at: Location,
    /// `SET 'table.exec.state.ttl'`: how long a regular join keeps a row (None: forever).
    state_ttl_ms: Option<i64>,
    /// Tables read `FOR SYSTEM_TIME AS OF` (temporal joins), by name.
    versioned: HashMap<String, crate::versioned::VersionedRead>,
}

impl<'a> Translator<'a> {
    pub fn new(tables: &'a HashMap<String, TableDef>, at: Location) -> Self {
        Self {
            tables,
            props: ExecutionProps::new(),
            planning: PhysicalPlanningContext::default(),
            at,
            state_ttl_ms: None,
            versioned: HashMap::new(),
        }
    }

    /// Sets the tables read `FOR SYSTEM_TIME AS OF` (the right sides of temporal joins).
    pub fn with_versioned(mut self, reads: Vec<crate::versioned::VersionedRead>) -> Self {
        self.versioned = reads.into_iter().map(|r| (r.table.clone(), r)).collect();
        self
    }

    /// Sets the state TTL of regular joins.
    pub fn with_state_ttl(mut self, ttl_ms: Option<i64>) -> Self {
        self.state_ttl_ms = ttl_ms;
        self
    }

    /// The runtime's view of source table `name`.
    fn source_spec(&self, name: &str) -> Result<SourceSpec, SqlError> {
        let table = self.tables.get(name).ok_or_else(|| self.error(format!("unknown table '{name}'")))?;
        let time = match (table.watermark, table.proctime) {
            (Some(w), _) => TimeAttribute::EventTime {
                column: w.column,
                max_out_of_orderness_ms: w.max_out_of_orderness_ms,
                idle_timeout_ms: w.idle_timeout_ms,
            },
            (None, Some(column)) => TimeAttribute::ProcessingTime { column },
            (None, None) => TimeAttribute::None,
        };
        Ok(SourceSpec { table: table.name.clone(), schema: Arc::clone(&table.schema), time })
    }

    pub fn translate(&self, plan: &LogicalPlan) -> Result<Dataflow, SqlError> {
        let partial = self.node(plan)?;
        let table = &self.tables[&partial.source];
        if let Some(read) = self.versioned.get(&partial.source) {
            return Err(SqlError::at(
                read.location,
                "FOR SYSTEM_TIME AS OF reads the right side of a temporal join only",
            )
            .with_hint(
                "FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency",
            ));
        }
        for branch in &partial.branches {
            if let Some(def) = self.tables.get(&branch.source.table).filter(|t| t.late_output.is_some()) {
                return Err(SqlError::at(
                    def.location,
                    "a late side output is not supported in a job with joins yet",
                ));
            }
        }
        if table.late_output.is_some() && partial.late.is_none() {
            return Err(SqlError::at(
                table.location,
                format!(
                    "table '{}' names a late side output, but the query has no window aggregate",
                    table.name
                ),
            ));
        }
        Ok(Dataflow {
            source: self.source_spec(&partial.source)?,
            stages: partial.stages,
            output_schema: Arc::new(plan.schema().as_arrow().clone()),
            late_output: partial.late,
            changelog: partial.changelog.map(|key| Changelog { key }),
            branches: partial.branches,
        })
    }

    fn error(&self, message: impl Into<String>) -> SqlError {
        SqlError::at(self.at, message)
    }

    fn physical(&self, expr: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>, SqlError> {
        let expr = rewrite_only::rewrite(expr, schema).map_err(|e| SqlError::from_datafusion(&e, self.at))?;
        create_physical_expr(&expr, schema, &self.props, &self.planning)
            .map_err(|e| SqlError::from_datafusion(&e, self.at))
    }

    fn node(&self, plan: &LogicalPlan) -> Result<Partial, SqlError> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.to_string();
                let table =
                    self.tables.get(&name).ok_or_else(|| self.error(format!("unknown table '{name}'")))?;
                if !scan.filters.is_empty() || scan.fetch.is_some() {
                    return Err(self.error("filters and limits pushed into a scan are not supported"));
                }
                let time: Vec<Option<TimeKind>> = (0..table.schema.fields().len())
                    .map(|i| {
                        if table.watermark.is_some_and(|w| w.column == i) {
                            Some(TimeKind::Event)
                        } else if table.proctime == Some(i) {
                            Some(TimeKind::Processing)
                        } else {
                            None
                        }
                    })
                    .collect();
                let mut partial = Partial {
                    source: name,
                    stages: vec![Stage { input: Exchange::Forward, operators: Vec::new() }],
                    time,
                    late: None,
                    changelog: None,
                    changelog_exchange_types: Vec::new(),
                    branches: Vec::new(),
                };
                if let Some(projection) = &scan.projection {
                    let exprs: Vec<Arc<dyn PhysicalExpr>> = projection
                        .iter()
                        .map(|&i| {
                            Arc::new(Column::new(table.schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>
                        })
                        .collect();
                    partial.time = projection.iter().map(|&i| partial.time[i]).collect();
                    partial.push(OperatorSpec::Projection {
                        exprs,
                        schema: Arc::new(scan.projected_schema.as_arrow().clone()),
                    });
                }
                Ok(partial)
            }
            LogicalPlan::Filter(filter) if inner_join(&filter.input).is_some() => {
                // WHERE over an inner join is part of its condition (Flink's planner pushes
                // it in too), so time bounds written in WHERE make an interval join.
                let mut join = inner_join(&filter.input).cloned().ok_or_else(|| self.error("no join"))?;
                join.filter = Some(match join.filter.take() {
                    Some(on) => on.and(filter.predicate.clone()),
                    None => filter.predicate.clone(),
                });
                self.join(&join)
            }
            LogicalPlan::Filter(filter) if top_n::ranked_window(filter).is_some() => self.top_n(filter),
            LogicalPlan::Filter(filter) => {
                let mut partial = self.node(&filter.input)?;
                let predicate = self.physical(&filter.predicate, filter.input.schema())?;
                let operator = match &partial.changelog {
                    None => OperatorSpec::Filter(predicate),
                    Some(key) => OperatorSpec::UpsertFilter {
                        predicate,
                        key: key.clone(),
                        schema: Arc::new(filter.input.schema().as_arrow().clone()),
                        exchange_key_types: partial.changelog_exchange_types.clone(),
                    },
                };
                partial.push(operator);
                Ok(partial)
            }
            LogicalPlan::Projection(projection) => {
                let partial = self.node(&projection.input)?;
                self.project(partial, projection)
            }
            LogicalPlan::SubqueryAlias(alias) => self.node(&alias.input),
            LogicalPlan::Window(window) => self.window(window),
            LogicalPlan::Aggregate(aggregate) => self.aggregate(aggregate),
            LogicalPlan::Distinct(Distinct::All(input)) => self.distinct(input),
            LogicalPlan::Unnest(unnest) => self.unnest(unnest),
            LogicalPlan::Join(join) if unnest::is_lateral_unnest(join) => Err(self
                .error("CROSS JOIN UNNEST(…) is planned as a join, which streaming jobs do not run yet")
                .with_hint("write the UNNEST in the SELECT list: SELECT id, UNNEST(tags) AS tag FROM t")),
            LogicalPlan::Join(join) => self.join(join),
            other => Err(self
                .error(format!("{} is not supported in a streaming job yet", other.display()))
                .with_hint("supported: projections, filters, DISTINCT, UNNEST, OVER windows, GROUP BY (with or without tumble()/hop()/session()/cumulate()/count_window()), JOIN … ON equalities")),
        }
    }

    /// `projection` over the dataflow `partial` (its input's), carrying the time attributes and
    /// an upsert key through.
    fn project(&self, mut partial: Partial, projection: &Projection) -> Result<Partial, SqlError> {
        let input = projection.input.schema();
        let mut exprs = Vec::with_capacity(projection.expr.len());
        let mut time = Vec::with_capacity(projection.expr.len());
        for expr in &projection.expr {
            reject_window_group_function(expr).map_err(|m| self.error(m))?;
            exprs.push(self.physical(expr, input)?);
            time.push(match expr.clone().unalias() {
                Expr::Column(c) => input.index_of_column(&c).ok().and_then(|i| partial.time[i]),
                _ => None,
            });
        }
        partial.time = time;
        let mut schema = projection.schema.as_arrow().clone();
        if let Some(key) = partial.changelog.clone() {
            let key = updating::projected_key(&key, &projection.expr, input)
                .map_err(|m| self.error(m).with_hint(updating::KEEP_KEY_HINT))?;
            // The row kind travels on, after the projected columns.
            exprs.push(Arc::new(Column::new(ROW_KIND_COLUMN, input.fields().len())));
            schema = with_row_kind(&schema);
            partial.changelog = Some(key);
        }
        partial.push(OperatorSpec::Projection { exprs, schema: Arc::new(schema) });
        Ok(partial)
    }

    fn aggregate_function(
        &self,
        expr: &Expr,
        name: &str,
        input: &DFSchema,
    ) -> Result<Arc<AggregateFunctionExpr>, SqlError> {
        let physical_input: Schema = input.as_arrow().clone();
        let lowered = LoweredAggregateBuilder::new(expr, input, &physical_input, &self.props, &self.planning)
            .with_name(name)
            .build()
            .map_err(|e| SqlError::from_datafusion(&e, self.at))?;
        if lowered.filter.is_some() || !lowered.order_bys.is_empty() {
            return Err(
                self.error(format!("{name}: FILTER and ORDER BY inside aggregates are not supported yet"))
            );
        }
        Ok(lowered.aggregate)
    }

    fn aggregate(&self, aggregate: &Aggregate) -> Result<Partial, SqlError> {
        let mut partial = self.node(&aggregate.input)?;
        let windowed = aggregate.group_expr.iter().any(
            |e| matches!(e, Expr::ScalarFunction(f) if WindowFunctionKind::from_name(f.name()).is_some()),
        ) || join::attached_window(aggregate).is_some();
        self.refuse_updating_input(&partial, if windowed { "a window aggregate" } else { "a GROUP BY" })?;
        let input = aggregate.input.schema();
        let mut window = None;
        let mut keys = Vec::new();
        for (i, expr) in aggregate.group_expr.iter().enumerate() {
            match expr {
                Expr::ScalarFunction(f) if WindowFunctionKind::from_name(f.name()).is_some() => {
                    if window.is_some() {
                        return Err(self.error("GROUP BY may name only one window function"));
                    }
                    let kind = WindowFunctionKind::from_name(f.name()).unwrap_or(WindowFunctionKind::Tumble);
                    window = Some((i, kind, f.args.clone()));
                }
                Expr::GroupingSet(_) => {
                    return Err(
                        self.error("GROUPING SETS, CUBE and ROLLUP are not supported in streaming jobs")
                    );
                }
                other => {
                    reject_window_group_function(other).map_err(|m| self.error(m))?;
                    keys.push(other.clone());
                }
            }
        }
        // (window column position among the GROUP BY columns, assigner (None: session),
        // the window's time attribute, the session gap).
        let (window_position, assigner, time_expr, gap_ms) = match window {
            Some((position, WindowFunctionKind::Count, args)) => {
                return self.count_window(partial, aggregate, position, &args, &keys);
            }
            Some((position, kind, args)) => {
                let (assigner, gap_ms) = self.window_assigner(kind, &args, input, &partial)?;
                (position, assigner, args[0].clone(), gap_ms)
            }
            None => match join::attached_window(aggregate) {
                Some((start, end)) => {
                    let assigner = self.attached_assigner(aggregate, &partial, start, end)?;
                    // The window start is the window column; the end stays a key, so the rows
                    // of one window meet in one instance.
                    keys.retain(|k| k != &aggregate.group_expr[start]);
                    (start, Some(assigner), aggregate.group_expr[end].clone(), 0)
                }
                None => return self.updating_aggregate(aggregate, partial, keys),
            },
        };
        let time = self.physical(&time_expr, input)?;
        let time_kind = match &time_expr {
            Expr::Column(c) => input.index_of_column(c).ok().and_then(|i| partial.time[i]),
            _ => None,
        };
        let key_exprs = keys.iter().map(|k| self.physical(k, input)).collect::<Result<Vec<_>, _>>()?;
        let group_count = aggregate.group_expr.len();
        let mut aggregates = Vec::new();
        let mut output_columns = Vec::new();
        for (i, expr) in aggregate.aggr_expr.iter().enumerate() {
            let name = aggregate.schema.field(group_count + i).name();
            if let Expr::AggregateFunction(f) = expr.clone().unalias()
                && f.func.name() == WINDOW_END
            {
                if f.params.args.first() != Some(&time_expr) {
                    return Err(self.error(format!(
                        "{WINDOW_END}() takes the time attribute of the window function: {WINDOW_END}({time_expr})"
                    )));
                }
                output_columns.push(WindowOutputColumn::WindowEnd);
                continue;
            }
            output_columns.push(WindowOutputColumn::Aggregate(aggregates.len()));
            aggregates.push(self.aggregate_function(expr, name, input)?);
        }
        let exchange =
            if key_exprs.is_empty() { Exchange::Single } else { Exchange::Hash(key_exprs.clone()) };
        let table = &self.tables[&partial.source];
        let allowed_lateness_ms = table.watermark.map_or(0, |w| w.allowed_lateness_ms);
        // A cascaded window reads rows of windows that fired; the late side output is the
        // first window's (of the source rows).
        let attached = matches!(assigner, Some(WindowAssigner::Attached { .. }));
        let late_side_output = table.late_output.is_some() && !attached;
        let output_schema = Arc::new(aggregate.schema.as_arrow().clone());
        let input_schema = Arc::new(input.as_arrow().clone());
        let operator = match assigner {
            Some(assigner) => OperatorSpec::WindowAggregate(WindowAggregateSpec {
                time,
                assigner,
                keys: key_exprs,
                window_position,
                aggregates,
                output_columns: output_columns.clone(),
                output_schema,
                allowed_lateness_ms,
                late_side_output,
                input_schema: Arc::clone(&input_schema),
            }),
            None => OperatorSpec::SessionWindow(SessionWindowSpec {
                time,
                gap_ms,
                keys: key_exprs,
                window_position,
                aggregates,
                output_columns: output_columns.clone(),
                output_schema,
                allowed_lateness_ms,
                late_side_output,
                input_schema,
            }),
        };
        if late_side_output {
            partial.late =
                Some(LateOutput { stage: partial.stages.len(), schema: Arc::new(input.as_arrow().clone()) });
        }
        partial.stages.push(Stage { input: exchange, operators: vec![operator] });
        // The window end is an event-time attribute of the output (Flink's window_time, but
        // on the exclusive end): a window's row leaves before the watermark that closes it,
        // and later windows end after that watermark. Not with allowed lateness: a window
        // emitted again would be behind the watermark.
        let mut time = vec![None; aggregate.schema.fields().len()];
        if time_kind == Some(TimeKind::Event) && allowed_lateness_ms == 0 {
            for (i, column) in output_columns.iter().enumerate() {
                if *column == WindowOutputColumn::WindowEnd {
                    time[group_count + i] = Some(TimeKind::Event);
                }
            }
            if attached && let Some(end) = aggregate.group_expr.iter().position(|e| e == &time_expr) {
                time[end] = Some(TimeKind::Event);
            }
        }
        partial.time = time;
        Ok(partial)
    }

    /// The assigner of `tumble`/`hop`/`cumulate` (None and the gap for `session`), after
    /// checking the time attribute and the sizes.
    fn window_assigner(
        &self,
        kind: WindowFunctionKind,
        args: &[Expr],
        input: &DFSchema,
        partial: &Partial,
    ) -> Result<(Option<WindowAssigner>, i64), SqlError> {
        let time_ok = match args.first() {
            Some(Expr::Column(c)) => input.index_of_column(c).ok().and_then(|i| partial.time[i]).is_some(),
            _ => false,
        };
        if !time_ok {
            return Err(self
                .error(format!("{}() needs a time attribute as its first argument", kind.name()))
                .with_hint("a column with WATERMARK FOR … in the source table, or a PROCTIME() column"));
        }
        let sizes = args[1..]
            .iter()
            .map(|a| match a {
                Expr::Literal(v, _) => interval_ms(v).filter(|ms| *ms > 0),
                _ => None,
            })
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| {
                self.error(format!("{}() sizes must be positive day-time INTERVAL literals", kind.name()))
            })?;
        match (kind, sizes.as_slice()) {
            (WindowFunctionKind::Tumble, [size]) => Ok((Some(WindowAssigner::Tumbling { size_ms: *size }), 0)),
            (WindowFunctionKind::Hop, [slide, size]) if slide <= size => {
                Ok((Some(WindowAssigner::Hopping { size_ms: *size, slide_ms: *slide }), 0))
            }
            (WindowFunctionKind::Cumulate, [step, max]) if step <= max && max % step == 0 => {
                Ok((Some(WindowAssigner::Cumulate { step_ms: *step, max_size_ms: *max }), 0))
            }
            (WindowFunctionKind::Session, [gap]) => Ok((None, *gap)),
            _ => Err(self.error(format!(
                "bad arguments to {}(): use tumble(ts, size), hop(ts, slide, size) with slide <= size, session(ts, gap) or cumulate(ts, step, max_size) with max_size a multiple of step",
                kind.name()
            ))),
        }
    }

    /// A GROUP BY over the window start and end of an upstream window aggregate (GROUP BY
    /// columns `start` and `end`): the rows are windows already and are grouped by them.
    fn attached_assigner(
        &self,
        aggregate: &Aggregate,
        partial: &Partial,
        start: usize,
        end: usize,
    ) -> Result<WindowAssigner, SqlError> {
        let table = &self.tables[&partial.source];
        if table.watermark.is_some_and(|w| w.allowed_lateness_ms > 0) {
            return Err(self
                .error(format!(
                    "a window aggregate over the windows of another needs each window emitted once, but table '{}' sets allowed_lateness_ms (a window emitted again would be counted twice)",
                    table.name
                ))
                .with_hint("drop allowed_lateness_ms, or aggregate the source rows in one window aggregate"));
        }
        let input = aggregate.input.schema();
        let index = |e: &Expr| match e {
            Expr::Column(c) => input.index_of_column(c).ok(),
            _ => None,
        };
        match (index(&aggregate.group_expr[start]), index(&aggregate.group_expr[end])) {
            (Some(start), Some(end)) => Ok(WindowAssigner::Attached { start, end }),
            _ => Err(self.error("the window columns of a cascaded window aggregate must be columns")),
        }
    }
}

/// `plan` if it is an inner `JOIN … ON` (not a lateral UNNEST, nor a comma join, which stays
/// refused as a cross join).
fn inner_join(plan: &LogicalPlan) -> Option<&datafusion::logical_expr::Join> {
    match plan {
        LogicalPlan::Join(join)
            if join.join_type == datafusion::logical_expr::JoinType::Inner
                && (join.filter.is_some() || !join.on.is_empty())
                && !unnest::is_lateral_unnest(join) =>
        {
            Some(join)
        }
        _ => None,
    }
}

/// `tumble`/`hop` anywhere but directly in GROUP BY has no meaning.
fn reject_window_group_function(expr: &Expr) -> Result<(), String> {
    let mut found = None;
    expr.apply(|e| {
        if let Expr::ScalarFunction(f) = e
            && WindowFunctionKind::from_name(f.name()).is_some()
        {
            found = Some(f.name().to_string());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })
    .map_err(|e| e.to_string())?;
    match found {
        Some(name) => {
            Err(format!("{name}() may only appear in GROUP BY (select the grouped column by name)"))
        }
        None => Ok(()),
    }
}
