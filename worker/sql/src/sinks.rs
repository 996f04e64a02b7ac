//! Which sink tables take which streams, checked at plan time as Flink's planner does.
//!
//! - `upsert-kafka` needs `PRIMARY KEY (…) NOT ENFORCED`; it takes append-only queries (each
//!   row an upsert of its key) and upsert streams whose key is exactly that primary key.
//! - `kafka` is append-only: an updating query is refused (use `upsert-kafka`), and so is a
//!   primary key (its record key is `key_columns`).
//! - `file` and `stdout` take both: an updating query is written as a visible changelog (an
//!   `op` field per record), so local runs still work.
//!
//! This is the one place where the planner knows connector names; the connectors still
//! validate every option themselves.

use datafusion::sql::sqlparser::tokenizer::Location;
use millrace_runtime::Dataflow;

use crate::catalog::TableDef;
use crate::error::SqlError;

/// The connector name of Flink's upsert Kafka sink.
pub const UPSERT_KAFKA: &str = "upsert-kafka";

/// The field a changelog gets in `file`/`stdout` JSON lines.
pub const OP_FIELD: &str = "op";

fn column_names(sink: &TableDef, columns: &[usize]) -> String {
    columns.iter().map(|&i| sink.schema.field(i).name().as_str()).collect::<Vec<_>>().join(", ")
}

/// Refuses a query whose stream the sink cannot take; `at` is the INSERT's position.
pub fn check_sink(sink: &TableDef, dataflow: &Dataflow, at: Location) -> Result<(), SqlError> {
    let connector = sink.options.get("connector").map(String::as_str).unwrap_or_default();
    let changelog = dataflow.changelog.as_ref();
    match connector {
        UPSERT_KAFKA => {
            if sink.primary_key.is_empty() {
                return Err(SqlError::at(
                    sink.location,
                    format!("table '{}' (connector '{UPSERT_KAFKA}') needs a primary key", sink.name),
                )
                .with_hint("declare PRIMARY KEY (k) NOT ENFORCED in its column list: the Kafka record key"));
            }
            if let Some(changelog) = changelog {
                let mut key = changelog.key.clone();
                let mut primary = sink.primary_key.clone();
                key.sort_unstable();
                primary.sort_unstable();
                if key != primary {
                    let key = if changelog.key.is_empty() {
                        "none (a global aggregate)".to_string()
                    } else {
                        format!("({})", column_names(sink, &changelog.key))
                    };
                    return Err(SqlError::at(
                        at,
                        format!(
                            "the query updates rows by the key {key}, but sink '{}' has PRIMARY KEY ({})",
                            sink.name,
                            column_names(sink, &sink.primary_key)
                        ),
                    )
                    .with_hint(
                        "the sink's primary key must be the GROUP BY columns of the updating aggregate",
                    ));
                }
            }
        }
        "kafka" => {
            if !sink.primary_key.is_empty() {
                return Err(SqlError::at(
                    sink.location,
                    format!("table '{}' (connector 'kafka') cannot declare a PRIMARY KEY", sink.name),
                )
                .with_hint(format!(
                    "use connector = '{UPSERT_KAFKA}' for an upsert table, or key_columns = '…' for keyed records"
                )));
            }
            if changelog.is_some() {
                return Err(SqlError::at(
                    at,
                    format!(
                        "table sink '{}' (connector 'kafka') doesn't support consuming update changes, which the GROUP BY without a window produces",
                        sink.name
                    ),
                )
                .with_hint(format!(
                    "use connector = '{UPSERT_KAFKA}' with PRIMARY KEY (<the GROUP BY columns>) NOT ENFORCED, or group by a window"
                )));
            }
        }
        "file" | "stdout" => {
            let json = sink.options.get("format").is_some_and(|f| f == "json");
            if changelog.is_some() && json && sink.schema.fields().iter().any(|f| f.name() == OP_FIELD) {
                return Err(SqlError::at(
                    sink.location,
                    format!(
                        "table '{}' has a column '{OP_FIELD}', which the changelog of the updating query would overwrite",
                        sink.name
                    ),
                ));
            }
        }
        other => {
            if changelog.is_some() {
                return Err(SqlError::at(
                    at,
                    format!(
                        "table sink '{}' (connector '{other}') doesn't support consuming update changes",
                        sink.name
                    ),
                )
                .with_hint(format!("use connector = '{UPSERT_KAFKA}', 'file' or 'stdout'")));
            }
        }
    }
    Ok(())
}
