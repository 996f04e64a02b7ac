//! The local PostgreSQL is real: DATABASE_URL connects and sqlx migrations apply. Each test
//! gets a fresh database from `#[sqlx::test]`. Needs `make up` (DATABASE_URL).
#![cfg(feature = "platform")]

use sqlx::PgPool;

#[sqlx::test(migrations = "tests/migrations")]
async fn migrations_apply_and_the_schema_works(pool: PgPool) {
    sqlx::query("INSERT INTO platform_probe (note) VALUES ($1)")
        .bind("hello from e2e")
        .execute(&pool)
        .await
        .expect("insert into the migrated table");
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM platform_probe").fetch_one(&pool).await.expect("count");
    assert_eq!(count, 1);
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&pool)
        .await
        .expect("sqlx records applied migrations");
    assert_eq!(applied, 1);
}

#[tokio::test]
async fn database_url_reaches_the_millrace_database() {
    let url = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL is not set: run `make up` and `set -a; source .local/env` (make test does both)",
    );
    let pool = PgPool::connect(&url).await.expect("connect with DATABASE_URL");
    let (database, version): (String, String) =
        sqlx::query_as("SELECT current_database(), current_setting('server_version')")
            .fetch_one(&pool)
            .await
            .expect("query");
    assert_eq!(database, "millrace");
    assert!(version.starts_with("15."), "PostgreSQL 15 expected, got {version}");
}
