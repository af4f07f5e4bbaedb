//! The PostgreSQL pool and the one migration set of the whole system.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::oneshot;

use crate::config::DatabaseSettings;

/// Every migration of the system, applied by `musterctl migrate` and `musterctl up`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connection options from settings (the URL is parsed, never logged). Unless the URL names
/// one, connections carry the program's name as `application_name`, so `pg_stat_activity`
/// tells an operator which service holds a connection or waits on a lock.
///
/// JIT compilation is off: every statement here is a short key lookup or a batch write, and
/// a cost estimate inflated by a join's guess made PostgreSQL spend 0.5–1.5 s compiling one
/// (measured in the 100,000-user benchmark), far more than any of them takes to run.
pub fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let options = settings
        .url
        .expose_secret()
        .parse::<PgConnectOptions>()
        .context("database.url is not a valid PostgreSQL URL")?
        .options([("jit", "off")]);
    if options.get_application_name().is_some() {
        return Ok(options);
    }
    let program = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()));
    Ok(match program {
        Some(name) => options.application_name(&name),
        None => options,
    })
}

/// A pooled connection idle longer than this is pinged before it is lent out.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A pool that connects on first use, so a service can start (and report not-ready) while
/// the database is still coming up.
///
/// sqlx pings every connection before lending it, by default, and again when it comes back
/// (that one cannot be turned off): for a one-statement request, two round trips of three are
/// pings, ~20 % of the ingress's CPU under load (`perf`, 100,000-user benchmark) and as many
/// wake-ups of its PostgreSQL backends. A connection back from its last use moments ago was
/// pinged then, so only one idle for [`PING_AFTER_IDLE`] is pinged again before use: that is
/// where a restarted database or a dropped connection shows, and it is replaced unseen.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    pool_with(connect_options(settings)?, settings)
}

/// A [`pool`] whose connections keep one generic plan per prepared statement
/// (`plan_cache_mode = force_generic_plan`): for a service whose statements are key lookups
/// and batch writes over `unnest` of array parameters, as the ingress's are.
///
/// PostgreSQL estimates ten rows for `unnest` of a parameter but the exact count for the
/// array of a custom plan, so a batch of one to three users looked ten times cheaper with a
/// custom plan (cost 8 against 83) and every batch write was planned again on every
/// execution: 9.5 % of the box's samples in the write phase of the 100,000-user benchmark,
/// both plans the same nested loop over the primary key.
pub fn pool_with_generic_plans(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    pool_with(connect_options(settings)?.options([("plan_cache_mode", "force_generic_plan")]), settings)
}

fn pool_with(options: PgConnectOptions, settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout())
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// How long one connection may go from request to request without passing through the pool,
/// which retires connections older than its `max_lifetime` only when they come back to it.
pub const WARM_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Connections handed from one request to the next without going back to the pool.
///
/// sqlx pings every connection that comes back to its pool (a round trip and two wake-ups;
/// not switchable in sqlx 0.8 or 0.9): for a one-statement request such as Entra's lookup or
/// create, one round trip of two. A request that succeeded [`WarmConnection::release`]s its
/// connection here instead, clean (no transaction open, nothing queued to send), and the next
/// request takes it without that ping. Any other ending — an error, a cancelled request, a
/// transaction dropped unfinished — drops the connection into the pool as before, where the
/// ping flushes a queued rollback and finds a broken connection.
///
/// At most `keep` connections wait here; the rest of the pool stays for whoever takes from it
/// directly (readiness, token checks, the other services of `musterctl up`). One that waited
/// [`PING_AFTER_IDLE`] or longer goes back through the pool (and its ping) rather than being
/// used unchecked, and a sweep returns such connections to the pool even when no request
/// comes, so a quiet ingress holds none of it.
#[derive(Clone)]
pub struct WarmPool {
    pool: PgPool,
    parked: Arc<Parked>,
}

struct Parked {
    state: Mutex<ParkedState>,
    keep: usize,
}

#[derive(Default)]
struct ParkedState {
    /// A stack: the most recently released on top, the longest idle at the bottom.
    connections: Vec<ParkedConnection>,
    /// Requests waiting for a connection, first come first served: a released connection goes
    /// to them before it is parked, or they would wait on the pool while others skip ahead.
    waiters: VecDeque<oneshot::Sender<Handed>>,
}

/// A connection handed on, and since when it has gone from request to request.
type Handed = (PoolConnection<Postgres>, Instant);

struct ParkedConnection {
    connection: PoolConnection<Postgres>,
    since: Instant,
    warm_since: Instant,
}

/// A connection lent by a [`WarmPool`]; dropped, it returns to the pool the usual way.
pub struct WarmConnection {
    connection: PoolConnection<Postgres>,
    warm_since: Instant,
    parked: Arc<Parked>,
}

impl WarmPool {
    /// Over `pool`, keeping at most `keep` connections warm between requests. Inside a Tokio
    /// runtime it also starts the sweep, which ends when the last clone is dropped.
    pub fn new(pool: PgPool, keep: usize) -> WarmPool {
        let parked = Arc::new(Parked { state: Mutex::new(ParkedState::default()), keep });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(sweep(Arc::downgrade(&parked)));
        }
        WarmPool { pool, parked }
    }

    /// The most recently released connection; if none waits, the first one released from now
    /// or one from the pool, whichever comes first.
    pub async fn acquire(&self) -> sqlx::Result<WarmConnection> {
        let mut stale = Vec::new();
        let taken = {
            let mut state = self.parked.lock();
            loop {
                match state.connections.pop() {
                    Some(parked) if parked.since.elapsed() < PING_AFTER_IDLE => break Ok(parked),
                    // Idle long enough for the database to have gone away: through the pool's ping.
                    Some(parked) => stale.push(parked),
                    // With room in the pool, straight from it, not racing a handed connection:
                    // given up while sqlx was opening a connection, the acquire would close it
                    // half-open (under load the ingress opened and closed hundreds a second,
                    // PostgreSQL forking a backend for each).
                    None if self.pool.num_idle() > 0 || self.pool.size() < self.max_connections() => {
                        break Err(None);
                    }
                    None => {
                        let (offer, offered) = oneshot::channel();
                        state.waiters.retain(|w| !w.is_closed());
                        state.waiters.push_back(offer);
                        break Err(Some(offered));
                    }
                }
            }
        };
        drop(stale);
        let (connection, warm_since, from) = match taken {
            Ok(parked) => (parked.connection, parked.warm_since, "parked"),
            Err(None) => (self.pool.acquire().await?, Instant::now(), "pool"),
            // The pool is saturated: its acquire only waits for a connection to come back, and
            // can be given up when a released one is handed here first.
            Err(Some(offered)) => tokio::select! {
                biased;
                Ok((connection, warm_since)) = offered => (connection, warm_since, "handed"),
                acquired = self.pool.acquire() => (acquired?, Instant::now(), "pool"),
            },
        };
        metrics::counter!("db_connections_lent_total", "from" => from).increment(1);
        Ok(WarmConnection { connection, warm_since, parked: self.parked.clone() })
    }

    fn max_connections(&self) -> u32 {
        self.pool.options().get_max_connections()
    }

    /// How many connections wait warm now.
    pub fn parked(&self) -> usize {
        self.parked.lock().connections.len()
    }
}

/// Every [`PING_AFTER_IDLE`], hands the connections that waited that long back to the pool.
async fn sweep(parked: std::sync::Weak<Parked>) {
    let mut tick = tokio::time::interval(PING_AFTER_IDLE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(parked) = parked.upgrade() else { return };
        let stale: Vec<ParkedConnection> = {
            let mut state = parked.lock();
            // The longest idle are at the bottom of the stack.
            let fresh_from = state
                .connections
                .iter()
                .position(|c| c.since.elapsed() < PING_AFTER_IDLE)
                .unwrap_or(state.connections.len());
            state.connections.drain(..fresh_from).collect()
        };
        // Dropped outside the lock: each goes back to the pool through its ping.
        drop(stale);
    }
}

impl Parked {
    fn lock(&self) -> std::sync::MutexGuard<'_, ParkedState> {
        // Nothing can be left half-done under this lock: recover it from a panic elsewhere.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl WarmConnection {
    /// The request succeeded: if the connection is clean and has not been warm for
    /// [`WARM_LIFETIME`], hand it to the longest-waiting request, or keep it for the next one
    /// if fewer than `keep` wait; otherwise back to the pool.
    pub fn release(self) {
        let WarmConnection { connection, warm_since, parked } = self;
        let clean = !connection.should_flush() && !connection.is_in_transaction();
        if !clean || warm_since.elapsed() >= WARM_LIFETIME {
            return;
        }
        let mut offered = (connection, warm_since);
        let mut state = parked.lock();
        while let Some(waiter) = state.waiters.pop_front() {
            match waiter.send(offered) {
                Ok(()) => return,
                // That request got one from the pool meanwhile, or is gone.
                Err(back) => offered = back,
            }
        }
        if state.connections.len() < parked.keep {
            let (connection, warm_since) = offered;
            state.connections.push(ParkedConnection { connection, since: Instant::now(), warm_since });
        }
    }
}

impl Deref for WarmConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.connection
    }
}

impl DerefMut for WarmConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.connection
    }
}

/// Creates the configured database if it does not exist yet, so a fresh PostgreSQL needs no
/// manual step before `musterctl migrate` or `musterctl up`.
pub async fn ensure_database(settings: &DatabaseSettings) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateDatabase;
    let url = settings.url.expose_secret();
    if !sqlx::Postgres::database_exists(url).await.context("checking that the database exists")? {
        sqlx::Postgres::create_database(url).await.context("creating the database")?;
        tracing::info!("created the database");
    }
    Ok(())
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying database migrations")
}

/// Whether an error is a lost or refused connection (worth retrying), rather than a query
/// that can never succeed.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_))
}

/// Whether a database error refused a text it cannot store: PostgreSQL's text and `jsonb`
/// hold no U+0000 (SQLSTATE 22021 in text, 22P05 in `jsonb`), though JSON may carry it.
pub fn is_unstorable_text(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("22021" | "22P05")),
        _ => false,
    }
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.constraint().map(str::to_string),
        _ => None,
    }
}
