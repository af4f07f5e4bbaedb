//! `member.placed` → an item of the manager's digest, when the member is new: imported within
//! the window, placed under a manager for the first time, never announced before. Everything
//! else (updates, reactivations, moves to another manager) sends nothing; each reason is
//! counted in `notifier_placements_total{outcome}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::delivery::{Weekend, deliver_at};
use muster_infra::worker::batch::{Batcher, together_or_each};
use muster_infra::worker::versions;
use muster_infra::worker::{Handler, ProcessError};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{Clock, NotifierOptions, SERVICE};

/// Placements of one company handled in one transaction at most.
const MAX_BATCH: usize = 256;

/// The handler: a company's waiting `member.placed` deliveries in one transaction.
pub struct Trigger {
    pool: PgPool,
    options: NotifierOptions,
    clock: Clock,
    batches: Arc<Batcher<Uuid, Placement>>,
}

impl Trigger {
    pub fn new(pool: PgPool, options: NotifierOptions, clock: Clock) -> Trigger {
        Trigger { pool, options, clock, batches: Arc::new(Batcher::new(MAX_BATCH)) }
    }
}

/// A `member.placed` event as the trigger reads it.
#[derive(Debug, Clone)]
pub struct Placement {
    version: i64,
    occurred_at: DateTime<Utc>,
    member: Uuid,
    manager: Option<Uuid>,
    previous: Option<Uuid>,
}

/// What a placement came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Added to the manager's digest.
    Queued,
    /// Not a first placement under a manager (a move, or an unlink).
    NotFirstPlacement,
    /// The company does not notify managers.
    SettingOff,
    /// The member is not (or no longer) imported and active.
    NotActive,
    /// Placed too long after the import: not a new member any more.
    OutsideWindow,
    /// The manager is not an active member.
    ManagerInactive,
    /// Already announced (a redelivery, or a later placement of the same member).
    AlreadyAnnounced,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::NotFirstPlacement => "not_first_placement",
            Outcome::SettingOff => "setting_off",
            Outcome::NotActive => "not_active",
            Outcome::OutsideWindow => "outside_window",
            Outcome::ManagerInactive => "manager_inactive",
            Outcome::AlreadyAnnounced => "already_announced",
        }
    }
}

impl Handler for Trigger {
    async fn handle(&self, event: &EventEnvelope) -> Result<(), ProcessError> {
        if event.kind != EventKind::MemberPlaced {
            // Nothing else is bound here; a message replayed into this queue by hand is let go.
            return Ok(());
        }
        let member: Uuid = event
            .entity_id
            .parse()
            .map_err(|_| ProcessError::Permanent(format!("entity id '{}' is not a member id", event.entity_id)))?;
        let data = event.data.as_ref();
        let uuid_at = |key: &str| data.and_then(|d| d[key].as_str()).and_then(|s| s.parse::<Uuid>().ok());
        let placement = Placement {
            version: event.version,
            occurred_at: event.occurred_at,
            member,
            manager: uuid_at("manager_id"),
            previous: uuid_at("previous_manager_id"),
        };
        let tenant = event.tenant_id;
        self.batches
            .run(tenant, placement, |batch| async move {
                together_or_each(&batch, |placements| self.apply(tenant, placements)).await
            })
            .await
    }
}

#[derive(sqlx::FromRow)]
struct Facts {
    notify: bool,
    member_status: Option<String>,
    imported_at: Option<DateTime<Utc>>,
    manager_status: Option<String>,
    manager_timezone: Option<String>,
    manager_locale: Option<String>,
    announced: bool,
}

impl Trigger {
    /// One transaction for a batch of a company's placements: every placement is recorded as
    /// seen (link versions are their own sequence, keyed `placed:<member>` apart from the
    /// member's versions), whatever it comes to; the new members become items of their
    /// managers' digests.
    async fn apply(&self, tenant: Uuid, placements: &[Placement]) -> Result<(), ProcessError> {
        let mut tx = self.pool.begin().await?;
        let keys: Vec<String> = placements.iter().map(|p| format!("placed:{}", p.member)).collect();
        // What was recorded before this batch, locked (in key order, one probe per key), so
        // that each placement is judged in version order against it (one member may come
        // several times in a batch).
        let mut lock_order = keys.clone();
        lock_order.sort();
        lock_order.dedup();
        let recorded: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
            "select v.entity_id, v.version from unnest($3::text[]) as k(id) cross join lateral
                 (select entity_id, version from worker.processed_versions
                  where worker = $1 and tenant_id = $2 and entity_id = k.id for update offset 0) v",
        )
        .bind(SERVICE)
        .bind(tenant)
        .bind(&lock_order)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let deliveries: Vec<(&str, i64)> = keys.iter().zip(placements).map(|(k, p)| (k.as_str(), p.version)).collect();
        let claimed: HashSet<String> =
            versions::claim_many(&mut tx, SERVICE, tenant, &deliveries).await?.into_iter().collect();
        let mut outcomes = vec![Outcome::AlreadyAnnounced; placements.len()];
        let mut candidates = Vec::new();
        for (i, p) in placements.iter().enumerate() {
            let news = claimed.contains(&keys[i]) && p.version > recorded.get(&keys[i]).copied().unwrap_or(0);
            match (news, p.manager, p.previous) {
                (false, _, _) => {}
                (true, Some(manager), None) => candidates.push((i, manager)),
                (true, _, _) => outcomes[i] = Outcome::NotFirstPlacement,
            }
        }
        if !candidates.is_empty() {
            self.queue(&mut tx, tenant, placements, &candidates, &mut outcomes).await?;
        }
        tx.commit().await?;
        for (p, outcome) in placements.iter().zip(outcomes) {
            metrics::counter!("notifier_placements_total", "outcome" => outcome.as_str()).increment(1);
            tracing::info!(tenant_id = %tenant, scim_user_id = %p.member, manager_id = ?p.manager,
                outcome = outcome.as_str(), "placement seen");
        }
        Ok(())
    }

    /// Judges the first placements in `candidates` (index, manager) and adds the new members to
    /// their managers' collecting digests.
    async fn queue(
        &self,
        conn: &mut PgConnection,
        tenant: Uuid,
        placements: &[Placement],
        candidates: &[(usize, Uuid)],
        outcomes: &mut [Outcome],
    ) -> sqlx::Result<()> {
        let members: Vec<Uuid> = candidates.iter().map(|(i, _)| placements[*i].member).collect();
        let managers: Vec<Uuid> = candidates.iter().map(|(_, m)| *m).collect();
        // Key probes per placement, fenced (`offset 0`) so that no estimate of the company's
        // size turns them into a scan of its members (1.6–1.8 s per batch at 100,000 members).
        let facts: Vec<Facts> = sqlx::query_as(
            "select coalesce((select notify_managers_on_import from tenancy.tenant_settings where tenant_id = $1), false)
                        as notify,
                    m.status as member_status, m.imported_at,
                    mg.status as manager_status, mg.profile->>'timezone' as manager_timezone,
                    mg.profile->>'locale' as manager_locale,
                    exists(select 1 from notifications.items i where i.tenant_id = $1 and i.member_id = p.member
                           offset 0) as announced
             from unnest($2::uuid[], $3::uuid[]) with ordinality as p(member, manager, n)
             left join lateral (select status, imported_at from members.members
                                where tenant_id = $1 and scim_user_id = p.member offset 0) m on true
             left join lateral (select status, profile from members.members
                                where tenant_id = $1 and scim_user_id = p.manager offset 0) mg on true
             order by p.n",
        )
        .bind(tenant)
        .bind(&members)
        .bind(&managers)
        .fetch_all(&mut *conn)
        .await?;
        let window =
            chrono::Duration::hours(i64::try_from(self.options.import_window_hours).unwrap_or(i64::MAX / 4000));
        let digest_window = chrono::Duration::seconds(i64::try_from(self.options.digest_window_secs).unwrap_or(0));
        let now = self.clock.now();
        // Per manager (in id order: two replicas lock digests in the same order), the due
        // instant and the new members.
        let mut queued: BTreeMap<Uuid, (DateTime<Utc>, Vec<Uuid>)> = BTreeMap::new();
        let mut seen = HashSet::new();
        for ((i, manager), facts) in candidates.iter().zip(facts) {
            let p = &placements[*i];
            outcomes[*i] = if !facts.notify {
                Outcome::SettingOff
            } else if facts.announced || !seen.insert(p.member) {
                Outcome::AlreadyAnnounced
            } else if facts.member_status.as_deref() != Some("active") {
                Outcome::NotActive
            } else if facts.imported_at.is_none_or(|at| p.occurred_at - at > window) {
                // Both instants are the database's: the window holds whatever the notifier's clock says.
                Outcome::OutsideWindow
            } else if facts.manager_status.as_deref() != Some("active") {
                Outcome::ManagerInactive
            } else {
                let zone: Tz = facts.manager_timezone.as_deref().and_then(|z| z.parse().ok()).unwrap_or(Tz::UTC);
                let weekend = Weekend::for_locale(facts.manager_locale.as_deref().unwrap_or("en-US"));
                let due = deliver_at(now + digest_window, zone, weekend);
                queued.entry(*manager).or_insert_with(|| (due, Vec::new())).1.push(p.member);
                Outcome::Queued
            };
        }
        let (mut item_members, mut item_managers, mut item_digests) = (Vec::new(), Vec::new(), Vec::new());
        for (manager, (due, members)) in queued {
            let digest = collecting_digest(&mut *conn, tenant, manager, due).await?;
            for member in members {
                item_members.push(member);
                item_managers.push(manager);
                item_digests.push(digest);
            }
        }
        if !item_members.is_empty() {
            sqlx::query(
                "insert into notifications.items (tenant_id, member_id, recipient_id, notification_id)
                 select $1, i.member, i.manager, i.digest from unnest($2::uuid[], $3::uuid[], $4::uuid[]) as i(member, manager, digest)
                 on conflict (tenant_id, member_id) do nothing",
            )
            .bind(tenant)
            .bind(item_members)
            .bind(item_managers)
            .bind(item_digests)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// The manager's digest still collecting (locked until commit), opened due at `due` if none.
async fn collecting_digest(
    conn: &mut PgConnection,
    tenant: Uuid,
    manager: Uuid,
    due: DateTime<Utc>,
) -> sqlx::Result<Uuid> {
    // A dispatcher may claim the open digest between the two statements; then open another.
    loop {
        sqlx::query(
            "insert into notifications.notifications (id, tenant_id, recipient_id, state, due_at, scheduled_for)
             values ($1, $2, $3, 'scheduled', $4, $4)
             on conflict (tenant_id, recipient_id) where state = 'scheduled' and attempts = 0 do nothing",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(manager)
        .bind(due)
        .execute(&mut *conn)
        .await?;
        let open: Option<Uuid> = sqlx::query_scalar(
            "select id from notifications.notifications
             where tenant_id = $1 and recipient_id = $2 and state = 'scheduled' and attempts = 0 for update",
        )
        .bind(tenant)
        .bind(manager)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(id) = open {
            return Ok(id);
        }
    }
}
