//! The hierarchy worker: consumes `member.*` and links each member to their manager
//! (`muster_domain::hierarchy`), whatever order Entra ID sends people and references in. A
//! member that changes wakes, by indexed lookup, the members whose references name it; a
//! `member.placed` event goes out whenever a member's manager link is set or changes.

pub mod place;

use muster_contracts::EventEnvelope;
use muster_contracts::topology::HIERARCHY;
use muster_infra::worker::{Handler, ProcessError, Worker, WorkerServiceSettings};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Defaults of the hierarchy worker's health listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8084"
"#;

/// The hierarchy worker's settings.
pub type Settings = WorkerServiceSettings;

/// The worker's name in logs, metrics and the version table.
pub const SERVICE: &str = "hierarchy";

/// The handler: one member event → that member's link and the links waiting on it.
#[derive(Clone)]
pub struct Hierarchy {
    pool: PgPool,
}

impl Hierarchy {
    /// A hierarchy worker writing through `pool`.
    pub fn new(pool: PgPool) -> Hierarchy {
        Hierarchy { pool }
    }
}

impl Handler for Hierarchy {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), ProcessError> {
        let Ok(member) = event.entity_id.parse::<uuid::Uuid>() else {
            return Err(ProcessError::Permanent(format!("entity id '{}' is not a member id", event.entity_id)));
        };
        place::apply(&self.pool, event, member).await
    }
}

/// The worker with its handler, ready to run.
pub fn worker(settings: &Settings, pool: PgPool) -> Worker<Hierarchy> {
    settings.worker(SERVICE, HIERARCHY, Hierarchy::new(pool))
}

/// Runs the hierarchy worker and its health endpoints until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    muster_infra::worker::serve(SERVICE, HIERARCHY, settings, Hierarchy::new, shutdown).await
}
