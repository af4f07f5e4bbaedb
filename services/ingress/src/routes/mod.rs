//! The SCIM endpoints.

pub mod discovery;
pub mod groups;
pub mod users;

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_scim::ScimError;
use muster_scim::resource::{project, wants_attribute};
use muster_scim::schema::{LIST_RESPONSE_SCHEMA, ResourceKind, ResourceType};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, scim_json};
use crate::extract::none_match;
use crate::params::{ListParams, selection};
use crate::query::user_name_eq;
use crate::render::{groups_json, members_json, render, resource_response};
use crate::store::{self, ResourceRow};

/// Parses a path id; an id that is not ours (not a UUID) is simply not found.
pub fn parse_id(rt: &ResourceType, id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| not_found(rt, id))
}

/// 404 for a resource of this tenant that does not exist (also for other tenants' ids:
/// a tenant cannot even learn that they exist).
pub fn not_found(rt: &ResourceType, id: &str) -> ApiError {
    ApiError(ScimError::not_found(format!("{} {id} not found", rt.name)))
}

/// The attribute kept as rows for each resource type: `members` of a Group, `groups` of a User.
pub fn related_attribute(rt: &ResourceType) -> &'static str {
    match rt.kind {
        ResourceKind::Group => "members",
        ResourceKind::User => "groups",
    }
}

/// Loads `members` (Groups) or `groups` (Users) of `ids` in one query, as SCIM JSON.
pub async fn load_related(
    state: &AppState,
    rt: &ResourceType,
    tenant: Uuid,
    base: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Value>, ApiError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut conn = state.db.acquire().await?;
    let related = match rt.kind {
        ResourceKind::Group => store::members_of(&mut *conn, tenant, ids)
            .await?
            .into_iter()
            .map(|(id, m)| (id, members_json(base, &m)))
            .collect(),
        ResourceKind::User => store::groups_of(&mut *conn, tenant, ids)
            .await?
            .into_iter()
            .map(|(id, g)| (id, groups_json(base, &g)))
            .collect(),
    };
    conn.release();
    Ok(related)
}

/// One resource as SCIM JSON, with its row-kept attribute when `with_related`.
pub async fn render_one(
    state: &AppState,
    rt: &ResourceType,
    tenant: Uuid,
    row: ResourceRow,
    base: &str,
    with_related: bool,
) -> Result<Value, ApiError> {
    let related =
        if with_related { load_related(state, rt, tenant, base, &[row.id]).await?.remove(&row.id) } else { None };
    Ok(render(rt, row, base, related))
}

/// `GET /Users/{id}` and `GET /Groups/{id}`, with `attributes` / `excludedAttributes` and
/// `If-None-Match`.
pub async fn get_resource(
    state: &AppState,
    rt: &'static ResourceType,
    tenant: Uuid,
    base: &str,
    id: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let uuid = parse_id(rt, id)?;
    let mut conn = state.db.acquire().await?;
    let found = store::find(&mut *conn, rt.kind, tenant, uuid, false).await?;
    conn.release();
    let row = found.ok_or_else(|| not_found(rt, id))?;
    if none_match(headers, row.version) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let (attributes, excluded) = selection(params);
    let with_related = wants_attribute(rt, attributes.as_deref(), excluded.as_deref(), related_attribute(rt));
    let version = row.version;
    let doc = render_one(state, rt, tenant, row, base, with_related).await?;
    Ok(resource_response(StatusCode::OK, &project(rt, doc, attributes.as_deref(), excluded.as_deref()), version))
}

/// `GET /Users` and `GET /Groups`: a ListResponse; the row-kept attribute of the page's rows
/// is loaded in one query, and only when it is to be returned.
pub async fn list_resources(
    state: &AppState,
    rt: &'static ResourceType,
    tenant: Uuid,
    base: &str,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let params = ListParams::parse(params, &state.scim)?;
    let with_related =
        wants_attribute(rt, params.attributes.as_deref(), params.excluded.as_deref(), related_attribute(rt));
    let user_name = params.filter.as_ref().and_then(|f| user_name_eq(rt, f));
    let (rows, total) = match user_name {
        // Entra's lookup before a create: shared with the lookups running beside it.
        Some(name) if params.start_index == 1 && params.count > 0 && with_related => {
            let rows: Vec<_> = state.user_lookups.by_name(tenant, name).await?.into_iter().collect();
            let total = rows.len() as i64;
            (rows, total)
        }
        _ => {
            let mut conn = state.db.acquire().await?;
            let (start, count) = (params.start_index - 1, params.count);
            let listed = store::list(&mut conn, rt, tenant, params.filter.as_ref(), start, count, with_related).await?;
            conn.release();
            listed
        }
    };
    // A user's groups came with the list (when asked for); a group's members are read now.
    let mut related: HashMap<Uuid, Value> = match rt.kind {
        ResourceKind::User => rows.iter().filter_map(|r| Some((r.id, groups_json(base, &r.groups()?)))).collect(),
        ResourceKind::Group if with_related => {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            load_related(state, rt, tenant, base, &ids).await?
        }
        ResourceKind::Group => HashMap::new(),
    };
    let resources: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let related = related.remove(&row.id);
            let doc = render(rt, row, base, related);
            project(rt, doc, params.attributes.as_deref(), params.excluded.as_deref())
        })
        .collect();
    let body = json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "startIndex": params.start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    Ok(scim_json(StatusCode::OK, &body))
}
