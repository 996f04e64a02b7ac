//! The catalog database: connecting, and migrating at start with `sqlx::migrate!()` over
//! `api-server/migrations/`. A database migrated by a newer binary (applied versions this
//! one does not know) is refused instead of being run against a schema it does not understand.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The catalog's migrations, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot reach the catalog database at {url}: {source}")]
    Unreachable { url: String, source: sqlx::Error },
    #[error(
        "the catalog database has migrations this binary does not know (versions {versions:?}): it was \
         migrated by a newer millrace-api. Run that version (or newer), or restore a matching backup"
    )]
    SchemaNewerThanBinary { versions: Vec<i64> },
    #[error("migrating the catalog database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("reading the applied migrations: {0}")]
    Query(#[from] sqlx::Error),
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Connects, failing within `timeout` when the database does not answer.
pub async fn connect(url: &str, timeout: Duration) -> Result<PgPool, CatalogError> {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(timeout)
        .connect(url)
        .await
        .map_err(|source| CatalogError::Unreachable { url: redact(url), source })
}

/// Applied migration versions that `migrator` does not have.
pub async fn unknown_applied_versions(pool: &PgPool, migrator: &Migrator) -> Result<Vec<i64>, CatalogError> {
    let (exists,): (bool,) =
        sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !exists {
        return Ok(Vec::new());
    }
    let applied: Vec<(i64,)> =
        sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(pool).await?;
    Ok(applied.into_iter().map(|(v,)| v).filter(|v| !migrator.iter().any(|m| m.version == *v)).collect())
}

/// Refuses a schema newer than the binary, then applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), CatalogError> {
    let versions = unknown_applied_versions(pool, &MIGRATOR).await?;
    if !versions.is_empty() {
        return Err(CatalogError::SchemaNewerThanBinary { versions });
    }
    MIGRATOR.run(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://millrace:secret@127.0.0.1:15432/millrace"),
            "postgres://millrace:***@127.0.0.1:15432/millrace"
        );
        assert_eq!(redact("postgres:///millrace"), "postgres:///millrace");
    }
}
