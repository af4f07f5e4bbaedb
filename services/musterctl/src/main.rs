//! `musterctl`: the operator's CLI — migrations, tenants and their tokens, and `up`, which
//! runs the whole system in one process.

// glibc's malloc took a fifth of the ingress's CPU under load (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod dlq;
mod tenants;
mod up;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use serde::Deserialize;

use muster_infra::config::{AmqpSettings, DatabaseSettings, TelemetrySettings};

#[derive(Parser)]
#[command(name = "musterctl", version, about = "Operate Muster: migrations, tenants, tokens, and the all-in-one `up`.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply every pending database migration.
    Migrate,
    /// Manage tenants (companies).
    #[command(subcommand)]
    Tenant(tenants::TenantCommand),
    /// Manage a tenant's API tokens (several may be live at once, for rotation).
    #[command(subcommand)]
    Token(tenants::TokenCommand),
    /// Inspect, replay and purge dead-lettered messages.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Run every service in this process: migrations and topology first, then ingress,
    /// relay, admin and the workers, until Ctrl-C or SIGTERM.
    Up(UpArgs),
    /// Load-test a fresh system: an Entra-shaped company pushed through SCIM as Entra does,
    /// then how long until everyone is provisioned and what each service used.
    Bench(bench::BenchArgs),
}

#[derive(clap::Args)]
struct UpArgs {
    /// SCIM API listen address.
    #[arg(long, env = "INGRESS_ADDR", default_value = "0.0.0.0:8080")]
    ingress_addr: SocketAddr,
    /// Admin API listen address.
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    admin_addr: SocketAddr,
    /// Relay health/metrics listen address.
    #[arg(long, env = "RELAY_ADDR", default_value = "0.0.0.0:8082")]
    relay_addr: SocketAddr,
    /// Normalizer health/metrics listen address.
    #[arg(long, env = "NORMALIZER_ADDR", default_value = "0.0.0.0:8083")]
    normalizer_addr: SocketAddr,
    /// Hierarchy worker health/metrics listen address.
    #[arg(long, env = "HIERARCHY_ADDR", default_value = "0.0.0.0:8084")]
    hierarchy_addr: SocketAddr,
    /// Assignments worker health/metrics listen address.
    #[arg(long, env = "ASSIGNMENTS_ADDR", default_value = "0.0.0.0:8085")]
    assignments_addr: SocketAddr,
    /// Notifier health/metrics listen address.
    #[arg(long, env = "NOTIFIER_ADDR", default_value = "0.0.0.0:8086")]
    notifier_addr: SocketAddr,
}

/// What every command reads from the layered configuration.
#[derive(Debug, Clone, Deserialize)]
struct CtlSettings {
    database: DatabaseSettings,
    amqp: AmqpSettings,
    telemetry: TelemetrySettings,
    scim: muster_ingress::ScimSettings,
    relay: muster_relay::RelayOptions,
    worker: muster_infra::worker::WorkerSettings,
    smtp: muster_notifier::SmtpSettings,
    notifier: muster_notifier::NotifierOptions,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: CtlSettings = muster_infra::config::load_layers(&[
        muster_ingress::SCIM_DEFAULTS,
        muster_relay::RELAY_DEFAULTS,
        muster_infra::worker::WORKER_DEFAULTS,
        muster_notifier::NOTIFIER_DEFAULTS,
    ])?;
    match cli.command {
        Command::Migrate => {
            muster_infra::db::ensure_database(&settings.database).await?;
            let pool = muster_infra::db::pool(&settings.database)?;
            muster_infra::db::migrate(&pool).await?;
            println!("{}", serde_json::json!({"migrated": true}));
            Ok(())
        }
        Command::Tenant(cmd) => tenants::tenant(&settings.database, cmd).await,
        Command::Token(cmd) => tenants::token(&settings.database, cmd).await,
        Command::Dlq(cmd) => dlq::run(&settings.amqp, cmd).await,
        Command::Up(args) => up::up(settings, args).await,
        Command::Bench(args) => bench::run(&settings.database, &settings.amqp, args).await,
    }
}
