//! `member.placed` → an item of the manager's digest, when the member is new: imported within
//! the window, placed under a manager for the first time, never announced before. Everything
//! else (updates, reactivations, moves to another manager) sends nothing; each reason is
//! counted in `notifier_placements_total{outcome}`.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::delivery::{Weekend, deliver_at};
use muster_infra::worker::versions::{self, Claim};
use muster_infra::worker::{Handler, ProcessError};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{Clock, NotifierOptions, SERVICE};

/// The handler.
pub struct Trigger {
    pool: PgPool,
    options: NotifierOptions,
    clock: Clock,
}

impl Trigger {
    pub fn new(pool: PgPool, options: NotifierOptions, clock: Clock) -> Trigger {
        Trigger { pool, options, clock }
    }
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
            // Reaches this queue only through a binding an earlier version declared.
            return Ok(());
        }
        let member: Uuid = event
            .entity_id
            .parse()
            .map_err(|_| ProcessError::Permanent(format!("entity id '{}' is not a member id", event.entity_id)))?;
        let data = event.data.as_ref();
        let uuid_at = |key: &str| data.and_then(|d| d[key].as_str()).and_then(|s| s.parse::<Uuid>().ok());
        let (manager, previous) = (uuid_at("manager_id"), uuid_at("previous_manager_id"));
        let outcome = self.queue(event, member, manager, previous).await?;
        metrics::counter!("notifier_placements_total", "outcome" => outcome.as_str()).increment(1);
        tracing::info!(tenant_id = %event.tenant_id, scim_user_id = %member, manager_id = ?manager,
            outcome = outcome.as_str(), "placement seen");
        Ok(())
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
    async fn queue(
        &self,
        event: &EventEnvelope,
        member: Uuid,
        manager: Option<Uuid>,
        previous: Option<Uuid>,
    ) -> Result<Outcome, ProcessError> {
        let tenant = event.tenant_id;
        let mut tx = self.pool.begin().await?;
        // Every placement is recorded as seen (link versions are their own sequence: keyed
        // apart from the member's versions), whatever it comes to.
        if versions::claim(&mut tx, SERVICE, tenant, &format!("placed:{member}"), event.version).await? == Claim::Stale
        {
            tx.commit().await?;
            return Ok(Outcome::AlreadyAnnounced);
        }
        let (Some(manager), None) = (manager, previous) else {
            tx.commit().await?;
            return Ok(Outcome::NotFirstPlacement);
        };
        let facts: Facts = sqlx::query_as(
            "select coalesce((select notify_managers_on_import from tenancy.tenant_settings where tenant_id = $1), false)
                        as notify,
                    m.status as member_status, m.imported_at,
                    mg.status as manager_status, mg.profile->>'timezone' as manager_timezone,
                    mg.profile->>'locale' as manager_locale,
                    exists(select 1 from notifications.items i where i.tenant_id = $1 and i.member_id = $2) as announced
             from (select 1) one
             left join members.members m on m.tenant_id = $1 and m.scim_user_id = $2
             left join members.members mg on mg.tenant_id = $1 and mg.scim_user_id = $3",
        )
        .bind(tenant)
        .bind(member)
        .bind(manager)
        .fetch_one(&mut *tx)
        .await?;
        let window =
            chrono::Duration::hours(i64::try_from(self.options.import_window_hours).unwrap_or(i64::MAX / 4000));
        let outcome = if !facts.notify {
            Outcome::SettingOff
        } else if facts.announced {
            Outcome::AlreadyAnnounced
        } else if facts.member_status.as_deref() != Some("active") {
            Outcome::NotActive
        } else if facts.imported_at.is_none_or(|at| event.occurred_at - at > window) {
            // Both instants are the database's: the window holds whatever the notifier's clock says.
            Outcome::OutsideWindow
        } else if facts.manager_status.as_deref() != Some("active") {
            Outcome::ManagerInactive
        } else {
            let zone: Tz = facts.manager_timezone.as_deref().and_then(|z| z.parse().ok()).unwrap_or(Tz::UTC);
            let weekend = Weekend::for_locale(facts.manager_locale.as_deref().unwrap_or("en-US"));
            let now = self.clock.now();
            let window = chrono::Duration::seconds(i64::try_from(self.options.digest_window_secs).unwrap_or(0));
            let due = deliver_at(now + window, zone, weekend);
            let digest = collecting_digest(&mut tx, tenant, manager, due).await?;
            sqlx::query(
                "insert into notifications.items (tenant_id, member_id, recipient_id, notification_id)
                 values ($1, $2, $3, $4) on conflict (tenant_id, member_id) do nothing",
            )
            .bind(tenant)
            .bind(member)
            .bind(manager)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
            Outcome::Queued
        };
        tx.commit().await?;
        Ok(outcome)
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
