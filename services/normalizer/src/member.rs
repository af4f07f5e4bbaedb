//! What the normalizer does with each event, under the ordering and idempotency rule: claim
//! the event's version, recompute from the truth (`muster_members`), record the version, all
//! in one transaction.

use muster_contracts::{EventEnvelope, EventKind};
use muster_infra::worker::ProcessError;
use muster_infra::worker::versions::{self, Claim};
use sqlx::PgPool;
use uuid::Uuid;

use crate::SERVICE;

/// Members recomputed per transaction when the company's settings change.
const REEVALUATION_BATCH: i64 = 200;

/// Brings `user`'s member up to the user's current SCIM state.
pub async fn apply(pool: &PgPool, event: &EventEnvelope, user: Uuid) -> Result<(), ProcessError> {
    let tenant = event.tenant_id;
    let mut tx = pool.begin().await?;
    if versions::claim(&mut tx, SERVICE, tenant, &event.entity_id, event.version).await? == Claim::Stale {
        return Ok(());
    }
    muster_members::recompute(&mut tx, tenant, user, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Re-evaluates the members whose outcome depends on the company's settings: a skipped member
/// whose domain became the company's is imported, a default time zone change reaches those on
/// it. Batches commit on their own; a redelivery recomputes again, which changes nothing twice.
pub async fn settings_changed(pool: &PgPool, event: &EventEnvelope) -> Result<(), ProcessError> {
    let tenant = event.tenant_id;
    // Only a check: the long re-evaluation must not hold the version row's lock.
    let mut check = pool.begin().await?;
    if versions::claim(&mut check, SERVICE, tenant, &event.entity_id, event.version).await? == Claim::Stale {
        return Ok(());
    }
    check.rollback().await?;
    let changed = muster_members::reevaluate_after_settings_change(pool, tenant, REEVALUATION_BATCH).await?;
    tracing::info!(tenant_id = %tenant, changed, "members re-evaluated after a settings change");
    let mut tx = pool.begin().await?;
    versions::claim(&mut tx, SERVICE, tenant, &event.entity_id, event.version).await?;
    tx.commit().await?;
    Ok(())
}

/// Routes an event to what it asks for.
pub async fn handle(pool: &PgPool, event: &EventEnvelope) -> Result<(), ProcessError> {
    match event.kind {
        EventKind::ScimUserUpserted | EventKind::ScimUserDeleted => {
            let Ok(user) = event.entity_id.parse::<Uuid>() else {
                return Err(ProcessError::Permanent(format!("entity id '{}' is not a SCIM user id", event.entity_id)));
            };
            apply(pool, event, user).await
        }
        EventKind::TenantSettingsChanged => settings_changed(pool, event).await,
        other => Err(ProcessError::Permanent(format!("the normalizer does not handle {}", other.routing_key()))),
    }
}
