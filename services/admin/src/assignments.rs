//! `/api/v1/catalog` and `/api/v1/assignments…`: the company's seat types, data-capture kinds
//! and workspaces, and the assignments that give them to members through Entra groups, in an
//! explicit order. The default assignment always exists and cannot be deleted.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_contracts::events::AssignmentsChanged;
use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::assignment::{Catalog, Settings};
use muster_infra::tenancy::Principal;
use muster_members::assignments::{self as engine, Affected, ApplyError, Batch};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::members::tenant_of;
use crate::problem::Problem;

async fn load_catalog(conn: &mut PgConnection, tenant: Uuid) -> Result<(Catalog, i64), Problem> {
    let (doc, version): (Value, i64) =
        sqlx::query_as("select catalog, version from assignments.catalogs where tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Problem::not_found("the company has no catalog"))?;
    let catalog = serde_json::from_value(doc).map_err(|e| {
        tracing::error!(tenant_id = %tenant, error = %e, "stored catalog unreadable");
        Problem::from(sqlx::Error::Decode(Box::new(e)))
    })?;
    Ok((catalog, version))
}

/// `GET /api/v1/catalog`.
pub async fn get_catalog(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let mut conn = state.pool.acquire().await?;
    let (catalog, version) = load_catalog(&mut conn, tenant).await?;
    Ok(Json(json!({"catalog": catalog, "version": version})).into_response())
}

/// `PUT /api/v1/catalog` with the whole catalog. Refused if it is inconsistent or if an
/// assignment uses something it no longer has.
pub async fn put_catalog(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<Catalog>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(catalog) = body.map_err(Problem::bad_body)?;
    let mut tx = state.pool.begin().await?;
    let (changed, _) = make(&mut tx, tenant, &Proposal::Catalog(catalog)).await?;
    announce(&mut tx, tenant, changed).await?;
    let (catalog, version) = load_catalog(&mut tx, tenant).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, version, "catalog changed");
    Ok(Json(json!({"catalog": catalog, "version": version})).into_response())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    mode: String,
    is_default: bool,
    groups: Vec<Uuid>,
    seats: Vec<String>,
    permissions: Value,
    capture: Value,
    version: i64,
}

impl Row {
    fn settings(&self) -> Settings {
        Settings {
            seats: self.seats.iter().cloned().collect(),
            permissions: serde_json::from_value(self.permissions.clone()).unwrap_or_default(),
            capture: serde_json::from_value(self.capture.clone()).unwrap_or_default(),
        }
    }

    fn to_json(&self, order: usize) -> Value {
        json!({
            "id": self.id, "name": self.name, "mode": self.mode, "order": order, "is_default": self.is_default,
            "groups": self.groups, "seats": self.seats, "permissions": self.permissions, "capture": self.capture,
            "version": self.version,
        })
    }
}

async fn rows(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<Row>, Problem> {
    Ok(sqlx::query_as(
        "select id, name, mode, is_default, groups, seats, permissions, capture, version
         from assignments.assignments where tenant_id = $1 order by position, id",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?)
}

async fn listing(conn: &mut PgConnection, tenant: Uuid) -> Result<Value, Problem> {
    let rows = rows(conn, tenant).await?;
    let list: Vec<Value> = rows.iter().enumerate().map(|(i, r)| r.to_json(i + 1)).collect();
    Ok(json!({"assignments": list}))
}

/// `GET /api/v1/assignments`: in order; the default one last.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(listing(&mut conn, tenant).await?).into_response())
}

/// An assignment as the admin writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignmentBody {
    name: String,
    mode: String,
    #[serde(default)]
    groups: Vec<Uuid>,
    #[serde(default)]
    seats: Vec<String>,
    #[serde(default)]
    permissions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    capture: std::collections::BTreeMap<String, bool>,
}

/// Every problem with `body` for `tenant` (the default assignment takes no groups).
async fn check(
    conn: &mut PgConnection,
    tenant: Uuid,
    body: &AssignmentBody,
    is_default: bool,
) -> Result<Vec<String>, Problem> {
    let mut problems = Vec::new();
    if body.name.trim().is_empty() || body.name.chars().count() > 200 {
        problems.push("name: 1 to 200 characters".to_string());
    }
    if !["manual", "automatic"].contains(&body.mode.as_str()) {
        problems.push(format!("mode: '{}' is not manual or automatic", body.mode));
    }
    if is_default && !body.groups.is_empty() {
        problems.push("groups: the default assignment covers members in no assigned group; it takes none".into());
    }
    let (catalog, _) = load_catalog(conn, tenant).await?;
    let settings = Settings {
        seats: body.seats.iter().cloned().collect(),
        permissions: body.permissions.clone(),
        capture: body.capture.clone(),
    };
    problems.extend(catalog.problems_with(&settings));
    let known: Vec<Uuid> = sqlx::query_scalar("select id from scim.groups where tenant_id = $1 and id = any($2)")
        .bind(tenant)
        .bind(&body.groups)
        .fetch_all(&mut *conn)
        .await?;
    for group in body.groups.iter().filter(|g| !known.contains(g)) {
        problems.push(format!("groups: no SCIM group with id {group}"));
    }
    Ok(problems)
}

/// Binds an assignment's columns as `$3`…`$8` (name, mode, groups, seats, permissions,
/// capture) after the statement's two keys.
fn bind_body<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    body: &'q AssignmentBody,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(body.name.trim())
        .bind(&body.mode)
        .bind(&body.groups)
        .bind(&body.seats)
        .bind(json!(body.permissions))
        .bind(json!(body.capture))
}

fn name_taken(err: &sqlx::Error, name: &str) -> Option<Problem> {
    (muster_infra::db::violated_constraint(err).as_deref() == Some("assignments_name"))
        .then(|| Problem::name_taken(format!("an assignment named '{name}' already exists")))
}

fn no_assignment(id: &str) -> Problem {
    Problem::not_found(format!("no assignment with id {id}"))
}

async fn find(conn: &mut PgConnection, tenant: Uuid, id: &str) -> Result<(Row, usize), Problem> {
    let wanted = Uuid::parse_str(id).map_err(|_| no_assignment(id))?;
    let all = rows(conn, tenant).await?;
    all.into_iter().enumerate().find(|(_, r)| r.id == wanted).map(|(i, r)| (r, i + 1)).ok_or_else(|| no_assignment(id))
}

/// `GET /api/v1/assignments/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let mut conn = state.pool.acquire().await?;
    let (row, order) = find(&mut conn, tenant, &id).await?;
    Ok(Json(row.to_json(order)).into_response())
}

/// Body of `PUT /api/v1/assignments/order`: every non-default assignment, first one first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    ids: Vec<Uuid>,
}

/// A change of the company's assignments or catalog, as an admin request makes it or as a
/// preview proposes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Proposal {
    Create(AssignmentBody),
    Update { id: String, assignment: AssignmentBody },
    Delete { id: String },
    Order(OrderBody),
    Catalog(Catalog),
}

/// Makes `proposal` in the caller's transaction; returns whom it can affect and, for a
/// creation, the new assignment's id.
async fn make(
    tx: &mut PgConnection,
    tenant: Uuid,
    proposal: &Proposal,
) -> Result<(AssignmentsChanged, Option<Uuid>), Problem> {
    match proposal {
        Proposal::Create(body) => {
            let problems = check(tx, tenant, body, false).await?;
            if !problems.is_empty() {
                return Err(Problem::invalid_assignment(problems));
            }
            let id = Uuid::now_v7();
            let inserted = sqlx::query(
                "insert into assignments.assignments (id, tenant_id, name, mode, position, groups, seats, permissions,
                                                      capture)
                 values ($1, $2, $3, $4,
                         (select coalesce(max(position), 0) + 1 from assignments.assignments
                          where tenant_id = $2 and not is_default), $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(tenant);
            if let Err(err) = bind_body(inserted, body).execute(&mut *tx).await {
                return Err(name_taken(&err, &body.name).unwrap_or_else(|| Problem::from(err)));
            }
            let cause = format!("assignment '{}' created", body.name.trim());
            Ok((AssignmentsChanged { assignments: vec![id], groups: body.groups.clone(), all: false, cause }, Some(id)))
        }
        Proposal::Update { id, assignment: body } => {
            let (row, _) = find(tx, tenant, id).await?;
            let problems = check(tx, tenant, body, row.is_default).await?;
            if !problems.is_empty() {
                return Err(Problem::invalid_assignment(problems));
            }
            let updated = sqlx::query(
                "update assignments.assignments set name = $3, mode = $4, groups = $5, seats = $6, permissions = $7,
                        capture = $8, version = version + 1, updated_at = now()
                 where tenant_id = $1 and id = $2",
            )
            .bind(tenant)
            .bind(row.id);
            if let Err(err) = bind_body(updated, body).execute(&mut *tx).await {
                return Err(name_taken(&err, &body.name).unwrap_or_else(|| Problem::from(err)));
            }
            // Members leaving the old groups and members joining the new ones.
            let mut groups = row.groups.clone();
            groups.extend(body.groups.iter().filter(|g| !row.groups.contains(g)));
            let cause = format!("assignment '{}' edited", body.name.trim());
            Ok((AssignmentsChanged { assignments: vec![row.id], groups, all: false, cause }, None))
        }
        Proposal::Delete { id } => {
            let (row, _) = find(tx, tenant, id).await?;
            if row.is_default {
                return Err(Problem::default_assignment("the default assignment always exists and cannot be deleted"));
            }
            sqlx::query("delete from assignments.assignments where tenant_id = $1 and id = $2")
                .bind(tenant)
                .bind(row.id)
                .execute(&mut *tx)
                .await?;
            let cause = format!("assignment '{}' deleted", row.name);
            Ok((AssignmentsChanged { assignments: vec![row.id], groups: Vec::new(), all: false, cause }, None))
        }
        Proposal::Order(body) => {
            let current: Vec<Row> = rows(tx, tenant).await?.into_iter().filter(|r| !r.is_default).collect();
            let mut given = body.ids.clone();
            given.sort();
            let mut expected: Vec<Uuid> = current.iter().map(|r| r.id).collect();
            expected.sort();
            if given != expected {
                return Err(Problem::invalid_assignment(vec![format!(
                    "ids: list each of the {} non-default assignments exactly once",
                    current.len()
                )]));
            }
            // Only assignments whose place changed can change whom they govern.
            let moved: Vec<&Row> =
                current.iter().enumerate().filter(|(i, r)| body.ids.get(*i) != Some(&r.id)).map(|(_, r)| r).collect();
            let positions: Vec<i32> = (1..=i32::try_from(body.ids.len()).unwrap_or(i32::MAX)).collect();
            sqlx::query(
                "update assignments.assignments a set position = u.position, version = version + 1, updated_at = now()
                 from unnest($2::uuid[], $3::int[]) as u(id, position)
                 where a.tenant_id = $1 and a.id = u.id",
            )
            .bind(tenant)
            .bind(&body.ids)
            .bind(&positions)
            .execute(&mut *tx)
            .await?;
            let assignments = moved.iter().map(|r| r.id).collect();
            let groups = moved.iter().flat_map(|r| r.groups.iter().copied()).collect();
            let cause = "assignment order changed".to_string();
            Ok((AssignmentsChanged { assignments, groups, all: false, cause }, None))
        }
        Proposal::Catalog(catalog) => {
            let mut problems = catalog.problems();
            for assignment in rows(tx, tenant).await? {
                for problem in catalog.problems_with(&assignment.settings()) {
                    problems.push(format!("assignment '{}': {problem}", assignment.name));
                }
            }
            if !problems.is_empty() {
                return Err(Problem::invalid_catalog(problems));
            }
            let doc = serde_json::to_value(catalog).map_err(|e| Problem::from(sqlx::Error::Encode(Box::new(e))))?;
            sqlx::query(
                "update assignments.catalogs set catalog = $2, version = version + 1, updated_at = now()
                 where tenant_id = $1",
            )
            .bind(tenant)
            .bind(doc)
            .execute(&mut *tx)
            .await?;
            let cause = "catalog changed".to_string();
            Ok((AssignmentsChanged { assignments: Vec::new(), groups: Vec::new(), all: true, cause }, None))
        }
    }
}

/// Tells the assignments worker, in the caller's transaction, whom a change can affect.
async fn announce(tx: &mut PgConnection, tenant: Uuid, changed: AssignmentsChanged) -> Result<(), Problem> {
    let version: i64 = sqlx::query_scalar(
        "update assignments.catalogs set config_version = config_version + 1 where tenant_id = $1
         returning config_version",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await?;
    tracing::info!(tenant_id = %tenant, version, cause = %changed.cause, "assignments changed");
    let data = serde_json::to_value(&changed).map_err(|e| Problem::from(sqlx::Error::Encode(Box::new(e))))?;
    let event = EventEnvelope::new(
        tenant,
        EventKind::TenantAssignmentsChanged,
        tenant.to_string(),
        version,
        chrono::Utc::now(),
    )
    .with_data(data);
    muster_infra::outbox::append(tx, &[event], &muster_infra::telemetry::current_traceparent()).await?;
    Ok(())
}

/// `POST /api/v1/assignments`: a new assignment, placed last before the default one.
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<AssignmentBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(body) = body.map_err(Problem::bad_body)?;
    let mut tx = state.pool.begin().await?;
    let (changed, id) = make(&mut tx, tenant, &Proposal::Create(body)).await?;
    announce(&mut tx, tenant, changed).await?;
    let id = id.map(|id| id.to_string()).unwrap_or_default();
    let (row, order) = find(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(row.to_json(order))).into_response())
}

/// `PUT /api/v1/assignments/{id}`: replaces name, mode, groups and settings (not the order).
pub async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<AssignmentBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(assignment) = body.map_err(Problem::bad_body)?;
    let mut tx = state.pool.begin().await?;
    let (changed, _) = make(&mut tx, tenant, &Proposal::Update { id: id.clone(), assignment }).await?;
    announce(&mut tx, tenant, changed).await?;
    let (row, order) = find(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    Ok(Json(row.to_json(order)).into_response())
}

/// `DELETE /api/v1/assignments/{id}`; the default assignment cannot be deleted.
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let mut tx = state.pool.begin().await?;
    let (changed, _) = make(&mut tx, tenant, &Proposal::Delete { id }).await?;
    announce(&mut tx, tenant, changed).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /api/v1/assignments/order`.
pub async fn order(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<OrderBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(body) = body.map_err(Problem::bad_body)?;
    let mut tx = state.pool.begin().await?;
    let (changed, _) = make(&mut tx, tenant, &Proposal::Order(body)).await?;
    announce(&mut tx, tenant, changed).await?;
    let listing = listing(&mut tx, tenant).await?;
    tx.commit().await?;
    Ok(Json(listing).into_response())
}

/// Changes a preview lists at most.
const PREVIEW_LISTED: usize = 200;

/// `POST /api/v1/assignments/preview` with a proposal (`create`, `update`, `delete`, `order`
/// or `catalog`): which members would change and how. The proposal is made and the members
/// recomputed exactly as they would be, in a transaction that is then rolled back.
pub async fn preview(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<Proposal>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(proposal) = body.map_err(Problem::bad_body)?;
    let mut tx = state.pool.begin().await?;
    // The same lock as the worker's: the preview sees no half-applied batch.
    engine::lock(&mut tx, tenant).await?;
    let (changed, _) = make(&mut tx, tenant, &proposal).await?;
    let affected = Affected::of(&changed);
    let (mut count, mut listed, mut after) = (0usize, Vec::new(), Uuid::nil());
    loop {
        let page = affected.page(&mut tx, tenant, after, 500).await?;
        let Some(last) = page.last().copied() else { break };
        let mut batch = Batch::of(page, &changed.cause);
        batch.recheck_all_seats = changed.all;
        let applied = engine::apply(&mut tx, tenant, &batch).await.map_err(internal)?;
        count += applied.len();
        listed.extend(
            applied
                .into_iter()
                .take(PREVIEW_LISTED.saturating_sub(listed.len()))
                .map(|a| json!({"scim_user_id": a.member, "before": a.before, "after": a.after})),
        );
        after = last;
    }
    tx.rollback().await?;
    Ok(Json(json!({
        "cause": changed.cause, "members_changing": count, "changes": listed, "truncated": count > listed.len(),
    }))
    .into_response())
}

/// An engine failure that no admin input causes (a broken stored configuration).
pub(crate) fn internal(err: ApplyError) -> Problem {
    match err {
        ApplyError::Database(err) => Problem::from(err),
        other => {
            tracing::error!(error = %other, "assignments engine failed");
            Problem::from(sqlx::Error::Protocol(other.to_string()))
        }
    }
}
