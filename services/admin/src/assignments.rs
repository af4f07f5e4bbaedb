//! `/api/v1/catalog` and `/api/v1/assignments…`: the company's seat types, data-capture kinds
//! and workspaces, and the assignments that give them to members through Entra groups, in an
//! explicit order. The default assignment always exists and cannot be deleted.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_domain::assignment::{Catalog, Settings};
use muster_infra::tenancy::Principal;
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
    let mut problems = catalog.problems();
    let mut tx = state.pool.begin().await?;
    for assignment in rows(&mut tx, tenant).await? {
        for problem in catalog.problems_with(&assignment.settings()) {
            problems.push(format!("assignment '{}': {problem}", assignment.name));
        }
    }
    if !problems.is_empty() {
        return Err(Problem::invalid_catalog(problems));
    }
    let doc = serde_json::to_value(&catalog).map_err(|e| Problem::from(sqlx::Error::Encode(Box::new(e))))?;
    let version: i64 = sqlx::query_scalar(
        "update assignments.catalogs set catalog = $2, version = version + 1, updated_at = now()
         where tenant_id = $1 returning version",
    )
    .bind(tenant)
    .bind(doc)
    .fetch_one(&mut *tx)
    .await?;
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

/// `POST /api/v1/assignments`: a new assignment, placed last before the default one.
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<AssignmentBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(body) = body.map_err(Problem::bad_body)?;
    let mut tx = state.pool.begin().await?;
    let problems = check(&mut tx, tenant, &body, false).await?;
    if !problems.is_empty() {
        return Err(Problem::invalid_assignment(problems));
    }
    let id = Uuid::now_v7();
    let inserted = sqlx::query(
        "insert into assignments.assignments (id, tenant_id, name, mode, position, groups, seats, permissions, capture)
         values ($1, $2, $3, $4,
                 (select coalesce(max(position), 0) + 1 from assignments.assignments
                  where tenant_id = $2 and not is_default), $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(tenant);
    let inserted = bind_body(inserted, &body).execute(&mut *tx).await;
    if let Err(err) = inserted {
        return Err(name_taken(&err, &body.name).unwrap_or_else(|| Problem::from(err)));
    }
    let listing = listing(&mut tx, tenant).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, assignment_id = %id, "assignment created");
    let created = listing["assignments"].as_array().and_then(|l| l.iter().find(|a| a["id"] == json!(id))).cloned();
    Ok((StatusCode::CREATED, Json(created.unwrap_or(Value::Null))).into_response())
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

/// `PUT /api/v1/assignments/{id}`: replaces name, mode, groups and settings (not the order).
pub async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<AssignmentBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(body) = body.map_err(Problem::bad_body)?;
    let mut tx = state.pool.begin().await?;
    let (row, _) = find(&mut tx, tenant, &id).await?;
    let problems = check(&mut tx, tenant, &body, row.is_default).await?;
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
    let updated = bind_body(updated, &body).execute(&mut *tx).await;
    if let Err(err) = updated {
        return Err(name_taken(&err, &body.name).unwrap_or_else(|| Problem::from(err)));
    }
    let (row, order) = find(&mut tx, tenant, &id).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, assignment_id = %row.id, "assignment changed");
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
    let (row, _) = find(&mut tx, tenant, &id).await?;
    if row.is_default {
        return Err(Problem::default_assignment("the default assignment always exists and cannot be deleted"));
    }
    sqlx::query("delete from assignments.assignments where tenant_id = $1 and id = $2")
        .bind(tenant)
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, assignment_id = %row.id, "assignment deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Body of `PUT /api/v1/assignments/order`: every non-default assignment, first one first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    ids: Vec<Uuid>,
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
    let current: Vec<Uuid> = rows(&mut tx, tenant).await?.into_iter().filter(|r| !r.is_default).map(|r| r.id).collect();
    let mut given = body.ids.clone();
    given.sort();
    let mut expected = current.clone();
    expected.sort();
    if given != expected {
        return Err(Problem::invalid_assignment(vec![format!(
            "ids: list each of the {} non-default assignments exactly once",
            current.len()
        )]));
    }
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
    let listing = listing(&mut tx, tenant).await?;
    tx.commit().await?;
    tracing::info!(tenant_id = %tenant, "assignment order changed");
    Ok(Json(listing).into_response())
}
