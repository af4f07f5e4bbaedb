//! The PostgreSQL pool and the one migration set of the whole system.

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::DatabaseSettings;

/// Every migration of the system, applied by `musterctl migrate` and `musterctl up`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connection options from settings (the URL is parsed, never logged). Unless the URL names
/// one, connections carry the program's name as `application_name`, so `pg_stat_activity`
/// tells an operator which service holds a connection or waits on a lock.
///
/// JIT compilation is off: every statement here is a short key lookup or a batch write, and
/// a cost estimate inflated by a join's guess made PostgreSQL spend 0.5–1.5 s compiling one
/// (measured in the 100,000-user benchmark), far more than any of them takes to run.
pub fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let options = settings
        .url
        .expose_secret()
        .parse::<PgConnectOptions>()
        .context("database.url is not a valid PostgreSQL URL")?
        .options([("jit", "off")]);
    if options.get_application_name().is_some() {
        return Ok(options);
    }
    let program = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()));
    Ok(match program {
        Some(name) => options.application_name(&name),
        None => options,
    })
}

/// A pooled connection idle longer than this is pinged before it is lent out.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A pool that connects on first use, so a service can start (and report not-ready) while
/// the database is still coming up.
///
/// sqlx pings every connection before lending it, by default, and again when it comes back
/// (that one cannot be turned off): for a one-statement request, two round trips of three are
/// pings, ~20 % of the ingress's CPU under load (`perf`, 100,000-user benchmark) and as many
/// wake-ups of its PostgreSQL backends. A connection back from its last use moments ago was
/// pinged then, so only one idle for [`PING_AFTER_IDLE`] is pinged again before use: that is
/// where a restarted database or a dropped connection shows, and it is replaced unseen.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout())
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(connect_options(settings)?))
}

/// Creates the configured database if it does not exist yet, so a fresh PostgreSQL needs no
/// manual step before `musterctl migrate` or `musterctl up`.
pub async fn ensure_database(settings: &DatabaseSettings) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateDatabase;
    let url = settings.url.expose_secret();
    if !sqlx::Postgres::database_exists(url).await.context("checking that the database exists")? {
        sqlx::Postgres::create_database(url).await.context("creating the database")?;
        tracing::info!("created the database");
    }
    Ok(())
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying database migrations")
}

/// Whether an error is a lost or refused connection (worth retrying), rather than a query
/// that can never succeed.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_))
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.constraint().map(str::to_string),
        _ => None,
    }
}
