//! A worker handler for runtime tests: it records each entity's last applied version and how
//! many times an effect was applied, and can be told to fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use muster_contracts::EventEnvelope;
use muster_infra::worker::versions::{self, Claim};
use muster_infra::worker::{Handler, ProcessError, WorkerSettings};
use sqlx::PgPool;
use uuid::Uuid;

/// How the handler behaves.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Normal,
    /// Events of this entity fail transiently, every time.
    AlwaysTransient(String),
    /// Events of this entity fail permanently.
    Permanent(String),
    /// Each event fails transiently this many times, then succeeds.
    FlakyTimes(u32),
    /// For this entity, wait this many milliseconds inside the transaction, before commit
    /// (a process killed then must not have applied anything).
    PauseBeforeCommit(String, u64),
    /// For this entity, wait after commit, before the delivery is acked (a process killed
    /// then has applied the effect; the redelivery must not apply it again).
    PauseAfterCommit(String, u64),
}

impl Behaviour {
    /// Parses `normal`, `pause-before-commit:<entity>:<ms>` or `pause-after-commit:<entity>:<ms>`.
    pub fn parse(text: &str) -> Option<Behaviour> {
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["normal"] => Some(Behaviour::Normal),
            ["pause-before-commit", entity, ms] => {
                Some(Behaviour::PauseBeforeCommit(entity.to_string(), ms.parse().ok()?))
            }
            ["pause-after-commit", entity, ms] => {
                Some(Behaviour::PauseAfterCommit(entity.to_string(), ms.parse().ok()?))
            }
            _ => None,
        }
    }
}

/// Records effects in `test_effects` (entity_id, version, applied).
#[derive(Clone)]
pub struct Recorder {
    pub pool: PgPool,
    pub behaviour: Arc<Mutex<Behaviour>>,
    attempts: Arc<Mutex<HashMap<Uuid, u32>>>,
}

impl Recorder {
    /// A recorder on `pool`, creating its table.
    pub async fn new(pool: PgPool) -> Recorder {
        for ddl in [
            "create table if not exists test_effects (entity_id text primary key, version bigint not null, applied int not null)",
            "create table if not exists test_deliveries (event_id uuid not null, entity_id text not null, at timestamptz not null default clock_timestamp())",
        ] {
            sqlx::query(ddl).execute(&pool).await.unwrap_or_else(|e| panic!("creating test tables: {e}"));
        }
        Recorder {
            pool,
            behaviour: Arc::new(Mutex::new(Behaviour::Normal)),
            attempts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Changes the behaviour (e.g. "the bug is fixed").
    pub fn set(&self, behaviour: Behaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    /// (version, applied) of an entity.
    pub async fn effect(&self, entity: &str) -> Option<(i64, i32)> {
        sqlx::query_as("select version, applied from test_effects where entity_id = $1")
            .bind(entity)
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
    }

    /// Every entity's (entity, version).
    pub async fn versions(&self) -> Vec<(String, i64)> {
        sqlx::query_as("select entity_id, version from test_effects order by entity_id")
            .fetch_all(&self.pool)
            .await
            .unwrap_or_default()
    }

    /// How many times deliveries of `entity` reached the handler.
    pub async fn deliveries(&self, entity: &str) -> i64 {
        sqlx::query_scalar("select count(*) from test_deliveries where entity_id = $1")
            .bind(entity)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }

    /// How many effect applications in all.
    pub async fn total_applied(&self) -> i64 {
        sqlx::query_scalar("select coalesce(sum(applied), 0)::bigint from test_effects")
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }
}

impl Handler for Recorder {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), ProcessError> {
        // Outside the effect's transaction: every delivery that reached a handler is counted,
        // even one whose process was killed before commit.
        sqlx::query("insert into test_deliveries (event_id, entity_id) values ($1, $2)")
            .bind(event.event_id)
            .bind(&event.entity_id)
            .execute(&self.pool)
            .await?;
        let behaviour = self.behaviour.lock().map(|b| b.clone()).unwrap_or(Behaviour::Normal);
        match behaviour {
            Behaviour::AlwaysTransient(e) if e == event.entity_id => {
                return Err(ProcessError::Transient("dependency unavailable (test)".into()));
            }
            Behaviour::Permanent(e) if e == event.entity_id => {
                return Err(ProcessError::Permanent("impossible data (test)".into()));
            }
            Behaviour::FlakyTimes(n) => {
                let seen = {
                    let mut attempts = self.attempts.lock().map_err(|_| ProcessError::Transient("lock".into()))?;
                    let count = attempts.entry(event.event_id).or_insert(0);
                    *count += 1;
                    *count
                };
                if seen <= n {
                    return Err(ProcessError::Transient(format!("flaky dependency, attempt {seen}")));
                }
            }
            _ => {}
        }
        let mut tx = self.pool.begin().await?;
        if versions::claim(&mut tx, "test", event.tenant_id, &event.entity_id, event.version).await? == Claim::Stale {
            return Ok(());
        }
        sqlx::query(
            "insert into test_effects (entity_id, version, applied) values ($1, $2, 1)
             on conflict (entity_id) do update set version = excluded.version, applied = test_effects.applied + 1",
        )
        .bind(&event.entity_id)
        .bind(event.version)
        .execute(&mut *tx)
        .await?;
        if let Behaviour::PauseBeforeCommit(entity, ms) = &behaviour
            && *entity == event.entity_id
        {
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
        }
        tx.commit().await?;
        if let Behaviour::PauseAfterCommit(entity, ms) = &behaviour
            && *entity == event.entity_id
        {
            tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
        }
        Ok(())
    }
}

/// Settings with short delays, for tests.
pub fn fast_settings() -> WorkerSettings {
    WorkerSettings {
        prefetch: 16,
        concurrency: 4,
        batch_prefetch: 64,
        max_attempts: 3,
        retry_delays_ms: vec![100, 300],
        shutdown_grace_ms: 2000,
    }
}
