//! The admin service: the company's REST API at `/api/v1`, authenticated by a tenant's admin
//! token. Errors are RFC 9457 problem documents. This first version serves the tenant itself;
//! members, settings, assignments and the provisioning log arrive with their workers.

pub mod problem;

use std::net::SocketAddr;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use muster_infra::config::{DatabaseSettings, HttpSettings, TelemetrySettings};
use muster_infra::http::{Readiness, ops_routes, track_metrics};
use muster_infra::tenancy::{self, TokenKind};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Copy)]
struct AdminTenant(Uuid);

async fn require_admin(State(pool): State<PgPool>, mut req: Request, next: Next) -> Response {
    let Some(token) = muster_infra::http::bearer_token(req.headers()).map(str::to_string) else {
        return Problem::unauthorized("an Authorization: Bearer admin token is required").into_response();
    };
    match tenancy::authenticate(&pool, TokenKind::Admin, &token).await {
        Ok(Some(tenant)) => {
            req.extensions_mut().insert(AdminTenant(tenant));
            let span = tracing::info_span!("admin_request", tenant_id = %tenant, path = %req.uri().path());
            tracing::Instrument::instrument(next.run(req), span).await
        }
        Ok(None) => Problem::unauthorized("the bearer token is not a valid admin token").into_response(),
        Err(err) => Problem::from(err).into_response(),
    }
}

/// `GET /api/v1/tenant`: the company the token belongs to.
async fn get_tenant(
    State(pool): State<PgPool>,
    Extension(AdminTenant(tenant)): Extension<AdminTenant>,
) -> Result<Response, Problem> {
    let found = tenancy::find_tenant(&pool, tenant).await?.ok_or_else(|| Problem::not_found("tenant not found"))?;
    Ok(Json(json!({
        "id": found.id,
        "name": found.name,
        "primary_domain": found.primary_domain,
        "created_at": found.created_at,
    }))
    .into_response())
}

/// The admin router: `/api/v1/…` plus `/healthz`, `/readyz`, `/metrics`.
pub fn router(pool: PgPool) -> Router {
    let api = Router::new()
        .route("/tenant", get(get_tenant))
        .route_layer(middleware::from_fn_with_state(pool.clone(), require_admin))
        .fallback(|| async { Problem::not_found("no such admin endpoint").into_response() })
        .with_state(pool.clone());
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
        Ok(Admin { listener, app: router(pool) })
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
