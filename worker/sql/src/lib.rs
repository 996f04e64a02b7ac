//! Millrace's SQL front end. A job is SQL: `CREATE TABLE … WITH (connector = …)` for its
//! source and sink, and one `INSERT INTO sink SELECT …`. This crate parses it with
//! DataFusion's parser (after peeling Flink's streaming DDL extensions, see [`ddl`]), plans
//! it with DataFusion's SQL planner and analyzer (types, coercions, every built-in function),
//! and translates the logical plan into a streaming [`Dataflow`] for `millrace-runtime`.
//!
//! It never runs anything and knows no connector: table options are handed on as written,
//! for the connectors to validate.

mod catalog;
pub mod ddl;
mod error;
pub mod functions;
mod settings;
pub mod sinks;
mod translate;
mod versioned;

use std::collections::HashMap;
use std::sync::LazyLock;

use datafusion::execution::context::{SessionContext, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::Analyzer;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::planner::SqlToRel;
use datafusion::sql::sqlparser::ast::{Spanned, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::Location;
use millrace_runtime::Dataflow;

pub use catalog::{LateTarget, MetadataKey, TableDef, WatermarkSpec};
pub use error::SqlError;
use functions::{WindowFunctionKind, WindowGroupFunction};

/// A planned job: its tables, the source and sink it uses, and the dataflow between them.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub tables: HashMap<String, TableDef>,
    pub source: TableDef,
    /// The other source tables of a job with joins, in the order of `dataflow.branches`.
    pub join_sources: Vec<TableDef>,
    pub sink: TableDef,
    pub dataflow: Dataflow,
    /// DataFusion's logical plan of the query, for `explain`.
    pub logical_plan: String,
    /// `SET 'state.max-bytes'`: the limit on the operator state each process holds.
    pub state_max_bytes: Option<u64>,
}

const START: Location = Location { line: 1, column: 1 };

/// The session every job is planned in: DataFusion's built-in functions plus the window
/// functions. Built once per process, because building it (registering every built-in
/// function) costs more than planning a small job, and planning only reads it (tables live
/// in each job's own [`catalog::StreamCatalog`]).
static PLANNING_STATE: LazyLock<SessionState> = LazyLock::new(|| {
    let context = SessionContext::new();
    context.register_udf(WindowGroupFunction::udf(WindowFunctionKind::Tumble));
    context.register_udf(WindowGroupFunction::udf(WindowFunctionKind::Hop));
    context.register_udf(WindowGroupFunction::udf(WindowFunctionKind::Session));
    context.register_udf(WindowGroupFunction::udf(WindowFunctionKind::Cumulate));
    context.register_udf(WindowGroupFunction::udf(WindowFunctionKind::Count));
    context.register_udaf(functions::WindowEndFunction::udaf());
    context.state()
});

/// Parses and plans a job. Every error carries the line and column it refers to.
pub fn plan_job(sql: &str) -> Result<JobPlan, SqlError> {
    let peeled = ddl::peel_extensions(sql)?;
    let (text, versioned) = versioned::peel(&peeled.sql)?;
    let statements = DFParser::parse_sql_with_dialect(&text, &GenericDialect {})
        .map_err(|e| SqlError::from_datafusion(&e, START))?;

    let state: &SessionState = &PLANNING_STATE;
    let mut catalog = catalog::StreamCatalog::new(state);
    let mut tables: HashMap<String, TableDef> = HashMap::new();
    let mut insert: Option<(Statement, Location)> = None;
    let mut state_ttl_ms = None;
    let mut state_max_bytes = None;
    let set_keywords = settings::set_keywords(&peeled.sql);
    let mut sets_seen = 0;

    for statement in statements {
        let DFStatement::Statement(statement) = statement else {
            return Err(SqlError::at(START, format!("unsupported statement: {statement}"))
                .with_hint("a job is CREATE TABLE … WITH (…) statements and one INSERT INTO … SELECT"));
        };
        let at = statement.span().start;
        match *statement {
            Statement::CreateTable(create) => {
                let name = catalog::table_name(&create.name);
                let def = catalog::table_def(&catalog, create, peeled.tables.get(&name), at)?;
                if tables.contains_key(&name) {
                    return Err(SqlError::at(at, format!("table '{name}' is declared twice")));
                }
                catalog.add_table(&name, def.schema.clone());
                tables.insert(name, def);
            }
            Statement::Set(set) => {
                // sqlparser gives SET statements no span: the n-th SET keyword is where it is.
                let at = set_keywords.get(sets_seen).copied().unwrap_or(at);
                sets_seen += 1;
                match settings::setting(set, at)? {
                    settings::Setting::StateTtl(ttl) => state_ttl_ms = Some(ttl),
                    settings::Setting::StateMaxBytes(bytes) => state_max_bytes = Some(bytes),
                }
            }
            statement @ Statement::Insert(_) => {
                if insert.is_some() {
                    return Err(SqlError::at(at, "a job has exactly one INSERT INTO … SELECT"));
                }
                insert = Some((statement, at));
            }
            other => {
                return Err(SqlError::at(
                    at,
                    format!("unsupported statement: {}", first_words(&other.to_string())),
                )
                .with_hint("a job is CREATE TABLE … WITH (…) statements, SET 'table.exec.state.ttl' = '…' / SET 'state.max-bytes' = '…', and one INSERT INTO … SELECT"));
            }
        }
    }
    let end = Location { line: sql.lines().count().max(1) as u64, column: 1 };
    let (insert, at) = insert.ok_or_else(|| SqlError::at(end, "the job has no INSERT INTO … SELECT"))?;
    let planner = SqlToRel::new_with_options(&catalog, catalog.parser_options());
    let plan = planner.sql_statement_to_plan(insert).map_err(|e| SqlError::from_datafusion(&e, at))?;
    let LogicalPlan::Dml(dml) = plan else {
        return Err(SqlError::at(at, "expected INSERT INTO … SELECT"));
    };
    let sink = tables
        .get(&dml.table_name.to_string())
        .cloned()
        .ok_or_else(|| SqlError::at(at, format!("sink table '{}' is not declared", dml.table_name)))?;
    // The analyzer applies type coercion (e.g. AVG over BIGINT reads FLOAT64), which physical
    // expressions rely on. The optimizer is not run: its rewrites target batch execution.
    let query = Analyzer::new()
        .execute_and_check((*dml.input).clone(), state.config_options(), |_, _| {})
        .map_err(|e| SqlError::from_datafusion(&e, at))?;
    let dataflow = translate::Translator::new(&tables, at)
        .with_state_ttl(state_ttl_ms.flatten())
        .with_versioned(versioned)
        .translate(&query)?;
    sinks::check_sink(&sink, &dataflow, at)?;
    let source = tables[&dataflow.source.table].clone();
    let join_sources = dataflow.branches.iter().map(|b| tables[&b.source.table].clone()).collect();
    Ok(JobPlan {
        logical_plan: query.display_indent().to_string(),
        tables,
        source,
        join_sources,
        sink,
        dataflow,
        state_max_bytes,
    })
}

fn first_words(statement: &str) -> String {
    statement.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod top_n_tests;
