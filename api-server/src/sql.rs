//! The SQL check, as the API runs it: `POST /v1/sql/validate` (the job's output schema and
//! plan, or the error with line and column) and [`check_job_sql`], which every job create and
//! update runs before anything is stored. The SQL is planned by the engine's own planner
//! (`millrace_sql`), so what passes here plans the same way in the worker.
//!
//! On top of the planner, the tenancy rules ([`check_tenancy`], pure): a tenant's tables read
//! and write only its own Kafka topics (`<tenant>.<topic>`, as the topics API names them) on
//! the installation's default cluster (no `bootstrap_servers`, no client security settings),
//! with consumer groups and transactional ids under the same prefix, and no `file` tables
//! (they would reach the worker's filesystem).

use axum::extract::State;
use axum::response::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Tenant;
use crate::error::{ApiError, Problem};
use crate::http::ApiJson;

/// Connectors a tenant's tables may use.
const ALLOWED_CONNECTORS: [&str; 5] = ["kafka", "upsert-kafka", "generator", "nexmark", "stdout"];
/// Options naming a Kafka topic, which must be the tenant's.
const TOPIC_OPTIONS: [&str; 3] = ["topic", "dlq_topic", "late_topic"];
/// Options naming a Kafka client identity, which must carry the tenant's prefix.
const PREFIXED_OPTIONS: [&str; 2] = ["group_id", "sink.transactional-id-prefix"];

/// `POST /v1/sql/validate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidateSql {
    /// The job: `CREATE TABLE` statements and one `INSERT INTO … SELECT …`.
    pub sql: String,
}

/// One column of the job's output (its sink table).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ColumnView {
    pub name: String,
    /// The Arrow data type, e.g. `Int64`, `Utf8`, `Timestamp(Millisecond, None)`.
    pub data_type: String,
    pub nullable: bool,
}

/// A valid job: where it writes, what, and how the engine will run it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqlValidation {
    /// The sink table the INSERT writes to.
    pub sink: String,
    pub output_schema: Vec<ColumnView>,
    /// DataFusion's logical plan of the query, then the engine's dataflow (stages, exchanges).
    pub plan: String,
}

/// Plans `sql` with the engine and applies the tenancy rules; the error names `field`.
pub fn check_job_sql(tenant: &str, sql: &str, field: &str) -> Result<SqlValidation, ApiError> {
    if sql.trim().is_empty() {
        return Err(ApiError::validation(field, "the job's SQL is empty"));
    }
    let plan = millrace_sql::plan_job(sql).map_err(|err| ApiError::InvalidSql {
        field: field.to_owned(),
        message: err.message.clone(),
        line: err.line,
        column: err.column,
        hint: err.hint.clone(),
    })?;
    let mut tables: Vec<TableUse<'_>> = plan
        .tables
        .values()
        .map(|t| TableUse { name: &t.name, options: &t.options, sink: t.name == plan.sink.name })
        .collect();
    tables.sort_by_key(|t| t.name);
    check_tenancy(tenant, &tables).map_err(|detail| ApiError::validation(field, detail))?;
    let output_schema = plan
        .sink
        .schema
        .fields()
        .iter()
        .map(|f| ColumnView {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect();
    Ok(SqlValidation {
        sink: plan.sink.name.clone(),
        output_schema,
        plan: format!("{}\n{}", plan.logical_plan, plan.dataflow.explain()),
    })
}

/// One table of a job, as the tenancy rules see it.
#[derive(Debug, Clone, Copy)]
pub struct TableUse<'a> {
    pub name: &'a str,
    /// `WITH` options, keys lower-cased.
    pub options: &'a std::collections::BTreeMap<String, String>,
    /// The INSERT's target (every other table is read).
    pub sink: bool,
}

/// The tenancy rules over each table's `WITH` options; the error says which table and option
/// break which rule.
pub fn check_tenancy(tenant: &str, tables: &[TableUse<'_>]) -> Result<(), String> {
    let prefix = format!("{tenant}.");
    for TableUse { name: table, options, sink } in tables {
        let connector = options.get("connector").map(String::as_str).unwrap_or_default();
        if !ALLOWED_CONNECTORS.contains(&connector) {
            return Err(format!(
                "table {table}: connector '{connector}' is not available to tenants (use one of {})",
                ALLOWED_CONNECTORS.join(", ")
            ));
        }
        if options.contains_key("bootstrap_servers") {
            return Err(format!(
                "table {table}: tenants' jobs use the installation's Kafka cluster; remove bootstrap_servers"
            ));
        }
        for key in options.keys().filter_map(|k| k.strip_prefix("properties.")) {
            let security = ["bootstrap.servers", "client.id"].contains(&key)
                || ["sasl.", "ssl.", "security."].iter().any(|p| key.starts_with(p));
            if security {
                return Err(format!(
                    "table {table}: properties.{key} is set by the installation, not by a job"
                ));
            }
        }
        for option in TOPIC_OPTIONS.iter().chain(PREFIXED_OPTIONS.iter()) {
            if let Some(value) = options.get(*option)
                && !value.starts_with(&prefix)
            {
                return Err(format!(
                    "table {table}: {option} '{value}' must start with '{prefix}' (a tenant's Kafka names \
                     carry its name; the topics API creates topic 'x' as '{prefix}x')"
                ));
            }
        }
        // A source without a group would share the default group name (`millrace-<table>`)
        // with every other tenant's table of the same name.
        if connector == "kafka" && !sink && !options.contains_key("group_id") {
            return Err(format!(
                "table {table}: Kafka sources of a tenant need group_id = '{prefix}<name>' \
                 (the default group is shared between tenants)"
            ));
        }
    }
    Ok(())
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(validate_sql))
}

/// Plans a job's SQL without running it: the output schema and the plan, or the first error
/// with its line and column (`422`, problem type `invalid-sql`, `line`, `column`, `hint`).
#[utoipa::path(
    post, path = "/v1/sql/validate", tag = "jobs", security(("bearer" = [])),
    request_body = ValidateSql,
    responses(
        (status = 200, body = SqlValidation),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, description = "Invalid SQL, with line and column", content_type = "application/problem+json"),
    )
)]
async fn validate_sql(
    State(_state): State<AppState>,
    tenant: Tenant,
    ApiJson(request): ApiJson<ValidateSql>,
) -> Result<Json<SqlValidation>, ApiError> {
    Ok(Json(check_job_sql(&tenant.name, &request.sql, "sql")?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_tenants_own_topics_groups_and_transactions_pass() {
        let source = options(&[("connector", "kafka"), ("topic", "acme.in"), ("group_id", "acme.job")]);
        let sink = options(&[
            ("connector", "kafka"),
            ("topic", "acme.out"),
            ("sink.delivery-guarantee", "exactly-once"),
            ("sink.transactional-id-prefix", "acme.job"),
        ]);
        let tables = [
            TableUse { name: "input", options: &source, sink: false },
            TableUse { name: "output", options: &sink, sink: true },
        ];
        assert_eq!(check_tenancy("acme", &tables), Ok(()));
    }

    #[test]
    fn another_tenants_names_clusters_and_files_are_refused_naming_the_table() {
        let cases = [
            (
                options(&[("connector", "kafka"), ("topic", "other.in"), ("group_id", "acme.g")]),
                "topic 'other.in'",
            ),
            (
                options(&[
                    ("connector", "kafka"),
                    ("topic", "acme.in"),
                    ("group_id", "acme.g"),
                    ("bootstrap_servers", "evil:9092"),
                ]),
                "bootstrap_servers",
            ),
            (
                options(&[
                    ("connector", "kafka"),
                    ("topic", "acme.in"),
                    ("group_id", "acme.g"),
                    ("properties.sasl.username", "x"),
                ]),
                "properties.sasl.username",
            ),
            (options(&[("connector", "kafka"), ("topic", "acme.in")]), "need group_id"),
            (
                options(&[("connector", "kafka"), ("topic", "acme.in"), ("group_id", "shared")]),
                "group_id 'shared'",
            ),
            (options(&[("connector", "file"), ("path", "/etc/passwd")]), "connector 'file'"),
        ];
        for (table, expected) in cases {
            let err = check_tenancy("acme", &[TableUse { name: "t", options: &table, sink: false }])
                .expect_err(expected);
            assert!(err.contains(expected) && err.starts_with("table t:"), "{err}");
        }
    }

    #[test]
    fn invalid_sql_names_line_and_column() {
        let sql =
            "CREATE TABLE t (v BIGINT) WITH (connector = 'generator');\nINSERT INTO nowhere SELECT v FROM t;";
        let err = check_job_sql("acme", sql, "sql").expect_err("no such sink");
        let problem = err.problem();
        assert_eq!((problem.status, problem.field.as_deref()), (422, Some("sql")));
        assert!(
            problem.line.is_some_and(|l| l >= 1) && problem.column.is_some_and(|c| c >= 1),
            "{problem:?}"
        );
    }
}
