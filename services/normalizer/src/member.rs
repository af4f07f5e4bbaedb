//! One SCIM user's member, recomputed from the user's current state (DESIGN.md: an event is a
//! notification, the database is the truth).

use chrono_tz::Tz;
use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::CompanyDomain;
use muster_domain::profile::{CompanyRules, Profile, Verdict, derive_profile};
use muster_infra::worker::ProcessError;
use muster_infra::worker::versions::{self, Claim};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::SERVICE;

/// A member's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Deactivated,
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Deactivated => "deactivated",
            Status::Skipped => "skipped",
        }
    }
    fn parse(s: &str) -> Status {
        match s {
            "active" => Status::Active,
            "deactivated" => Status::Deactivated,
            _ => Status::Skipped,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Stored {
    status: String,
    skip_reason: Option<String>,
    profile: Value,
    imported_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The profile as stored and shown by the admin API: normalized values with the raw ones.
pub fn profile_json(p: &Profile) -> Value {
    json!({
        "given_name": p.given_name,
        "family_name": p.family_name,
        "display_name": p.display_name,
        "title": p.title,
        "emails": {"primary": p.primary_email, "secondary": p.secondary_email, "private": p.private_email},
        "phone": {"raw": p.phone.raw, "e164": p.phone.e164, "extension": p.phone.extension,
                  "invalid": p.phone.raw.is_some() && p.phone.e164.is_none()},
        "manager_ref": {"id": p.manager.id, "email": p.manager.email, "full_name": p.manager.full_name},
        "country": p.country.normalized, "country_raw": p.country.raw, "country_invalid": p.country.is_invalid(),
        "state": p.state.normalized, "state_raw": p.state.raw, "state_invalid": p.state.is_invalid(),
        "timezone": p.timezone.name(), "timezone_source": p.timezone_source.as_str(),
        "timezone_raw": p.timezone_attribute.raw, "timezone_invalid": p.timezone_attribute.is_invalid(),
        "locale": p.locale, "locale_invalid": p.locale_invalid,
    })
}

async fn rules(conn: &mut PgConnection, tenant: Uuid) -> Result<CompanyRules, ProcessError> {
    let (domains, default) = muster_infra::tenancy::company_settings(&mut *conn, tenant).await?.unwrap_or_default();
    Ok(CompanyRules {
        domains: domains.iter().filter_map(|d| CompanyDomain::parse(d).ok()).collect(),
        default_timezone: default.parse::<Tz>().unwrap_or(Tz::UTC),
    })
}

/// Brings `user`'s member up to the user's current SCIM state, in one transaction with the
/// version record, the provisioning log and the outbox.
pub async fn apply(pool: &PgPool, event: &EventEnvelope, user: Uuid) -> Result<(), ProcessError> {
    let tenant = event.tenant_id;
    let mut tx = pool.begin().await?;
    if versions::claim(&mut tx, SERVICE, tenant, &event.entity_id, event.version).await? == Claim::Stale {
        return Ok(());
    }
    let scim: Option<(Value, i64)> =
        sqlx::query_as("select resource, version from scim.users where tenant_id = $1 and id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
    let stored: Option<Stored> = sqlx::query_as(
        "select status, skip_reason, profile, imported_at from members.members
         where tenant_id = $1 and scim_user_id = $2 for update",
    )
    .bind(tenant)
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match scim {
        None => deleted(&mut tx, tenant, user, stored).await?,
        Some((doc, _)) => {
            let rules = rules(&mut tx, tenant).await?;
            upsert(&mut tx, tenant, user, &doc, &rules, stored).await?
        }
    };
    if let Some((kind, version, action, detail)) = outcome {
        sqlx::query(
            "insert into members.provisioning_log (tenant_id, scim_user_id, action, detail) values ($1, $2, $3, $4)",
        )
        .bind(tenant)
        .bind(user)
        .bind(action)
        .bind(&detail)
        .execute(&mut *tx)
        .await?;
        let envelope = EventEnvelope::new(tenant, kind, user.to_string(), version, chrono::Utc::now());
        muster_infra::outbox::append(&mut tx, &[envelope], &muster_infra::telemetry::current_traceparent()).await?;
        metrics::counter!("normalizer_members_total", "event" => kind.routing_key()).increment(1);
        tracing::info!(scim_user_id = %user, event = kind.routing_key(), detail = ?detail, "member changed");
    }
    versions::record(&mut tx, SERVICE, tenant, &event.entity_id, event.version).await?;
    tx.commit().await?;
    Ok(())
}

type Outcome = Option<(EventKind, i64, &'static str, Option<String>)>;

async fn deleted(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    stored: Option<Stored>,
) -> Result<Outcome, ProcessError> {
    let Some(stored) = stored else { return Ok(None) };
    if Status::parse(&stored.status) == Status::Deactivated {
        return Ok(None);
    }
    let version: i64 = sqlx::query_scalar(
        "update members.members set status = 'deactivated', deactivated_at = now(), version = version + 1, updated_at = now()
         where tenant_id = $1 and scim_user_id = $2 returning version",
    )
    .bind(tenant)
    .bind(user)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((EventKind::MemberDeactivated, version, "deactivated", Some("the SCIM user was deleted".into()))))
}

async fn upsert(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    doc: &Value,
    rules: &CompanyRules,
    stored: Option<Stored>,
) -> Result<Outcome, ProcessError> {
    let (profile, verdict) = derive_profile(doc, rules);
    let (status, skip_reason) = match &verdict {
        Verdict::Skip(reasons) => (Status::Skipped, Some(reasons.join("; "))),
        Verdict::Import if profile.active => (Status::Active, None),
        Verdict::Import => (Status::Deactivated, None),
    };
    let profile_doc = profile_json(&profile);
    let previous = stored.as_ref().map(|s| Status::parse(&s.status));
    let was_imported = stored.as_ref().is_some_and(|s| s.imported_at.is_some());
    let unchanged = stored
        .as_ref()
        .is_some_and(|s| s.profile == profile_doc && s.skip_reason == skip_reason && previous == Some(status));
    if unchanged {
        return Ok(None);
    }
    let (kind, action, detail) = match (previous, status) {
        (_, Status::Skipped) => (EventKind::MemberSkipped, "skipped", skip_reason.clone()),
        (Some(Status::Deactivated), Status::Active) if was_imported => {
            (EventKind::MemberReactivated, "reactivated", None)
        }
        (_, Status::Active) if !was_imported => (EventKind::MemberImported, "imported", None),
        (Some(Status::Active), Status::Deactivated) | (None | Some(Status::Skipped), Status::Deactivated) => {
            (EventKind::MemberDeactivated, "deactivated", Some("active is false".into()))
        }
        _ => (EventKind::MemberUpdated, "updated", None),
    };
    let imported_now = status == Status::Active && !was_imported;
    let version: i64 = sqlx::query_scalar(
        "insert into members.members (tenant_id, scim_user_id, status, skip_reason, profile, primary_email,
                                      manager_scim_id, manager_email, manager_full_name, imported_at, deactivated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, case when $10 then now() end, case when $3 = 'deactivated' then now() end)
         on conflict (tenant_id, scim_user_id) do update set
             status = excluded.status, skip_reason = excluded.skip_reason, profile = excluded.profile,
             primary_email = excluded.primary_email, manager_scim_id = excluded.manager_scim_id,
             manager_email = excluded.manager_email, manager_full_name = excluded.manager_full_name,
             imported_at = coalesce(members.members.imported_at, excluded.imported_at),
             deactivated_at = case when excluded.status = 'deactivated'
                                   then coalesce(members.members.deactivated_at, now()) end,
             version = members.members.version + 1, updated_at = now()
         returning version",
    )
    .bind(tenant)
    .bind(user)
    .bind(status.as_str())
    .bind(&skip_reason)
    .bind(&profile_doc)
    .bind(&profile.primary_email)
    .bind(&profile.manager.id)
    .bind(&profile.manager.email)
    .bind(&profile.manager.full_name)
    .bind(imported_now)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((kind, version, action, detail)))
}
