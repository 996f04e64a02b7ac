//! Tables of a job: `CREATE TABLE` statements turned into [`TableDef`]s (schema through
//! DataFusion's own DDL planning, connector options from `WITH (…)`, time attributes from the
//! peeled Flink extensions), and the DataFusion [`ContextProvider`] that plans queries over
//! them with every function of the session.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{Constraint, DFSchema, ScalarValue, TableReference};
use datafusion::config::ConfigOptions;
use datafusion::execution::SessionState;
use datafusion::logical_expr::builder::LogicalTableSource;
use datafusion::logical_expr::planner::{ContextProvider, ExprPlanner};
use datafusion::logical_expr::{
    AggregateUDF, BinaryExpr, DdlStatement, Expr, HigherOrderUDF, LogicalPlan, Operator, ScalarUDF,
    TableSource, WindowUDF,
};
use datafusion::sql::planner::{PlannerContext, SqlToRel};
use datafusion::sql::sqlparser::ast::{
    CreateTable, CreateTableOptions, Expr as SqlExpr, ObjectName, SqlOption, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Location;

use crate::ddl::{TableExtensions, normalize_ident};
use crate::error::SqlError;

/// The table option that makes silent partitions stop holding the watermark back.
pub const IDLE_TIMEOUT_OPTION: &str = "watermark_idle_timeout_ms";
/// How long a fired window still accepts rows (source table option, milliseconds).
pub const ALLOWED_LATENESS_OPTION: &str = "allowed_lateness_ms";
/// The late side output: a Kafka topic (on the source's cluster) or a file.
pub const LATE_TOPIC_OPTION: &str = "late_topic";
pub const LATE_PATH_OPTION: &str = "late_path";

/// Where a source table's late rows go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LateTarget {
    /// `late_topic`: a Kafka topic on the source table's cluster, rows as JSON.
    Topic(String),
    /// `late_path`: a file, one JSON row per line.
    Path(String),
}

/// Where a table's event time comes from and how late rows may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    pub column: usize,
    pub max_out_of_orderness_ms: i64,
    /// `watermark_idle_timeout_ms`: a partition silent this long stops holding the
    /// watermark back.
    pub idle_timeout_ms: Option<i64>,
    /// `allowed_lateness_ms`: how long after firing a window still takes rows (0 by default).
    pub allowed_lateness_ms: i64,
}

/// A column filled from the record's metadata instead of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKey {
    /// The Kafka record timestamp (or the generator's event time).
    Timestamp,
    Partition,
    Offset,
}

/// One `CREATE TABLE`, ready for connectors and the planner.
#[derive(Debug, Clone)]
pub struct TableDef {
    pub name: String,
    /// All columns: payload and metadata columns in declaration order, then the
    /// processing-time column (if any) last.
    pub schema: SchemaRef,
    pub metadata: Vec<(usize, MetadataKey)>,
    pub proctime: Option<usize>,
    pub watermark: Option<WatermarkSpec>,
    /// `late_topic` / `late_path`: the late side output (none: late rows are dropped).
    pub late_output: Option<LateTarget>,
    /// `PRIMARY KEY (…) NOT ENFORCED`: column indices, in the order written (empty: none).
    /// Parsed by sqlparser and DataFusion's DDL planning, never checked against the data
    /// (Flink's semantics); an `upsert-kafka` sink's record key.
    pub primary_key: Vec<usize>,
    /// `WITH (…)` options, keys lower-cased, values as written.
    pub options: BTreeMap<String, String>,
    /// Where the statement starts, for errors found later (connector options).
    pub location: Location,
}

impl TableDef {
    /// The schema connectors produce: every column except processing time, which the
    /// runtime stamps.
    pub fn connector_schema(&self) -> SchemaRef {
        match self.proctime {
            None => Arc::clone(&self.schema),
            Some(p) => {
                let fields: Vec<_> = self
                    .schema
                    .fields()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != p)
                    .map(|(_, f)| Arc::clone(f))
                    .collect();
                Arc::new(Schema::new(fields))
            }
        }
    }

    /// Payload columns: neither metadata nor processing time.
    pub fn payload_columns(&self) -> Vec<usize> {
        (0..self.schema.fields().len())
            .filter(|i| Some(*i) != self.proctime && !self.metadata.iter().any(|(m, _)| m == i))
            .collect()
    }
}

/// Normalized dotted name of a table.
pub fn table_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => normalize_ident(&ident.value, ident.quote_style.is_some()),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Milliseconds of a (day-time) interval literal; months have no fixed length.
pub fn interval_ms(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(i64::from(v.days) * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(i64::from(v.days) * 86_400_000 + i64::from(v.milliseconds))
        }
        _ => None,
    }
}

/// Builds a [`TableDef`] from a parsed `CREATE TABLE` and its peeled extensions.
pub fn table_def(
    catalog: &StreamCatalog<'_>,
    mut create: CreateTable,
    extensions: Option<&TableExtensions>,
    location: Location,
) -> Result<TableDef, SqlError> {
    let name = table_name(&create.name);
    let options = match std::mem::take(&mut create.table_options) {
        CreateTableOptions::None => BTreeMap::new(),
        CreateTableOptions::With(options) => with_options(options, location)?,
        _ => {
            return Err(SqlError::at(location, "table options must be given as WITH (key = 'value', …)"));
        }
    };
    if create.query.is_some() {
        return Err(SqlError::at(
            location,
            "CREATE TABLE … AS SELECT is not supported; declare columns and connector",
        ));
    }
    // DataFusion plans the column list (types, nullability) exactly as it would for a batch table.
    let planner = SqlToRel::new_with_options(catalog, catalog.parser_options());
    let plan = planner
        .sql_statement_to_plan(Statement::CreateTable(create))
        .map_err(|e| SqlError::from_datafusion(&e, location))?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(table)) = plan else {
        return Err(SqlError::at(location, "unsupported CREATE TABLE form"));
    };
    let mut fields: Vec<Field> = table.input.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut primary_key = Vec::new();
    for constraint in table.constraints.iter() {
        if let Constraint::PrimaryKey(columns) = constraint {
            if !primary_key.is_empty() {
                return Err(SqlError::at(location, format!("table '{name}' declares two primary keys")));
            }
            primary_key = columns.clone();
        }
    }
    let ext = extensions.cloned().unwrap_or_default();
    let column_index = |fields: &[Field], column: &str, at: Location| {
        fields
            .iter()
            .position(|f| f.name() == column)
            .ok_or_else(|| SqlError::at(at, format!("column '{column}' is not declared in table '{name}'")))
    };

    let mut metadata = Vec::new();
    for m in &ext.metadata {
        let index = column_index(&fields, &m.column, m.location)?;
        let (key, ok) = match m.key.as_str() {
            "timestamp" => {
                (MetadataKey::Timestamp, matches!(fields[index].data_type(), DataType::Timestamp(_, _)))
            }
            "partition" => (
                MetadataKey::Partition,
                matches!(fields[index].data_type(), DataType::Int32 | DataType::Int64),
            ),
            "offset" => (MetadataKey::Offset, fields[index].data_type() == &DataType::Int64),
            other => {
                return Err(SqlError::at(m.location, format!("unknown metadata key '{other}'"))
                    .with_hint("use 'timestamp' (TIMESTAMP), 'partition' (INT) or 'offset' (BIGINT)"));
            }
        };
        if !ok {
            return Err(SqlError::at(
                m.location,
                format!("metadata '{}' cannot fill a {} column", m.key, fields[index].data_type()),
            )
            .with_hint("use 'timestamp' (TIMESTAMP), 'partition' (INT) or 'offset' (BIGINT)"));
        }
        metadata.push((index, key));
    }

    let watermark = match &ext.watermark {
        None => None,
        Some(clause) => {
            let column = column_index(&fields, &clause.column, clause.location)?;
            if !matches!(fields[column].data_type(), DataType::Timestamp(_, _)) {
                return Err(SqlError::at(
                    clause.location,
                    format!("WATERMARK column '{}' must be a TIMESTAMP", clause.column),
                ));
            }
            let schema = DFSchema::try_from(Schema::new(fields.clone()))
                .map_err(|e| SqlError::from_datafusion(&e, clause.location))?;
            let delay =
                watermark_delay(catalog, &clause.expr_sql, &clause.column, &schema).map_err(|message| {
                    SqlError::at(clause.location, message)
                        .with_hint("write WATERMARK FOR ts AS ts - INTERVAL '5' SECOND")
                })?;
            Some(WatermarkSpec {
                column,
                max_out_of_orderness_ms: delay,
                idle_timeout_ms: None,
                allowed_lateness_ms: 0,
            })
        }
    };

    // A time option, not a connector option: it is taken out before connectors see the rest.
    let mut options = options;
    let idle_timeout_ms = match options.remove(IDLE_TIMEOUT_OPTION) {
        None => None,
        Some(value) => match value.parse::<i64>() {
            Ok(ms) if ms > 0 => Some(ms),
            _ => {
                return Err(SqlError::at(
                    location,
                    format!("{IDLE_TIMEOUT_OPTION} must be a positive number of milliseconds, got '{value}'"),
                ));
            }
        },
    };
    let allowed_lateness_ms = match options.remove(ALLOWED_LATENESS_OPTION) {
        None => None,
        Some(value) => match value.parse::<i64>() {
            Ok(ms) if ms >= 0 => Some(ms),
            _ => {
                return Err(SqlError::at(
                    location,
                    format!(
                        "{ALLOWED_LATENESS_OPTION} must be a non-negative number of milliseconds, got '{value}'"
                    ),
                ));
            }
        },
    };
    let late_output = match (options.remove(LATE_TOPIC_OPTION), options.remove(LATE_PATH_OPTION)) {
        (Some(_), Some(_)) => {
            return Err(SqlError::at(
                location,
                format!("name one late side output: {LATE_TOPIC_OPTION} or {LATE_PATH_OPTION}"),
            ));
        }
        (Some(topic), None) => Some(LateTarget::Topic(topic)),
        (None, Some(path)) => Some(LateTarget::Path(path)),
        (None, None) => None,
    };
    let time_option = [
        (IDLE_TIMEOUT_OPTION, idle_timeout_ms.is_some()),
        (ALLOWED_LATENESS_OPTION, allowed_lateness_ms.is_some()),
        (LATE_TOPIC_OPTION, matches!(late_output, Some(LateTarget::Topic(_)))),
        (LATE_PATH_OPTION, matches!(late_output, Some(LateTarget::Path(_)))),
    ]
    .into_iter()
    .find_map(|(name, given)| given.then_some(name));
    let watermark = match watermark {
        Some(w) => Some(WatermarkSpec {
            idle_timeout_ms,
            allowed_lateness_ms: allowed_lateness_ms.unwrap_or(0),
            ..w
        }),
        None => match time_option {
            Some(option) => return Err(SqlError::at(location, format!("{option} needs a WATERMARK"))),
            None => None,
        },
    };

    let proctime = match &ext.proctime {
        None => None,
        Some((column, at)) => {
            if fields.iter().any(|f| f.name() == column) {
                return Err(SqlError::at(*at, format!("column '{column}' is declared twice")));
            }
            fields.push(Field::new(column, DataType::Timestamp(TimeUnit::Millisecond, None), false));
            Some(fields.len() - 1)
        }
    };
    if proctime.is_some() && watermark.is_some() {
        return Err(SqlError::at(
            location,
            "a table has either event time (WATERMARK) or processing time (PROCTIME()), not both",
        ));
    }
    Ok(TableDef {
        name,
        schema: Arc::new(Schema::new(fields)),
        metadata,
        proctime,
        watermark,
        late_output,
        primary_key,
        options,
        location,
    })
}

fn with_options(options: Vec<SqlOption>, location: Location) -> Result<BTreeMap<String, String>, SqlError> {
    let mut out = BTreeMap::new();
    for option in options {
        let SqlOption::KeyValue { key, value } = option else {
            return Err(SqlError::at(location, "table options must be key = 'value' pairs"));
        };
        let at = key.span.start;
        let text = match &value {
            SqlExpr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                Value::Number(n, _) => n.to_string(),
                Value::Boolean(b) => b.to_string(),
                _ => return Err(SqlError::at(at, format!("option '{}' needs a literal value", key.value))),
            },
            SqlExpr::Identifier(ident) => ident.value.clone(),
            _ => return Err(SqlError::at(at, format!("option '{}' needs a literal value", key.value))),
        };
        let name = key.value.to_lowercase();
        if out.insert(name.clone(), text).is_some() {
            return Err(SqlError::at(at, format!("option '{name}' is given twice")));
        }
    }
    Ok(out)
}

/// `ts` → 0, `ts - INTERVAL '5' SECOND` → 5000.
fn watermark_delay(
    catalog: &StreamCatalog<'_>,
    expr_sql: &str,
    column: &str,
    schema: &DFSchema,
) -> Result<i64, String> {
    let dialect = GenericDialect {};
    let parsed = Parser::new(&dialect)
        .try_with_sql(expr_sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| e.to_string())?;
    let planner = SqlToRel::new_with_options(catalog, catalog.parser_options());
    let expr =
        planner.sql_to_expr(parsed, schema, &mut PlannerContext::new()).map_err(|e| e.strip_backtrace())?;
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    match &expr {
        e if is_column(e) => Ok(0),
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) if is_column(left) => {
            match right.as_ref() {
                Expr::Literal(value, _) => interval_ms(value).filter(|ms| *ms >= 0).ok_or_else(|| {
                    format!("the watermark delay must be a non-negative day-time INTERVAL, got {value}")
                }),
                other => Err(format!("the watermark delay must be an INTERVAL literal, got {other}")),
            }
        }
        other => Err(format!("unsupported watermark expression {other}: expected {column} - INTERVAL …")),
    }
}

/// DataFusion's view of the job: declared tables plus every function of the session
/// (including `tumble` and `hop`).
pub struct StreamCatalog<'a> {
    state: &'a SessionState,
    tables: HashMap<String, Arc<dyn TableSource>>,
}

impl<'a> StreamCatalog<'a> {
    pub fn new(state: &'a SessionState) -> Self {
        Self { state, tables: HashMap::new() }
    }

    pub fn add_table(&mut self, name: &str, schema: SchemaRef) {
        self.tables.insert(name.to_string(), Arc::new(LogicalTableSource::new(schema)));
    }

    pub fn parser_options(&self) -> datafusion::sql::planner::ParserOptions {
        datafusion::sql::planner::ParserOptions::new().with_collect_spans(true)
    }
}

impl ContextProvider for StreamCatalog<'_> {
    fn get_table_source(&self, name: TableReference) -> datafusion::common::Result<Arc<dyn TableSource>> {
        let key = name.to_string();
        self.tables.get(&key).cloned().ok_or_else(|| {
            datafusion::common::plan_datafusion_err!("table '{key}' is not declared in this job")
        })
    }

    fn get_expr_planners(&self) -> &[Arc<dyn ExprPlanner>] {
        self.state.expr_planners()
    }

    fn get_function_meta(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.state.scalar_functions().get(name).cloned()
    }

    fn get_higher_order_meta(&self, name: &str) -> Option<Arc<HigherOrderUDF>> {
        self.state.higher_order_functions().get(name).cloned()
    }

    fn get_aggregate_meta(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.state.aggregate_functions().get(name).cloned()
    }

    fn get_window_meta(&self, name: &str) -> Option<Arc<WindowUDF>> {
        self.state.window_functions().get(name).cloned()
    }

    fn get_variable_type(&self, _variable_names: &[String]) -> Option<DataType> {
        None
    }

    fn options(&self) -> &ConfigOptions {
        self.state.config_options()
    }

    fn udf_names(&self) -> Vec<String> {
        self.state.scalar_functions().keys().cloned().collect()
    }

    fn higher_order_function_names(&self) -> Vec<String> {
        self.state.higher_order_functions().keys().cloned().collect()
    }

    fn udaf_names(&self) -> Vec<String> {
        self.state.aggregate_functions().keys().cloned().collect()
    }

    fn udwf_names(&self) -> Vec<String> {
        self.state.window_functions().keys().cloned().collect()
    }
}
