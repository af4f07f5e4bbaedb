//! The team-member store. A member is always recomputed from the truth — its SCIM user, the
//! values admins set manually, the company's rules — never patched from an event's content
//! (DESIGN.md, "Ordering and idempotency"). The normalizer recomputes on SCIM events and
//! company-settings changes, the admin API after a manual edit; both go through `recompute`,
//! which writes the provisioning log and the `member.*` event in the caller's transaction.
//! `org` reads the links the hierarchy worker keeps.

pub mod assignments;
pub mod org;

use std::collections::HashMap;

use chrono_tz::Tz;
use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::CompanyDomain;
use muster_domain::profile::{CompanyRules, Profile, Verdict, derive_profile};
use muster_domain::provenance::{EditRefused, Field, FieldValues, plan_manual_edit};
use serde_json::{Map, Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A member's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Active,
    Deactivated,
    Skipped,
}

impl Status {
    /// The stored and shown form.
    pub fn as_str(self) -> &'static str {
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

/// What changed for a member: the event emitted and the provisioning-log line written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: EventKind,
    /// The member's version after the change.
    pub version: i64,
    /// The provisioning log's `action`.
    pub action: &'static str,
    pub detail: Option<String>,
}

#[derive(sqlx::FromRow)]
struct Stored {
    scim_user_id: Uuid,
    status: String,
    skip_reason: Option<String>,
    profile: Value,
    manual: Value,
    imported_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The profile as stored and shown by the admin API: normalized values with the raw ones, and
/// where each field came from.
pub fn profile_json(p: &Profile) -> Value {
    let provenance: Map<String, Value> =
        p.provenance.iter().map(|(f, s)| (f.name().to_string(), Value::String(s.as_str().to_string()))).collect();
    json!({
        "given_name": p.given_name,
        "family_name": p.family_name,
        "display_name": p.display_name,
        "title": p.title,
        "emails": {"primary": p.primary_email, "secondary": p.secondary_email, "private": p.private_email},
        "phone": {"raw": p.phone.raw, "e164": p.phone.e164, "extension": p.phone.extension,
                  "invalid": p.phone.raw.is_some() && p.phone.e164.is_none()},
        "manager_ref": {"id": p.manager.id, "email": p.manager.email, "full_name": p.manager.full_name,
                        "manual": p.manager.manual},
        "country": p.country.normalized, "country_raw": p.country.raw, "country_invalid": p.country.is_invalid(),
        "state": p.state.normalized, "state_raw": p.state.raw, "state_invalid": p.state.is_invalid(),
        "timezone": p.timezone.name(), "timezone_source": p.timezone_source.as_str(),
        "timezone_raw": p.timezone_attribute.raw, "timezone_invalid": p.timezone_attribute.is_invalid(),
        "locale": p.locale, "locale_invalid": p.locale_invalid,
        "provenance": provenance,
    })
}

/// The company's rules for the normalization: its domains and default time zone.
pub async fn company_rules(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<CompanyRules> {
    let (domains, default) = muster_infra::tenancy::company_settings(&mut *conn, tenant).await?.unwrap_or_default();
    Ok(CompanyRules {
        domains: domains.iter().filter_map(|d| CompanyDomain::parse(d).ok()).collect(),
        default_timezone: default.parse::<Tz>().unwrap_or(Tz::UTC),
    })
}

/// Brings `user`'s member up to the current truth inside the caller's transaction; on a change,
/// writes the provisioning log and appends the `member.*` event to the outbox. `note` explains
/// a change whose outcome carries no reason of its own (e.g. "manual edit: title").
pub async fn recompute(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    note: Option<&str>,
) -> sqlx::Result<Option<Change>> {
    let rules = company_rules(conn, tenant).await?;
    recompute_under(conn, tenant, user, &rules, note).await
}

/// `recompute` under company rules the caller already read (once for many members).
pub async fn recompute_under(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    rules: &CompanyRules,
    note: Option<&str>,
) -> sqlx::Result<Option<Change>> {
    let scim = load_scim_users(&mut *conn, tenant, &[user]).await?;
    Ok(recompute_loaded(conn, tenant, &[user], &scim, rules, note).await?.pop().map(|(_, change)| change))
}

/// A SCIM user as the ingress stored it.
#[derive(Debug, Clone)]
pub struct ScimUser {
    /// Its SCIM version: the version of the `scim.user.*` event that announced this state.
    pub version: i64,
    pub resource: Value,
}

/// The SCIM users of `users` that exist (a deleted one is absent), in one query.
pub async fn load_scim_users(
    conn: &mut PgConnection,
    tenant: Uuid,
    users: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, ScimUser>> {
    let rows: Vec<(Uuid, i64, Value)> = sqlx::query_as(
        "select u.id, u.version, u.resource from unnest($2::uuid[]) as k(id) cross join lateral
                 (select id, version, resource from scim.users where tenant_id = $1 and id = k.id offset 0) u",
    )
    .bind(tenant)
    .bind(users)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(id, version, resource)| (id, ScimUser { version, resource })).collect())
}

/// What a member's recomputation decided to write.
enum Write {
    Deactivate,
    Upsert {
        status: Status,
        skip_reason: Option<String>,
        profile: Value,
        /// Columns kept beside the profile document, for lookups by e-mail and manager.
        primary_email: Option<String>,
        manager_id: Option<String>,
        manager_email: Option<String>,
        manager_name: Option<String>,
        imported_now: bool,
    },
}

/// A change decided, before its new version is known.
struct Decision {
    user: Uuid,
    write: Write,
    kind: EventKind,
    action: &'static str,
    detail: Option<String>,
}

/// Brings the members of `users` up to their SCIM state in `scim` (see [`load_scim_users`];
/// a user missing there was deleted) inside the caller's transaction, a few statements for the
/// whole set; returns the members that changed, in id order. Members are locked in id order.
pub async fn recompute_loaded(
    conn: &mut PgConnection,
    tenant: Uuid,
    users: &[Uuid],
    scim: &HashMap<Uuid, ScimUser>,
    rules: &CompanyRules,
    note: Option<&str>,
) -> sqlx::Result<Vec<(Uuid, Change)>> {
    let mut users = users.to_vec();
    users.sort();
    users.dedup();
    // One key probe per id, in the array's (sorted) order, so locks are taken in id order
    // whatever the planner knows of the company's size.
    let stored: Vec<Stored> = sqlx::query_as(
        "select m.* from unnest($2::uuid[]) as k(id) cross join lateral
             (select scim_user_id, status, skip_reason, profile, manual, imported_at from members.members
              where tenant_id = $1 and scim_user_id = k.id for update offset 0) m",
    )
    .bind(tenant)
    .bind(&users)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored: HashMap<Uuid, Stored> = stored.into_iter().map(|s| (s.scim_user_id, s)).collect();
    let mut decisions: Vec<Decision> = users
        .iter()
        .filter_map(|user| {
            let before = stored.remove(user);
            match scim.get(user) {
                None => deleted(*user, before),
                Some(doc) => upsert(*user, &doc.resource, rules, before),
            }
        })
        .collect();
    if decisions.is_empty() {
        return Ok(Vec::new());
    }
    let versions = write_decisions(conn, tenant, &mut decisions).await?;
    let changes: Vec<(Uuid, Change)> = decisions
        .into_iter()
        .filter_map(|d| {
            let version = *versions.get(&d.user)?;
            let detail = d.detail.or_else(|| note.map(str::to_string));
            Some((d.user, Change { kind: d.kind, version, action: d.action, detail }))
        })
        .collect();
    let mut log_users = Vec::with_capacity(changes.len());
    let mut log_actions = Vec::with_capacity(changes.len());
    let mut log_details = Vec::with_capacity(changes.len());
    let mut events = Vec::with_capacity(changes.len());
    let now = chrono::Utc::now();
    for (user, change) in &changes {
        log_users.push(*user);
        log_actions.push(change.action);
        log_details.push(change.detail.clone());
        events.push(EventEnvelope::new(tenant, change.kind, user.to_string(), change.version, now));
        metrics::counter!("members_changes_total", "event" => change.kind.routing_key()).increment(1);
        tracing::info!(tenant_id = %tenant, scim_user_id = %user, event = change.kind.routing_key(),
            detail = ?change.detail, "member changed");
    }
    sqlx::query(
        "insert into members.provisioning_log (tenant_id, scim_user_id, action, detail)
         select $1, l.user_id, l.action, l.detail
         from unnest($2::uuid[], $3::text[], $4::text[]) with ordinality as l(user_id, action, detail, n)
         order by l.n",
    )
    .bind(tenant)
    .bind(log_users)
    .bind(log_actions)
    .bind(log_details)
    .execute(&mut *conn)
    .await?;
    muster_infra::outbox::append(conn, &events, &muster_infra::telemetry::current_traceparent()).await?;
    Ok(changes)
}

/// Writes `decisions` (deactivations in one statement, upserts in another); each member's new
/// version.
async fn write_decisions(
    conn: &mut PgConnection,
    tenant: Uuid,
    decisions: &mut [Decision],
) -> sqlx::Result<HashMap<Uuid, i64>> {
    let mut versions = HashMap::with_capacity(decisions.len());
    let deactivate: Vec<Uuid> =
        decisions.iter().filter(|d| matches!(d.write, Write::Deactivate)).map(|d| d.user).collect();
    if !deactivate.is_empty() {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "update members.members set status = 'deactivated', deactivated_at = now(), version = version + 1,
                    updated_at = now()
             where tenant_id = $1 and scim_user_id = any($2) returning scim_user_id, version",
        )
        .bind(tenant)
        .bind(&deactivate)
        .fetch_all(&mut *conn)
        .await?;
        versions.extend(rows);
    }
    let mut ids = Vec::new();
    let mut statuses = Vec::new();
    let mut reasons = Vec::new();
    let mut profiles = Vec::new();
    let mut emails = Vec::new();
    let mut manager_ids = Vec::new();
    let mut manager_emails = Vec::new();
    let mut manager_names = Vec::new();
    let mut imported = Vec::new();
    // The values move into the statement's columns: the decisions keep only what the change says.
    for d in decisions.iter_mut() {
        if let Write::Upsert {
            status,
            skip_reason,
            profile,
            primary_email,
            manager_id,
            manager_email,
            manager_name,
            imported_now,
        } = &mut d.write
        {
            ids.push(d.user);
            statuses.push(status.as_str());
            reasons.push(skip_reason.take());
            profiles.push(std::mem::take(profile));
            emails.push(primary_email.take());
            manager_ids.push(manager_id.take());
            manager_emails.push(manager_email.take());
            manager_names.push(manager_name.take());
            imported.push(*imported_now);
        }
    }
    if !ids.is_empty() {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "insert into members.members (tenant_id, scim_user_id, status, skip_reason, profile, primary_email,
                                          manager_scim_id, manager_email, manager_full_name, imported_at, deactivated_at)
             select $1, m.id, m.status, m.reason, m.profile, m.email, m.manager_id, m.manager_email, m.manager_name,
                    case when m.imported then now() end, case when m.status = 'deactivated' then now() end
             from unnest($2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::bool[])
                  with ordinality as m(id, status, reason, profile, email, manager_id, manager_email, manager_name,
                                       imported, n)
             order by m.n
             on conflict (tenant_id, scim_user_id) do update set
                 status = excluded.status, skip_reason = excluded.skip_reason, profile = excluded.profile,
                 primary_email = excluded.primary_email, manager_scim_id = excluded.manager_scim_id,
                 manager_email = excluded.manager_email, manager_full_name = excluded.manager_full_name,
                 imported_at = coalesce(members.members.imported_at, excluded.imported_at),
                 deactivated_at = case when excluded.status = 'deactivated'
                                       then coalesce(members.members.deactivated_at, now()) end,
                 version = members.members.version + 1, updated_at = now()
             returning scim_user_id, version",
        )
        .bind(tenant)
        .bind(ids)
        .bind(statuses)
        .bind(reasons)
        .bind(profiles)
        .bind(emails)
        .bind(manager_ids)
        .bind(manager_emails)
        .bind(manager_names)
        .bind(imported)
        .fetch_all(&mut *conn)
        .await?;
        versions.extend(rows);
    }
    Ok(versions)
}

fn deleted(user: Uuid, stored: Option<Stored>) -> Option<Decision> {
    let stored = stored?;
    if Status::parse(&stored.status) == Status::Deactivated {
        return None;
    }
    Some(Decision {
        user,
        write: Write::Deactivate,
        kind: EventKind::MemberDeactivated,
        action: "deactivated",
        detail: Some("the SCIM user was deleted".into()),
    })
}

fn upsert(user: Uuid, doc: &Value, rules: &CompanyRules, stored: Option<Stored>) -> Option<Decision> {
    let manual = stored.as_ref().map(|s| FieldValues::from_json(&s.manual)).unwrap_or_default();
    let (profile, verdict) = derive_profile(doc, &manual, rules);
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
        return None;
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
    Some(Decision {
        user,
        write: Write::Upsert {
            status,
            skip_reason,
            profile: profile_doc,
            primary_email: profile.primary_email,
            manager_id: profile.manager.id,
            manager_email: profile.manager.email,
            manager_name: profile.manager.full_name,
            imported_now,
        },
        kind,
        action,
        detail,
    })
}

/// The outcome of a manual edit.
#[derive(Debug)]
pub enum ManualEdit {
    /// No member with that id.
    NotFound,
    /// The SCIM user was deleted; the member is kept for history only.
    Gone,
    /// Refused as a whole, with every reason.
    Refused(Vec<EditRefused>),
    /// Stored; the member's change (none when the values changed nothing shown).
    Applied(Option<Change>),
}

/// Sets manually the fields in `edits` that Entra ID left empty (each once), inside the
/// caller's transaction, and recomputes the member.
pub async fn edit_manual(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    edits: &FieldValues,
) -> sqlx::Result<ManualEdit> {
    let manual: Option<Value> =
        sqlx::query_scalar("select manual from members.members where tenant_id = $1 and scim_user_id = $2 for update")
            .bind(tenant)
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(manual) = manual else { return Ok(ManualEdit::NotFound) };
    let doc: Option<Value> = sqlx::query_scalar("select resource from scim.users where tenant_id = $1 and id = $2")
        .bind(tenant)
        .bind(user)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(doc) = doc else { return Ok(ManualEdit::Gone) };
    let rules = company_rules(conn, tenant).await?;
    let entra = FieldValues::from_scim(&doc);
    let after = match plan_manual_edit(&entra, &FieldValues::from_json(&manual), edits, &rules) {
        Ok(after) => after,
        Err(refusals) => return Ok(ManualEdit::Refused(refusals)),
    };
    if let Some(manager) = edits.get(Field::ManagerId) {
        let why = manager_refusal(conn, tenant, user, manager).await?;
        if let Some(why) = why {
            return Ok(ManualEdit::Refused(vec![EditRefused::Invalid(Field::ManagerId, why)]));
        }
    }
    sqlx::query("update members.members set manual = $3 where tenant_id = $1 and scim_user_id = $2")
        .bind(tenant)
        .bind(user)
        .bind(after.to_json())
        .execute(&mut *conn)
        .await?;
    let fields: Vec<String> = edits.iter().map(|(f, v)| format!("{} = '{v}'", f.name())).collect();
    let note = format!("set manually: {}", fields.join(", "));
    Ok(ManualEdit::Applied(recompute_under(conn, tenant, user, &rules, Some(&note)).await?))
}

/// Why `manager` cannot be set as `user`'s manager, if it cannot: it must be another member of
/// the company. (Cycles are the hierarchy worker's to refuse, with the path.)
async fn manager_refusal(
    conn: &mut PgConnection,
    tenant: Uuid,
    user: Uuid,
    manager: &str,
) -> sqlx::Result<Option<String>> {
    let Ok(manager) = manager.parse::<Uuid>() else { return Ok(Some(format!("'{manager}' is not a SCIM id"))) };
    if manager == user {
        return Ok(Some("a member cannot be their own manager".into()));
    }
    let status: Option<String> =
        sqlx::query_scalar("select status from members.members where tenant_id = $1 and scim_user_id = $2")
            .bind(tenant)
            .bind(manager)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(match status.as_deref() {
        None => Some(format!("no member with SCIM id {manager}")),
        Some("skipped") => Some(format!("member {manager} is skipped and cannot be a manager")),
        Some(_) => None,
    })
}

/// Members of `tenant` whose outcome may depend on the company settings: skipped ones, those
/// on the company's default time zone, and those whose e-mail domain is no longer the
/// company's. Recomputed in transactions of `batch`; returns how many changed.
pub async fn reevaluate_after_settings_change(pool: &PgPool, tenant: Uuid, batch: i64) -> sqlx::Result<usize> {
    let mut after = Uuid::nil();
    let mut changed = 0;
    loop {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "select m.scim_user_id from members.members m
             where m.tenant_id = $1 and m.scim_user_id > $2
               and (m.status = 'skipped' or m.profile->>'timezone_source' = 'company_default'
                    or m.primary_email is null
                    or lower(split_part(m.primary_email, '@', 2)) not in
                       (select d.domain from tenancy.tenant_domains d where d.tenant_id = $1))
             order by m.scim_user_id limit $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(batch)
        .fetch_all(pool)
        .await?;
        let Some(last) = ids.last() else { return Ok(changed) };
        after = *last;
        let mut tx = pool.begin().await?;
        let rules = company_rules(&mut tx, tenant).await?;
        let scim = load_scim_users(&mut tx, tenant, &ids).await?;
        changed +=
            recompute_loaded(&mut tx, tenant, &ids, &scim, &rules, Some("company settings changed")).await?.len();
        tx.commit().await?;
    }
}
