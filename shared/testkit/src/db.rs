//! A fresh, migrated database per test, named `muster_test_<unix time>_<random>`. Databases
//! of earlier runs older than an hour are dropped on the way, so the server does not fill up.

use std::str::FromStr;
use std::sync::OnceLock;

use muster_infra::config::DatabaseSettings;
use muster_infra::tenancy::{self, TokenKind};
use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

/// The server URL tests use: `DATABASE_URL`, else the local default.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A tenant with its tokens.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: Uuid,
    pub scim_token: String,
    pub admin_token: String,
}

/// A database of one test.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
}

fn server_options() -> PgConnectOptions {
    match PgConnectOptions::from_str(&server_url()) {
        Ok(o) => o,
        Err(e) => panic!("DATABASE_URL is not a PostgreSQL URL: {e}"),
    }
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn create() -> TestDb {
        let name = format!("muster_test_{}", crate::unique_suffix());
        let admin_options = server_options().database("postgres");
        let mut admin = match PgConnection::connect_with(&admin_options).await {
            Ok(c) => c,
            Err(e) => panic!("cannot reach PostgreSQL at {} (is it running?): {e}", server_url()),
        };
        drop_stale_databases(&mut admin).await;
        if let Err(e) = sqlx::query(&format!("create database {name}")).execute(&mut admin).await {
            panic!("creating {name}: {e}");
        }
        let _ = admin.close().await;
        let options = server_options().database(&name);
        let pool = match PgPoolOptions::new().max_connections(8).connect_with(options.clone()).await {
            Ok(p) => p,
            Err(e) => panic!("connecting to {name}: {e}"),
        };
        if let Err(e) = muster_infra::db::migrate(&pool).await {
            panic!("migrating {name}: {e:#}");
        }
        TestDb { pool, name }
    }

    /// Settings pointing a service at this database.
    pub fn settings(&self) -> DatabaseSettings {
        let base = server_url();
        let url = match base.rsplit_once('/') {
            Some((server, last)) if !last.contains('@') => {
                let query = last.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
                format!("{server}/{}{query}", self.name)
            }
            _ => format!("{}/{}", base.trim_end_matches('/'), self.name),
        };
        DatabaseSettings { url: SecretString::from(url), max_connections: 8, acquire_timeout_ms: 5000 }
    }

    /// Creates a tenant with one SCIM and one admin token, as `musterctl tenant create` does.
    pub async fn create_tenant(&self, name: &str, domain: &str) -> Tenant {
        let result = async {
            let mut tx = self.pool.begin().await?;
            let tenant = tenancy::create_tenant(&mut tx, name, domain).await?;
            let (_, scim_token) = tenancy::issue_token(&mut tx, tenant.id, TokenKind::Scim, "test").await?;
            let (_, admin_token) = tenancy::issue_token(&mut tx, tenant.id, TokenKind::Admin, "test").await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(Tenant { id: tenant.id, scim_token, admin_token })
        }
        .await;
        match result {
            Ok(t) => t,
            Err(e) => panic!("creating tenant {name}: {e}"),
        }
    }
}

async fn drop_stale_databases(admin: &mut PgConnection) {
    static DONE: OnceLock<()> = OnceLock::new();
    if DONE.set(()).is_err() {
        return;
    }
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().saturating_sub(3600))
        .unwrap_or(0);
    let names: Vec<String> =
        sqlx::query_scalar("select datname from pg_database where datname like 'muster\\_test\\_%'")
            .fetch_all(&mut *admin)
            .await
            .unwrap_or_default();
    for name in names {
        let created: Option<u64> =
            name.strip_prefix("muster_test_").and_then(|rest| rest.split('_').next()?.parse().ok());
        if created.is_some_and(|t| t < cutoff) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = sqlx::query(&format!("drop database if exists {name} with (force)")).execute(&mut *admin).await;
        }
    }
}
