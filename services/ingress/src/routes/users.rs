//! `/Users`: Entra ID's users, kept as canonical documents; each accepted change appends a
//! `scim.user.*` event in the same transaction.

use std::collections::HashMap;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use muster_contracts::EventKind;
use muster_contracts::events::MembersChanged;
use muster_infra::db::WarmPool;
use muster_infra::outbox;
use muster_infra::telemetry::current_traceparent;
use muster_infra::write_batch::WriteBatcher;
use muster_scim::ScimError;
use muster_scim::patch::{apply_patch, parse_patch_request};
use muster_scim::resource::normalize_resource;
use muster_scim::schema::{ResourceKind, user_type};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use super::{get_resource, list_resources, not_found, parse_id};
use crate::AppState;
use crate::auth::TenantId;
use crate::error::ApiError;
use crate::extract::{BaseUrl, ScimBody, check_if_match};
use crate::render::{event, groups_json, render, resource_response};
use crate::store::{self, NewUser, ResourceRow};

const KIND: ResourceKind = ResourceKind::User;

fn count_write(op: &'static str) {
    metrics::counter!("scim_writes_total", "resource" => "User", "op" => op).increment(1);
}

/// `POST /Users`: the user is written together with the other creations that arrive while
/// the previous ones are being written (see [`UserInserts`]).
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
    let at = Utc::now();
    let events = vec![event(tenant, EventKind::ScimUserUpserted, id, 1, at)];
    let user = NewUser { tenant, id, doc, at, events, traceparent: current_traceparent() };
    let Some((user, outcome)) = state.user_inserts.submit(user).await else {
        tracing::error!("no writer answered the creation of a user");
        return Err(ScimError::unavailable().into());
    };
    let inserted = match outcome {
        Insert::Written(inserted) => inserted,
        Insert::Taken => return Err(taken()),
        // The batch failed as a whole: alone, this user either gets in or gets its own error.
        Insert::Failed => {
            let mut conn = state.db.acquire().await?;
            let mut written = store::insert_users_with_events(&mut *conn, std::slice::from_ref(&user)).await?;
            conn.release();
            written.remove(&id).ok_or_else(taken)?
        }
    };
    count_write("create");
    let row = inserted.row(user.doc);
    Ok(resource_response(StatusCode::CREATED, &render(user_type(), &row, &base, None), row.version))
}

fn taken() -> ApiError {
    ApiError(ScimError::uniqueness("a User with this userName already exists"))
}

/// How many creations one statement writes at most, and how many such statements run at once.
const INSERT_BATCH_MAX: usize = 64;
const INSERT_BATCHES_IN_FLIGHT: usize = 2;

/// What became of a user handed to [`UserInserts`].
#[derive(Debug)]
pub enum Insert {
    Written(store::Inserted),
    /// Its `userName` is taken: nothing was written.
    Taken,
    /// The batch it was in failed; nothing of the batch was written.
    Failed,
}

/// The writer of `POST /Users`: concurrent creations share a statement and a commit.
pub type UserInserts = WriteBatcher<NewUser, (NewUser, Insert)>;

/// Starts the writers of [`UserInserts`] on the current runtime.
pub fn user_inserts(db: WarmPool) -> UserInserts {
    WriteBatcher::spawn("user_inserts", INSERT_BATCH_MAX, INSERT_BATCHES_IN_FLIGHT, move |users: Vec<NewUser>| {
        let db = db.clone();
        async move {
            let written = insert_batch(&db, &users).await;
            users
                .into_iter()
                .map(|user| {
                    let outcome = match &written {
                        Ok(written) => written.get(&user.id).cloned().map_or(Insert::Taken, Insert::Written),
                        Err(()) => Insert::Failed,
                    };
                    (user, outcome)
                })
                .collect()
        }
    })
}

#[tracing::instrument(skip_all, fields(users = users.len()))]
async fn insert_batch(db: &WarmPool, users: &[NewUser]) -> Result<HashMap<Uuid, store::Inserted>, ()> {
    let written = async {
        let mut conn = db.acquire().await?;
        let written = store::insert_users_with_events(&mut *conn, users).await?;
        conn.release();
        Ok::<_, sqlx::Error>(written)
    };
    written.await.map_err(|error| {
        tracing::warn!(%error, users = users.len(), "a batch of user creations failed; each is tried alone");
    })
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
    let mut conn = state.db.acquire().await?;
    let mut attempt = 0;
    let row = loop {
        let written = if attempt < UNLOCKED_ATTEMPTS {
            write_at_version(&mut conn, tenant, uid, id, headers, &change, false).await?
        } else {
            let mut tx = conn.begin().await?;
            let written = write_at_version(&mut tx, tenant, uid, id, headers, &change, true).await?;
            tx.commit().await?;
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
    conn.release();
    let groups = row.groups().map(|g| groups_json(base, &g));
    Ok(resource_response(StatusCode::OK, &render(user_type(), &row, base, groups), row.version))
}

/// What one attempt of [`write`] did.
enum Written {
    Changed(ResourceRow),
    Unchanged(ResourceRow),
    /// Another write came between the read and this one: nothing written.
    Stale,
}

/// One attempt of [`write`]; with `lock`, inside the caller's transaction.
async fn write_at_version(
    conn: &mut PgConnection,
    tenant: Uuid,
    uid: Uuid,
    id: &str,
    headers: &HeaderMap,
    change: &impl Fn(&Value) -> Result<Value, ScimError>,
    lock: bool,
) -> Result<Written, ApiError> {
    let current =
        store::find_user_with_groups(&mut *conn, tenant, uid, lock).await?.ok_or_else(|| not_found(user_type(), id))?;
    check_if_match(headers, current.version)?;
    let doc = change(&current.resource)?;
    if doc == current.resource {
        return Ok(Written::Unchanged(current));
    }
    let at = Utc::now();
    let events = [event(tenant, EventKind::ScimUserUpserted, uid, current.version + 1, at)];
    let written = store::update_user_at_version(&mut *conn, tenant, uid, &doc, current.version, at, &events).await?;
    Ok(match written {
        Some(row) => Written::Changed(ResourceRow { groups: current.groups, ..row }),
        None => Written::Stale,
    })
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
