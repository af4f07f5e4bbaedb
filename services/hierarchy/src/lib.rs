//! The hierarchy worker: consumes `member.*` and links each member to their manager
//! (`muster_domain::hierarchy`), whatever order Entra ID sends people and references in. A
//! member that changes wakes, by indexed lookup, the members whose references name it; a
//! `member.placed` event goes out whenever a member's manager link is set or changes.

pub mod place;

use muster_contracts::EventEnvelope;
use muster_contracts::topology::HIERARCHY;
use std::sync::Arc;

use muster_infra::worker::batch::Batcher;
use muster_infra::worker::{Handler, ProcessError, Worker, WorkerServiceSettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Defaults of the hierarchy worker's health listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8084"
"#;

/// The hierarchy worker's settings.
pub type Settings = WorkerServiceSettings;

/// The worker's name in logs, metrics and the version table.
pub const SERVICE: &str = "hierarchy";

/// Events of one company placed in one transaction at most.
const MAX_BATCH: usize = 256;

/// The handler: member events → those members' links and the links waiting on them.
#[derive(Clone)]
pub struct Hierarchy {
    pool: PgPool,
    batches: Arc<Batcher<Uuid, (EventEnvelope, Uuid)>>,
}

impl Hierarchy {
    /// A hierarchy worker writing through `pool`.
    pub fn new(pool: PgPool) -> Hierarchy {
        Hierarchy { pool, batches: Arc::new(Batcher::new(MAX_BATCH)) }
    }
}

impl Handler for Hierarchy {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), ProcessError> {
        let Ok(member) = event.entity_id.parse::<Uuid>() else {
            return Err(ProcessError::Permanent(format!("entity id '{}' is not a member id", event.entity_id)));
        };
        let tenant = event.tenant_id;
        let pool = &self.pool;
        self.batches.run(tenant, (event.clone(), member), |batch| place::apply_batch(pool, tenant, batch)).await
    }
}

/// The worker with its handler, ready to run.
pub fn worker(settings: &Settings, pool: PgPool) -> Worker<Hierarchy> {
    settings.batching().worker(SERVICE, HIERARCHY, Hierarchy::new(pool))
}

/// Runs the hierarchy worker and its health endpoints until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    muster_infra::worker::serve(SERVICE, HIERARCHY, settings.batching(), Hierarchy::new, shutdown).await
}
