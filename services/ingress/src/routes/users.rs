//! `/Users`: Entra ID's users, kept as canonical documents; each accepted change appends a
//! `scim.user.*` event in the same transaction.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use muster_contracts::EventKind;
use muster_contracts::events::MembersChanged;
use muster_infra::outbox;
use muster_infra::telemetry::current_traceparent;
use muster_scim::ScimError;
use muster_scim::patch::{apply_patch, parse_patch_request};
use muster_scim::resource::normalize_resource;
use muster_scim::schema::{ResourceKind, user_type};
use serde_json::Value;
use sqlx::Connection;
use uuid::Uuid;

use super::{get_resource, list_resources, not_found, parse_id};
use crate::AppState;
use crate::auth::TenantId;
use crate::error::ApiError;
use crate::extract::{BaseUrl, ScimBody, check_if_match};
use crate::render::{event, groups_json, render, resource_response};
use crate::store::{self, ResourceRow, UserStatement, UserWrite};
use crate::user_writes::{user_write, write_user};

const KIND: ResourceKind = ResourceKind::User;

fn count_write(op: &'static str) {
    metrics::counter!("scim_writes_total", "resource" => "User", "op" => op).increment(1);
}

/// `POST /Users`: the user is written together with the other creations that arrive while
/// the previous ones are being written (see [`crate::user_writes::UserWrites`]).
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, user_id))]
pub async fn create(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let (doc, _) = normalize_resource(user_type(), &body)?;
    let id = Uuid::now_v7();
    tracing::Span::current().record("user_id", tracing::field::display(id));
    let user = user_write(tenant, id, doc, 1);
    let (user, stored) = write_user(&state.db, &state.user_inserts, user).await?;
    let Some(stored) = stored else {
        return Err(ApiError::user_name_taken());
    };
    count_write("create");
    let row = stored.row(user.doc);
    let version = row.version;
    Ok(resource_response(StatusCode::CREATED, &render(user_type(), row, &base, None), version))
}

/// `GET /Users/{id}`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, user_id = %id))]
pub async fn get(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_resource(&state, user_type(), tenant, &base, &id, &params, &headers).await
}

/// `GET /Users`.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub async fn list(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list_resources(&state, user_type(), tenant, &base, &params).await
}

/// `PUT /Users/{id}`: replaces every writable attribute.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, user_id = %id))]
pub async fn replace(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let (doc, _) = normalize_resource(user_type(), &body)?;
    write(&state, tenant, &id, &headers, &base, |_| Ok(doc.clone()), "replace").await
}

/// `PATCH /Users/{id}`: answers 200 with the resource, as Entra ID expects.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, user_id = %id))]
pub async fn patch(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
    headers: HeaderMap,
    ScimBody(body): ScimBody,
) -> Result<Response, ApiError> {
    let ops = parse_patch_request(&body)?;
    write(&state, tenant, &id, &headers, &base, |current| Ok(apply_patch(user_type(), current, &ops)?.doc), "patch")
        .await
}

/// Attempts at a write without holding the user's row before taking it (see [`write`]).
const UNLOCKED_ATTEMPTS: u32 = 3;

/// The shared body of PUT and PATCH: read, check `If-Match`, compute the new document, and
/// write it with its event only if it changed (Entra ID re-sends unchanged values every
/// cycle; those must not wake the workers).
///
/// The write is conditional on the version read, so no transaction is held while the change
/// is computed: a read and a write, two round trips (with the lock: begin, read, write,
/// commit). A write that finds the user at another version (a concurrent write came first)
/// starts again from the new document, so no change is lost; after a few such attempts it
/// takes the row lock, so a user written to without pause still gets its turn.
async fn write(
    state: &AppState,
    tenant: Uuid,
    id: &str,
    headers: &HeaderMap,
    base: &str,
    change: impl Fn(&Value) -> Result<Value, ScimError>,
    op: &'static str,
) -> Result<Response, ApiError> {
    let uid = parse_id(user_type(), id)?;
    let mut attempt = 0;
    let row = loop {
        let written = if attempt < UNLOCKED_ATTEMPTS {
            // The read with the others that come meanwhile, then the write likewise.
            let current = state.user_lookups.by_id(tenant, uid).await?;
            match next_version(tenant, uid, current, id, headers, &change)? {
                Next::Unchanged(row) => Written::Unchanged(row),
                Next::Changed { groups, user } => {
                    let (user, stored) = write_user(&state.db, &state.user_updates, user).await?;
                    Written::of(groups, user, stored)
                }
            }
        } else {
            let mut conn = state.db.acquire().await?;
            let mut tx = conn.begin().await?;
            let current = store::find_user_with_groups(&mut *tx, tenant, uid, true).await?;
            let written = match next_version(tenant, uid, current, id, headers, &change)? {
                Next::Unchanged(row) => Written::Unchanged(row),
                Next::Changed { groups, user } => {
                    let mut stored = store::write_users(&mut *tx, UserStatement::Update, &[&user]).await?;
                    Written::of(groups, user, stored.remove(&uid))
                }
            };
            tx.commit().await?;
            conn.release();
            written
        };
        match written {
            Written::Changed(row) => {
                count_write(op);
                break row;
            }
            Written::Unchanged(row) => break row,
            Written::Stale => {
                metrics::counter!("scim_write_conflicts_total", "resource" => "User").increment(1);
                attempt += 1;
            }
        }
    };
    let groups = row.groups().map(|g| groups_json(base, &g));
    let version = row.version;
    Ok(resource_response(StatusCode::OK, &render(user_type(), row, base, groups), version))
}

/// What one attempt of [`write`] did.
enum Written {
    Changed(ResourceRow),
    Unchanged(ResourceRow),
    /// Another write came between the read and this one: nothing written.
    Stale,
}

impl Written {
    /// The outcome of writing `user`, read with `groups`: `stored` if it was written.
    fn of(groups: Option<Value>, user: UserWrite, stored: Option<store::Stored>) -> Written {
        match stored {
            Some(stored) => Written::Changed(ResourceRow { groups, ..stored.row(user.doc) }),
            None => Written::Stale,
        }
    }
}

/// What a PUT or PATCH makes of the user as read.
enum Next {
    Unchanged(ResourceRow),
    Changed { groups: Option<Value>, user: UserWrite },
}

/// Checks `If-Match` against the user read (`current`) and applies `change` to it.
fn next_version(
    tenant: Uuid,
    uid: Uuid,
    current: Option<ResourceRow>,
    id: &str,
    headers: &HeaderMap,
    change: &impl Fn(&Value) -> Result<Value, ScimError>,
) -> Result<Next, ApiError> {
    let current = current.ok_or_else(|| not_found(user_type(), id))?;
    check_if_match(headers, current.version)?;
    let doc = change(&current.resource)?;
    if doc == current.resource {
        return Ok(Next::Unchanged(current));
    }
    Ok(Next::Changed { groups: current.groups, user: user_write(tenant, uid, doc, current.version + 1) })
}

/// `DELETE /Users/{id}`: removes the SCIM resource and its memberships. The team member is
/// deactivated downstream, never deleted.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant, user_id = %id))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(TenantId(tenant)): Extension<TenantId>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let uid = parse_id(user_type(), &id)?;
    let mut conn = state.db.acquire().await?;
    let mut tx = conn.begin().await?;
    let current = store::find(&mut *tx, KIND, tenant, uid, true).await?.ok_or_else(|| not_found(user_type(), &id))?;
    check_if_match(&headers, current.version)?;
    let mut events = membership_removals(&mut tx, tenant, uid).await?;
    store::delete(&mut tx, KIND, tenant, uid).await?;
    events.push(event(tenant, EventKind::ScimUserDeleted, uid, current.version + 1, chrono::Utc::now()));
    outbox::append(&mut tx, &events, &current_traceparent()).await?;
    tx.commit().await?;
    conn.release();
    count_write("delete");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Takes a deleted resource out of every group, with a `members_changed` event per group.
pub async fn membership_removals(
    conn: &mut sqlx::PgConnection,
    tenant: Uuid,
    member: Uuid,
) -> Result<Vec<muster_contracts::EventEnvelope>, ApiError> {
    let now = chrono::Utc::now();
    let groups = store::remove_from_all_groups(conn, tenant, member).await?;
    Ok(groups
        .into_iter()
        .map(|(group, version)| {
            let delta = MembersChanged { added: Vec::new(), removed: vec![member.to_string()] };
            event(tenant, EventKind::ScimGroupMembersChanged, group, version, now)
                .with_data(serde_json::to_value(delta).unwrap_or(Value::Null))
        })
        .collect())
}
