//! The system under test: each service as its own process (the binaries next to `musterctl`),
//! on a fresh database and AMQP prefix, so that each one's memory and CPU can be read from
//! `/proc`; and the sampler of queue and outbox depths.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use muster_contracts::Names;
use muster_contracts::topology::{NOTIFIER, WORKER_QUEUES};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// The services, by binary name.
pub const SERVICES: [&str; 7] = [
    "muster-ingress",
    "muster-relay",
    "muster-normalizer",
    "muster-hierarchy",
    "muster-assignments",
    "muster-notifier",
    "muster-admin",
];

/// A running service.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    child: Child,
}

/// What `/proc` says of a process.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub peak_rss_mib: f64,
    pub cpu_seconds: f64,
}

/// `count` distinct free ports: each listener is held until all are chosen, or the system may
/// hand the same port out twice (it did: two services on one port, the second exiting at its
/// start while the first answered for it).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<Vec<_>>>()?)
}

/// Where the service binaries are: beside this executable, unless given.
pub fn binaries(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_exe()?.parent().context("the executable's directory")?.to_path_buf(),
    };
    let missing: Vec<&str> = SERVICES.iter().copied().filter(|s| !dir.join(s).exists()).collect();
    if !missing.is_empty() {
        bail!(
            "{} not found in {}: build them first (`cargo build --release --bins`, then run target/release/musterctl)",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir)
}

/// Starts every service against `database_url` and the AMQP `prefix`; logs go to `logs`.
pub async fn start(
    dir: &Path,
    database_url: &str,
    amqp_url: &str,
    prefix: &str,
    logs: &Path,
) -> anyhow::Result<Vec<Service>> {
    std::fs::create_dir_all(logs)?;
    let mut services = Vec::new();
    for (name, port) in SERVICES.into_iter().zip(free_ports(SERVICES.len())?) {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = Command::new(dir.join(name))
            .env("DATABASE_URL", database_url)
            .env("AMQP_URL", amqp_url)
            .env("APP_AMQP__PREFIX", prefix)
            .env("APP_HTTP__ADDR", format!("127.0.0.1:{port}"))
            .env("APP_TELEMETRY__FILTER", "warn")
            .env("APP_TELEMETRY__LOG_FORMAT", "json")
            // One company is the bench's only client: no per-tenant limit.
            .env("APP_SCIM__RATE_LIMIT_PER_SECOND", "1000000")
            .env("APP_SCIM__RATE_LIMIT_BURST", "1000000")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        services.push(Service { name, port, child });
    }
    let http = reqwest::Client::new();
    for service in &mut services {
        let url = format!("http://127.0.0.1:{}/readyz", service.port);
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(Some(status)) = service.child.try_wait() {
                bail!("{} exited ({status}) while starting; see {}", service.name, logs.display());
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !ready {
            bail!("{} not ready after 20 s; see {}", service.name, logs.display());
        }
    }
    Ok(services)
}

impl Service {
    /// A counter or gauge from the service's `/metrics`, if it serves it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let text = reqwest::get(url).await.ok()?.text().await.ok()?;
        text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Whether the process has ended (a zombie not yet reaped, or gone).
    pub fn has_exited(&self) -> bool {
        let Some(pid) = self.child.id() else { return true };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the command name, which may hold spaces.
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_none_or(|state| state == "Z")
    }

    /// Peak RSS (VmHWM) and CPU time so far.
    pub fn usage(&self) -> Usage {
        let Some(pid) = self.child.id() else { return Usage::default() };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // USER_HZ is 100 on Linux.
        Usage { peak_rss_mib: kib("VmHWM:") / 1024.0, cpu_seconds: (ticks(11) + ticks(12)) / 100.0 }
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the service's process.
    pub async fn hold(&self, held: bool) -> anyhow::Result<()> {
        let pid = self.child.id().with_context(|| format!("{} has exited", self.name))?;
        let signal = if held { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().await?;
        if !status.success() {
            bail!("kill {signal} {pid} ({}) failed: {status}", self.name);
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM first: the services drain and close cleanly.
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// The deepest queue and outbox seen.
#[derive(Debug, Clone, Default)]
pub struct Depths {
    pub deepest_queue: u32,
    pub deepest_queue_name: String,
    pub deepest_outbox: i64,
    /// Messages waiting in the worker queues and unpublished outbox rows, at the last sample.
    pub waiting_now: Option<u64>,
    /// Unpublished outbox rows when last counted.
    pub outbox_now: u64,
    /// Messages waiting for the workers that decide a member's final state (all but the
    /// notifier's), at the last sample.
    pub members_waiting_now: Option<u64>,
}

/// How often a large outbox is counted, in depth samples (every 5 s): its `count(*)` took
/// 10–120 ms of the measured box's PostgreSQL at 100,000–190,000 rows, 13 s of it in a
/// 100,000-user run when counted every 2 s (`pg_stat_statements`).
const OUTBOX_EVERY: u32 = 20;

/// Below this many rows the outbox is counted at every sample.
const SMALL_OUTBOX: u64 = 10_000;

/// Samples the worker queues' depth every 250 ms, and the outbox's as often while it holds
/// fewer than [`SMALL_OUTBOX`] rows, else every 5 s, until `stop`.
pub fn sample_depths(
    pool: PgPool,
    amqp: muster_infra::config::AmqpSettings,
    stop: CancellationToken,
) -> Arc<Mutex<Depths>> {
    let depths = Arc::new(Mutex::new(Depths::default()));
    let out = depths.clone();
    tokio::spawn(async move {
        let names = Names::new(amqp.prefix.clone());
        let Ok(connection) = muster_infra::amqp::connect(&amqp).await else { return };
        let Ok(channel) = connection.create_channel().await else { return };
        let mut round = 0u32;
        while !stop.is_cancelled() {
            round = round.wrapping_add(1);
            let (mut waiting, mut members_waiting) = (0u64, 0u64);
            for queue in WORKER_QUEUES {
                let name = names.queue(&queue);
                let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
                if let Ok(q) = channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await
                    && let Ok(mut d) = depths.lock()
                {
                    waiting += u64::from(q.message_count());
                    if queue.name != NOTIFIER.name {
                        members_waiting += u64::from(q.message_count());
                    }
                    if q.message_count() > d.deepest_queue {
                        d.deepest_queue = q.message_count();
                        d.deepest_queue_name = name.clone();
                    }
                }
            }
            // A small outbox is counted at every sample (the wait for rest needs it current),
            // through its primary key and no further than it is small: a plain `count(*)` reads
            // the whole table, and without autovacuum that is every row the sync left dead.
            let outbox_known = depths.lock().map(|d| d.outbox_now).unwrap_or(0);
            let counted: Option<i64> = if round % OUTBOX_EVERY == 1 {
                sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&pool).await.ok()
            } else if outbox_known < SMALL_OUTBOX {
                sqlx::query_scalar("select count(*) from (select id from scim.outbox order by id limit $1) small")
                    .bind(SMALL_OUTBOX as i64)
                    .fetch_one(&pool)
                    .await
                    .ok()
            } else {
                None
            };
            if let Ok(mut d) = depths.lock() {
                if let Some(outbox) = counted {
                    d.deepest_outbox = d.deepest_outbox.max(outbox);
                    d.outbox_now = u64::try_from(outbox).unwrap_or(0);
                }
                d.waiting_now = Some(waiting + d.outbox_now);
                d.members_waiting_now = Some(members_waiting + d.outbox_now);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let _ = connection.close(200, "sampled".into()).await;
    });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

    use std::time::Instant;

    use super::*;

    #[test]
    fn the_ports_chosen_for_the_services_are_distinct() {
        let ports = free_ports(SERVICES.len()).unwrap();
        let distinct: std::collections::HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), SERVICES.len(), "{ports:?}");
    }

    #[tokio::test]
    async fn a_service_whose_process_ended_is_seen_to_have_exited() {
        let running = Command::new("sleep").arg("30").kill_on_drop(true).spawn().unwrap();
        let service = Service { name: "sleep", port: 0, child: running };
        assert!(!service.has_exited());
        let ended = Command::new("true").spawn().unwrap();
        let service = Service { name: "true", port: 0, child: ended };
        // Not reaped: a zombie until waited for, as a crashed service is during a run.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !service.has_exited() {
            assert!(Instant::now() < deadline, "`true` did not end within 5 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
