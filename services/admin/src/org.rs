//! The org hierarchy the hierarchy worker keeps: a member's direct reports, their chain of
//! managers up to the root, and the tree (or a subtree) as nested JSON with counts.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_infra::tenancy::Principal;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::members::{MEMBER_SELECT, MemberRow, load, member_json, no_member, page, tenant_of};
use crate::problem::Problem;

/// The deepest `/org-tree` nests; below it, nodes carry counts only.
const MAX_TREE_DEPTH: usize = 256;

async fn existing(state: &AppState, tenant: Uuid, id: &str) -> Result<Uuid, Problem> {
    let user = Uuid::parse_str(id).map_err(|_| no_member(id))?;
    load(state, tenant, user).await?.ok_or_else(|| no_member(id))?;
    Ok(user)
}

#[derive(Debug, Deserialize)]
pub struct PageParams {
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /api/v1/members/{id}/reports`: the member's direct reports.
pub async fn reports(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Query(params) = params.map_err(Problem::bad_query)?;
    let manager = existing(&state, tenant, &id).await?;
    let (limit, offset) = page(params.limit, params.offset);
    let rows: Vec<MemberRow> = sqlx::query_as(&format!(
        "{MEMBER_SELECT} where m.tenant_id = $1 and h.manager_id = $2
         order by m.profile->>'family_name', m.profile->>'given_name', m.scim_user_id limit $3 offset $4"
    ))
    .bind(tenant)
    .bind(manager)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    let total: i64 =
        sqlx::query_scalar("select count(*) from hierarchy.links where tenant_id = $1 and manager_id = $2")
            .bind(tenant)
            .bind(manager)
            .fetch_one(&state.pool)
            .await?;
    let reports: Vec<Value> = rows.into_iter().map(member_json).collect();
    Ok(Json(json!({"manager_id": manager, "total": total, "limit": limit, "offset": offset, "reports": reports}))
        .into_response())
}

/// `GET /api/v1/members/{id}/chain`: the member's managers, direct manager first, up to the
/// root.
pub async fn chain(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let member = existing(&state, tenant, &id).await?;
    let ids = muster_members::org::managers_above(&state.pool, tenant, member).await?;
    let rows: Vec<MemberRow> =
        sqlx::query_as(&format!("{MEMBER_SELECT} where m.tenant_id = $1 and m.scim_user_id = any($2)"))
            .bind(tenant)
            .bind(&ids)
            .fetch_all(&state.pool)
            .await?;
    let mut by_id: HashMap<Uuid, Value> = rows
        .into_iter()
        .map(member_json)
        .filter_map(|m| m["scim_user_id"].as_str().and_then(|s| s.parse().ok()).map(|id: Uuid| (id, m)))
        .collect();
    let managers: Vec<Value> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
    Ok(Json(json!({"scim_user_id": member, "depth": managers.len(), "chain": managers})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct TreeParams {
    /// The subtree's root; absent: the whole company (every member without a manager).
    root: Option<Uuid>,
    /// Levels nested below the root(s); deeper nodes carry counts only.
    depth: Option<usize>,
}

#[derive(sqlx::FromRow)]
struct TreeRow {
    scim_user_id: Uuid,
    manager_id: Option<Uuid>,
    status: String,
    resolution: String,
    display_name: Option<String>,
    given_name: Option<String>,
    family_name: Option<String>,
    title: Option<String>,
    email: Option<String>,
}

/// `GET /api/v1/org-tree?root=&depth=`: the tree of placed members as nested JSON. Each node
/// has `direct_reports` and `total_reports` counts; skipped members are not in the tree.
pub async fn tree(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<TreeParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Query(params) = params.map_err(Problem::bad_query)?;
    let depth = params.depth.unwrap_or(MAX_TREE_DEPTH).min(MAX_TREE_DEPTH);
    let rows: Vec<TreeRow> = sqlx::query_as(
        "select m.scim_user_id, h.manager_id, m.status, coalesce(h.resolution, 'none') as resolution,
                m.profile->>'display_name' as display_name, m.profile->>'given_name' as given_name,
                m.profile->>'family_name' as family_name, m.profile->>'title' as title,
                m.primary_email as email
         from members.members m
         left join hierarchy.links h on h.tenant_id = m.tenant_id and h.scim_user_id = m.scim_user_id
         where m.tenant_id = $1 and m.status <> 'skipped'
         order by m.profile->>'family_name', m.profile->>'given_name', m.scim_user_id",
    )
    .bind(tenant)
    .fetch_all(&state.pool)
    .await?;
    let org = Org::new(rows);
    match params.root {
        Some(root) => {
            let Some(&index) = org.index.get(&root) else { return Err(no_member(&root.to_string())) };
            Ok(Json(json!({"members": org.rows.len(), "root": org.render(index, depth)})).into_response())
        }
        None => {
            let roots: Vec<Value> = org.roots.iter().map(|r| org.render(*r, depth)).collect();
            Ok(Json(json!({"members": org.rows.len(), "roots": roots})).into_response())
        }
    }
}

/// The company's members as a forest, with subtree sizes.
struct Org {
    rows: Vec<TreeRow>,
    index: HashMap<Uuid, usize>,
    children: Vec<Vec<usize>>,
    roots: Vec<usize>,
    /// Members below each node.
    below: Vec<usize>,
}

impl Org {
    fn new(rows: Vec<TreeRow>) -> Org {
        let index: HashMap<Uuid, usize> = rows.iter().enumerate().map(|(i, r)| (r.scim_user_id, i)).collect();
        let mut children = vec![Vec::new(); rows.len()];
        let mut roots = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match row.manager_id.and_then(|m| index.get(&m)) {
                Some(&parent) => children[parent].push(i),
                None => roots.push(i),
            }
        }
        // Sizes bottom-up without recursion: a node's children come after it in this order.
        let mut order = Vec::with_capacity(rows.len());
        let mut stack = roots.clone();
        while let Some(n) = stack.pop() {
            order.push(n);
            stack.extend(children[n].iter().copied());
        }
        let mut below = vec![0; rows.len()];
        for &n in order.iter().rev() {
            below[n] = children[n].iter().map(|c| 1 + below[*c]).sum();
        }
        Org { rows, index, children, roots, below }
    }

    /// `node` with its reports nested `depth` levels down.
    fn render(&self, node: usize, depth: usize) -> Value {
        let row = &self.rows[node];
        let mut out = json!({
            "scim_user_id": row.scim_user_id,
            "display_name": row.display_name.clone().or_else(|| match (&row.given_name, &row.family_name) {
                (Some(g), Some(f)) => Some(format!("{g} {f}")),
                _ => None,
            }),
            "title": row.title,
            "email": row.email,
            "status": row.status,
            "manager_resolution": row.resolution,
            "direct_reports": self.children[node].len(),
            "total_reports": self.below[node],
        });
        if depth > 0 && !self.children[node].is_empty() {
            out["reports"] = Value::Array(self.children[node].iter().map(|c| self.render(*c, depth - 1)).collect());
        }
        out
    }
}
