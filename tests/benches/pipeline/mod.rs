//! What the in-process benches share: their command line, and a company's pipeline — the
//! ingress without a rate limit, the relay, and the settings its workers start from — over a
//! fresh database and AMQP prefix, with its teardown.

use muster_contracts::Names;
use muster_infra::config::{AmqpSettings, DatabaseSettings, HttpSettings};
use muster_infra::worker::{WorkerServiceSettings, WorkerSettings};
use muster_relay::{Relay, RelayOptions};
use muster_testkit::broker::{broker_url, teardown_on, test_amqp};
use muster_testkit::{TestApp, default_scim_settings, test_telemetry};

/// The positional arguments `[MEMBERS] [CONNECTIONS]` (cargo's own `--bench` skipped), with
/// their defaults; connections default to 8.
pub fn members_and_connections(default_members: usize) -> (usize, usize) {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let members = args.first().and_then(|a| a.parse().ok()).unwrap_or(default_members);
    let connections = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    (members, connections)
}

/// A running ingress and relay; the bench starts the workers it measures from `workers`.
pub struct Pipeline {
    pub app: TestApp,
    pub amqp: AmqpSettings,
    /// The shipped pool size (10 connections) on the test database.
    pub database: DatabaseSettings,
    /// The shipped worker settings on that database and prefix.
    pub workers: WorkerServiceSettings,
    names: Names,
}

impl Pipeline {
    pub async fn start() -> anyhow::Result<Pipeline> {
        // The bench is the only client: no per-tenant rate limit.
        let unlimited = muster_ingress::ScimSettings {
            rate_limit_per_second: 1_000_000,
            rate_limit_burst: 1_000_000,
            ..default_scim_settings()
        };
        let app = TestApp::spawn_with(unlimited).await;
        let amqp = test_amqp(&broker_url());
        let names = Names::new(amqp.prefix.clone());
        let mut database = app.db.settings();
        database.max_connections = 10;
        let workers = WorkerServiceSettings {
            database: database.clone(),
            amqp: amqp.clone(),
            http: HttpSettings { addr: "127.0.0.1:0".parse()? },
            telemetry: test_telemetry(),
            worker: WorkerSettings::default(),
        };
        let relay = Relay::new(
            muster_infra::db::pool(&database)?,
            amqp.clone(),
            RelayOptions { confirm_timeout_ms: 10_000, ..RelayOptions::default() },
        );
        tokio::spawn(relay.run(app.shutdown_token()));
        Ok(Pipeline { app, amqp, database, workers, names })
    }

    /// Stops everything and deletes the prefix's queues and exchanges.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.app.shutdown_token().cancel();
        // Let the workers close their channels before their queues go.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let connection = muster_infra::amqp::connect(&self.amqp).await?;
        let channel = connection.create_channel().await?;
        teardown_on(&channel, &self.names, &WorkerSettings::default().retry_delays_ms).await;
        let _ = connection.close(200, "bench done".into()).await;
        Ok(())
    }
}
