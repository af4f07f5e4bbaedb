//! What the normalizer does with its events, under the ordering and idempotency rule: claim
//! the events' versions, recompute from the truth (`muster_members`), record the versions, all
//! in one transaction per batch of a company's events.

use muster_contracts::{EventEnvelope, EventKind};
use muster_infra::worker::ProcessError;
use muster_infra::worker::batch::together_or_each;
use muster_infra::worker::versions::{self, Claim};
use sqlx::PgPool;
use uuid::Uuid;

use crate::SERVICE;

/// Members recomputed per transaction when the company's settings change.
const REEVALUATION_BATCH: i64 = 200;

/// Brings the members of a batch of one company's `scim.user.*` events up to their users'
/// current SCIM state; one result per event (each event alone if the batch fails).
pub async fn apply_batch(
    pool: &PgPool,
    tenant: Uuid,
    events: Vec<(EventEnvelope, Uuid)>,
) -> Vec<Result<(), ProcessError>> {
    together_or_each(&events, |events| apply(pool, tenant, events)).await
}

/// One transaction for the batch: read the users, claim, recompute the fresh ones.
///
/// The claim is the newer of the event's version and the SCIM user's version as read: the
/// member is computed from that state, so the events of versions in between (Entra's PATCH
/// right after its POST, typically still queued) are stale when they come and cost one claim.
/// A state read before a newer one commits is claimed at its own, older version, so the
/// newer one's event still comes through.
async fn apply(pool: &PgPool, tenant: Uuid, events: &[(EventEnvelope, Uuid)]) -> Result<(), ProcessError> {
    let mut tx = pool.begin().await?;
    let users: Vec<Uuid> = events.iter().map(|(_, user)| *user).collect();
    let scim = muster_members::load_scim_users(&mut tx, tenant, &users).await?;
    let deliveries: Vec<(&str, i64)> = events
        .iter()
        .map(|(event, user)| {
            let read = scim.get(user).map_or(0, |u| u.version);
            (event.entity_id.as_str(), event.version.max(read))
        })
        .collect();
    let fresh: Vec<Uuid> = versions::claim_many(&mut tx, SERVICE, tenant, &deliveries)
        .await?
        .iter()
        .filter_map(|entity| entity.parse().ok())
        .collect();
    let mut changed = 0;
    if !fresh.is_empty() {
        let rules = muster_members::company_rules(&mut tx, tenant).await?;
        changed = muster_members::recompute_loaded(&mut tx, tenant, &fresh, &scim, &rules, None).await?.len();
    }
    tx.commit().await?;
    metrics::histogram!("normalizer_batch_events").record(events.len() as f64);
    tracing::debug!(tenant_id = %tenant, events = events.len(), fresh = fresh.len(), changed, "users normalized");
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

/// Routes a company event to what it asks for (SCIM user events go through the batcher).
pub async fn handle(pool: &PgPool, event: &EventEnvelope) -> Result<(), ProcessError> {
    match event.kind {
        EventKind::TenantSettingsChanged => settings_changed(pool, event).await,
        other => Err(ProcessError::Permanent(format!("the normalizer does not handle {}", other.routing_key()))),
    }
}
