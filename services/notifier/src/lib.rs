//! The notifier: when the company asks for it, e-mails a direct manager whose team is recorded
//! when a new member is imported under them — once per new member, in one digest for several
//! arriving together, and never on the manager's weekend.
//!
//! Two halves, both in every replica:
//! - the **trigger** (`trigger`) consumes `member.placed`: a member placed under a manager for
//!   the first time, within `import_window_hours` of their import, becomes an *item* of the
//!   manager's collecting digest (one row per new member: the idempotency key), which is due
//!   `digest_window_secs` after it opened, moved off the manager's weekend;
//! - the **dispatcher** (`dispatch`) claims due digests (`for update skip locked`: whichever
//!   replica comes first), checks the conditions again at send time (setting on, manager
//!   active with an e-mail, at least one direct report with data capture on), sends through
//!   SMTP and records the outcome. Schedules live in PostgreSQL and survive restarts.

pub mod dispatch;
pub mod mail;
pub mod trigger;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use muster_contracts::topology::NOTIFIER;
use muster_infra::worker::{Worker, WorkerServiceSettings};
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use mail::{SmtpSettings, TlsMode};

/// The worker's name in logs, metrics and the version table.
pub const SERVICE: &str = "notifier";

/// Defaults of the notifier's health listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8086"
"#;

/// Defaults of the SMTP relay (Mailpit's SMTP port) and of the notifier's timing; also read by
/// `musterctl up`.
pub const NOTIFIER_DEFAULTS: &str = r#"
[smtp]
host = "127.0.0.1"
port = 1025
tls = "none"
from = "Muster <muster@localhost>"
timeout_ms = 10000

[notifier]
base_url = "http://localhost:8081/api/v1/members"
digest_window_secs = 600
import_window_hours = 72
poll_interval_ms = 1000
claim_batch = 20
max_attempts = 5
retry_delays_ms = [60000, 300000, 1800000, 7200000]
sending_lease_secs = 300
"#;

/// When and how the notifier sends.
#[derive(Debug, Clone, Deserialize)]
pub struct NotifierOptions {
    /// Where a member is shown; the e-mail links to `<base_url>/<scim id>`.
    pub base_url: String,
    /// How long a manager's digest collects new reports before it is due.
    pub digest_window_secs: u64,
    /// A member placed later than this after their import is not announced.
    pub import_window_hours: u64,
    /// How often the dispatcher looks for due digests.
    pub poll_interval_ms: u64,
    /// Digests claimed per look.
    pub claim_batch: i64,
    /// SMTP attempts before a digest is `failed`.
    pub max_attempts: i32,
    /// Delay before the 1st, 2nd, … retry; the last one repeats.
    pub retry_delays_ms: Vec<u64>,
    /// A digest `sending` for longer than this was abandoned by a dead sender.
    pub sending_lease_secs: u64,
}

impl NotifierOptions {
    fn retry_delay(&self, attempts: i32) -> chrono::Duration {
        let index = usize::try_from(attempts.max(1) - 1).unwrap_or(0);
        let ms = self.retry_delays_ms.get(index).or(self.retry_delays_ms.last()).copied().unwrap_or(60_000);
        chrono::Duration::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// The notifier's settings: a worker service's (`database`, `amqp`, `http`, `telemetry`,
/// `worker`), plus `smtp` and `notifier`.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(flatten)]
    pub service: WorkerServiceSettings,
    pub smtp: SmtpSettings,
    pub notifier: NotifierOptions,
}

/// What time it is for the notifier: the system clock in production, a hand-moved one in tests
/// (weekends and digest windows are tested without waiting for them).
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Utc::now))
    }

    /// A clock that reads `now`.
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

/// The trigger: `member.placed` → items of managers' digests.
pub fn worker(settings: &Settings, pool: PgPool, clock: Clock) -> Worker<trigger::Trigger> {
    let handler = trigger::Trigger::new(pool, settings.notifier.clone(), clock);
    settings.service.batching().worker(SERVICE, NOTIFIER, handler)
}

/// The dispatcher: due digests → e-mails.
pub fn dispatcher(settings: &Settings, pool: PgPool, clock: Clock) -> anyhow::Result<dispatch::Dispatcher> {
    let mailer = mail::Mailer::new(&settings.smtp, &settings.notifier.base_url)?;
    Ok(dispatch::Dispatcher::new(pool, mailer, settings.notifier.clone(), clock))
}

/// Runs the trigger, the dispatcher and the health endpoints until `shutdown`.
pub async fn run(settings: Settings, clock: Clock, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = muster_infra::db::pool(&settings.service.database)?;
    let listener = tokio::net::TcpListener::bind(settings.service.http.addr)
        .await
        .with_context(|| format!("binding the notifier health listener on {}", settings.service.http.addr))?;
    let dispatcher = dispatcher(&settings, pool.clone(), clock.clone())?;
    let dispatching = tokio::spawn(dispatcher.run(shutdown.clone()));
    let result = worker(&settings, pool.clone(), clock).run_with_ops(pool, listener, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), dispatching).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_defaults_load_with_the_worker_service_settings_flattened() {
        let layers = [DEFAULTS, NOTIFIER_DEFAULTS, muster_infra::worker::WORKER_DEFAULTS];
        let settings: Settings = muster_infra::config::load_layers(&layers).unwrap();
        assert_eq!(settings.service.http.addr.port(), 8086);
        assert_eq!(settings.service.worker.batch_prefetch, 256);
        assert_eq!(settings.service.worker.retry_delays_ms, [1_000, 5_000, 30_000, 120_000]);
        assert_eq!(settings.smtp.port, 1025);
        assert_eq!(settings.notifier.claim_batch, 20);
    }
}
