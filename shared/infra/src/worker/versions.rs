//! The idempotency rule of DESIGN.md, made reusable: per worker and entity, the version last
//! processed, locked and updated inside the handler's own transaction.
//!
//! ```text
//! let mut tx = pool.begin().await?;
//! if versions::claim(&mut tx, "normalizer", tenant, &entity, version).await? == Claim::Stale {
//!     return Ok(());            // duplicate or out of date: the newer state was handled
//! }
//! … read the entity's current state, write the effects …
//! tx.commit().await?;           // the version is recorded with the effects
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

/// Tells whether `version` is new to this worker and, if it is, records it — in the caller's
/// transaction, so a failed handler records nothing. One statement: the row stays locked until
/// commit, so concurrent deliveries of the same entity (two replicas) wait here for one another
/// and the later one then sees the version the first recorded.
pub async fn claim(
    conn: &mut PgConnection,
    worker: &str,
    tenant: Uuid,
    entity: &str,
    version: i64,
) -> sqlx::Result<Claim> {
    let fresh: Option<i64> = sqlx::query_scalar(
        "insert into worker.processed_versions (worker, tenant_id, entity_id, version) values ($1, $2, $3, $4)
         on conflict (worker, tenant_id, entity_id) do update set version = excluded.version, updated_at = now()
         where worker.processed_versions.version < excluded.version
         returning version",
    )
    .bind(worker)
    .bind(tenant)
    .bind(entity)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    Ok(if fresh.is_some() { Claim::Fresh } else { Claim::Stale })
}
