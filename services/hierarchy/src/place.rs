//! A batch of one company's member events: refresh those members' nodes (keys and
//! references, `hierarchy.nodes`), then re-resolve their links (`hierarchy.links`) and those of
//! every member their change can affect — those whose references name their old or new keys
//! (indexed lookups, never a rescan), and refused cycles whose path a moved link is on.
//!
//! Resolution reads other members' links (chains for cycles, keys for matches), so a company's
//! hierarchy is written by one transaction at a time (an advisory lock per tenant); companies
//! proceed in parallel. Without it, two reports arriving at once could each miss the other's
//! manager, or two links each see no cycle and together close one. Concurrent deliveries of
//! one company are batched (`muster_infra::worker::batch`) into that transaction, and the work
//! is set-based: a handful of statements per batch, not per member. Only a member that is (or
//! becomes, in this batch) someone's manager can close a cycle by getting a manager; those are
//! checked one by one, each against the chain above its new manager (the chains read at once,
//! then walked in memory with the links decided before it).
//!
//! The batch statements are driven from the batch's ids (`unnest`, then one key probe per id
//! in a fenced lateral subquery) and planned each time (`persistent(false)`): otherwise a plan
//! cached while the company was small, or made on statistics that predate the company's rows,
//! scans the whole company for every batch.

use std::collections::{HashMap, HashSet};

use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::hierarchy::{Matches, References, Resolution, Via, choose, cycle_through, email_key, name_key};
use muster_infra::worker::ProcessError;
use muster_infra::worker::batch::together_or_each;
use muster_infra::worker::versions;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::SERVICE;

/// Rounds of re-resolution (refused cycles re-examined after links moved) per batch.
const MAX_ROUNDS: usize = 64;

/// Places the members of a batch of one company's events, and whoever waits on them, in one
/// transaction; returns one result per event (each event alone if the batch fails).
pub async fn apply_batch(
    pool: &PgPool,
    tenant: Uuid,
    events: Vec<(EventEnvelope, Uuid)>,
) -> Vec<Result<(), ProcessError>> {
    together_or_each(&events, |events| apply(pool, tenant, events)).await
}

async fn apply(pool: &PgPool, tenant: Uuid, events: &[(EventEnvelope, Uuid)]) -> Result<(), ProcessError> {
    let mut tx = pool.begin().await?;
    // Claims first (in entity order: no deadlock between replicas), outside the company lock:
    // a stale event (its newer state was already placed) never waits for it.
    let deliveries: Vec<(&str, i64)> = events.iter().map(|(e, _)| (e.entity_id.as_str(), e.version)).collect();
    let claimed = versions::claim_many(&mut tx, SERVICE, tenant, &deliveries).await?;
    let fresh: Vec<Uuid> = claimed.iter().filter_map(|entity| entity.parse().ok()).collect();
    if fresh.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("hierarchy:{tenant}"))
        .execute(&mut *tx)
        .await?;
    let mut work = refresh(&mut tx, tenant, &fresh).await?;
    let mut placed = Vec::new();
    let mut resolved = 0;
    for _ in 0..MAX_ROUNDS {
        if work.is_empty() {
            break;
        }
        resolved += work.len();
        let moved = resolve(&mut tx, tenant, &work, &mut placed).await?;
        // A link that moved may open or close the path a refused cycle ran along.
        work = if moved.is_empty() { Vec::new() } else { cycles_through(&mut tx, tenant, &moved).await? };
    }
    muster_infra::outbox::append(&mut tx, &placed, &muster_infra::telemetry::current_traceparent()).await?;
    metrics::histogram!("hierarchy_batch_events").record(events.len() as f64);
    metrics::histogram!("hierarchy_members_resolved_per_batch").record(resolved as f64);
    tx.commit().await?;
    Ok(())
}

/// A member as the members table has it, next to the node the hierarchy last made of it.
#[derive(sqlx::FromRow)]
struct MemberRow {
    scim_user_id: Uuid,
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

/// Copies the members' keys and references into their nodes; returns the members to
/// re-resolve: those whose references or status changed, and, for those whose keys changed,
/// everyone whose references name the old or new keys. A change the hierarchy does not care
/// about (a title, a phone) costs nothing more than the read.
async fn refresh(conn: &mut PgConnection, tenant: Uuid, members: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "select m.scim_user_id, m.status, m.primary_email, m.manager_scim_id, m.manager_email, m.manager_full_name,
                m.profile->>'given_name' as given_name, m.profile->>'family_name' as family_name,
                coalesce((m.profile->'manager_ref'->>'manual')::boolean, false) as manual,
                n.member_status as node_status, n.candidate as node_candidate, n.email_key as node_email_key,
                n.name_key as node_name_key, n.ref_id as node_ref_id, n.ref_email as node_ref_email,
                n.ref_name as node_ref_name, n.ref_manual as node_ref_manual
         from unnest($2::uuid[]) as k(id)
         cross join lateral (select * from members.members where tenant_id = $1 and scim_user_id = k.id offset 0) m
         left join lateral (select * from hierarchy.nodes where tenant_id = $1 and scim_user_id = k.id offset 0) n
             on true",
    )
    .persistent(false)
    .bind(tenant)
    .bind(members)
    .fetch_all(&mut *conn)
    .await?;
    let mut upsert = NodeColumns::default();
    let mut work = Vec::new();
    let (mut key_ids, mut key_emails, mut key_names) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
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
            continue;
        }
        work.push(row.scim_user_id);
        if keys_changed {
            key_ids.push(row.scim_user_id.to_string());
            key_emails.extend(row.node_email_key.clone().into_iter().chain(email.clone()));
            key_names.extend(row.node_name_key.clone().into_iter().chain(name.clone()));
        }
        upsert.push(row.scim_user_id, row.status, candidate, email, name, refs);
    }
    if work.is_empty() {
        return Ok(work);
    }
    sqlx::query(
        "insert into hierarchy.nodes (tenant_id, scim_user_id, member_status, candidate, email_key, name_key,
                                      ref_id, ref_email, ref_name, ref_manual)
         select $1, u.* from unnest($2::uuid[], $3::text[], $4::bool[], $5::text[], $6::text[], $7::text[],
                                    $8::text[], $9::text[], $10::bool[]) as u
         on conflict (tenant_id, scim_user_id) do update set
             member_status = excluded.member_status, candidate = excluded.candidate,
             email_key = excluded.email_key, name_key = excluded.name_key, ref_id = excluded.ref_id,
             ref_email = excluded.ref_email, ref_name = excluded.ref_name, ref_manual = excluded.ref_manual,
             updated_at = now()",
    )
    .persistent(false)
    .bind(tenant)
    .bind(&upsert.ids)
    .bind(&upsert.statuses)
    .bind(&upsert.candidates)
    .bind(&upsert.emails)
    .bind(&upsert.names)
    .bind(&upsert.ref_ids)
    .bind(&upsert.ref_emails)
    .bind(&upsert.ref_names)
    .bind(&upsert.ref_manuals)
    .execute(&mut *conn)
    .await?;
    if !key_ids.is_empty() {
        let waiting: Vec<Uuid> = sqlx::query_scalar(
            "select w.scim_user_id from unnest($2::text[]) as k(key) cross join lateral
                 (select scim_user_id from hierarchy.nodes where tenant_id = $1 and ref_id = k.key offset 0) w
             union select w.scim_user_id from unnest($3::text[]) as k(key) cross join lateral
                 (select scim_user_id from hierarchy.nodes where tenant_id = $1 and ref_email = k.key offset 0) w
             union select w.scim_user_id from unnest($4::text[]) as k(key) cross join lateral
                 (select scim_user_id from hierarchy.nodes where tenant_id = $1 and ref_name = k.key offset 0) w",
        )
        .persistent(false)
        .bind(tenant)
        .bind(&key_ids)
        .bind(&key_emails)
        .bind(&key_names)
        .fetch_all(&mut *conn)
        .await?;
        let mut seen: HashSet<Uuid> = work.iter().copied().collect();
        work.extend(waiting.into_iter().filter(|w| seen.insert(*w)));
    }
    Ok(work)
}

/// The columns of node upserts, one array per column.
#[derive(Default)]
struct NodeColumns {
    ids: Vec<Uuid>,
    statuses: Vec<String>,
    candidates: Vec<bool>,
    emails: Vec<Option<String>>,
    names: Vec<Option<String>>,
    ref_ids: Vec<Option<String>>,
    ref_emails: Vec<Option<String>>,
    ref_names: Vec<Option<String>>,
    ref_manuals: Vec<bool>,
}

impl NodeColumns {
    fn push(
        &mut self,
        id: Uuid,
        status: String,
        candidate: bool,
        email: Option<String>,
        name: Option<String>,
        refs: References,
    ) {
        self.ids.push(id);
        self.statuses.push(status);
        self.candidates.push(candidate);
        self.emails.push(email);
        self.names.push(name);
        self.ref_ids.push(refs.id);
        self.ref_emails.push(refs.email);
        self.ref_names.push(refs.name);
        self.ref_manuals.push(refs.manual);
    }
}

/// A node to re-resolve, with the members its references name and whether it has reports.
#[derive(sqlx::FromRow)]
struct Node {
    scim_user_id: Uuid,
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
    by_id: Option<Uuid>,
    by_email: Vec<Uuid>,
    by_name: Vec<Uuid>,
    has_reports: bool,
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

    fn is_stored_in(&self, node: &Node) -> bool {
        node.manager_id == self.manager_id
            && node.resolution == self.resolution
            && node.via.as_deref() == self.via
            && node.detail == self.detail
            && node.candidates == self.candidates
            && node.cycle_path == self.cycle_path
    }
}

/// The resolution of a node from its references and matches, before any cycle check.
fn first_choice(node: &Node) -> Resolution {
    if node.member_status == "skipped" {
        return Resolution::None { detail: Some("a skipped member is not placed until it is imported".into()) };
    }
    let refs = References {
        id: node.ref_id.clone(),
        email: node.ref_email.clone(),
        name: node.ref_name.clone(),
        manual: node.ref_manual,
    };
    let matches = Matches { by_id: node.by_id, by_email: node.by_email.clone(), by_name: node.by_name.clone() };
    choose(node.scim_user_id, &refs, &matches)
}

/// Re-resolves `members`' links and stores the changed ones; appends a `member.placed` event
/// to `placed` for each member whose manager changed, and returns those members.
async fn resolve(
    conn: &mut PgConnection,
    tenant: Uuid,
    members: &[Uuid],
    placed: &mut Vec<EventEnvelope>,
) -> sqlx::Result<Vec<Uuid>> {
    let nodes: Vec<Node> = sqlx::query_as(
        "select w.scim_user_id, w.member_status, w.ref_id, w.ref_email, w.ref_name, w.ref_manual, l.manager_id,
                coalesce(l.resolution, 'none') as resolution, l.via, l.detail, l.candidates, l.cycle_path,
                (select n.scim_user_id from hierarchy.nodes n
                 where n.tenant_id = $1 and n.candidate
                   and n.scim_user_id = case when w.ref_id ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                                             then w.ref_id::uuid end) as by_id,
                array(select id from (select n.scim_user_id as id from hierarchy.nodes n
                                      where n.tenant_id = $1 and n.candidate and n.email_key = w.ref_email
                                      offset 0) e
                      order by id limit 10) as by_email,
                array(select id from (select n.scim_user_id as id from hierarchy.nodes n
                                      where n.tenant_id = $1 and n.candidate and n.name_key = w.ref_name
                                      offset 0) e
                      order by id limit 10) as by_name,
                -- `offset 0`: a probe of the reports index, not the alternative of hashing every
                -- link of the company, chosen when the company is missing from the statistics.
                exists(select 1 from hierarchy.links r where r.tenant_id = $1 and r.manager_id = w.scim_user_id
                       offset 0) as has_reports
         from unnest($2::uuid[]) as k(id)
         cross join lateral (select * from hierarchy.nodes where tenant_id = $1 and scim_user_id = k.id offset 0) w
         left join lateral (select * from hierarchy.links where tenant_id = $1 and scim_user_id = k.id offset 0) l
             on true",
    )
    .persistent(false)
    .bind(tenant)
    .bind(members)
    .fetch_all(&mut *conn)
    .await?;
    let choices: Vec<Resolution> = nodes.iter().map(first_choice).collect();
    // Who will have reports after this batch: only they can close a cycle by getting a manager.
    let mut managers: HashSet<Uuid> = nodes.iter().filter(|n| n.has_reports).map(|n| n.scim_user_id).collect();
    managers.extend(choices.iter().filter_map(Resolution::manager));

    let mut bulk = Vec::new();
    let mut one_by_one = Vec::new();
    for (node, choice) in nodes.iter().zip(choices) {
        match choice.manager() {
            Some(_) if managers.contains(&node.scim_user_id) => one_by_one.push((node, choice)),
            _ => bulk.push((node, Link::of(&choice))),
        }
    }
    let mut moved = Vec::new();
    store(conn, tenant, &bulk, placed, &mut moved).await?;
    if one_by_one.is_empty() {
        return Ok(moved);
    }
    // The chains above every new manager, read once (after the bulk links are stored); each
    // link is then checked against them and the links decided before it, as storing them one
    // by one and reading the chain each time would — in two statements, not two per member.
    let new_managers: Vec<Uuid> = one_by_one.iter().filter_map(|(_, choice)| choice.manager()).collect();
    let mut links = muster_members::org::links_above(&mut *conn, tenant, &new_managers).await?;
    let checked: Vec<(&Node, Link)> = one_by_one
        .into_iter()
        .map(|(node, choice)| (node, Link::of(&refuse_cycle(&mut links, node.scim_user_id, choice))))
        .collect();
    store(conn, tenant, &checked, placed, &mut moved).await?;
    Ok(moved)
}

/// `member`'s choice, refused as a cycle if its manager is `member` or has it above them
/// through `links` (member → manager); `links` then holds `member`'s outcome.
fn refuse_cycle(links: &mut HashMap<Uuid, Uuid>, member: Uuid, choice: Resolution) -> Resolution {
    let outcome = match choice {
        Resolution::Resolved { manager, via } => {
            match cycle_through(member, manager, &muster_members::org::walk_up(links, manager)) {
                Some(path) => Resolution::Cycle { path },
                None => Resolution::Resolved { manager, via },
            }
        }
        other => other,
    };
    match outcome.manager() {
        Some(manager) => links.insert(member, manager),
        None => links.remove(&member),
    };
    outcome
}

/// Writes the links that changed, in one statement; records the moved ones.
async fn store(
    conn: &mut PgConnection,
    tenant: Uuid,
    links: &[(&Node, Link)],
    placed: &mut Vec<EventEnvelope>,
    moved: &mut Vec<Uuid>,
) -> sqlx::Result<()> {
    let changed: Vec<&(&Node, Link)> = links.iter().filter(|(node, link)| !link.is_stored_in(node)).collect();
    if changed.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = changed.iter().map(|(n, _)| n.scim_user_id).collect();
    let managers: Vec<Option<Uuid>> = changed.iter().map(|(_, l)| l.manager_id).collect();
    let resolutions: Vec<&str> = changed.iter().map(|(_, l)| l.resolution).collect();
    let vias: Vec<Option<&str>> = changed.iter().map(|(_, l)| l.via).collect();
    let details: Vec<Option<&str>> = changed.iter().map(|(_, l)| l.detail.as_deref()).collect();
    // Ragged uuid lists travel as array literals.
    let literal = |list: &Option<Vec<Uuid>>| {
        list.as_ref().map(|l| format!("{{{}}}", l.iter().map(Uuid::to_string).collect::<Vec<_>>().join(",")))
    };
    let candidates: Vec<Option<String>> = changed.iter().map(|(_, l)| literal(&l.candidates)).collect();
    let paths: Vec<Option<String>> = changed.iter().map(|(_, l)| literal(&l.cycle_path)).collect();
    let moves: Vec<bool> = changed.iter().map(|(n, l)| n.manager_id != l.manager_id).collect();
    // A member's first link is an insert; the version counts the moves of its manager.
    let written: Vec<(Uuid, i64)> = sqlx::query_as(
        "insert into hierarchy.links as l (tenant_id, scim_user_id, manager_id, resolution, via, detail, candidates,
                                          cycle_path, link_version)
         select $1, u.id, u.manager_id, u.resolution, u.via, u.detail, u.candidates::uuid[], u.cycle_path::uuid[],
                case when u.moved then 1 else 0 end
         from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bool[])
              as u(id, manager_id, resolution, via, detail, candidates, cycle_path, moved)
         on conflict (tenant_id, scim_user_id) do update set
             manager_id = excluded.manager_id, resolution = excluded.resolution, via = excluded.via,
             detail = excluded.detail, candidates = excluded.candidates, cycle_path = excluded.cycle_path,
             link_version = l.link_version + excluded.link_version, updated_at = now()
         returning l.scim_user_id, l.link_version",
    )
    .persistent(false)
    .bind(tenant)
    .bind(&ids)
    .bind(&managers)
    .bind(&resolutions)
    .bind(&vias)
    .bind(&details)
    .bind(&candidates)
    .bind(&paths)
    .bind(&moves)
    .fetch_all(&mut *conn)
    .await?;
    let version_of: HashMap<Uuid, i64> = written.into_iter().collect();
    for ((node, link), manager_moved) in changed.into_iter().zip(moves) {
        metrics::counter!("hierarchy_resolutions_total", "status" => link.resolution).increment(1);
        let Some(version) = version_of.get(&node.scim_user_id).filter(|_| manager_moved) else { continue };
        let member = node.scim_user_id;
        placed.push(
            EventEnvelope::new(tenant, EventKind::MemberPlaced, member.to_string(), *version, chrono::Utc::now())
                .with_data(json!({"manager_id": link.manager_id, "previous_manager_id": node.manager_id,
                                  "via": link.via})),
        );
        moved.push(member);
        tracing::info!(tenant_id = %tenant, scim_user_id = %member, manager_id = ?link.manager_id,
            previous = ?node.manager_id, resolution = link.resolution, "member placed");
    }
    Ok(())
}

/// Members whose link was refused as a cycle running through one of `moved`.
async fn cycles_through(conn: &mut PgConnection, tenant: Uuid, moved: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "select scim_user_id from hierarchy.links
         where tenant_id = $1 and resolution = 'cycle' and cycle_path && $2::uuid[]",
    )
    .bind(tenant)
    .bind(moved)
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn to(manager: u128) -> Resolution {
        Resolution::Resolved { manager: id(manager), via: Via::Id }
    }

    #[test]
    fn a_link_closing_a_cycle_with_links_decided_before_it_in_the_batch_is_refused() {
        // Stored: 1 reports to 2. The batch links 2 under 3, then 3 under 1.
        let mut links = HashMap::from([(id(1), id(2))]);
        assert_eq!(refuse_cycle(&mut links, id(2), to(3)), to(3));
        assert_eq!(
            refuse_cycle(&mut links, id(3), to(1)),
            Resolution::Cycle { path: vec![id(3), id(1), id(2), id(3)] },
            "1 → 2 → 3 is already there"
        );
        assert_eq!(links.get(&id(3)), None, "a refused link leaves 3 without a manager");
        // Once 2 has no manager any more, 3 under 1 closes nothing.
        assert!(matches!(refuse_cycle(&mut links, id(2), Resolution::None { detail: None }), Resolution::None { .. }));
        assert_eq!(refuse_cycle(&mut links, id(3), to(1)), to(1));
        assert_eq!(refuse_cycle(&mut links, id(4), to(4)), Resolution::Cycle { path: vec![id(4), id(4)] });
    }
}
