//! Edits of the settings a member holds under their assignment: an admin's
//! (`PATCH /api/v1/members/{id}/assignment`) and a manager's, for a direct report's data
//! capture (`PATCH /api/v1/members/{manager}/reports/{id}/capture`). Both are refused under an
//! `automatic` assignment, and go through the same recomputation as the worker's, so seats,
//! pending settings, history and `member.assignment_applied` follow.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_domain::assignment::{EditRefused, SettingsEdit, manager_may_toggle};
use muster_infra::tenancy::Principal;
use muster_members::assignments::{self as engine, ApplyError, Batch};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::assignments::internal;
use crate::members::{full_view, no_member, tenant_of};
use crate::problem::Problem;

fn refusal(refused: EditRefused) -> Problem {
    match refused {
        EditRefused::Automatic { .. } => Problem::assignment_governed(refused.to_string()),
        EditRefused::ManagersMayNot | EditRefused::NotDirectManager => Problem::not_permitted(refused.to_string()),
    }
}

/// The member's status; 404 if there is none, 409 unless active.
async fn require_active(conn: &mut PgConnection, tenant: Uuid, member: Uuid, id: &str) -> Result<(), Problem> {
    let status: Option<String> =
        sqlx::query_scalar("select status from members.members where tenant_id = $1 and scim_user_id = $2")
            .bind(tenant)
            .bind(member)
            .fetch_optional(&mut *conn)
            .await?;
    match status.as_deref() {
        None => Err(no_member(id)),
        Some("active") => Ok(()),
        Some(other) => Err(Problem::member_inactive(format!("member {id} is {other}"))),
    }
}

/// Checks `edit` against the catalog and applies it to `member` in `tx` (which holds the lock).
async fn apply_edit(
    tx: &mut PgConnection,
    tenant: Uuid,
    member: Uuid,
    edit: SettingsEdit,
    cause: String,
) -> Result<(), Problem> {
    let catalog = engine::load_catalog(tx, tenant).await.map_err(internal)?;
    let problems = catalog.problems_with(&edit.named());
    if !problems.is_empty() {
        return Err(Problem::invalid_assignment(problems));
    }
    let batch = Batch { members: vec![(member, cause)], edits: [(member, edit)].into(), recheck_all_seats: false };
    match engine::apply(tx, tenant, &batch).await {
        Ok(_) => Ok(()),
        Err(ApplyError::Refused { refused, .. }) => Err(refusal(refused)),
        Err(other) => Err(internal(other)),
    }
}

/// `PATCH /api/v1/members/{id}/assignment` with `{"seats": […], "permissions": {workspace:
/// profile | null}, "capture": {kind: bool}}` (each part optional): the settings the member
/// holds, under a `manual` assignment.
pub async fn edit(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<SettingsEdit>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let member = Uuid::parse_str(&id).map_err(|_| no_member(&id))?;
    let Json(edit) = body.map_err(Problem::bad_body)?;
    if edit.is_empty() {
        return Err(Problem::bad_request("the body names no seats, permissions or capture to change"));
    }
    let mut tx = state.pool.begin().await?;
    engine::lock(&mut tx, tenant).await?;
    require_active(&mut tx, tenant, member, &id).await?;
    apply_edit(&mut tx, tenant, member, edit, "edited by an admin".to_string()).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, scim_user_id = %member, "member settings edited by an admin");
    Ok(Json(full_view(&state, tenant, member, &id).await?).into_response())
}

/// Body of a manager's data-capture toggle.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureBody {
    capture: BTreeMap<String, bool>,
}

/// `PATCH /api/v1/members/{manager}/reports/{id}/capture` with `{"capture": {kind: bool}}`:
/// a manager turns data capture on or off for a direct report — only if the company lets
/// managers do so and the report's assignment is `manual`.
pub async fn manager_capture(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((manager_id, id)): Path<(String, String)>,
    body: Result<Json<CaptureBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let manager = Uuid::parse_str(&manager_id).map_err(|_| no_member(&manager_id))?;
    let member = Uuid::parse_str(&id).map_err(|_| no_member(&id))?;
    let Json(body) = body.map_err(Problem::bad_body)?;
    if body.capture.is_empty() {
        return Err(Problem::bad_request("capture names no data-capture kind"));
    }
    let mut tx = state.pool.begin().await?;
    engine::lock(&mut tx, tenant).await?;
    require_active(&mut tx, tenant, manager, &manager_id).await?;
    require_active(&mut tx, tenant, member, &id).await?;
    let allowed: bool = sqlx::query_scalar(
        "select coalesce((select managers_toggle_data_capture from tenancy.tenant_settings where tenant_id = $1), false)",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    let reports_to: Option<Uuid> =
        sqlx::query_scalar("select manager_id from hierarchy.links where tenant_id = $1 and scim_user_id = $2")
            .bind(tenant)
            .bind(member)
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    let governing =
        engine::governing_of(&mut tx, tenant, member).await.map_err(internal)?.ok_or_else(|| no_member(&id))?;
    manager_may_toggle(allowed, manager, reports_to, &governing).map_err(refusal)?;
    let edit = SettingsEdit { capture: body.capture, ..SettingsEdit::default() };
    apply_edit(&mut tx, tenant, member, edit, format!("data capture changed by their manager {manager}")).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, scim_user_id = %member, manager_id = %manager, "data capture toggled by manager");
    Ok(Json(full_view(&state, tenant, member, &id).await?).into_response())
}
