//! Members' assignments (DESIGN.md, "Assignments"): each member's governing assignment, the
//! settings they hold, the seats they asked for and were granted, and what is on — always
//! recomputed from the truth (the member's status and SCIM groups, the company's assignments
//! and catalog, the settings the member holds), never from an event's content. Recomputing a
//! member whose truth did not change writes nothing, so any event may be handled twice or late.
//!
//! The assignments worker applies batches of members after group, member and configuration
//! events; the admin API applies one member after an admin's or a manager's edit. Both call
//! [`apply`] under the company's lock ([`lock`]): seats of limited capacity are shared by the
//! company's members, so who gets one is decided by one transaction at a time.

use std::collections::{BTreeSet, HashMap, HashSet};

use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::assignment::{
    Assignment, Catalog, EditRefused, Held, PendingSeat, SeatNeeds, Settings, SettingsEdit, UpdateMode, desired,
    effective, governing,
};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

/// Takes the company's assignment lock until the transaction ends.
pub async fn lock(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("assignments:{tenant}"))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// An edit of a member's settings that the member's assignment does not allow.
    #[error("{refused}")]
    Refused { member: Uuid, refused: EditRefused },
    /// Stored configuration that breaks an invariant (e.g. no default assignment).
    #[error("{0}")]
    Broken(String),
}

impl From<ApplyError> for muster_infra::worker::ProcessError {
    /// Only the database can be unavailable; the rest would fail again the same way.
    fn from(err: ApplyError) -> Self {
        match err {
            ApplyError::Database(err) => err.into(),
            other => muster_infra::worker::ProcessError::Permanent(other.to_string()),
        }
    }
}

/// What to recompute.
#[derive(Debug, Default)]
pub struct Batch {
    /// Members and the cause recorded in their history if they change (first cause wins).
    pub members: Vec<(Uuid, String)>,
    /// Edits of the settings a member holds (an admin's or a manager's); refused unless the
    /// member's assignment is `manual`.
    pub edits: HashMap<Uuid, SettingsEdit>,
    /// Re-check every seat of limited capacity (the catalog's capacities may have changed),
    /// not only those the batch's members asked for or released.
    pub recheck_all_seats: bool,
}

impl Batch {
    /// A batch recomputing `members` for one `cause`.
    pub fn of(members: impl IntoIterator<Item = Uuid>, cause: &str) -> Batch {
        Batch { members: members.into_iter().map(|m| (m, cause.to_string())).collect(), ..Batch::default() }
    }
}

/// A member whose assignment or settings changed.
#[derive(Debug, Clone)]
pub struct Applied {
    pub member: Uuid,
    pub cause: String,
    pub before: Option<Value>,
    pub after: Value,
}

/// The company's assignments and catalog, as one transaction sees them.
struct Company {
    assignments: Vec<Assignment>,
    needs: SeatNeeds,
    /// Seat types with a capacity.
    limited: Vec<(String, i64)>,
    unlimited: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct AssignmentRow {
    id: Uuid,
    name: String,
    mode: String,
    position: i32,
    is_default: bool,
    groups: Vec<Uuid>,
    seats: Vec<String>,
    permissions: Value,
    capture: Value,
}

impl AssignmentRow {
    fn into_assignment(self) -> Result<Assignment, ApplyError> {
        let broken = |what: &str| ApplyError::Broken(format!("assignment {}: unreadable {what}", self.id));
        Ok(Assignment {
            mode: UpdateMode::parse(&self.mode).ok_or_else(|| broken("mode"))?,
            settings: Settings {
                seats: self.seats.iter().cloned().collect(),
                permissions: serde_json::from_value(self.permissions.clone()).map_err(|_| broken("permissions"))?,
                capture: serde_json::from_value(self.capture.clone()).map_err(|_| broken("capture"))?,
            },
            id: self.id,
            name: self.name,
            groups: self.groups,
            position: self.position,
            is_default: self.is_default,
        })
    }
}

/// The company's assignments, in order (the default one last).
pub async fn load_assignments(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<Assignment>, ApplyError> {
    let rows: Vec<AssignmentRow> = sqlx::query_as(
        "select id, name, mode, position, is_default, groups, seats, permissions, capture
         from assignments.assignments where tenant_id = $1 order by position, id",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(AssignmentRow::into_assignment).collect()
}

/// The company's catalog.
pub async fn load_catalog(conn: &mut PgConnection, tenant: Uuid) -> Result<Catalog, ApplyError> {
    let doc: Option<Value> = sqlx::query_scalar("select catalog from assignments.catalogs where tenant_id = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    let doc = doc.ok_or_else(|| ApplyError::Broken(format!("company {tenant} has no catalog")))?;
    serde_json::from_value(doc).map_err(|e| ApplyError::Broken(format!("company {tenant}: unreadable catalog: {e}")))
}

async fn company(conn: &mut PgConnection, tenant: Uuid) -> Result<Company, ApplyError> {
    let assignments = load_assignments(conn, tenant).await?;
    if !assignments.iter().any(|a| a.is_default) {
        return Err(ApplyError::Broken(format!("company {tenant} has no default assignment")));
    }
    let catalog = load_catalog(conn, tenant).await?;
    let (limited, unlimited) = catalog.seat_types.iter().partition::<Vec<_>, _>(|s| s.capacity.is_some());
    Ok(Company {
        assignments,
        needs: catalog.seat_needs(),
        limited: limited.iter().map(|s| (s.key.clone(), i64::from(s.capacity.unwrap_or(0)))).collect(),
        unlimited: unlimited.iter().map(|s| s.key.clone()).collect(),
    })
}

/// A member as stored: status, SCIM groups, and the state last computed.
#[derive(sqlx::FromRow)]
struct MemberRow {
    scim_user_id: Uuid,
    status: String,
    groups: Vec<Uuid>,
    assignment_id: Option<Uuid>,
    assignment_name: Option<String>,
    mode: Option<String>,
    via_group: Option<Uuid>,
    active: Option<bool>,
    held: Option<Value>,
    effective: Option<Value>,
    pending: Option<Value>,
}

/// What a member's state row holds.
#[derive(Debug, Clone, PartialEq)]
struct State {
    assignment_id: Uuid,
    assignment_name: String,
    mode: UpdateMode,
    via_group: Option<Uuid>,
    active: bool,
    held: Settings,
    effective: Settings,
    pending: Vec<PendingSeat>,
}

impl State {
    fn stored(row: &MemberRow) -> Option<State> {
        Some(State {
            assignment_id: row.assignment_id?,
            assignment_name: row.assignment_name.clone()?,
            mode: UpdateMode::parse(row.mode.as_deref()?)?,
            via_group: row.via_group,
            active: row.active?,
            held: serde_json::from_value(row.held.clone()?).ok()?,
            effective: serde_json::from_value(row.effective.clone()?).ok()?,
            pending: serde_json::from_value(row.pending.clone()?).ok()?,
        })
    }

    /// The history's and the preview's view of it.
    fn summary(&self) -> Value {
        json!({
            "assignment": {"id": self.assignment_id, "name": self.assignment_name, "mode": self.mode},
            "via_group": self.via_group, "active": self.active, "settings": self.effective,
            "pending_seats": self.pending,
        })
    }
}

/// A member recomputed up to the seats: what they hold and which seats they ask for.
struct Planned {
    stored: Option<State>,
    next: State,
}

/// The batch's reads here are driven from its ids (`unnest`, one key probe per id in a fenced
/// lateral subquery): a plan made on statistics that predate a new company's rows otherwise
/// scans the whole company, with the ids as a filter, for every batch.
async fn load_members(conn: &mut PgConnection, tenant: Uuid, members: &[Uuid]) -> sqlx::Result<Vec<MemberRow>> {
    sqlx::query_as(
        "select m.scim_user_id, m.status,
                array(select g.group_id from scim.group_members g
                      where g.tenant_id = $1 and g.member_id = k.id and g.member_type = 'User') as groups,
                s.assignment_id, s.assignment_name, s.mode, s.via_group, s.active, s.held, s.effective, s.pending
         from unnest($2::uuid[]) as k(id)
         cross join lateral (select * from members.members where tenant_id = $1 and scim_user_id = k.id offset 0) m
         left join lateral (select * from assignments.member_state
                            where tenant_id = $1 and scim_user_id = k.id offset 0) s on true",
    )
    .persistent(false)
    .bind(tenant)
    .bind(members)
    .fetch_all(conn)
    .await
}

/// The member's next state before seats are granted; `None` for a member that was never
/// active (nothing to hold or release).
fn plan(company: &Company, row: &MemberRow, edit: Option<&SettingsEdit>) -> Result<Option<Planned>, ApplyError> {
    let stored = State::stored(row);
    if row.status != "active" {
        let Some(before) = stored else { return Ok(None) };
        // Deactivated (or no longer imported): seats released, nothing on; the assignment and
        // the held settings are kept so that a reactivation asks for the same again.
        let next = State { active: false, effective: Settings::default(), pending: Vec::new(), ..before.clone() };
        return Ok(Some(Planned { stored: Some(before), next }));
    }
    let Some(gov) = governing(&company.assignments, &row.groups) else {
        return Err(ApplyError::Broken("no default assignment".into()));
    };
    let assignment = gov.assignment;
    let held = stored.as_ref().map(|s| Held { assignment: s.assignment_id, settings: s.held.clone() });
    let mut held = desired(assignment, held.as_ref());
    if let Some(edit) = edit {
        muster_domain::assignment::admin_may_edit(assignment)
            .map_err(|refused| ApplyError::Refused { member: row.scim_user_id, refused })?;
        held = edit.apply(&held);
    }
    let next = State {
        assignment_id: assignment.id,
        assignment_name: assignment.name.clone(),
        mode: assignment.mode,
        via_group: gov.via_group,
        active: true,
        // Settled once the seats are known.
        effective: Settings::default(),
        pending: Vec::new(),
        held,
    };
    Ok(Some(Planned { stored, next }))
}

/// Recomputes the batch's members (and those whose seat a released one goes to) and stores
/// what changed: state, history, `member.assignment_applied`. The caller holds [`lock`] and
/// commits.
pub async fn apply(conn: &mut PgConnection, tenant: Uuid, batch: &Batch) -> Result<Vec<Applied>, ApplyError> {
    let company = company(conn, tenant).await?;
    let mut causes: HashMap<Uuid, String> = HashMap::new();
    let mut round: Vec<Uuid> = Vec::new();
    for (member, cause) in &batch.members {
        if !causes.contains_key(member) {
            causes.insert(*member, cause.clone());
            round.push(*member);
        }
    }
    let mut planned: HashMap<Uuid, Planned> = HashMap::new();
    let mut recheck = batch.recheck_all_seats;
    // A released seat goes to the next in line, whose settings then change: another round.
    for _ in 0..8 {
        if round.is_empty() {
            break;
        }
        let rows = load_members(conn, tenant, &round).await?;
        let mut wanted: Vec<(Uuid, String)> = Vec::new();
        let mut planned_now = Vec::new();
        for row in &rows {
            if let Some(p) = plan(&company, row, batch.edits.get(&row.scim_user_id))? {
                if p.next.active {
                    wanted.extend(p.next.held.seats.iter().map(|s| (row.scim_user_id, s.clone())));
                }
                planned_now.push(row.scim_user_id);
                planned.insert(row.scim_user_id, p);
            }
        }
        let touched = request_seats(conn, tenant, &planned_now, &wanted, &company).await?;
        let seats: Vec<&(String, i64)> =
            company.limited.iter().filter(|(seat, _)| recheck || touched.contains(seat)).collect();
        recheck = false;
        let mut flipped = grant_in_line(conn, tenant, &seats).await?;
        flipped.extend(grant_unlimited(conn, tenant, &company.unlimited).await?);
        round = Vec::new();
        for (member, seat, granted) in flipped {
            if let std::collections::hash_map::Entry::Vacant(entry) = causes.entry(member) {
                entry.insert(if granted {
                    format!("a '{seat}' seat became available")
                } else {
                    format!("the '{seat}' seats were reduced")
                });
                round.push(member);
            }
        }
    }
    let members: Vec<Uuid> = planned.keys().copied().collect();
    let granted = granted_seats(conn, tenant, &members).await?;
    let mut changed = Vec::new();
    for (member, mut p) in planned {
        if p.next.active {
            let seats = granted.get(&member).cloned().unwrap_or_default();
            let on = effective(&p.next.held, &seats, &company.needs);
            p.next.effective = on.settings;
            p.next.pending = on.pending;
        }
        if let Some(cause) = seat_cause(p.stored.as_ref(), &p.next) {
            causes.insert(member, cause);
        }
        if p.stored.as_ref() != Some(&p.next) {
            changed.push((member, p));
        }
    }
    changed.sort_by_key(|(member, _)| *member);
    store(conn, tenant, &changed, &causes).await
}

/// When only the seats granted changed (same assignment, same settings held), the seat is the
/// cause, whatever made the batch recompute the member.
fn seat_cause(stored: Option<&State>, next: &State) -> Option<String> {
    let stored = stored?;
    if (stored.assignment_id, stored.active, &stored.held) != (next.assignment_id, next.active, &next.held) {
        return None;
    }
    if let Some(seat) = next.effective.seats.difference(&stored.effective.seats).next() {
        return Some(format!("a '{seat}' seat became available"));
    }
    let seat = stored.effective.seats.difference(&next.effective.seats).next()?;
    Some(format!("the '{seat}' seats were reduced"))
}

/// Brings the members' seat requests to what they hold (none when inactive); returns the
/// seats whose line changed. New requests join the end of the line; seats without capacity
/// are granted at once.
async fn request_seats(
    conn: &mut PgConnection,
    tenant: Uuid,
    members: &[Uuid],
    wanted: &[(Uuid, String)],
    company: &Company,
) -> sqlx::Result<HashSet<String>> {
    let current: Vec<(Uuid, String)> = sqlx::query_as(
        "select r.scim_user_id, r.seat from unnest($2::uuid[]) as k(id) cross join lateral
             (select scim_user_id, seat from assignments.seat_requests
              where tenant_id = $1 and scim_user_id = k.id offset 0) r",
    )
    .persistent(false)
    .bind(tenant)
    .bind(members)
    .fetch_all(&mut *conn)
    .await?;
    let current: HashSet<(Uuid, String)> = current.into_iter().collect();
    let wanted_set: HashSet<(Uuid, String)> = wanted.iter().cloned().collect();
    let mut touched = HashSet::new();
    let (gone_members, gone_seats): (Vec<Uuid>, Vec<String>) =
        current.difference(&wanted_set).map(|(m, s)| (*m, s.clone())).unzip();
    if !gone_members.is_empty() {
        touched.extend(gone_seats.iter().cloned());
        sqlx::query(
            "delete from assignments.seat_requests r using unnest($2::uuid[], $3::text[]) as u(member, seat)
             where r.tenant_id = $1 and r.scim_user_id = u.member and r.seat = u.seat",
        )
        .persistent(false)
        .bind(tenant)
        .bind(&gone_members)
        .bind(&gone_seats)
        .execute(&mut *conn)
        .await?;
    }
    // In a stable order, so that members asking in the same batch queue in id order.
    let mut new: Vec<&(Uuid, String)> = wanted.iter().filter(|w| !current.contains(*w)).collect();
    new.sort();
    if !new.is_empty() {
        let members: Vec<Uuid> = new.iter().map(|(m, _)| *m).collect();
        let seats: Vec<&str> = new.iter().map(|(_, s)| s.as_str()).collect();
        let granted: Vec<bool> = seats.iter().map(|s| company.unlimited.iter().any(|u| u == s)).collect();
        touched.extend(seats.iter().map(|s| s.to_string()));
        sqlx::query(
            "insert into assignments.seat_requests (tenant_id, scim_user_id, seat, granted)
             select $1, u.member, u.seat, u.granted
             from unnest($2::uuid[], $3::text[], $4::bool[]) with ordinality as u(member, seat, granted, n)
             order by u.n
             on conflict (tenant_id, seat, scim_user_id) do nothing",
        )
        .persistent(false)
        .bind(tenant)
        .bind(&members)
        .bind(&seats)
        .bind(&granted)
        .execute(&mut *conn)
        .await?;
    }
    Ok(touched)
}

/// For each seat of limited capacity: the first `capacity` requests in line are granted, the
/// rest wait (`muster_domain::assignment::allocate`, set-based). Returns the requests that
/// flipped: (member, seat, granted now).
///
/// The granted requests are always the head of the line: new requests join the end, waiting,
/// and every change goes through here. So only the boundary moves — the first waiting requests
/// are granted while fewer than `capacity` are, the last granted ones wait while more are — and
/// the work is the size of the move plus one count of the granted, not a re-rank of the whole
/// line (which took up to 5.8 s per seat at 100,000 members).
async fn grant_in_line(
    conn: &mut PgConnection,
    tenant: Uuid,
    seats: &[&(String, i64)],
) -> sqlx::Result<Vec<(Uuid, String, bool)>> {
    let mut flipped = Vec::new();
    for (seat, capacity) in seats {
        let rows: Vec<(Uuid, bool)> = sqlx::query_as(
            "with granted as (
                 select count(*) as n from assignments.seat_requests where tenant_id = $1 and seat = $2 and granted
             ),
             boundary as (
                 (select scim_user_id from assignments.seat_requests
                  where tenant_id = $1 and seat = $2 and not granted
                  order by id limit greatest($3 - (select n from granted), 0))
                 union all
                 (select scim_user_id from assignments.seat_requests
                  where tenant_id = $1 and seat = $2 and granted
                  order by id desc limit greatest((select n from granted) - $3, 0))
             )
             update assignments.seat_requests r set granted = not r.granted, updated_at = now()
             from boundary b
             where r.tenant_id = $1 and r.seat = $2 and r.scim_user_id = b.scim_user_id
             returning r.scim_user_id, r.granted",
        )
        .persistent(false)
        .bind(tenant)
        .bind(seat)
        .bind(capacity)
        .fetch_all(&mut *conn)
        .await?;
        flipped.extend(rows.into_iter().map(|(member, granted)| (member, seat.clone(), granted)));
    }
    Ok(flipped)
}

/// Grants every waiting request of the seats `$2` (whose capacity went), through the partial
/// index of waiting requests (`seat_requests_waiting`).
pub const GRANT_WAITING: &str = "update assignments.seat_requests set granted = true, updated_at = now()
     where tenant_id = $1 and seat = any($2) and not granted
     returning scim_user_id, seat";

/// Grants the waiting requests of seats that no longer have a capacity.
async fn grant_unlimited(
    conn: &mut PgConnection,
    tenant: Uuid,
    seats: &[String],
) -> sqlx::Result<Vec<(Uuid, String, bool)>> {
    if seats.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, String)> = sqlx::query_as(GRANT_WAITING).bind(tenant).bind(seats).fetch_all(conn).await?;
    Ok(rows.into_iter().map(|(member, seat)| (member, seat, true)).collect())
}

async fn granted_seats(
    conn: &mut PgConnection,
    tenant: Uuid,
    members: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, BTreeSet<String>>> {
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "select r.scim_user_id, r.seat from unnest($2::uuid[]) as k(id) cross join lateral
             (select scim_user_id, seat from assignments.seat_requests
              where tenant_id = $1 and scim_user_id = k.id and granted offset 0) r",
    )
    .persistent(false)
    .bind(tenant)
    .bind(members)
    .fetch_all(conn)
    .await?;
    let mut granted: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
    for (member, seat) in rows {
        granted.entry(member).or_default().insert(seat);
    }
    Ok(granted)
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Writes the changed states, their history and their `member.assignment_applied` events.
async fn store(
    conn: &mut PgConnection,
    tenant: Uuid,
    changed: &[(Uuid, Planned)],
    causes: &HashMap<Uuid, String>,
) -> Result<Vec<Applied>, ApplyError> {
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = changed.iter().map(|(m, _)| *m).collect();
    let next = |f: &dyn Fn(&State) -> Value| changed.iter().map(|(_, p)| f(&p.next)).collect::<Vec<Value>>();
    let versions: Vec<(Uuid, i64)> = sqlx::query_as(
        "insert into assignments.member_state as s (tenant_id, scim_user_id, assignment_id, assignment_name, mode,
                                                    via_group, active, held, effective, pending, records)
         select $1, u.* from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::uuid[], $7::bool[],
                                    $8::jsonb[], $9::jsonb[], $10::jsonb[], $11::bool[]) as u
         on conflict (tenant_id, scim_user_id) do update set
             assignment_id = excluded.assignment_id, assignment_name = excluded.assignment_name,
             mode = excluded.mode, via_group = excluded.via_group, active = excluded.active, held = excluded.held,
             effective = excluded.effective, pending = excluded.pending, records = excluded.records,
             version = s.version + 1, updated_at = now()
         returning s.scim_user_id, s.version",
    )
    .persistent(false)
    .bind(tenant)
    .bind(&ids)
    .bind(changed.iter().map(|(_, p)| p.next.assignment_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, p)| p.next.assignment_name.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, p)| p.next.mode.as_str()).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, p)| p.next.via_group).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, p)| p.next.active).collect::<Vec<_>>())
    .bind(next(&|s| to_json(&s.held)))
    .bind(next(&|s| to_json(&s.effective)))
    .bind(next(&|s| to_json(&s.pending)))
    .bind(changed.iter().map(|(_, p)| p.next.active && p.next.effective.records()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let version_of: HashMap<Uuid, i64> = versions.into_iter().collect();

    let mut applied = Vec::with_capacity(changed.len());
    let mut events = Vec::with_capacity(changed.len());
    for (member, p) in changed {
        let cause = causes.get(member).cloned().unwrap_or_else(|| "recomputed".to_string());
        let after = p.next.summary();
        let version = version_of.get(member).copied().unwrap_or(1);
        events.push(
            EventEnvelope::new(
                tenant,
                EventKind::MemberAssignmentApplied,
                member.to_string(),
                version,
                chrono::Utc::now(),
            )
            .with_data(json!({
                "assignment_id": p.next.assignment_id, "assignment_name": p.next.assignment_name,
                "mode": p.next.mode, "via_group": p.next.via_group, "active": p.next.active,
                "records": p.next.active && p.next.effective.records(), "cause": cause,
            })),
        );
        tracing::debug!(tenant_id = %tenant, scim_user_id = %member, assignment_id = %p.next.assignment_id,
            cause = %cause, "assignment applied");
        applied.push(Applied { member: *member, cause, before: p.stored.as_ref().map(State::summary), after });
    }
    sqlx::query(
        "insert into assignments.history (tenant_id, scim_user_id, cause, assignment_id, assignment_name, before, after)
         select $1, u.* from unnest($2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::jsonb[], $7::jsonb[]) as u",
    )
    .persistent(false)
    .bind(tenant)
    .bind(&ids)
    .bind(applied.iter().map(|a| a.cause.clone()).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, p)| p.next.assignment_id).collect::<Vec<_>>())
    .bind(changed.iter().map(|(_, p)| p.next.assignment_name.clone()).collect::<Vec<_>>())
    .bind(applied.iter().map(|a| a.before.clone()).collect::<Vec<Option<Value>>>())
    .bind(applied.iter().map(|a| a.after.clone()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    muster_infra::outbox::append(conn, &events, &muster_infra::telemetry::current_traceparent()).await?;
    metrics::counter!("assignments_applied_total").increment(changed.len() as u64);
    Ok(applied)
}

/// A member's assignment as the admin sees it: the assignment (id, name, mode) and the group
/// it came through, the settings held and on, pending seats with their place in line, and the
/// latest 50 history entries (newest first). `null` until the worker first applied one.
pub async fn view(conn: &mut PgConnection, tenant: Uuid, member: Uuid) -> sqlx::Result<Value> {
    #[derive(sqlx::FromRow)]
    struct Row {
        assignment_id: Uuid,
        assignment_name: String,
        mode: String,
        via_group: Option<Uuid>,
        group_name: Option<String>,
        active: bool,
        held: Value,
        effective: Value,
        pending: Value,
        version: i64,
    }
    #[derive(sqlx::FromRow)]
    struct Entry {
        created_at: chrono::DateTime<chrono::Utc>,
        cause: String,
        assignment_name: String,
        before: Option<Value>,
        after: Value,
    }
    let row: Option<Row> = sqlx::query_as(
        "select s.assignment_id, s.assignment_name, s.mode, s.via_group, g.display_name as group_name, s.active,
                s.held, s.effective, s.pending, s.version
         from assignments.member_state s
         left join scim.groups g on g.tenant_id = s.tenant_id and g.id = s.via_group
         where s.tenant_id = $1 and s.scim_user_id = $2",
    )
    .bind(tenant)
    .bind(member)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Value::Null) };
    let waiting: Vec<(String, i64)> = sqlx::query_as(
        "select r.seat, (select count(*) from assignments.seat_requests w
                         where w.tenant_id = r.tenant_id and w.seat = r.seat and not w.granted and w.id < r.id) + 1
         from assignments.seat_requests r where r.tenant_id = $1 and r.scim_user_id = $2 and not r.granted
         order by r.seat",
    )
    .bind(tenant)
    .bind(member)
    .fetch_all(&mut *conn)
    .await?;
    let history: Vec<Entry> = sqlx::query_as(
        "select created_at, cause, assignment_name, before, after from assignments.history
         where tenant_id = $1 and scim_user_id = $2 order by id desc limit 50",
    )
    .bind(tenant)
    .bind(member)
    .fetch_all(&mut *conn)
    .await?;
    Ok(json!({
        "id": row.assignment_id, "name": row.assignment_name, "mode": row.mode,
        "via_group": row.via_group.map(|g| json!({"id": g, "display_name": row.group_name})),
        "active": row.active,
        "held": row.held,
        "settings": row.effective,
        "pending_seats": row.pending,
        "waiting_for_seats": waiting.iter().map(|(seat, place)| json!({"seat": seat, "place_in_line": place}))
            .collect::<Vec<_>>(),
        "version": row.version,
        "history": history.into_iter().map(|e| json!({
            "at": e.created_at, "cause": e.cause, "assignment": e.assignment_name, "before": e.before, "after": e.after,
        })).collect::<Vec<_>>(),
    }))
}

/// Whom a configuration change can affect, read in pages of member ids.
#[derive(Debug, Clone)]
pub enum Affected {
    /// Members governed by one of the assignments, and members of one of the groups.
    Governed { assignments: Vec<Uuid>, groups: Vec<Uuid> },
    /// Every member (a catalog change).
    Everyone,
    /// Members a (deleted) group governed.
    ViaGroup(Uuid),
}

/// A page of the members an assignment change affects: those under the assignments `$2` and
/// those in the groups `$3`, `$5` at most after `$4`, in id order. Each assignment and group
/// is read through its index in id order and stops at the page's size: the first page's ids
/// are among each one's first. As a union of the whole sets it read and sorted every member
/// after `$4` for each page — a seq scan of the memberships, 25–75 ms a page, a hundred pages
/// for the 50,000-member group (`auto_explain`, the 100,000-user benchmark).
pub const AFFECTED_PAGE: &str = "select id from (
         select s.id from unnest($2::uuid[]) as a(id)
         cross join lateral (select scim_user_id as id from assignments.member_state
                             where tenant_id = $1 and assignment_id = a.id and scim_user_id > $4
                             order by scim_user_id limit $5) s
         union
         select m.id from unnest($3::uuid[]) as g(id)
         cross join lateral (select member_id as id from scim.group_members
                             where tenant_id = $1 and group_id = g.id and member_type = 'User' and member_id > $4
                             order by member_id limit $5) m
     ) affected order by id limit $5";

impl Affected {
    /// Whom `change` can affect.
    pub fn of(change: &muster_contracts::events::AssignmentsChanged) -> Affected {
        if change.all {
            Affected::Everyone
        } else {
            Affected::Governed { assignments: change.assignments.clone(), groups: change.groups.clone() }
        }
    }

    /// Up to `limit` affected member ids after `after`, in id order (see [`AFFECTED_PAGE`]).
    pub async fn page(
        &self,
        conn: &mut PgConnection,
        tenant: Uuid,
        after: Uuid,
        limit: usize,
    ) -> sqlx::Result<Vec<Uuid>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self {
            Affected::Governed { assignments, groups } => {
                sqlx::query_scalar(AFFECTED_PAGE)
                    .bind(tenant)
                    .bind(assignments)
                    .bind(groups)
                    .bind(after)
                    .bind(limit)
                    .fetch_all(conn)
                    .await
            }
            Affected::Everyone => {
                sqlx::query_scalar(
                    "select scim_user_id from members.members where tenant_id = $1 and scim_user_id > $2
                     order by scim_user_id limit $3",
                )
                .bind(tenant)
                .bind(after)
                .bind(limit)
                .fetch_all(conn)
                .await
            }
            Affected::ViaGroup(group) => {
                sqlx::query_scalar(
                    "select scim_user_id from assignments.member_state
                     where tenant_id = $1 and via_group = $2 and scim_user_id > $3 order by scim_user_id limit $4",
                )
                .bind(tenant)
                .bind(group)
                .bind(after)
                .bind(limit)
                .fetch_all(conn)
                .await
            }
        }
    }
}

/// The assignment that governs `member` now (their SCIM groups against the company's
/// assignments); `None` if there is no such member.
pub async fn governing_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    member: Uuid,
) -> Result<Option<Assignment>, ApplyError> {
    let groups: Option<Vec<Uuid>> = sqlx::query_scalar(
        "select array(select g.group_id from scim.group_members g
                      where g.tenant_id = m.tenant_id and g.member_id = m.scim_user_id and g.member_type = 'User')
         from members.members m where m.tenant_id = $1 and m.scim_user_id = $2",
    )
    .bind(tenant)
    .bind(member)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(groups) = groups else { return Ok(None) };
    let assignments = load_assignments(conn, tenant).await?;
    governing(&assignments, &groups)
        .map(|g| Some(g.assignment.clone()))
        .ok_or_else(|| ApplyError::Broken(format!("company {tenant} has no default assignment")))
}
