//! The relay: drains the outbox (`scim.outbox`) to RabbitMQ.
//!
//! - Publishes in outbox order on one channel with publisher confirms, pipelined: a batch is
//!   sent, and while the broker confirms it the next batches are read and sent (up to
//!   `batches_in_flight`) and the confirmed one is recorded, so neither the database nor the
//!   broker waits for the other.
//! - A row is deleted only after its confirm: the outbox holds what is still to be published.
//!   A message the broker returns as unroutable (`mandatory`, for every event a worker
//!   consumes), or nacks, stays and is retried with backoff.
//! - Several replicas are safe: one leads at a time, holding a session advisory lock on a
//!   connection of its own that also does all of its reads and writes; the others wait on
//!   standby and take over within a second when the leader's connection ends. Outbox order
//!   (hence per-entity order) holds.
//! - A broker outage only delays events: the relay reconnects with capped, jittered backoff
//!   and resumes where the outbox stands. A crash between publish and record republishes what
//!   was in flight: delivery is at least once, and consumers deduplicate by entity version.
//! - It holds events back during a burst of SCIM writes (`burst_events_per_second`; 0 turns it
//!   off), each at most `burst_max_defer_ms`, and publishes them once the burst is over
//!   ([`burst`]).

pub mod burst;
pub mod floor;

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use lapin::{Confirmation, PublisherConfirm};
use muster_contracts::Names;
use muster_infra::config::{AmqpSettings, DatabaseSettings, HttpSettings, TelemetrySettings};
use muster_infra::http::{BrokerHealth, Readiness};
use serde::Deserialize;
use sqlx::{FromRow, PgConnection, PgPool, Row};
use tokio::net::TcpListener;
use tokio_retry::strategy::{ExponentialBackoff, jitter};
use tokio_util::sync::CancellationToken;

/// Defaults of the relay's health listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8082"
"#;

/// Defaults of the relay loop.
pub const RELAY_DEFAULTS: &str = r#"
[relay]
batch_size = 500
batches_in_flight = 3
idle_poll_ms = 50
confirm_timeout_ms = 15000
burst_events_per_second = 200
burst_quiet_ms = 2000
burst_max_defer_ms = 60000
"#;

/// Advisory-lock key under which one replica at a time publishes ("muster.relay").
const RELAY_LOCK_KEY: i64 = 0x6d75_7374_6572_0001;

/// How often a standby replica asks for the lead.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// The outbox depth is reported this often.
const REPORT_DEPTH_EVERY: Duration = Duration::from_secs(60);

/// How often the SCIM intake is sampled (rows the publishing reads have not seen yet), and how
/// long the relay sleeps while it holds everything back.
const SAMPLE_INTAKE_EVERY: Duration = Duration::from_millis(250);

/// Rows a sample of the intake counts at most (40,000 a second: a burst at any threshold).
const SAMPLED_ROWS: i64 = 10_000;

/// Tuning of the relay loop.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RelayOptions {
    /// Rows published per batch (and per confirm round trip).
    pub batch_size: i64,
    /// Batches published and not yet confirmed, at most.
    pub batches_in_flight: usize,
    /// Sleep when the outbox is empty.
    pub idle_poll_ms: u64,
    /// A batch whose confirms take longer is treated as a broker failure and retried.
    pub confirm_timeout_ms: u64,
    /// SCIM events a second (over one second) that make a burst, during which events are held
    /// back; 0: never hold them.
    pub burst_events_per_second: u64,
    /// A burst is over once the SCIM intake has stayed below the threshold this long.
    pub burst_quiet_ms: u64,
    /// No event is held back longer than this, burst or not.
    pub burst_max_defer_ms: u64,
}

impl Default for RelayOptions {
    /// The values of [`RELAY_DEFAULTS`] (a test keeps them equal), for settings built in code.
    fn default() -> Self {
        RelayOptions {
            batch_size: 500,
            batches_in_flight: 3,
            idle_poll_ms: 50,
            confirm_timeout_ms: 15_000,
            burst_events_per_second: 200,
            burst_quiet_ms: 2_000,
            burst_max_defer_ms: 60_000,
        }
    }
}

/// The relay's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub relay: RelayOptions,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("broker: {0}")]
    Broker(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<lapin::Error> for RelayError {
    fn from(e: lapin::Error) -> Self {
        RelayError::Broker(e.to_string())
    }
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: i64,
    event_id: uuid::Uuid,
    routing_key: String,
    payload: String,
    traceparent: Option<String>,
    attempts: i32,
    created_at: DateTime<Utc>,
}

/// What happened to one published row.
enum Outcome {
    Published,
    Failed(String),
}

/// A batch sent to the broker, waiting for its confirms.
struct InFlight {
    rows: Vec<PendingRow>,
    confirms: Vec<PublisherConfirm>,
}

/// The relay loop, independent of how it is served.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    amqp: AmqpSettings,
    names: Names,
    options: RelayOptions,
    health: BrokerHealth,
}

impl Relay {
    /// A relay publishing `pool`'s outbox to the broker of `amqp`.
    pub fn new(pool: PgPool, amqp: AmqpSettings, options: RelayOptions) -> Relay {
        let names = Names::new(amqp.prefix.clone());
        Relay { pool, amqp, names, options, health: BrokerHealth::default() }
    }

    /// Its broker connection state, for `/readyz`.
    pub fn health(&self) -> BrokerHealth {
        self.health.clone()
    }

    /// Publishes until `shutdown`, reconnecting to the broker and the database as often as
    /// needed.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = reconnect_backoff();
        while !shutdown.is_cancelled() {
            let (connection, channel) = match self.connect().await {
                Ok(c) => {
                    backoff = reconnect_backoff();
                    c
                }
                Err(err) => {
                    self.health.set_connected(false);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "relay cannot reach the broker");
                    sleep_or_shutdown(delay, &shutdown).await;
                    continue;
                }
            };
            self.health.set_connected(true);
            tracing::info!("relay connected to the broker");
            let mut db_backoff = reconnect_backoff();
            loop {
                match self.lead(&channel, &shutdown, &mut db_backoff).await {
                    Ok(()) => {
                        let _ = connection.close(200, "relay shutting down".into()).await;
                        return Ok(());
                    }
                    Err(RelayError::Database(err)) => {
                        let delay = db_backoff.next().unwrap_or(Duration::from_secs(10));
                        tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "relay cannot use the outbox");
                        sleep_or_shutdown(delay, &shutdown).await;
                        if shutdown.is_cancelled() {
                            return Ok(());
                        }
                    }
                    Err(RelayError::Broker(err)) => {
                        self.health.set_connected(false);
                        tracing::warn!(error = %err, "relay lost the broker; unconfirmed rows stay pending");
                        let _ = connection.close(200, "reconnecting".into()).await;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn connect(&self) -> anyhow::Result<(Connection, Channel)> {
        let connection = muster_infra::amqp::connect(&self.amqp).await.context("connecting")?;
        let channel = connection.create_channel().await.context("opening a channel")?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.context("enabling publisher confirms")?;
        muster_infra::amqp::declare_topology(&channel, &self.names).await.context("declaring the topology")?;
        Ok((connection, channel))
    }

    /// Waits on standby until this replica holds the lead, then publishes until `shutdown`
    /// (`Ok`) or a failure. The lead is a session lock, so it lives exactly as long as the
    /// connection that does the leader's work: the connection is closed, never pooled, after.
    /// `db_backoff` starts over once the database answers.
    async fn lead(
        &self,
        channel: &Channel,
        shutdown: &CancellationToken,
        db_backoff: &mut Backoff,
    ) -> Result<(), RelayError> {
        let mut conn = self.pool.acquire().await?.detach();
        loop {
            let locked: bool =
                sqlx::query_scalar("select pg_try_advisory_lock($1)").bind(RELAY_LOCK_KEY).fetch_one(&mut conn).await?;
            *db_backoff = reconnect_backoff();
            if locked {
                break;
            }
            sleep_or_shutdown(STANDBY_POLL, shutdown).await;
            if shutdown.is_cancelled() {
                return Ok(());
            }
        }
        tracing::info!("relay leads: publishing the outbox");
        metrics::gauge!("relay_leader").set(1.0);
        let led = self.publish_while_leading(&mut conn, channel, shutdown).await;
        metrics::gauge!("relay_leader").set(0.0);
        metrics::gauge!("relay_deferring").set(0.0);
        let _ = sqlx::Connection::close(conn).await;
        led
    }

    /// Keeps up to `batches_in_flight` batches at the broker: each turn reads and sends what
    /// the outbox holds beyond them, then records the oldest once it is confirmed. During a
    /// burst of SCIM writes it sends only the rows that are due. On shutdown what is in flight
    /// is still recorded.
    async fn publish_while_leading(
        &self,
        conn: &mut PgConnection,
        channel: &Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), RelayError> {
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut depth_reported: Option<Instant> = None;
        let depth = self.options.batches_in_flight.max(1);
        let max_id: i64 =
            sqlx::query_scalar("select coalesce(max(id), 0) from scim.outbox").fetch_one(&mut *conn).await?;
        let mut floor = floor::Floor::default();
        // Rows a leader before this one could not publish: they wait for their next attempt
        // unseen by the reads, and the floor must stay below them.
        let mut retrying: BTreeSet<i64> =
            sqlx::query_scalar::<_, i64>("select id from scim.outbox where next_attempt_at is not null")
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .collect();
        let mut intake = burst::Intake::new(
            self.options.burst_events_per_second,
            Duration::from_millis(self.options.burst_quiet_ms),
            max_id,
            Instant::now(),
        );
        let mut sampled = Instant::now();
        // Shown from the start, so that "no burst yet" reads as 0 rather than as missing.
        metrics::counter!("relay_bursts_total").increment(0);
        metrics::gauge!("relay_deferring").set(0.0);
        loop {
            if shutdown.is_cancelled() {
                while let Some(batch) = in_flight.pop_front() {
                    self.record(conn, batch, &mut retrying).await?;
                }
                return Ok(());
            }
            if depth_reported.is_none_or(|t| t.elapsed() > REPORT_DEPTH_EVERY) {
                depth_reported = Some(Instant::now());
                report_depth(conn).await?;
            }
            if self.options.burst_events_per_second > 0 && sampled.elapsed() >= SAMPLE_INTAKE_EVERY {
                sampled = Instant::now();
                let (max_id, new_events) = sample_intake(conn, intake.seen_max_id()).await?;
                turned(intake.count(new_events, max_id, Instant::now()));
            }
            while in_flight.len() < depth {
                let sent: Vec<i64> = in_flight.iter().flat_map(|b| b.rows.iter().map(|r| r.id)).collect();
                let through = match intake.deferring() {
                    true => match self.due_through(conn, floor.at(), &sent).await? {
                        Some(id) => id,
                        None => break,
                    },
                    false => i64::MAX,
                };
                let (rows, snapshot) = self.next_rows(conn, floor.at(), &sent, through).await?;
                floor.observe(floor::Read {
                    xmin: snapshot.0,
                    xmax: snapshot.1,
                    first: rows.first().map(|r| r.id),
                    last: rows.last().map(|r| r.id),
                    through: (through < i64::MAX).then_some(through),
                    held: sent.iter().copied().chain(retrying.first().copied()).min(),
                });
                turned(intake.observe(rows.iter().map(|r| (r.id, r.routing_key.as_str())), Instant::now()));
                let full = rows.len() as i64 >= self.options.batch_size;
                if !rows.is_empty() {
                    in_flight.push_back(self.send(channel, rows).await?);
                }
                if !full {
                    break;
                }
            }
            match in_flight.pop_front() {
                Some(batch) => self.record(conn, batch, &mut retrying).await?,
                None if intake.deferring() => sleep_or_shutdown(SAMPLE_INTAKE_EVERY, shutdown).await,
                None => sleep_or_shutdown(Duration::from_millis(self.options.idle_poll_ms), shutdown).await,
            }
        }
    }

    /// While holding back: the highest id among the next pending rows (past `sent`, those in
    /// flight; a batch of them) that have waited `burst_max_defer_ms`; `None` if none has. The read is
    /// bounded by the batch, however long the outbox.
    async fn due_through(&self, conn: &mut PgConnection, floor: i64, sent: &[i64]) -> sqlx::Result<Option<i64>> {
        sqlx::query_scalar(
            "select max(id) from (
                 select id, created_at from scim.outbox
                 where id > $4 and (next_attempt_at is null or next_attempt_at <= now()) and id <> all($2)
                 order by id limit $3) next
             where created_at <= now() - make_interval(secs => $1)",
        )
        .persistent(false)
        .bind(self.options.burst_max_defer_ms as f64 / 1000.0)
        .bind(sent)
        .bind(self.options.batch_size)
        .bind(floor)
        .fetch_one(conn)
        .await
    }

    /// The next pending rows in outbox order past the floor (see [`floor`]) up to id
    /// `through`, past `sent` (in flight), with the xmin and xmax of the read's snapshot. Read
    /// from the floor each time rather than from a cursor: ids are taken at insert but become
    /// visible at commit, so a lower id can appear after higher ones were published.
    async fn next_rows(
        &self,
        conn: &mut PgConnection,
        floor: i64,
        sent: &[i64],
        through: i64,
    ) -> sqlx::Result<(Vec<PendingRow>, (u64, u64))> {
        let read = sqlx::query(
            "select s.xmin, s.xmax, r.*
             from (select pg_snapshot_xmin(pg_current_snapshot())::text::bigint as xmin,
                          pg_snapshot_xmax(pg_current_snapshot())::text::bigint as xmax) s
             left join lateral (
                 select id, event_id, routing_key, envelope::text as payload, traceparent, attempts, created_at
                 from scim.outbox
                 where id > $3 and (next_attempt_at is null or next_attempt_at <= now()) and id <> all($2)
                 order by id limit $1) r on true
             order by r.id",
        )
        // Planned with the ids in hand, so the planner hashes them (and see `record`).
        .persistent(false)
        .bind(self.options.batch_size)
        .bind(sent)
        .bind(floor)
        .fetch_all(conn)
        .await?;
        let snapshot = match read.first() {
            Some(row) => (row.try_get::<i64, _>("xmin")? as u64, row.try_get::<i64, _>("xmax")? as u64),
            None => (0, 0),
        };
        // `through` applied here, not as a second bound in the statement: a range bounded on
        // both sides is estimated at a few hundred rows on an outbox without statistics, and
        // planned as a bitmap scan and a sort of every pending row (15-100 ms a read, against
        // 2-5 through the primary key in order). The rows up to `through` are the read's first
        // ones: `due_through` chose it among the same next rows.
        let rows = read
            .iter()
            .filter(|row| row.try_get::<Option<i64>, _>("id").ok().flatten().is_some_and(|id| id <= through))
            .map(PendingRow::from_row)
            .collect::<sqlx::Result<Vec<PendingRow>>>()?;
        Ok((rows, snapshot))
    }

    /// Sends `rows` without waiting for their confirms.
    async fn send(&self, channel: &Channel, rows: Vec<PendingRow>) -> Result<InFlight, RelayError> {
        let exchange = self.names.events_exchange();
        let mut confirms = Vec::with_capacity(rows.len());
        for row in &rows {
            let properties =
                muster_infra::amqp::event_properties(&row.event_id.to_string(), row.traceparent.as_deref());
            // mandatory: an event a worker consumes comes back when no queue is bound for it,
            // instead of vanishing; an event only for integrations may go nowhere.
            let mandatory = muster_contracts::topology::consumed_inside(&row.routing_key);
            let options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
            let confirm = channel
                .basic_publish(
                    exchange.as_str().into(),
                    row.routing_key.as_str().into(),
                    options,
                    row.payload.as_bytes(),
                    properties,
                )
                .await?;
            confirms.push(confirm);
        }
        Ok(InFlight { rows, confirms })
    }

    /// Waits for a batch's confirms and records the outcome: confirmed rows deleted, the
    /// others scheduled for another attempt with the broker's reason.
    async fn record(
        &self,
        conn: &mut PgConnection,
        batch: InFlight,
        retrying: &mut BTreeSet<i64>,
    ) -> Result<(), RelayError> {
        let timeout = Duration::from_millis(self.options.confirm_timeout_ms);
        let confirmations = tokio::time::timeout(timeout, join_all(batch.confirms))
            .await
            .map_err(|_| RelayError::Broker("publisher confirms timed out".into()))?;
        let rows = batch.rows;
        let mut published = Vec::with_capacity(rows.len());
        let mut failed: Vec<(i64, String, i32)> = Vec::new();
        for (row, confirmation) in rows.iter().zip(confirmations) {
            let outcome = match confirmation? {
                Confirmation::Ack(None) | Confirmation::NotRequested => Outcome::Published,
                Confirmation::Ack(Some(returned)) => Outcome::Failed(format!(
                    "unroutable: no queue bound for '{}' ({})",
                    row.routing_key, returned.reply_text
                )),
                Confirmation::Nack(_) => Outcome::Failed("nacked by the broker".into()),
            };
            match outcome {
                Outcome::Published => published.push(row.id),
                Outcome::Failed(reason) => {
                    tracing::warn!(event_id = %row.event_id, routing_key = %row.routing_key, attempts = row.attempts + 1, reason = %reason, "event not published; will retry");
                    failed.push((row.id, reason, row.attempts));
                }
            }
        }
        // Not a prepared statement: the leader's connection lives for hours, and a plan cached
        // while the outbox looked empty (a new database, statistics not yet gathered) is a
        // sequential scan that tests each row against all 500 ids — 0.5–1.8 s per batch once the
        // outbox holds 100,000 rows: the relay fell behind for good (docs/performance.md).
        sqlx::query("delete from scim.outbox where id = any($1)")
            .persistent(false)
            .bind(&published)
            .execute(&mut *conn)
            .await?;
        for (id, reason, attempts) in &failed {
            // Capped exponential backoff: 1 s, 2 s, 4 s … 5 min.
            let delay_secs = 2f64.powi((*attempts).min(8)).min(300.0);
            sqlx::query(
                "update scim.outbox set attempts = attempts + 1, last_error = $2, updated_at = now(),
                        next_attempt_at = now() + make_interval(secs => $3)
                 where id = $1",
            )
            .persistent(false)
            .bind(id)
            .bind(reason)
            .bind(delay_secs)
            .execute(&mut *conn)
            .await?;
        }
        for id in &published {
            retrying.remove(id);
        }
        retrying.extend(failed.iter().map(|(id, _, _)| *id));
        let now = Utc::now();
        let published_ids: std::collections::HashSet<i64> = published.iter().copied().collect();
        for row in rows.iter().filter(|r| published_ids.contains(&r.id)) {
            let lag = (now - row.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!("relay_event_lag_seconds").record(lag);
        }
        metrics::counter!("relay_published_total").increment(published.len() as u64);
        metrics::counter!("relay_publish_failures_total").increment(failed.len() as u64);
        Ok(())
    }
}

/// The highest outbox id past `after` and how many of the rows past it are SCIM events. Rows
/// the relay publishes at once are deleted before a sample sees them: the publishing read
/// counts those ([`burst::Intake::observe`]).
async fn sample_intake(conn: &mut PgConnection, after: i64) -> sqlx::Result<(i64, u64)> {
    // Rows in id order, at most a bound of them (the next sample counts the rest): without it
    // the count over `id > $1` was planned as a parallel scan of the whole outbox — every row
    // of a sync held back, or, once published, every dead row until a vacuum — 70 ms a sample
    // on average and 225 ms at worst, four times a second (36 s of PostgreSQL in a
    // 100,000-user run, and lookups slower at rest: docs/performance.md, twelfth pass).
    let (max_id, scim_events): (i64, i64) = sqlx::query_as(
        "select coalesce(max(id), $1), count(*) filter (where routing_key like 'scim.%')
         from (select id, routing_key from scim.outbox where id > $1 order by id limit $2) new",
    )
    .persistent(false)
    .bind(after)
    .bind(SAMPLED_ROWS)
    .fetch_one(conn)
    .await?;
    Ok((max_id, scim_events.max(0) as u64))
}

/// Says so when the relay starts or stops holding events back.
fn turned(turn: Option<burst::Turn>) {
    match turn {
        Some(burst::Turn::Deferring { events_per_second }) => {
            metrics::gauge!("relay_deferring").set(1.0);
            metrics::counter!("relay_bursts_total").increment(1);
            tracing::info!(events_per_second, "burst of SCIM writes: holding events back until it is over");
        }
        Some(burst::Turn::Released) => {
            metrics::gauge!("relay_deferring").set(0.0);
            tracing::info!("burst over: publishing the events held back");
        }
        None => {}
    }
}

/// Reports how many rows the outbox holds (all of them still to be published).
async fn report_depth(conn: &mut PgConnection) -> sqlx::Result<()> {
    let pending: i64 = sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&mut *conn).await?;
    metrics::gauge!("outbox_pending").set(pending as f64);
    Ok(())
}

/// Delays between reconnection attempts.
type Backoff = std::iter::Map<ExponentialBackoff, fn(Duration) -> Duration>;

fn reconnect_backoff() -> Backoff {
    // 200 ms, 400 ms, 800 ms … capped at 10 s, each jittered.
    ExponentialBackoff::from_millis(2).factor(100).max_delay(Duration::from_secs(10)).map(jitter as fn(_) -> _)
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.cancelled() => {}
    }
}

/// Runs the relay with its health endpoints until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = muster_infra::db::pool(&settings.database)?;
    let relay = Relay::new(pool.clone(), settings.amqp, settings.relay);
    let listener = TcpListener::bind(settings.http.addr)
        .await
        .with_context(|| format!("binding the relay's health listener on {}", settings.http.addr))?;
    let app = muster_infra::http::ops_routes(Readiness { pool, broker: Some(relay.health()) });
    let server = muster_infra::http::serve(listener, app, shutdown.clone());
    let (served, relayed) = tokio::join!(server, relay.run(shutdown));
    served.and(relayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_options_are_the_embedded_defaults() {
        let embedded: RelayOptions = muster_infra::config::embedded_section(RELAY_DEFAULTS, "relay").unwrap();
        assert_eq!(embedded, RelayOptions::default());
    }
}
