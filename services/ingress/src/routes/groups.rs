//! `/Groups`: memberships are rows, so a PATCH costs what its delta costs, whatever the
//! group's size; each accepted change appends `scim.group.*` events in the same transaction.

use std::collections::{HashMap, HashSet};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use muster_contracts::events::MembersChanged;
use muster_contracts::{EventEnvelope, EventKind};
use muster_infra::outbox;
use muster_infra::telemetry::current_traceparent;
use muster_scim::ScimError;
use muster_scim::patch::{MemberChange, apply_patch, parse_patch_request};
use muster_scim::resource::{MemberRef, normalize_resource};
use muster_scim::schema::{ResourceKind, group_type};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::users::membership_removals;
use super::{get_resource, list_resources, not_found, parse_id, render_one};
use crate::AppState;
use crate::auth::TenantId;
use crate::error::ApiError;
use crate::extract::{BaseUrl, ScimBody, check_if_match};
use crate::render::{event, resource_response};
use crate::store::{self, ResourceRow};

const KIND: ResourceKind = ResourceKind::Group;

fn count_write(op: &'static str) {
    metrics::counter!("scim_writes_total", "resource" => "Group", "op" => op).increment(1);
}

/// The net membership delta of one request.
#[derive(Default)]
struct Delta {
    added: Vec<Uuid>,
    removed: Vec<Uuid>,
}

impl Delta {
    fn add(&mut self, ids: Vec<Uuid>) {
        for id in ids {
            match self.removed.iter().position(|r| *r == id) {
                Some(i) => {
                    self.removed.swap_remove(i);
                }
                None => self.added.push(id),
            }
        }
    }
    fn remove(&mut self, ids: Vec<Uuid>) {
        for id in ids {
            match self.added.iter().position(|a| *a == id) {
                Some(i) => {
                    self.added.swap_remove(i);
                }
                None => self.removed.push(id),
            }
        }
    }
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
    fn event(&self, tenant: Uuid, group: Uuid, version: i64, at: DateTime<Utc>) -> EventEnvelope {
        let data = MembersChanged {
            added: self.added.iter().map(Uuid::to_string).collect(),
            removed: self.removed.iter().map(Uuid::to_string).collect(),
        };
        event(tenant, EventKind::ScimGroupMembersChanged, group, version, at)
            .with_data(serde_json::to_value(data).unwrap_or(Value::Null))
    }
}

/// Adds the referenced members; every one must exist in this tenant, else the request is
/// refused (the caller's transaction rolls back what was added), as is a group inside itself.
/// Returns the ids that were not members before.
async fn add_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    group: Uuid,
    refs: &[MemberRef],
) -> Result<Vec<Uuid>, ApiError> {
    let mut ids = Vec::with_capacity(refs.len());
    let mut unknown = Vec::new();
    let mut seen = HashSet::with_capacity(refs.len());
    for r in refs {
        match Uuid::parse_str(&r.value) {
            Ok(id) if id == group => {
                return Err(ScimError::invalid_value("a group cannot be a member of itself").into());
            }
            Ok(id) => {
                if seen.insert(id) {
                    ids.push(id);
                }
            }
            Err(_) => unknown.push(r.value.clone()),
        }
    }
    let (added, existing) = store::add_existing_members(conn, tenant, group, &ids).await?;
    unknown.extend(ids.iter().filter(|id| !existing.contains(id)).map(Uuid::to_string));
    if !unknown.is_empty() {
        let shown: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
        return Err(ScimError::invalid_value(format!(
            "{} member(s) do not exist: {}{}",
            unknown.len(),
            shown.join(", "),
            if unknown.len() > shown.len() { ", …" } else { "" }
        ))
        .into());
    }
    Ok(added)
}

async fn apply_member_changes(
    conn: &mut PgConnection,
    tenant: Uuid,
    group: Uuid,
    changes: Vec<MemberChange>,
) -> Result<Delta, ApiError> {
    let mut delta = Delta::default();
    for change in changes {
        match change {
            MemberChange::Add(refs) => delta.add(add_members(conn, tenant, group, &refs).await?),
            MemberChange::Remove(values) => {
                // An id that is not a UUID cannot be a member: removing it changes nothing.
                let ids: Vec<Uuid> = values.iter().filter_map(|v| Uuid::parse_str(v).ok()).collect();
                delta.remove(store::remove_members(conn, tenant, group, Some(&ids)).await?);
            }
            MemberChange::RemoveAll => delta.remove(store::remove_members(conn, tenant, group, None).await?),
            MemberChange::Replace(refs) => {
                delta.remove(store::remove_members(conn, tenant, group, None).await?);
                delta.add(add_members(conn, tenant, group, &refs).await?);
            }
        }
    }
    Ok(delta)
}

/// `POST /Groups`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, group_id))]
pub async fn create(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let (doc, members) = normalize_resource(group_type(), &body)?;
    let id = Uuid::now_v7();
    tracing::Span::current().record("group_id", tracing::field::display(id));
    let mut conn = state.db.acquire().await?;
    let mut tx = conn.begin().await?;
    let row = store::insert_group(&mut tx, tenant, id, &doc).await?;
    let delta = apply_member_changes(&mut tx, tenant, id, vec![MemberChange::Add(members.unwrap_or_default())]).await?;
    let mut events = vec![event(tenant, EventKind::ScimGroupUpserted, id, row.version, row.updated_at)];
    if !delta.is_empty() {
        events.push(delta.event(tenant, id, row.version, row.updated_at));
    }
    outbox::append(&mut tx, &events, &current_traceparent()).await?;
    tx.commit().await?;
    conn.release();
    count_write("create");
    let version = row.version;
    let body = render_one(&state, group_type(), tenant, row, &base, !delta.is_empty()).await?;
    Ok(resource_response(StatusCode::CREATED, &body, version))
}

/// `GET /Groups/{id}` (Entra ID asks with `excludedAttributes=members`; members are then not
/// even read).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, group_id = %id))]
pub async fn get(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_resource(&state, group_type(), tenant, &base, &id, &params, &headers).await
}

/// `GET /Groups`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub async fn list(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list_resources(&state, group_type(), tenant, &base, &params).await
}

/// `PUT /Groups/{id}`: replaces the document and the whole membership.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, group_id = %id))]
pub async fn replace(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let (doc, members) = normalize_resource(group_type(), &body)?;
    let row =
        write(&state, tenant, &id, &headers, doc, vec![MemberChange::Replace(members.unwrap_or_default())], "replace")
            .await?;
    let version = row.version;
    let body = render_one(&state, group_type(), tenant, row, &base, true).await?;
    Ok(resource_response(StatusCode::OK, &body, version))
}

/// `PATCH /Groups/{id}`: answers 204, as Entra ID expects.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, group_id = %id))]
pub async fn patch(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let gid = parse_id(group_type(), &id)?;
    let ops = parse_patch_request(&body)?;
    let mut conn = state.db.acquire().await?;
    let mut tx = conn.begin().await?;
    let row = match patch_members(&mut tx, tenant, gid, &id, &headers, &ops).await? {
        Some(row) => row,
        None => {
            let current =
                store::find(&mut *tx, KIND, tenant, gid, true).await?.ok_or_else(|| not_found(group_type(), &id))?;
            check_if_match(&headers, current.version)?;
            let outcome = apply_patch(group_type(), &current.resource, &ops)?;
            commit_change(&mut tx, tenant, current, outcome.doc, outcome.member_changes, "patch").await?
        }
    };
    tx.commit().await?;
    conn.release();
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&crate::render::etag(row.version)) {
        response.headers_mut().insert(axum::http::header::ETAG, v);
    }
    Ok(response)
}

/// A PATCH that only adds or removes members (Entra's membership changes), without
/// `If-Match`: the memberships are written first and the group's row is held only to write
/// its next version and event, so concurrent PATCHes of one group insert their members side
/// by side instead of one after the other under the row's lock (the largest group's 500
/// PATCHes of 100 members were the memberships phase's critical path in the benchmark).
/// Concurrent changes of one member still serialize on its membership row, and each delta is
/// what its own statements changed, under a version written after them: replayed in version
/// order, the events give the final membership. `None`: anything else (the caller takes the
/// row first).
async fn patch_members(
    tx: &mut PgConnection,
    tenant: Uuid,
    gid: Uuid,
    id: &str,
    headers: &HeaderMap,
    ops: &[muster_scim::patch::PatchOperation],
) -> Result<Option<ResourceRow>, ApiError> {
    if headers.contains_key(axum::http::header::IF_MATCH) {
        return Ok(None);
    }
    let current = store::find(&mut *tx, KIND, tenant, gid, false).await?.ok_or_else(|| not_found(group_type(), id))?;
    let outcome = apply_patch(group_type(), &current.resource, ops)?;
    let members_only = outcome.doc == current.resource
        && outcome.member_changes.iter().all(|c| matches!(c, MemberChange::Add(_) | MemberChange::Remove(_)));
    if !members_only {
        return Ok(None);
    }
    let delta = apply_member_changes(tx, tenant, gid, outcome.member_changes).await?;
    if delta.is_empty() {
        return Ok(Some(current));
    }
    let held = store::hold_group_version(tx, tenant, gid).await?.ok_or_else(|| not_found(group_type(), id))?;
    let row = write_next_version(tx, tenant, held, None, delta, "patch").await?;
    Ok(Some(row))
}

async fn write(
    state: &AppState,
    tenant: Uuid,
    id: &str,
    headers: &HeaderMap,
    doc: Value,
    changes: Vec<MemberChange>,
    op: &'static str,
) -> Result<ResourceRow, ApiError> {
    let gid = parse_id(group_type(), id)?;
    let mut conn = state.db.acquire().await?;
    let mut tx = conn.begin().await?;
    let current = store::find(&mut *tx, KIND, tenant, gid, true).await?.ok_or_else(|| not_found(group_type(), id))?;
    check_if_match(headers, current.version)?;
    let row = commit_change(&mut tx, tenant, current, doc, changes, op).await?;
    tx.commit().await?;
    conn.release();
    Ok(row)
}

/// Writes the membership delta and, if anything changed, the next version (with the new
/// document if it changed) and `scim.group.upserted` and/or `scim.group.members_changed`.
/// The caller holds the group's row.
async fn commit_change(
    tx: &mut PgConnection,
    tenant: Uuid,
    current: ResourceRow,
    doc: Value,
    changes: Vec<MemberChange>,
    op: &'static str,
) -> Result<ResourceRow, ApiError> {
    let delta = apply_member_changes(tx, tenant, current.id, changes).await?;
    let doc = (doc != current.resource).then_some(doc);
    if doc.is_none() && delta.is_empty() {
        return Ok(current);
    }
    write_next_version(tx, tenant, current, doc, delta, op).await
}

/// Writes the group's next version after `current` (whose row the caller holds): its new
/// document `doc` if any, with `scim.group.upserted` and/or `scim.group.members_changed`.
async fn write_next_version(
    tx: &mut PgConnection,
    tenant: Uuid,
    current: ResourceRow,
    doc: Option<Value>,
    delta: Delta,
    op: &'static str,
) -> Result<ResourceRow, ApiError> {
    let gid = current.id;
    let (version, at) = (current.version + 1, Utc::now());
    let mut events = Vec::new();
    if doc.is_some() {
        events.push(event(tenant, EventKind::ScimGroupUpserted, gid, version, at));
    }
    if !delta.is_empty() {
        metrics::counter!("scim_group_members_changed_total")
            .increment((delta.added.len() + delta.removed.len()) as u64);
        events.push(delta.event(tenant, gid, version, at));
    }
    let row = store::write_group_with_events(tx, tenant, gid, doc.as_ref(), at, &events).await?;
    count_write(op);
    Ok(row)
}

/// `DELETE /Groups/{id}`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, group_id = %id))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gid = parse_id(group_type(), &id)?;
    let mut conn = state.db.acquire().await?;
    let mut tx = conn.begin().await?;
    let current = store::find(&mut *tx, KIND, tenant, gid, true).await?.ok_or_else(|| not_found(group_type(), &id))?;
    check_if_match(&headers, current.version)?;
    let mut events = membership_removals(&mut tx, tenant, gid).await?;
    store::delete(&mut tx, KIND, tenant, gid).await?;
    // The name goes with the event: consumers can no longer look it up.
    let name = current.resource.get("displayName").cloned().unwrap_or(Value::Null);
    events.push(
        event(tenant, EventKind::ScimGroupDeleted, gid, current.version + 1, Utc::now())
            .with_data(serde_json::json!({"display_name": name})),
    );
    outbox::append(&mut tx, &events, &current_traceparent()).await?;
    tx.commit().await?;
    conn.release();
    count_write("delete");
    Ok(StatusCode::NO_CONTENT.into_response())
}
