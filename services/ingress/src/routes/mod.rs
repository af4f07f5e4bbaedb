//! The SCIM endpoints.

pub mod discovery;
pub mod groups;
pub mod users;

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use muster_scim::ScimError;
use muster_scim::resource::project;
use muster_scim::schema::{LIST_RESPONSE_SCHEMA, ResourceType};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, scim_json};
use crate::params::ListParams;
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

/// `GET /Users` and `GET /Groups`: a ListResponse. `related` loads `members` / `groups` for
/// the page's rows in one query when they are to be returned.
pub async fn list_resources<F, Fut>(
    state: &AppState,
    rt: &'static ResourceType,
    tenant: Uuid,
    base: &str,
    params: &HashMap<String, String>,
    related: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Vec<Uuid>) -> Fut,
    Fut: std::future::Future<Output = Result<HashMap<Uuid, Value>, ApiError>>,
{
    let params = ListParams::parse(params, &state.scim)?;
    let mut conn = state.pool.acquire().await?;
    let (rows, total) =
        store::list(&mut conn, rt, tenant, params.filter.as_ref(), params.start_index - 1, params.count).await?;
    drop(conn);
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut related = if ids.is_empty() { HashMap::new() } else { related(ids).await? };
    let resources: Vec<Value> = rows
        .iter()
        .map(|row: &ResourceRow| {
            let doc = crate::render::render(rt, row, base, related.remove(&row.id));
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
