//! `/api/v1/members…` and `/api/v1/provisioning-log`: what the normalizer made of each SCIM
//! user, for the tenant's admin.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use muster_infra::tenancy::Principal;
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
struct MemberRow {
    scim_user_id: Uuid,
    status: String,
    skip_reason: Option<String>,
    profile: Value,
    imported_at: Option<DateTime<Utc>>,
    deactivated_at: Option<DateTime<Utc>>,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn member_json(row: MemberRow) -> Value {
    let mut out = json!({
        "scim_user_id": row.scim_user_id,
        "status": row.status,
        "skip_reason": row.skip_reason,
        // Set by the hierarchy worker (issue 5); the references Entra sent are in manager_ref.
        "manager_id": Value::Null,
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

const COLUMNS: &str =
    "scim_user_id, status, skip_reason, profile, imported_at, deactivated_at, version, created_at, updated_at";

#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /api/v1/members?status=active|deactivated|skipped&limit=&offset=`.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<ListParams>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    if let Some(s) = &params.status
        && !["active", "deactivated", "skipped"].contains(&s.as_str())
    {
        return Err(Problem::bad_request(format!("status '{s}' is not one of active, deactivated, skipped")));
    }
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    let offset = params.offset.unwrap_or(0).max(0);
    let rows = sqlx::query_as::<_, MemberRow>(&format!(
        "select {COLUMNS} from members.members where tenant_id = $1 and ($2::text is null or status = $2)
         order by created_at, scim_user_id limit $3 offset $4"
    ))
    .bind(tenant)
    .bind(&params.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "select count(*) from members.members where tenant_id = $1 and ($2::text is null or status = $2)",
    )
    .bind(tenant)
    .bind(&params.status)
    .fetch_one(&state.pool)
    .await?;
    let members: Vec<Value> = rows.into_iter().map(member_json).collect();
    Ok(Json(json!({"total": total, "limit": limit, "offset": offset, "members": members})).into_response())
}

/// `GET /api/v1/members/{scim_user_id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let missing = || Problem::not_found(format!("no member with SCIM id {id}"));
    let user = Uuid::parse_str(&id).map_err(|_| missing())?;
    let row = sqlx::query_as::<_, MemberRow>(&format!(
        "select {COLUMNS} from members.members where tenant_id = $1 and scim_user_id = $2"
    ))
    .bind(tenant)
    .bind(user)
    .fetch_optional(&state.pool)
    .await?
    .ok_or_else(missing)?;
    Ok(Json(member_json(row)).into_response())
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
    Query(params): Query<LogParams>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
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
