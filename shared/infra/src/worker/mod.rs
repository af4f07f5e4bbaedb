//! The worker runtime every Muster worker consumes through: a worker writes only its
//! [`Handler`]; the runtime owns the queue, acknowledgements, retries, dead-lettering,
//! reconnection, shutdown and metrics.
//!
//! - Topology per worker: the durable quorum queue of `muster_contracts::topology` (with its
//!   broker-side delivery limit as a last resort), its `<queue>.dlq`, and one delay queue per
//!   retry delay (`<queue>.retry.<ms>ms`, TTL then dead-letter back into the queue).
//! - A delivery is acked only after the handler returned, i.e. after its transaction
//!   committed. A transient failure is retried through the delay queues (the message leaves
//!   the queue meanwhile, so nothing waits behind it); a permanent one, or a transient one
//!   past `max_attempts`, is published to the DLQ with the reason in its headers
//!   (`muster_contracts::headers`) and confirmed before the original is acked.
//! - Deliveries can come twice or out of order: handlers use [`versions`] to apply only the
//!   newest version of an entity, once.

mod acks;
pub mod batch;
pub mod dlq;
mod runtime;
pub mod versions;

use std::future::Future;

use anyhow::Context;
use muster_contracts::EventEnvelope;
use muster_contracts::topology::WorkerQueue;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{AmqpSettings, DatabaseSettings, HttpSettings, TelemetrySettings};
pub use runtime::Worker;

/// Why a message could not be handled, which decides what happens to it next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcessError {
    /// Worth retrying: a dependency (database, broker) is unavailable or timed out.
    #[error("transient: {0}")]
    Transient(String),
    /// No retry can fix it (malformed or impossible data): straight to the DLQ.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl ProcessError {
    /// `transient` or `permanent`, as written in the DLQ headers.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessError::Transient(_) => "transient",
            ProcessError::Permanent(_) => "permanent",
        }
    }

    /// The reason text.
    pub fn reason(&self) -> &str {
        match self {
            ProcessError::Transient(r) | ProcessError::Permanent(r) => r,
        }
    }
}

impl From<sqlx::Error> for ProcessError {
    /// Lost connections, pool timeouts, serialization failures and deadlocks are transient;
    /// any other database error would fail again the same way.
    fn from(err: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&err) {
            return ProcessError::Transient(format!("database unavailable: {err}"));
        }
        if let sqlx::Error::Database(db) = &err
            && let Some(code) = db.code()
            && ["40001", "40P01", "57P01", "57P02", "57P03", "53300"].contains(&code.as_ref())
        {
            return ProcessError::Transient(format!("database: {err}"));
        }
        ProcessError::Permanent(format!("database: {err}"))
    }
}

/// What a worker does with one event.
pub trait Handler: Send + Sync + 'static {
    /// Handles `event`. Return only after the effects are committed.
    fn handle(&self, event: &EventEnvelope) -> impl Future<Output = Result<(), ProcessError>> + Send;
}

/// Tuning of a worker.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// Unacknowledged deliveries the broker may push at once (AMQP `basic.qos`).
    pub prefetch: u16,
    /// Deliveries handled at the same time.
    pub concurrency: usize,
    /// `prefetch` of the workers that batch a company's deliveries into one transaction
    /// (normalizer, hierarchy, assignments): their batch is at most this many events.
    #[serde(default = "default_batch_prefetch")]
    pub batch_prefetch: u16,
    /// Attempts before a transiently failing message is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the 1st, 2nd, … retry; the last one repeats.
    pub retry_delays_ms: Vec<u64>,
    /// How long in-flight deliveries may take to finish at shutdown.
    pub shutdown_grace_ms: u64,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            prefetch: 32,
            concurrency: 8,
            batch_prefetch: default_batch_prefetch(),
            max_attempts: 5,
            retry_delays_ms: vec![1_000, 5_000, 30_000, 120_000],
            shutdown_grace_ms: 10_000,
        }
    }
}

fn default_batch_prefetch() -> u16 {
    256
}

/// Defaults of the `[worker]` section, for services' configuration layers.
pub const WORKER_DEFAULTS: &str = r#"
[worker]
prefetch = 32
concurrency = 8
batch_prefetch = 256
max_attempts = 5
retry_delays_ms = [1000, 5000, 30000, 120000]
shutdown_grace_ms = 10000
"#;

/// The settings of a service that is one worker: its database, broker, health listener,
/// telemetry and tuning (`[worker]`, defaults in `WORKER_DEFAULTS`).
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerServiceSettings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub worker: WorkerSettings,
}

impl WorkerServiceSettings {
    /// The worker `service` on `queue` with `handler`, ready to run.
    pub fn worker<H: Handler>(&self, service: &'static str, queue: WorkerQueue, handler: H) -> Worker<H> {
        Worker::new(service, queue, self.amqp.clone(), self.worker.clone(), handler)
    }

    /// For a handler that batches a company's deliveries (`batch::Batcher`): it prefetches
    /// `batch_prefetch`, and since its deliveries mostly wait in the batcher for the company's
    /// transaction, it handles as many at once as it prefetches — the more wait, the larger the
    /// batch (one transaction for 256 events costs far less than 8 for 32).
    pub fn batching(&self) -> WorkerServiceSettings {
        let mut settings = self.clone();
        settings.worker.prefetch = settings.worker.batch_prefetch.max(1);
        settings.worker.concurrency = settings.worker.concurrency.max(usize::from(settings.worker.prefetch));
        settings
    }
}

/// Runs a worker service until `shutdown`: the pool, the health listener (`/healthz`,
/// `/readyz`, `/metrics` on `http.addr`) and the consumer with the handler `make` builds.
pub async fn serve<H: Handler>(
    service: &'static str,
    queue: WorkerQueue,
    settings: WorkerServiceSettings,
    make: impl FnOnce(sqlx::PgPool) -> H,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = crate::db::pool(&settings.database)?;
    let listener = tokio::net::TcpListener::bind(settings.http.addr)
        .await
        .with_context(|| format!("binding the {service} health listener on {}", settings.http.addr))?;
    settings.worker(service, queue, make(pool.clone())).run_with_ops(pool, listener, shutdown).await
}
