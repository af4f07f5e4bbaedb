//! The normalizer: consumes `scim.user.*` (and `tenant.settings_changed`) and keeps each SCIM
//! user's team member — imported, skipped with its reasons, deactivated or reactivated — under
//! the business rules of `muster_domain::profile` (through `muster_members`), with a
//! provisioning-log line for every change and a `member.*` event (through the outbox, in the
//! same transaction) for the workers after it.

pub mod member;

use std::sync::Arc;

use muster_contracts::topology::NORMALIZER;
use muster_contracts::{EventEnvelope, EventKind};
use muster_infra::worker::batch::Batcher;
use muster_infra::worker::{Handler, ProcessError, Worker, WorkerServiceSettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Defaults of the normalizer's health listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8083"
"#;

/// The normalizer's settings.
pub type Settings = WorkerServiceSettings;

/// The worker's name in logs, metrics and the version table.
pub const SERVICE: &str = "normalizer";

/// SCIM user events of one company normalized in one transaction at most.
const MAX_BATCH: usize = 256;

/// The handler: SCIM user events → their members' new state, a company's concurrent
/// deliveries in one transaction.
#[derive(Clone)]
pub struct Normalizer {
    pool: PgPool,
    batches: Arc<Batcher<Uuid, (EventEnvelope, Uuid)>>,
}

impl Normalizer {
    /// A normalizer writing through `pool`.
    pub fn new(pool: PgPool) -> Normalizer {
        Normalizer { pool, batches: Arc::new(Batcher::new(MAX_BATCH)) }
    }
}

impl Handler for Normalizer {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), ProcessError> {
        match event.kind {
            EventKind::ScimUserUpserted | EventKind::ScimUserDeleted => {
                let Ok(user) = event.entity_id.parse::<Uuid>() else {
                    return Err(ProcessError::Permanent(format!(
                        "entity id '{}' is not a SCIM user id",
                        event.entity_id
                    )));
                };
                let (pool, tenant) = (&self.pool, event.tenant_id);
                self.batches.run(tenant, (event.clone(), user), |batch| member::apply_batch(pool, tenant, batch)).await
            }
            _ => member::handle(&self.pool, event).await,
        }
    }
}

/// The worker with its handler, ready to run.
pub fn worker(settings: &Settings, pool: PgPool) -> Worker<Normalizer> {
    settings.batching().worker(SERVICE, NORMALIZER, Normalizer::new(pool))
}

/// Runs the normalizer and its health endpoints until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    muster_infra::worker::serve(SERVICE, NORMALIZER, settings.batching(), Normalizer::new, shutdown).await
}
