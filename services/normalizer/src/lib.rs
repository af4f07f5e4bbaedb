//! The normalizer: consumes `scim.user.*` (and `tenant.settings_changed`) and keeps each SCIM
//! user's team member — imported, skipped with its reasons, deactivated or reactivated — under
//! the business rules of `muster_domain::profile` (through `muster_members`), with a
//! provisioning-log line for every change and a `member.*` event (through the outbox, in the
//! same transaction) for the workers after it.

pub mod member;

use muster_contracts::EventEnvelope;
use muster_contracts::topology::NORMALIZER;
use muster_infra::worker::{Handler, ProcessError, Worker, WorkerServiceSettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Defaults of the normalizer's health listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8083"
"#;

/// The normalizer's settings.
pub type Settings = WorkerServiceSettings;

/// The worker's name in logs, metrics and the version table.
pub const SERVICE: &str = "normalizer";

/// The handler: one SCIM user event → the member's new state.
#[derive(Clone)]
pub struct Normalizer {
    pool: PgPool,
}

impl Normalizer {
    /// A normalizer writing through `pool`.
    pub fn new(pool: PgPool) -> Normalizer {
        Normalizer { pool }
    }
}

impl Handler for Normalizer {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), ProcessError> {
        member::handle(&self.pool, event).await
    }
}

/// The worker with its handler, ready to run.
pub fn worker(settings: &Settings, pool: PgPool) -> Worker<Normalizer> {
    settings.worker(SERVICE, NORMALIZER, Normalizer::new(pool))
}

/// Runs the normalizer and its health endpoints until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    muster_infra::worker::serve(SERVICE, NORMALIZER, settings, Normalizer::new, shutdown).await
}
