//! The idempotency rule of DESIGN.md, made reusable: per worker and entity, the version last
//! processed, locked and updated inside the handler's own transaction.
//!
//! ```text
//! let mut tx = pool.begin().await?;
//! if versions::claim(&mut tx, "normalizer", tenant, &entity, version).await? == Claim::Stale {
//!     return Ok(());            // duplicate or out of date: the newer state was handled
//! }
//! … read the entity's current state, write the effects …
//! versions::record(&mut tx, "normalizer", tenant, &entity, version).await?;
//! tx.commit().await?;
//! ```

use sqlx::PgConnection;
use uuid::Uuid;

/// Whether a delivery is news to this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not processed yet: handle it (the entity's row is now locked until commit).
    Fresh,
    /// This or a later version was already processed: skip it.
    Stale,
}

/// Locks this worker's row for the entity and tells whether `version` is new. Concurrent
/// deliveries of the same entity (two replicas) wait here for one another.
pub async fn claim(
    conn: &mut PgConnection,
    worker: &str,
    tenant: Uuid,
    entity: &str,
    version: i64,
) -> sqlx::Result<Claim> {
    sqlx::query(
        "insert into worker.processed_versions (worker, tenant_id, entity_id, version) values ($1, $2, $3, -1)
         on conflict do nothing",
    )
    .bind(worker)
    .bind(tenant)
    .bind(entity)
    .execute(&mut *conn)
    .await?;
    let processed: i64 = sqlx::query_scalar(
        "select version from worker.processed_versions where worker = $1 and tenant_id = $2 and entity_id = $3 for update",
    )
    .bind(worker)
    .bind(tenant)
    .bind(entity)
    .fetch_one(&mut *conn)
    .await?;
    Ok(if processed >= version { Claim::Stale } else { Claim::Fresh })
}

/// Records `version` as processed, in the same transaction as the effects.
pub async fn record(
    conn: &mut PgConnection,
    worker: &str,
    tenant: Uuid,
    entity: &str,
    version: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "update worker.processed_versions set version = greatest(version, $4), updated_at = now()
         where worker = $1 and tenant_id = $2 and entity_id = $3",
    )
    .bind(worker)
    .bind(tenant)
    .bind(entity)
    .bind(version)
    .execute(conn)
    .await?;
    Ok(())
}
