//! `/api/v1/members…` and `/api/v1/provisioning-log`: what the normalizer made of each SCIM
//! user, for the tenant's admin.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use muster_domain::provenance::{EditRefused, Field, FieldValues};
use muster_infra::tenancy::Principal;
use muster_members::ManualEdit;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::problem::Problem;

/// The tenant of a tenant-admin token; operator tokens have none.
pub fn tenant_of(principal: Principal) -> Result<Uuid, Problem> {
    match principal {
        Principal::TenantAdmin(t) => Ok(t),
        Principal::Operator => Err(Problem::not_found("an operator token belongs to no tenant")),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MemberRow {
    scim_user_id: Uuid,
    status: String,
    skip_reason: Option<String>,
    profile: Value,
    imported_at: Option<DateTime<Utc>>,
    deactivated_at: Option<DateTime<Utc>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    manager_id: Option<Uuid>,
    manager_status: Option<String>,
    resolution: String,
    via: Option<String>,
    resolution_detail: Option<String>,
    candidates: Option<Vec<Uuid>>,
    cycle_path: Option<Vec<Uuid>>,
    assignment_id: Option<Uuid>,
    assignment_name: Option<String>,
    assignment_mode: Option<String>,
    assignment_settings: Option<Value>,
    pending_seats: Option<Value>,
}

pub(crate) fn member_json(row: MemberRow) -> Value {
    // The list's summary; one member's view has the whole of it (`assignments::view`).
    let assignment = row.assignment_id.map(|id| {
        json!({"id": id, "name": row.assignment_name, "mode": row.assignment_mode,
               "settings": row.assignment_settings, "pending_seats": row.pending_seats})
    });
    let mut out = json!({
        "scim_user_id": row.scim_user_id,
        "status": row.status,
        "skip_reason": row.skip_reason,
        "manager_id": row.manager_id,
        // A deactivated manager stays linked and is shown as such.
        "manager_status": row.manager_status,
        "manager_resolution": {
            "status": row.resolution,
            "via": row.via,
            "detail": row.resolution_detail,
            "candidates": row.candidates,
            "path": row.cycle_path,
        },
        "assignment": assignment,
        "imported_at": row.imported_at,
        "deactivated_at": row.deactivated_at,
        "version": row.version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    });
    if let (Some(map), Value::Object(profile)) = (out.as_object_mut(), row.profile) {
        map.extend(profile);
    }
    out
}

/// The member view's select list and joins: the member (`m`), its node in the hierarchy
/// (`h`) and its manager (`mg`).
pub(crate) const MEMBER_SELECT: &str = "select m.scim_user_id, m.status, m.skip_reason, m.profile, m.imported_at,
        m.deactivated_at, m.version, m.created_at, m.updated_at, h.manager_id, mg.status as manager_status,
        coalesce(h.resolution, 'none') as resolution, h.via, h.detail as resolution_detail, h.candidates, h.cycle_path,
        s.assignment_id, s.assignment_name, s.mode as assignment_mode, s.effective as assignment_settings,
        s.pending as pending_seats
    from members.members m
    left join assignments.member_state s on s.tenant_id = m.tenant_id and s.scim_user_id = m.scim_user_id
    left join hierarchy.links h on h.tenant_id = m.tenant_id and h.scim_user_id = m.scim_user_id
    left join members.members mg on mg.tenant_id = m.tenant_id and mg.scim_user_id = h.manager_id";

#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    /// `resolved`, `pending`, `ambiguous`, `cycle` or `none`: e.g. the members whose manager
    /// is not resolved, with the reasons.
    manager_resolution: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /api/v1/members?status=active|deactivated|skipped&limit=&offset=`.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Query(params) = params.map_err(Problem::bad_query)?;
    if let Some(s) = &params.status
        && !["active", "deactivated", "skipped"].contains(&s.as_str())
    {
        return Err(Problem::bad_request(format!("status '{s}' is not one of active, deactivated, skipped")));
    }
    if let Some(r) = &params.manager_resolution
        && !["resolved", "pending", "ambiguous", "cycle", "none"].contains(&r.as_str())
    {
        return Err(Problem::bad_request(format!(
            "manager_resolution '{r}' is not one of resolved, pending, ambiguous, cycle, none"
        )));
    }
    let (limit, offset) = page(params.limit, params.offset);
    let filter = "where m.tenant_id = $1 and ($2::text is null or m.status = $2)
                  and ($3::text is null or coalesce(h.resolution, 'none') = $3)";
    let rows = sqlx::query_as::<_, MemberRow>(&format!(
        "{MEMBER_SELECT} {filter} order by m.created_at, m.scim_user_id limit $4 offset $5"
    ))
    .bind(tenant)
    .bind(&params.status)
    .bind(&params.manager_resolution)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "select count(*) from members.members m
         left join hierarchy.links h on h.tenant_id = m.tenant_id and h.scim_user_id = m.scim_user_id {filter}"
    ))
    .bind(tenant)
    .bind(&params.status)
    .bind(&params.manager_resolution)
    .fetch_one(&state.pool)
    .await?;
    let members: Vec<Value> = rows.into_iter().map(member_json).collect();
    Ok(Json(json!({"total": total, "limit": limit, "offset": offset, "members": members})).into_response())
}

pub(crate) async fn load(state: &AppState, tenant: Uuid, user: Uuid) -> Result<Option<MemberRow>, Problem> {
    Ok(sqlx::query_as::<_, MemberRow>(&format!("{MEMBER_SELECT} where m.tenant_id = $1 and m.scim_user_id = $2"))
        .bind(tenant)
        .bind(user)
        .fetch_optional(&state.pool)
        .await?)
}

/// A list request's page: `limit` clamped to 1–1000 (100 when absent), `offset` at least 0.
pub(crate) fn page(limit: Option<i64>, offset: Option<i64>) -> (i64, i64) {
    (limit.unwrap_or(100).clamp(1, 1000), offset.unwrap_or(0).max(0))
}

pub(crate) fn no_member(id: &str) -> Problem {
    Problem::not_found(format!("no member with SCIM id {id}"))
}

/// `GET /api/v1/members/{scim_user_id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let user = Uuid::parse_str(&id).map_err(|_| no_member(&id))?;
    Ok(Json(full_view(&state, tenant, user, &id).await?).into_response())
}

/// One member's view: the member with their whole assignment (history included).
pub(crate) async fn full_view(state: &AppState, tenant: Uuid, user: Uuid, id: &str) -> Result<Value, Problem> {
    let row = load(state, tenant, user).await?.ok_or_else(|| no_member(id))?;
    let mut view = member_json(row);
    let mut conn = state.pool.acquire().await?;
    view["assignment"] = muster_members::assignments::view(&mut conn, tenant, user).await?;
    Ok(view)
}

/// `PATCH /api/v1/members/{scim_user_id}` with `{"title": "…", "country": "…"}`: sets fields
/// Entra ID left empty, each once (provenance). All or nothing; every refusal is listed in
/// the problem's `errors` with its reason.
pub async fn patch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let user = Uuid::parse_str(&id).map_err(|_| no_member(&id))?;
    let Json(body) = body.map_err(Problem::bad_body)?;
    let edits = parse_edits(&body)?;
    let mut tx = state.pool.begin().await?;
    let outcome = muster_members::edit_manual(&mut tx, tenant, user, &edits).await?;
    match outcome {
        ManualEdit::NotFound => return Err(no_member(&id)),
        ManualEdit::Gone => {
            return Err(Problem::member_gone(format!(
                "the SCIM user {id} was deleted; the member is kept for history and cannot be edited"
            )));
        }
        ManualEdit::Refused(refusals) => return Err(refused(&refusals)),
        ManualEdit::Applied(change) => {
            tx.commit().await?;
            tracing::info!(tenant_id = %tenant, scim_user_id = %user, change = ?change.map(|c| c.action),
                "member fields set manually");
        }
    }
    Ok(Json(full_view(&state, tenant, user, &id).await?).into_response())
}

/// The edits of a PATCH body: an object of field name → non-blank string.
fn parse_edits(body: &Value) -> Result<FieldValues, Problem> {
    let Some(object) = body.as_object().filter(|o| !o.is_empty()) else {
        return Err(Problem::bad_request("the body must be a non-empty JSON object of field names to values"));
    };
    let mut edits = FieldValues::default();
    let mut errors = Vec::new();
    for (name, value) in object {
        match (Field::parse(name), value.as_str().map(str::trim)) {
            (None, _) => errors.push(json!({"field": name, "reason": format!(
                "unknown field; settable fields are {}", Field::ALL.map(Field::name).join(", "))})),
            (Some(_), None | Some("")) => {
                errors.push(json!({"field": name, "reason": "the value must be a non-blank string"}));
            }
            (Some(field), Some(text)) => edits.set(field, text),
        }
    }
    if errors.is_empty() {
        Ok(edits)
    } else {
        Err(Problem::invalid_field("the body names unknown fields or carries values that are not text", json!(errors)))
    }
}

/// The problem for a refused edit: 409 when a field is locked, 422 when only values are wrong.
fn refused(refusals: &[EditRefused]) -> Problem {
    let errors: Vec<Value> =
        refusals.iter().map(|r| json!({"field": r.field().name(), "reason": r.to_string()})).collect();
    let detail = refusals.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
    if refusals.iter().any(|r| !matches!(r, EditRefused::Invalid(..))) {
        Problem::field_locked(detail, json!(errors))
    } else {
        Problem::invalid_field(detail, json!(errors))
    }
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: i64,
    scim_user_id: Uuid,
    action: String,
    detail: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub struct LogParams {
    scim_user_id: Option<Uuid>,
    limit: Option<i64>,
    before: Option<i64>,
}

/// `GET /api/v1/provisioning-log?scim_user_id=&limit=&before=`: newest first; `before` is the
/// `id` of the last entry of the previous page.
pub async fn provisioning_log(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Query(params) = params.map_err(Problem::bad_query)?;
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let rows: Vec<LogRow> = sqlx::query_as(
        "select id, scim_user_id, action, detail, created_at from members.provisioning_log
         where tenant_id = $1 and ($2::uuid is null or scim_user_id = $2) and ($3::bigint is null or id < $3)
         order by id desc limit $4",
    )
    .bind(tenant)
    .bind(params.scim_user_id)
    .bind(params.before)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let entries: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"id": r.id, "scim_user_id": r.scim_user_id, "action": r.action, "reason": r.detail, "at": r.created_at}))
        .collect();
    Ok(Json(json!({"entries": entries})).into_response())
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn a_page_is_clamped_to_what_the_api_serves() {
        assert_eq!(page(None, None), (100, 0));
        assert_eq!(page(Some(0), Some(-5)), (1, 0));
        assert_eq!(page(Some(5_000), Some(7)), (1_000, 7));
    }
}
