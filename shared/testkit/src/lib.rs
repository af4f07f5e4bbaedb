//! The test harness shared by service tests and `tests/`: a fresh database per test, a
//! unique AMQP name prefix per test, services started in-process on port 0, typed HTTP calls,
//! `eventually`, and a TCP proxy to take the broker away and give it back.
//!
//! Tests need only a local PostgreSQL and RabbitMQ (`DATABASE_URL`, `AMQP_URL`, defaulting to
//! the standard local ports); nothing here starts containers.

pub mod broker;
pub mod db;
pub mod proxy;
pub mod scim;
pub mod smtp;
pub mod worker;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use muster_infra::config::{HttpSettings, LogFormat, TelemetrySettings};
use muster_ingress::{Ingress, ScimSettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use db::{Tenant, TestDb};
pub use scim::{Resp, Scim};

/// The SCIM settings the services ship with, for tests that vary one of them.
pub fn default_scim_settings() -> ScimSettings {
    ScimSettings {
        max_body_bytes: 4 * 1024 * 1024,
        default_page_size: 100,
        max_page_size: 1000,
        rate_limit_per_second: 200,
        rate_limit_burst: 400,
        public_url: None,
    }
}

/// Quiet telemetry settings for services started by tests.
pub fn test_telemetry() -> TelemetrySettings {
    TelemetrySettings { log_format: LogFormat::Pretty, filter: "warn".into(), otlp_endpoint: None }
}

/// An ingress running in this process against its own database, with one tenant.
pub struct TestApp {
    pub db: TestDb,
    /// The ingress's pool (the test's own queries go through `db.pool`).
    pub pool: PgPool,
    pub addr: SocketAddr,
    pub tenant: Tenant,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
}

impl TestApp {
    /// An ingress with the shipped settings.
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(default_scim_settings()).await
    }

    /// An ingress with the given SCIM settings.
    pub async fn spawn_with(scim: ScimSettings) -> TestApp {
        muster_infra::telemetry::init_for_tests();
        let db = TestDb::create().await;
        let settings = muster_ingress::Settings {
            database: db.settings(),
            http: HttpSettings { addr: SocketAddr::from(([127, 0, 0, 1], 0)) },
            telemetry: test_telemetry(),
            scim,
        };
        // The ingress's own kind of pool, as the binary has it.
        let pool = match muster_ingress::pool(&settings.database) {
            Ok(p) => p,
            Err(e) => panic!("the ingress's pool: {e:#}"),
        };
        let ingress = match Ingress::bind(&settings, pool.clone()).await {
            Ok(i) => i,
            Err(e) => panic!("binding the ingress: {e:#}"),
        };
        let addr = match ingress.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("{e:#}"),
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(ingress.run(shutdown.clone()));
        let tenant = db.create_tenant("Contoso", "contoso.com").await;
        TestApp { db, pool, addr, tenant, http: reqwest::Client::new(), shutdown }
    }

    /// The ingress's base URL, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A SCIM client authenticated as the app's tenant.
    pub fn scim(&self) -> Scim {
        self.scim_as(&self.tenant.scim_token)
    }

    /// A SCIM client presenting `token`.
    pub fn scim_as(&self, token: &str) -> Scim {
        Scim::new(self.http.clone(), format!("{}/scim/v2", self.base_url()), token)
    }

    /// A token that can be cancelled to stop this app's services.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` until it yields a value or `timeout` passes (then panics with `what`).
/// Use it for every eventual outcome instead of a fixed sleep.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// A name unique to this test run, usable in SQL identifiers and AMQP names.
pub fn unique_suffix() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{now}_{}", &Uuid::new_v4().simple().to_string()[..12])
}
