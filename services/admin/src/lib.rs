//! The admin service: the company's REST API at `/api/v1`, authenticated by a tenant's admin
//! token (or, for dead-letter queues, an operator token). Errors are RFC 9457 problem
//! documents with stable types (`problem::PROBLEM_TYPES`); the API is described by the
//! OpenAPI document served at `/api/v1/openapi.json`.

pub mod assignments;
pub mod dlq;
pub mod member_settings;
pub mod members;
pub mod notifications;
pub mod org;
pub mod problem;
pub mod settings;

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use muster_infra::config::{AmqpSettings, DatabaseSettings, HttpSettings, TelemetrySettings};
use muster_infra::http::{Readiness, ops_routes, track_metrics};
use muster_infra::tenancy::{self, Principal};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::problem::Problem;

/// Defaults of the admin service's own sections.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8081"
"#;

/// The admin service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
}

/// What the admin handlers share.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub amqp: AmqpSettings,
}

async fn require_admin(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = muster_infra::http::bearer_token(req.headers()).map(str::to_string) else {
        return Problem::unauthorized("an Authorization: Bearer admin token is required").into_response();
    };
    match tenancy::authenticate_admin(&state.pool, &token).await {
        Ok(Some(principal)) => {
            req.extensions_mut().insert(principal);
            let tenant = match principal {
                Principal::TenantAdmin(t) => t.to_string(),
                Principal::Operator => "operator".into(),
            };
            let span = tracing::info_span!("admin_request", tenant_id = %tenant, path = %req.uri().path());
            tracing::Instrument::instrument(next.run(req), span).await
        }
        Ok(None) => Problem::unauthorized("the bearer token is not a valid admin or operator token").into_response(),
        Err(err) => Problem::from(err).into_response(),
    }
}

/// `GET /api/v1/tenant`: the company the token belongs to.
async fn get_tenant(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, Problem> {
    let tenant = members::tenant_of(principal)?;
    let found =
        tenancy::find_tenant(&state.pool, tenant).await?.ok_or_else(|| Problem::not_found("tenant not found"))?;
    Ok(Json(json!({
        "id": found.id,
        "name": found.name,
        "primary_domain": found.primary_domain,
        "created_at": found.created_at,
    }))
    .into_response())
}

/// The OpenAPI 3.1 document of this API (hand-written next to the code; a test checks it
/// against the router and the problem types).
pub const OPENAPI: &str = include_str!("../api/openapi.json");

/// `GET /api/v1/openapi.json`, without authentication.
async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The admin router: `/api/v1/…` plus `/healthz`, `/readyz`, `/metrics`.
pub fn router(pool: PgPool, amqp: AmqpSettings) -> Router {
    let state = AppState { pool: pool.clone(), amqp };
    let api = Router::new()
        .route("/tenant", get(get_tenant))
        .route("/members", get(members::list))
        .route("/members/{id}", get(members::get).patch(members::patch))
        .route("/members/{id}/assignment", axum::routing::patch(member_settings::edit))
        .route("/members/{id}/reports", get(org::reports))
        .route("/members/{id}/reports/{report}/capture", axum::routing::patch(member_settings::manager_capture))
        .route("/members/{id}/chain", get(org::chain))
        .route("/org-tree", get(org::tree))
        .route("/catalog", get(assignments::get_catalog).put(assignments::put_catalog))
        .route("/assignments", get(assignments::list).post(assignments::create))
        .route("/assignments/order", axum::routing::put(assignments::order))
        .route("/assignments/preview", post(assignments::preview))
        .route("/assignments/{id}", get(assignments::get).put(assignments::put).delete(assignments::delete))
        .route("/provisioning-log", get(members::provisioning_log))
        .route("/notifications", get(notifications::list))
        .route("/notifications/{id}/retry", post(notifications::retry))
        .route("/settings", get(settings::get).put(settings::put))
        .route("/dlq", get(dlq::list))
        .route("/dlq/{queue}", get(dlq::show))
        .route("/dlq/{queue}/replay", post(dlq::replay))
        .route("/dlq/{queue}/purge", post(dlq::purge))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { Problem::not_found("no such admin endpoint").into_response() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed().into_response() })
        .with_state(state);
    Router::new()
        .nest("/api/v1", api)
        .merge(ops_routes(Readiness { pool, broker: None }))
        .layer(middleware::from_fn(track_metrics))
}

/// A bound, not yet serving, admin service.
pub struct Admin {
    listener: TcpListener,
    app: Router,
}

impl Admin {
    /// Binds the listener (port 0 picks a free port).
    pub async fn bind(settings: &Settings, pool: PgPool) -> anyhow::Result<Admin> {
        let listener = TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("binding the admin listener on {}", settings.http.addr))?;
        Ok(Admin { listener, app: router(pool, settings.amqp.clone()) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "admin listening");
        muster_infra::http::serve(self.listener, self.app, shutdown).await
    }
}

/// Runs the admin service until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = muster_infra::db::pool(&settings.database)?;
    Admin::bind(&settings, pool).await?.run(shutdown).await
}
