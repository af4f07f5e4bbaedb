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
    let fresh = claim_many(conn, worker, tenant, &[(entity, version)]).await?;
    Ok(if fresh.is_empty() { Claim::Stale } else { Claim::Fresh })
}

/// [`claim`] for many entities in one statement: records each entity's highest version in
/// `deliveries` where it is news, and returns the entities that were (a batch of a worker's
/// deliveries, where one entity may come several times). Rows are claimed in entity order, so
/// two replicas claiming overlapping batches wait for one another instead of deadlocking.
pub async fn claim_many(
    conn: &mut PgConnection,
    worker: &str,
    tenant: Uuid,
    deliveries: &[(&str, i64)],
) -> sqlx::Result<Vec<String>> {
    let mut newest: Vec<(&str, i64)> = deliveries.to_vec();
    newest.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    newest.dedup_by(|later, kept| later.0 == kept.0);
    let (entities, versions): (Vec<&str>, Vec<i64>) = newest.into_iter().unzip();
    sqlx::query_scalar(
        "insert into worker.processed_versions (worker, tenant_id, entity_id, version)
         select $1, $2, d.entity_id, d.version
         from unnest($3::text[], $4::bigint[]) with ordinality as d(entity_id, version, n)
         order by d.n
         on conflict (worker, tenant_id, entity_id) do update set version = excluded.version, updated_at = now()
         where worker.processed_versions.version < excluded.version
         returning entity_id",
    )
    .bind(worker)
    .bind(tenant)
    .bind(entities)
    .bind(versions)
    .fetch_all(conn)
    .await
}
