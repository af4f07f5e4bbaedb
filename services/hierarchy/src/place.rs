//! One member event: refresh that member's node (its keys and references), then re-resolve
//! it and every member its change can affect — those whose references name its old or new
//! keys (indexed lookups, never a rescan), and refused cycles whose path it is on.
//!
//! Resolution reads other members' links (chains for cycles, keys for matches), so a company's
//! hierarchy is written by one transaction at a time (an advisory lock per tenant); companies
//! proceed in parallel. Without it, two reports arriving at once could each miss the other's
//! manager, or two links each see no cycle and together close one. Concurrent deliveries of
//! one company are batched (`muster_infra::worker::batch`) so that they share that
//! transaction instead of queueing for the lock one by one.

use std::collections::{HashSet, VecDeque};

use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::hierarchy::{Matches, References, Resolution, Via, choose, cycle_through, email_key, name_key};
use muster_infra::worker::ProcessError;
use muster_infra::worker::versions::{self, Claim};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::SERVICE;

/// How far up a chain the cycle check walks; deeper org charts are not expected.
const MAX_CHAIN: i32 = 10_000;
/// Members re-resolved for one event at most (a safety net; a real change touches few).
const MAX_WORK: usize = 100_000;

/// Places the members of a batch of one company's events, and whoever waits on them, in one
/// transaction; returns one result per event. If the batch fails, each event is retried alone
/// so that one bad event does not fail the others.
pub async fn apply_batch(
    pool: &PgPool,
    tenant: Uuid,
    events: Vec<(EventEnvelope, Uuid)>,
) -> Vec<Result<(), ProcessError>> {
    match apply(pool, tenant, &events).await {
        Ok(()) => vec![Ok(()); events.len()],
        Err(err) if events.len() == 1 => vec![Err(err)],
        Err(err) => {
            tracing::warn!(tenant_id = %tenant, events = events.len(), error = %err, "batch failed; retrying its events one by one");
            let mut results = Vec::with_capacity(events.len());
            for event in &events {
                results.push(apply(pool, tenant, std::slice::from_ref(event)).await);
            }
            results
        }
    }
}

async fn apply(pool: &PgPool, tenant: Uuid, events: &[(EventEnvelope, Uuid)]) -> Result<(), ProcessError> {
    let mut tx = pool.begin().await?;
    // Claims first, in entity order (no deadlock between replicas), outside the company lock:
    // a stale event (its newer state was already placed) never waits for it.
    let mut ordered: Vec<&(EventEnvelope, Uuid)> = events.iter().collect();
    ordered.sort_by(|a, b| (&a.0.entity_id, a.0.version).cmp(&(&b.0.entity_id, b.0.version)));
    let mut fresh = Vec::new();
    for (event, member) in ordered {
        if versions::claim(&mut tx, SERVICE, tenant, &event.entity_id, event.version).await? == Claim::Fresh
            && !fresh.contains(member)
        {
            fresh.push(*member);
        }
    }
    if fresh.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("hierarchy:{tenant}"))
        .execute(&mut *tx)
        .await?;
    let mut work: VecDeque<Uuid> = VecDeque::new();
    for member in fresh {
        work.extend(refresh(&mut tx, tenant, member).await?);
    }
    let mut queued: HashSet<Uuid> = HashSet::new();
    work.retain(|m| queued.insert(*m));
    let mut done = 0;
    while let Some(next) = work.pop_front() {
        queued.remove(&next);
        done += 1;
        if done > MAX_WORK {
            return Err(ProcessError::Permanent(format!("more than {MAX_WORK} members to re-place for one batch")));
        }
        if resolve(&mut tx, tenant, next).await? {
            // A link that moved may open or close a path a refused cycle ran along.
            for waiting in cycles_through(&mut tx, tenant, next).await? {
                if queued.insert(waiting) {
                    work.push_back(waiting);
                }
            }
        }
    }
    metrics::histogram!("hierarchy_batch_events").record(events.len() as f64);
    metrics::histogram!("hierarchy_members_resolved_per_batch").record(done as f64);
    tx.commit().await?;
    Ok(())
}

/// A member as the members table has it, next to the node the hierarchy last made of it.
#[derive(sqlx::FromRow)]
struct MemberRow {
    status: String,
    primary_email: Option<String>,
    manager_scim_id: Option<String>,
    manager_email: Option<String>,
    manager_full_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    manual: bool,
    node_status: Option<String>,
    node_candidate: Option<bool>,
    node_email_key: Option<String>,
    node_name_key: Option<String>,
    node_ref_id: Option<String>,
    node_ref_email: Option<String>,
    node_ref_name: Option<String>,
    node_ref_manual: Option<bool>,
}

/// Copies the member's keys and references into its node; returns the members to re-resolve:
/// the member itself when its references or status changed, and, when its keys changed,
/// everyone whose references name the old or new ones. A change the hierarchy does not care
/// about (a title, a phone) costs one read.
async fn refresh(conn: &mut PgConnection, tenant: Uuid, member: Uuid) -> sqlx::Result<Vec<Uuid>> {
    let row: Option<MemberRow> = sqlx::query_as(
        "select m.status, m.primary_email, m.manager_scim_id, m.manager_email, m.manager_full_name,
                m.profile->>'given_name' as given_name, m.profile->>'family_name' as family_name,
                coalesce((m.profile->'manager_ref'->>'manual')::boolean, false) as manual,
                n.member_status as node_status, n.candidate as node_candidate, n.email_key as node_email_key,
                n.name_key as node_name_key, n.ref_id as node_ref_id, n.ref_email as node_ref_email,
                n.ref_name as node_ref_name, n.ref_manual as node_ref_manual
         from members.members m
         left join hierarchy.nodes n on n.tenant_id = m.tenant_id and n.scim_user_id = m.scim_user_id
         where m.tenant_id = $1 and m.scim_user_id = $2",
    )
    .bind(tenant)
    .bind(member)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Vec::new()) };
    let refs = References::new(
        row.manager_scim_id.as_deref(),
        row.manager_email.as_deref(),
        row.manager_full_name.as_deref(),
        row.manual,
    );
    let candidate = row.status != "skipped";
    let email = row.primary_email.as_deref().map(email_key);
    let name = name_key(row.given_name.as_deref(), row.family_name.as_deref());
    let keys_changed =
        row.node_candidate != Some(candidate) || row.node_email_key != email || row.node_name_key != name;
    let own_changed = row.node_status.as_deref() != Some(row.status.as_str())
        || row.node_ref_id != refs.id
        || row.node_ref_email != refs.email
        || row.node_ref_name != refs.name
        || row.node_ref_manual != Some(refs.manual);
    if !keys_changed && !own_changed {
        return Ok(Vec::new());
    }
    sqlx::query(
        "insert into hierarchy.nodes (tenant_id, scim_user_id, member_status, candidate, email_key, name_key,
                                      ref_id, ref_email, ref_name, ref_manual)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         on conflict (tenant_id, scim_user_id) do update set
             member_status = excluded.member_status, candidate = excluded.candidate,
             email_key = excluded.email_key, name_key = excluded.name_key, ref_id = excluded.ref_id,
             ref_email = excluded.ref_email, ref_name = excluded.ref_name, ref_manual = excluded.ref_manual,
             updated_at = now()",
    )
    .bind(tenant)
    .bind(member)
    .bind(&row.status)
    .bind(candidate)
    .bind(&email)
    .bind(&name)
    .bind(&refs.id)
    .bind(&refs.email)
    .bind(&refs.name)
    .bind(refs.manual)
    .execute(&mut *conn)
    .await?;
    let mut work = vec![member];
    if keys_changed {
        let emails: Vec<&str> = [row.node_email_key.as_deref(), email.as_deref()].into_iter().flatten().collect();
        let names: Vec<&str> = [row.node_name_key.as_deref(), name.as_deref()].into_iter().flatten().collect();
        let waiting: Vec<Uuid> = sqlx::query_scalar(
            "select scim_user_id from hierarchy.nodes where tenant_id = $1 and ref_id = $2::text
             union select scim_user_id from hierarchy.nodes where tenant_id = $1 and ref_email = any($3)
             union select scim_user_id from hierarchy.nodes where tenant_id = $1 and ref_name = any($4)",
        )
        .bind(tenant)
        .bind(member.to_string())
        .bind(&emails)
        .bind(&names)
        .fetch_all(&mut *conn)
        .await?;
        work.extend(waiting.into_iter().filter(|w| *w != member));
    }
    Ok(work)
}

#[derive(sqlx::FromRow)]
struct Node {
    member_status: String,
    ref_id: Option<String>,
    ref_email: Option<String>,
    ref_name: Option<String>,
    ref_manual: bool,
    manager_id: Option<Uuid>,
    resolution: String,
    via: Option<String>,
    detail: Option<String>,
    candidates: Option<Vec<Uuid>>,
    cycle_path: Option<Vec<Uuid>>,
}

/// What a node's link columns will hold.
#[derive(Debug)]
struct Link {
    manager_id: Option<Uuid>,
    resolution: &'static str,
    via: Option<&'static str>,
    detail: Option<String>,
    candidates: Option<Vec<Uuid>>,
    cycle_path: Option<Vec<Uuid>>,
}

impl Link {
    fn of(resolution: &Resolution) -> Link {
        let mut link = Link {
            manager_id: resolution.manager(),
            resolution: resolution.status(),
            via: None,
            detail: None,
            candidates: None,
            cycle_path: None,
        };
        match resolution {
            Resolution::Resolved { via, .. } => link.via = Some(via.as_str()),
            Resolution::Pending { detail } => link.detail = Some(detail.clone()),
            Resolution::Ambiguous { via, candidates } => {
                link.via = Some(via.as_str());
                link.detail = Some(format!(
                    "{} members match the manager {}; set the manager in Entra ID by id",
                    candidates.len(),
                    if *via == Via::Email { "e-mail" } else { "name" }
                ));
                link.candidates = Some(candidates.clone());
            }
            Resolution::Cycle { path } => {
                let shown: Vec<String> = path.iter().map(Uuid::to_string).collect();
                link.detail = Some(format!("the link would close a cycle: {}", shown.join(" → ")));
                link.cycle_path = Some(path.clone());
            }
            Resolution::None { detail } => link.detail = detail.clone(),
        }
        link
    }
}

/// Re-resolves one member's link and stores it; true when the manager changed (then
/// `member.placed` is in the outbox).
async fn resolve(conn: &mut PgConnection, tenant: Uuid, member: Uuid) -> sqlx::Result<bool> {
    let node: Option<Node> = sqlx::query_as(
        "select member_status, ref_id, ref_email, ref_name, ref_manual, manager_id, resolution, via, detail,
                candidates, cycle_path
         from hierarchy.nodes where tenant_id = $1 and scim_user_id = $2",
    )
    .bind(tenant)
    .bind(member)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(node) = node else { return Ok(false) };
    let refs = References {
        id: node.ref_id.clone(),
        email: node.ref_email.clone(),
        name: node.ref_name.clone(),
        manual: node.ref_manual,
    };
    let resolution = if node.member_status == "skipped" {
        Resolution::None { detail: Some("a skipped member is not placed until it is imported".into()) }
    } else if refs.is_empty() {
        Resolution::None { detail: None }
    } else {
        let matches = matches(conn, tenant, &refs).await?;
        match choose(member, &refs, &matches) {
            Resolution::Resolved { manager, via } => match closes_cycle(conn, tenant, member, manager).await? {
                Some(path) => Resolution::Cycle { path },
                None => Resolution::Resolved { manager, via },
            },
            other => other,
        }
    };
    let link = Link::of(&resolution);
    let unchanged = node.manager_id == link.manager_id
        && node.resolution == link.resolution
        && node.via.as_deref() == link.via
        && node.detail == link.detail
        && node.candidates == link.candidates
        && node.cycle_path == link.cycle_path;
    if unchanged {
        return Ok(false);
    }
    let moved = node.manager_id != link.manager_id;
    let version: i64 = sqlx::query_scalar(
        "update hierarchy.nodes set manager_id = $3, resolution = $4, via = $5, detail = $6, candidates = $7,
                cycle_path = $8, link_version = link_version + case when $9 then 1 else 0 end, updated_at = now()
         where tenant_id = $1 and scim_user_id = $2 returning link_version",
    )
    .bind(tenant)
    .bind(member)
    .bind(link.manager_id)
    .bind(link.resolution)
    .bind(link.via)
    .bind(&link.detail)
    .bind(&link.candidates)
    .bind(&link.cycle_path)
    .bind(moved)
    .fetch_one(&mut *conn)
    .await?;
    metrics::counter!("hierarchy_resolutions_total", "status" => link.resolution).increment(1);
    if !moved {
        return Ok(false);
    }
    let event = EventEnvelope::new(tenant, EventKind::MemberPlaced, member.to_string(), version, chrono::Utc::now())
        .with_data(json!({"manager_id": link.manager_id, "previous_manager_id": node.manager_id, "via": link.via}));
    muster_infra::outbox::append(conn, &[event], &muster_infra::telemetry::current_traceparent()).await?;
    tracing::info!(tenant_id = %tenant, scim_user_id = %member, manager_id = ?link.manager_id,
        previous = ?node.manager_id, resolution = link.resolution, "member placed");
    Ok(true)
}

/// The possible managers each reference names (at most a few per reference: more than one
/// already makes it ambiguous).
async fn matches(conn: &mut PgConnection, tenant: Uuid, refs: &References) -> sqlx::Result<Matches> {
    let id = refs.id.as_deref().and_then(|i| i.parse::<Uuid>().ok());
    let (by_id, by_email, by_name): (Option<Uuid>, Vec<Uuid>, Vec<Uuid>) = sqlx::query_as(
        "select (select scim_user_id from hierarchy.nodes where tenant_id = $1 and scim_user_id = $2 and candidate),
                array(select scim_user_id from hierarchy.nodes
                      where tenant_id = $1 and email_key = $3 and candidate order by scim_user_id limit 10),
                array(select scim_user_id from hierarchy.nodes
                      where tenant_id = $1 and name_key = $4 and candidate order by scim_user_id limit 10)",
    )
    .bind(tenant)
    .bind(id)
    .bind(&refs.email)
    .bind(&refs.name)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Matches { by_id, by_email, by_name })
}

/// The path of the cycle linking `member` to `manager` would close, if it would. Only a member
/// with reports can be above its would-be manager, so leaves skip the walk.
async fn closes_cycle(
    conn: &mut PgConnection,
    tenant: Uuid,
    member: Uuid,
    manager: Uuid,
) -> sqlx::Result<Option<Vec<Uuid>>> {
    if manager != member {
        let has_reports: bool =
            sqlx::query_scalar("select exists(select 1 from hierarchy.nodes where tenant_id = $1 and manager_id = $2)")
                .bind(tenant)
                .bind(member)
                .fetch_one(&mut *conn)
                .await?;
        if !has_reports {
            return Ok(None);
        }
    }
    let above = muster_members::org::managers_above(&mut *conn, tenant, manager, MAX_CHAIN).await?;
    Ok(cycle_through(member, manager, &above))
}

/// Members whose link was refused as a cycle running through `member`.
async fn cycles_through(conn: &mut PgConnection, tenant: Uuid, member: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "select scim_user_id from hierarchy.nodes
         where tenant_id = $1 and resolution = 'cycle' and cycle_path @> array[$2::uuid] and scim_user_id <> $2",
    )
    .bind(tenant)
    .bind(member)
    .fetch_all(conn)
    .await
}
