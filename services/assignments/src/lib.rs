//! The assignments worker: keeps each member's seats, workspace permission profiles and data
//! capture equal to what the company's assignments say (`muster_members::assignments`).
//!
//! An event only names whom to recompute — a member (`member.*`), a group's added and removed
//! members (`scim.group.members_changed`), the members a deleted group governed, the members a
//! configuration change can affect (`tenant.assignments_changed`) — and each is recomputed
//! from the current truth. Recomputing is idempotent and order-free (an unchanged member
//! writes nothing), so group and configuration events, whose deltas name different members,
//! are never skipped as stale; member events are, by their version.
//!
//! Large sets (a 10,000-member group added to an assignment) go in pages of [`PAGE`] members,
//! one transaction each; deliveries of one company are batched into one transaction under the
//! company's lock (`muster_infra::worker::batch`), and companies proceed in parallel.

use std::collections::HashSet;
use std::sync::Arc;

use muster_contracts::events::{AssignmentsChanged, MembersChanged};
use muster_contracts::topology::ASSIGNMENTS;
use muster_contracts::{EventEnvelope, EventKind};
use muster_infra::worker::batch::{Batcher, together_or_each};
use muster_infra::worker::versions;
use muster_infra::worker::{Handler, ProcessError, Worker, WorkerServiceSettings};
use muster_members::assignments::{self as engine, Affected, Batch};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Defaults of the assignments worker's health listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8085"
"#;

/// The assignments worker's settings.
pub type Settings = WorkerServiceSettings;

/// The worker's name in logs, metrics and the version table.
pub const SERVICE: &str = "assignments";

/// Members recomputed per transaction when an event names many.
pub const PAGE: usize = 500;

/// Deliveries of one company applied in one transaction at most.
const MAX_BATCH: usize = 64;

/// Members recomputed in one transaction at most, whatever the deliveries: 64 membership
/// changes of a large group named 6,400 members, held in memory together (peak RSS 255 MiB
/// in the 100,000-user benchmark against a 256 MiB budget).
const MAX_BATCH_MEMBERS: usize = 4 * PAGE;

/// Members to recompute, and the member event's version to claim first, if any.
struct Work {
    members: Vec<(Uuid, String)>,
    claim: Option<(String, i64)>,
    recheck_all_seats: bool,
}

/// The handler.
#[derive(Clone)]
pub struct Assignments {
    pool: PgPool,
    batches: Arc<Batcher<Uuid, Work>>,
}

impl Assignments {
    /// An assignments worker writing through `pool`.
    pub fn new(pool: PgPool) -> Assignments {
        Assignments {
            pool,
            batches: Arc::new(Batcher::new(MAX_BATCH).weighed(MAX_BATCH_MEMBERS, |work: &Work| work.members.len())),
        }
    }

    async fn run(&self, tenant: Uuid, work: Work) -> Result<(), ProcessError> {
        let pool = &self.pool;
        self.batches.run(tenant, work, |batch| apply_batch(pool, tenant, batch)).await
    }

    /// Recomputes `members` in pages, one transaction each.
    async fn run_pages(&self, tenant: Uuid, members: &[Uuid], cause: &str) -> Result<(), ProcessError> {
        for page in members.chunks(PAGE) {
            let members = page.iter().map(|m| (*m, cause.to_string())).collect();
            self.run(tenant, Work { members, claim: None, recheck_all_seats: false }).await?;
        }
        Ok(())
    }

    /// Recomputes the members `affected` names, page by page.
    async fn run_affected(&self, tenant: Uuid, affected: Affected, cause: &str) -> Result<(), ProcessError> {
        let mut after = Uuid::nil();
        let mut first = true;
        loop {
            let mut conn = self.pool.acquire().await?;
            let page = affected.page(&mut conn, tenant, after, PAGE).await?;
            drop(conn);
            let Some(last) = page.last().copied() else { return Ok(()) };
            let members = page.iter().map(|m| (*m, cause.to_string())).collect();
            let recheck_all_seats = first && matches!(affected, Affected::Everyone);
            self.run(tenant, Work { members, claim: None, recheck_all_seats }).await?;
            metrics::counter!("assignments_pages_total").increment(1);
            (after, first) = (last, false);
        }
    }
}

fn member_cause(kind: EventKind) -> &'static str {
    match kind {
        EventKind::MemberImported => "member imported",
        EventKind::MemberDeactivated => "member deactivated: seats released",
        EventKind::MemberReactivated => "member reactivated",
        _ => "member no longer imported (skipped): seats released",
    }
}

impl Handler for Assignments {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), ProcessError> {
        let tenant = event.tenant_id;
        let entity = || {
            event
                .entity_id
                .parse::<Uuid>()
                .map_err(|_| ProcessError::Permanent(format!("entity id '{}' is not a uuid", event.entity_id)))
        };
        match event.kind {
            EventKind::MemberImported
            | EventKind::MemberDeactivated
            | EventKind::MemberReactivated
            | EventKind::MemberSkipped => {
                let member = entity()?;
                let claim = Some((format!("member:{member}"), event.version));
                let members = vec![(member, member_cause(event.kind).to_string())];
                self.run(tenant, Work { members, claim, recheck_all_seats: false }).await
            }
            EventKind::ScimGroupMembersChanged => {
                let group = entity()?;
                let delta: MembersChanged = data(event)?;
                let name = group_name(&self.pool, tenant, group).await?;
                let ids = |list: &[String]| -> Vec<Uuid> { list.iter().filter_map(|m| m.parse().ok()).collect() };
                self.run_pages(tenant, &ids(&delta.added), &format!("added to group '{name}'")).await?;
                self.run_pages(tenant, &ids(&delta.removed), &format!("removed from group '{name}'")).await
            }
            EventKind::ScimGroupDeleted => {
                let group = entity()?;
                let name = event.data.as_ref().and_then(|d| d["display_name"].as_str()).map(str::to_string);
                let cause = format!("group '{}' deleted", name.unwrap_or_else(|| group.to_string()));
                self.run_affected(tenant, Affected::ViaGroup(group), &cause).await
            }
            EventKind::TenantAssignmentsChanged => {
                let change: AssignmentsChanged = data(event)?;
                self.run_affected(tenant, Affected::of(&change), &change.cause).await
            }
            // A group's name is read when shown; other kinds reach this queue only through a
            // binding an earlier version declared.
            other => {
                metrics::counter!("assignments_events_ignored_total", "kind" => other.routing_key()).increment(1);
                Ok(())
            }
        }
    }
}

fn data<T: serde::de::DeserializeOwned>(event: &EventEnvelope) -> Result<T, ProcessError> {
    let data = event
        .data
        .clone()
        .ok_or_else(|| ProcessError::Permanent(format!("{} event without data", event.kind.routing_key())))?;
    serde_json::from_value(data)
        .map_err(|e| ProcessError::Permanent(format!("{} event with unreadable data: {e}", event.kind.routing_key())))
}

async fn group_name(pool: &PgPool, tenant: Uuid, group: Uuid) -> Result<String, ProcessError> {
    let name: Option<String> =
        sqlx::query_scalar("select display_name from scim.groups where tenant_id = $1 and id = $2")
            .bind(tenant)
            .bind(group)
            .fetch_optional(pool)
            .await?;
    Ok(name.unwrap_or_else(|| group.to_string()))
}

async fn apply_batch(pool: &PgPool, tenant: Uuid, batch: Vec<Work>) -> Vec<Result<(), ProcessError>> {
    together_or_each(&batch, |work| apply(pool, tenant, work)).await
}

/// One transaction: the member events' claims (stale ones drop out), the company's lock, the
/// recomputation of every member the batch names.
async fn apply(pool: &PgPool, tenant: Uuid, work: &[Work]) -> Result<(), ProcessError> {
    let mut tx = pool.begin().await?;
    let claims: Vec<(&str, i64)> =
        work.iter().filter_map(|w| w.claim.as_ref()).map(|(e, v)| (e.as_str(), *v)).collect();
    let fresh: HashSet<String> = versions::claim_many(&mut tx, SERVICE, tenant, &claims).await?.into_iter().collect();
    let stale = work.iter().map(|w| w.claim.as_ref().is_some_and(|(entity, _)| !fresh.contains(entity)));
    let mut batch = Batch::default();
    for (w, stale) in work.iter().zip(stale) {
        if !stale {
            batch.members.extend(w.members.iter().cloned());
            batch.recheck_all_seats |= w.recheck_all_seats;
        }
    }
    if batch.members.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    engine::lock(&mut tx, tenant).await?;
    let applied = engine::apply(&mut tx, tenant, &batch).await?;
    tx.commit().await?;
    metrics::histogram!("assignments_batch_members").record(batch.members.len() as f64);
    tracing::info!(tenant_id = %tenant, events = work.len(), members = batch.members.len(), changed = applied.len(),
        "assignments applied");
    Ok(())
}

/// The worker with its handler, ready to run.
pub fn worker(settings: &Settings, pool: PgPool) -> Worker<Assignments> {
    settings.batching().worker(SERVICE, ASSIGNMENTS, Assignments::new(pool))
}

/// Runs the assignments worker and its health endpoints until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    muster_infra::worker::serve(SERVICE, ASSIGNMENTS, settings.batching(), Assignments::new, shutdown).await
}
