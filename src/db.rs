//! Postgres: connect (creating the database when missing) and migrate.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connect to `url`, creating its database first if it does not exist.
pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid Postgres URL")?;
    create_database_if_missing(&options).await?;
    PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.disable_statement_logging())
        .await
        .with_context(|| format!("cannot connect to Postgres at {}", redact(url)))
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = options.clone().database("postgres");
    let mut conn = sqlx::PgConnection::connect_with(&admin).await.with_context(|| {
        format!(
            "cannot reach Postgres at {}:{} — is it running? Start it with: \
             pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            options.get_host(),
            options.get_port()
        )
    })?;
    let exists = database_exists(&mut conn, &name).await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        if let Err(e) =
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\""))).execute(&mut conn).await
        {
            // Another process may have created it at the same moment.
            if !crate::error::is_unique_violation(&e, "pg_database_datname_index")
                && !database_exists(&mut conn, &name).await?
            {
                return Err(e).context("cannot create the database");
            }
        }
    }
    conn.close().await.ok();
    Ok(())
}

async fn database_exists(conn: &mut sqlx::PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#, name)
        .fetch_one(conn)
        .await
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations failed")
}

/// A URL with its password removed, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("****"));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// A read-only transaction on one snapshot, for responses assembled from several
/// queries (a cycle and its transactions): under the default READ COMMITTED each query
/// would see a different moment, e.g. a declined attempt on a cycle still waiting for it.
pub async fn snapshot(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await
}
