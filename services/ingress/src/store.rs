//! The SCIM mirror in PostgreSQL: users and groups as canonical JSONB documents with their
//! hot attributes as columns, and group memberships as rows. Functions take a connection so
//! that callers compose one transaction with the outbox.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use muster_contracts::EventEnvelope;
use muster_infra::outbox;
use muster_infra::telemetry::current_traceparent;
use muster_scim::ScimError;
use muster_scim::filter::Filter;
use muster_scim::schema::{ResourceKind, ResourceType};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::error::ApiError;
use crate::query::push_filter;

/// A stored resource.
#[derive(Debug, Clone, FromRow)]
pub struct ResourceRow {
    pub id: Uuid,
    pub resource: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A user's groups as `[[id, displayName], …]`, when the query read them along (`list`
    /// with `with_groups`).
    #[sqlx(default)]
    pub groups: Option<Value>,
}

impl ResourceRow {
    /// The groups read along with the user, if they were.
    pub fn groups(&self) -> Option<Vec<(Uuid, String)>> {
        let pairs = self.groups.as_ref()?.as_array()?;
        Some(
            pairs
                .iter()
                .filter_map(|pair| {
                    let id = pair.get(0)?.as_str()?.parse().ok()?;
                    Some((id, pair.get(1)?.as_str()?.to_string()))
                })
                .collect(),
        )
    }
}

fn table(kind: ResourceKind) -> &'static str {
    match kind {
        ResourceKind::User => "scim.users",
        ResourceKind::Group => "scim.groups",
    }
}

const COLUMNS: &str = "id, resource, version, created_at, updated_at";

fn text(doc: &Value, key: &str) -> Option<String> {
    doc.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The columns of the users written by [`write_users`], from `$1`–`$8`.
const USERS_INPUT: &str =
    "unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[], $6::jsonb[], $7::timestamptz[], $8::bigint[])
          with ordinality as i(tenant_id, id, user_name, external_id, active, resource, at, version, n)";

/// The display name of membership `gm`'s group, by its primary key.
///
/// A scalar subquery rather than a join: the ingress's plans are made once per connection,
/// often while the tables are still empty, and a join planned then read every group of the
/// company for each membership (by `tenant_id` alone, the group id as a filter). A lookup by
/// the whole primary key has no other plan.
macro_rules! group_name {
    () => {
        "(select g.display_name from scim.groups g where g.tenant_id = gm.tenant_id and g.id = gm.group_id)"
    };
}

/// The groups of user `r` as `[[id, displayName], …]`, a column to select along with it.
const USER_GROUPS: &str = concat!(
    ", (select coalesce(jsonb_agg(jsonb_build_array(m.group_id, m.name) order by m.name), '[]'::jsonb)
        from (select gm.group_id, ",
    group_name!(),
    " as name from scim.group_members gm
              where gm.tenant_id = r.tenant_id and gm.member_id = r.id offset 0) m) as groups"
);

/// Inserts a new group at version 1.
pub async fn insert_group(conn: &mut PgConnection, tenant: Uuid, id: Uuid, doc: &Value) -> sqlx::Result<ResourceRow> {
    sqlx::query_as::<_, ResourceRow>(&format!(
        "insert into scim.groups (tenant_id, id, display_name, external_id, resource)
         values ($1, $2, $3, $4, $5) returning {COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(text(doc, "displayName").unwrap_or_default())
    .bind(text(doc, "externalId"))
    .bind(doc)
    .fetch_one(conn)
    .await
}

/// A user's next version (its first, for a creation), with the events of the change.
#[derive(Debug)]
pub struct UserWrite {
    pub tenant: Uuid,
    pub id: Uuid,
    pub doc: Value,
    /// The version written: 1 for a creation, else one more than the version the change was
    /// computed from (the write happens only if the user is still at that one).
    pub version: i64,
    pub at: DateTime<Utc>,
    pub events: Vec<EventEnvelope>,
    /// The trace of the request that makes the change.
    pub traceparent: String,
}

/// How [`write_users`] writes.
#[derive(Debug, Clone, Copy)]
pub enum UserStatement {
    /// New users; one whose `userName` is taken (by a stored user or one earlier in the same
    /// statement) is left out.
    Insert,
    /// Stored users, each only if still at the version before the one written; a user at
    /// another version (a concurrent write came first) or gone is left out.
    Update,
}

impl UserStatement {
    /// The write with its events' insert (see [`write_users`]), put together once: it runs
    /// for every batch.
    fn sql(self) -> &'static str {
        static INSERT: OnceLock<String> = OnceLock::new();
        static UPDATE: OnceLock<String> = OnceLock::new();
        let cell = match self {
            UserStatement::Insert => &INSERT,
            UserStatement::Update => &UPDATE,
        };
        cell.get_or_init(|| outbox::with_events_of_written(&self.write_sql(), 8))
    }

    fn write_sql(self) -> String {
        match self {
            UserStatement::Insert => format!(
                "insert into scim.users (tenant_id, id, user_name, external_id, active, resource, version, created_at, updated_at)
                 select i.tenant_id, i.id, i.user_name, i.external_id, i.active, i.resource, i.version, i.at, i.at
                 from {USERS_INPUT} order by i.n
                 on conflict do nothing
                 returning id, version, created_at, updated_at"
            ),
            UserStatement::Update => format!(
                "update scim.users u set user_name = i.user_name, external_id = i.external_id, active = i.active,
                        resource = i.resource, version = i.version, updated_at = i.at
                 from {USERS_INPUT}
                 where u.tenant_id = i.tenant_id and u.id = i.id and u.version = i.version - 1
                 returning u.id, u.version, u.created_at, u.updated_at"
            ),
        }
    }
}

/// What a write of a user stored besides its document.
#[derive(Debug, Clone, FromRow)]
pub struct Stored {
    pub id: Uuid,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Stored {
    /// The stored user: `doc` is the document it was written with.
    pub fn row(self, doc: Value) -> ResourceRow {
        let Stored { id, version, created_at, updated_at } = self;
        ResourceRow { id, resource: doc, version, created_at, updated_at, groups: None }
    }
}

/// Writes `users` with their events in one statement (no transaction to open and commit), and
/// returns those written by id; the events of the others are not appended. At most one write
/// per user: the caller sees to it.
pub async fn write_users(
    executor: impl PgExecutor<'_>,
    statement: UserStatement,
    users: &[&UserWrite],
) -> sqlx::Result<HashMap<Uuid, Stored>> {
    let mut events = outbox::Columns::default();
    for user in users {
        events.push(&user.events, &user.traceparent)?;
    }
    let query = sqlx::query_as::<_, Stored>(statement.sql())
        .bind(users.iter().map(|u| u.tenant).collect::<Vec<_>>())
        .bind(users.iter().map(|u| u.id).collect::<Vec<_>>())
        .bind(users.iter().map(|u| text(&u.doc, "userName").unwrap_or_default()).collect::<Vec<_>>())
        .bind(users.iter().map(|u| text(&u.doc, "externalId")).collect::<Vec<_>>())
        .bind(users.iter().map(|u| u.doc.get("active").and_then(Value::as_bool).unwrap_or(true)).collect::<Vec<_>>())
        .bind(users.iter().map(|u| &u.doc).collect::<Vec<_>>())
        .bind(users.iter().map(|u| u.at).collect::<Vec<_>>())
        .bind(users.iter().map(|u| u.version).collect::<Vec<_>>());
    let written = events.bind(query).fetch_all(executor).await?;
    Ok(written.into_iter().map(|w| (w.id, w)).collect())
}

/// Reads a user with its groups (see [`ResourceRow::groups`]) in one round trip; with `lock`,
/// holds the user's row until the transaction ends.
pub async fn find_user_with_groups(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<ResourceRow>> {
    let suffix = if lock { " for update of r" } else { "" };
    sqlx::query_as::<_, ResourceRow>(&format!(
        "select r.id, r.resource, r.version, r.created_at, r.updated_at{USER_GROUPS}
         from scim.users r where r.tenant_id = $1 and r.id = $2{suffix}"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// Writes a group's next version, at `at`, with `events`, in one statement: its new document
/// when `doc` is given, else only the version (a membership-only change). The caller holds the
/// group's row, so the version written is the one after the version it read.
pub async fn write_group_with_events(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    doc: Option<&Value>,
    at: DateTime<Utc>,
    events: &[EventEnvelope],
) -> sqlx::Result<ResourceRow> {
    // `$3` is `at`; a new document's columns follow it.
    let (set, params) = match doc {
        Some(_) => ("display_name = $4, external_id = $5, resource = $6,", 6),
        None => ("", 3),
    };
    let statement = outbox::with_events(
        &format!(
            "update scim.groups set {set} version = version + 1, updated_at = $3
             where tenant_id = $1 and id = $2 returning {COLUMNS}"
        ),
        params,
    );
    let mut query = sqlx::query_as::<_, ResourceRow>(&statement).bind(tenant).bind(id).bind(at);
    if let Some(doc) = doc {
        query = query.bind(text(doc, "displayName").unwrap_or_default()).bind(text(doc, "externalId")).bind(doc);
    }
    outbox::Columns::of(events, &current_traceparent())?.bind(query).fetch_one(conn).await
}

/// Reads a resource; with `lock`, holds its row until the transaction ends, so concurrent
/// writers of one resource (e.g. membership PATCHes of one group) apply one after another.
pub async fn find(
    executor: impl PgExecutor<'_>,
    kind: ResourceKind,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> sqlx::Result<Option<ResourceRow>> {
    let suffix = if lock { " for update" } else { "" };
    sqlx::query_as::<_, ResourceRow>(&format!(
        "select {COLUMNS} from {} where tenant_id = $1 and id = $2{suffix}",
        table(kind)
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// Reads a group and holds its row against other writes of its version until the
/// transaction ends (`for no key update`), but not against inserts of its memberships: their
/// foreign key takes `for key share`, which `for update` would also block.
pub async fn hold_group_version(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> sqlx::Result<Option<ResourceRow>> {
    sqlx::query_as::<_, ResourceRow>(&format!(
        "select {COLUMNS} from scim.groups where tenant_id = $1 and id = $2 for no key update"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Deletes a resource; returns the version it had.
pub async fn delete(conn: &mut PgConnection, kind: ResourceKind, tenant: Uuid, id: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar::<_, i64>(&format!(
        "delete from {} where tenant_id = $1 and id = $2 returning version",
        table(kind)
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// One page of a filtered list, in creation order, and the total number of matches.
pub async fn list(
    conn: &mut PgConnection,
    rt: &ResourceType,
    tenant: Uuid,
    filter: Option<&Filter>,
    offset: i64,
    limit: i64,
    with_groups: bool,
) -> Result<(Vec<ResourceRow>, i64), ApiError> {
    let condition = |qb: &mut QueryBuilder<'_, Postgres>| -> Result<(), ScimError> {
        qb.push_bind(tenant);
        if let Some(f) = filter {
            push_filter(qb, rt, f)?;
        }
        Ok(())
    };
    if limit > 0 {
        // A user's groups in the same round trip (Entra looks users up one at a time).
        let groups = if with_groups && rt.kind == ResourceKind::User { USER_GROUPS } else { "" };
        let mut qb = QueryBuilder::<Postgres>::new(format!(
            "select r.id, r.resource, r.version, r.created_at, r.updated_at, count(*) over () as total{groups} from {} r where r.tenant_id = ",
            table(rt.kind)
        ));
        condition(&mut qb)?;
        qb.push(" order by r.created_at, r.id");
        // No `offset $n` on a first page (every lookup of Entra's): with an offset it does not
        // know, PostgreSQL costs a generic plan above the custom ones and so plans the statement
        // anew on every execution — half of its CPU for a lookup, measured.
        if offset > 0 {
            qb.push(" offset ").push_bind(offset);
        }
        qb.push(" limit ").push_bind(limit);
        let rows = qb.build().fetch_all(&mut *conn).await?;
        if let Some(first) = rows.first() {
            use sqlx::Row;
            let total: i64 = first.try_get("total")?;
            let resources = rows.iter().map(ResourceRow::from_row).collect::<Result<Vec<_>, _>>()?;
            return Ok((resources, total));
        }
        if offset == 0 {
            // Nothing matches: Entra's lookup before creating a user, the commonest list.
            return Ok((Vec::new(), 0));
        }
    }
    // No rows on this page (or count=0): the total still has to be told.
    let mut qb =
        QueryBuilder::<Postgres>::new(format!("select count(*) from {} r where r.tenant_id = ", table(rt.kind)));
    condition(&mut qb)?;
    let total: i64 = qb.build_query_scalar().fetch_one(&mut *conn).await?;
    Ok((Vec::new(), total))
}

/// The users named `names` (company, `userName`; compared as `userName eq` compares, without
/// case), each with its groups, in the order asked: Entra's lookup before every create, many at
/// once ([`crate::user_lookups`]). A name is unique within its company, so one row at most each.
pub async fn find_users_by_name(
    conn: &mut PgConnection,
    names: &[(Uuid, &str)],
) -> sqlx::Result<Vec<Option<ResourceRow>>> {
    let tenants: Vec<Uuid> = names.iter().map(|(tenant, _)| *tenant).collect();
    let user_names: Vec<&str> = names.iter().map(|(_, name)| *name).collect();
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| users_by_key("text", "lower(u.user_name) = lower(k.key)"));
    let rows = sqlx::query(sql).bind(&tenants).bind(&user_names).fetch_all(&mut *conn).await?;
    in_asked_order(&rows, names.len())
}

/// The users `ids` (company, id), each with its groups, in the order asked: the read before
/// a `PUT`/`PATCH`, many at once ([`crate::user_lookups`]).
pub async fn find_users_by_id(conn: &mut PgConnection, ids: &[(Uuid, Uuid)]) -> sqlx::Result<Vec<Option<ResourceRow>>> {
    let tenants: Vec<Uuid> = ids.iter().map(|(tenant, _)| *tenant).collect();
    let user_ids: Vec<Uuid> = ids.iter().map(|(_, id)| *id).collect();
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| users_by_key("uuid", "u.id = k.key"));
    let rows = sqlx::query(sql).bind(&tenants).bind(&user_ids).fetch_all(&mut *conn).await?;
    in_asked_order(&rows, ids.len())
}

/// Users, each with its groups, by a key of type `key_type` (`$2`, beside the companies in
/// `$1`) that `condition` compares with `u`.
///
/// Driven from the keys, each a probe of an index in a lateral that cannot be flattened
/// (`offset 0`): the ingress's plans are generic, often made on empty tables.
fn users_by_key(key_type: &str, condition: &str) -> String {
    format!(
        "select k.n, r.id, r.resource, r.version, r.created_at, r.updated_at{USER_GROUPS}
         from unnest($1::uuid[], $2::{key_type}[]) with ordinality as k(tenant_id, key, n)
         cross join lateral (
             select u.tenant_id, u.id, u.resource, u.version, u.created_at, u.updated_at
             from scim.users u
             where u.tenant_id = k.tenant_id and {condition} offset 0) r"
    )
}

/// Rows of [`users_by_key`] in the slots of the keys asked (`n`, from 1), `None` where none.
fn in_asked_order(rows: &[sqlx::postgres::PgRow], asked: usize) -> sqlx::Result<Vec<Option<ResourceRow>>> {
    use sqlx::Row;
    let mut found = vec![None; asked];
    for row in rows {
        let n: i64 = row.try_get("n")?;
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| found.get_mut(i)) {
            *slot = Some(ResourceRow::from_row(row)?);
        }
    }
    Ok(found)
}

/// A member of a group, as returned in `members`.
#[derive(Debug, Clone, FromRow)]
pub struct MemberRow {
    pub group_id: Uuid,
    pub member_id: Uuid,
    pub member_type: String,
    pub display: Option<String>,
}

/// The members of each of `groups`.
pub async fn members_of(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
    groups: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Vec<MemberRow>>> {
    let rows = sqlx::query_as::<_, MemberRow>(
        "select gm.group_id, gm.member_id, gm.member_type,
                coalesce(u.resource ->> 'displayName', u.user_name, g.display_name) as display
         from scim.group_members gm
         left join scim.users u on gm.member_type = 'User' and u.tenant_id = gm.tenant_id and u.id = gm.member_id
         left join scim.groups g on gm.member_type = 'Group' and g.tenant_id = gm.tenant_id and g.id = gm.member_id
         where gm.tenant_id = $1 and gm.group_id = any($2)
         order by gm.group_id, gm.created_at, gm.member_id",
    )
    .bind(tenant)
    .bind(groups)
    .fetch_all(executor)
    .await?;
    let mut out: HashMap<Uuid, Vec<MemberRow>> = HashMap::new();
    for row in rows {
        out.entry(row.group_id).or_default().push(row);
    }
    Ok(out)
}

/// The groups each of `users` belongs to (the read-only `groups` attribute).
pub async fn groups_of(
    executor: impl PgExecutor<'_>,
    tenant: Uuid,
    users: &[Uuid],
) -> sqlx::Result<HashMap<Uuid, Vec<(Uuid, String)>>> {
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(concat!(
        "select m.member_id, m.group_id, m.name
             from (select gm.member_id, gm.group_id, ",
        group_name!(),
        " as name from scim.group_members gm
                   where gm.tenant_id = $1 and gm.member_id = any($2)) m
             order by m.name"
    ))
    .bind(tenant)
    .bind(users)
    .fetch_all(executor)
    .await?;
    let mut out: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
    for (user, group, name) in rows {
        out.entry(user).or_default().push((group, name));
    }
    Ok(out)
}

/// Adds those of `ids` that are users or groups of the tenant to `group`, in one statement.
/// Returns the ids that were not members before, and every one of `ids` that exists (the
/// caller refuses the others, rolling back the additions).
pub async fn add_existing_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    group: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<(Vec<Uuid>, HashSet<Uuid>)> {
    if ids.is_empty() {
        return Ok((Vec::new(), HashSet::new()));
    }
    let (added, existing): (Vec<Uuid>, Vec<Uuid>) = sqlx::query_as(
        "with existing as (
             select id, 'User' as kind from scim.users where tenant_id = $1 and id = any($3)
             union all
             select id, 'Group' from scim.groups where tenant_id = $1 and id = any($3)
         ), added as (
             insert into scim.group_members (tenant_id, group_id, member_id, member_type)
             select $1, $2, id, kind from existing
             on conflict do nothing returning member_id
         )
         select array(select member_id from added), array(select id from existing)",
    )
    .bind(tenant)
    .bind(group)
    .bind(ids)
    .fetch_one(conn)
    .await?;
    Ok((added, existing.into_iter().collect()))
}

/// Removes memberships (all of them when `ids` is `None`); returns the ids removed.
pub async fn remove_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    group: Uuid,
    ids: Option<&[Uuid]>,
) -> sqlx::Result<Vec<Uuid>> {
    match ids {
        Some([]) => Ok(Vec::new()),
        Some(ids) => {
            sqlx::query_scalar::<_, Uuid>(
                // Each membership found by its whole key, then deleted where it is: planned on an
                // empty table, `member_id = any($3)` became a filter over every membership of the
                // group (50,000 for the largest) and a join on the ids a hash over them.
                "delete from scim.group_members gm
                 using (select t.row_id from unnest($3::uuid[]) as r(id)
                        cross join lateral (select ctid as row_id from scim.group_members
                                            where tenant_id = $1 and group_id = $2 and member_id = r.id offset 0) t) d
                 where gm.ctid = d.row_id returning gm.member_id",
            )
            .bind(tenant)
            .bind(group)
            .bind(ids)
            .fetch_all(conn)
            .await
        }
        None => {
            sqlx::query_scalar::<_, Uuid>(
                "delete from scim.group_members where tenant_id = $1 and group_id = $2 returning member_id",
            )
            .bind(tenant)
            .bind(group)
            .fetch_all(conn)
            .await
        }
    }
}

/// Removes `member` from every group it belongs to (it is being deleted) and bumps those
/// groups' versions; returns each group's new version.
pub async fn remove_from_all_groups(
    conn: &mut PgConnection,
    tenant: Uuid,
    member: Uuid,
) -> sqlx::Result<Vec<(Uuid, i64)>> {
    sqlx::query_as::<_, (Uuid, i64)>(
        "with removed as (
             delete from scim.group_members where tenant_id = $1 and member_id = $2 returning group_id
         )
         update scim.groups g set version = version + 1, updated_at = now()
         from removed where g.tenant_id = $1 and g.id = removed.group_id
         returning g.id, g.version",
    )
    .bind(tenant)
    .bind(member)
    .fetch_all(conn)
    .await
}
