//! The ingress: Muster's SCIM 2.0 API (RFC 7643/7644) at `/scim/v2`, as Microsoft Entra ID
//! provisions against it. Every request is answered from PostgreSQL; every accepted write
//! commits the SCIM mirror and its events (outbox) in one transaction, so RabbitMQ is never
//! on the request path.

pub mod auth;
pub mod error;
pub mod extract;
pub mod params;
pub mod query;
pub mod render;
pub mod routes;
pub mod store;
pub mod user_lookups;
pub mod user_writes;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, middleware};
use muster_infra::config::{DatabaseSettings, HttpSettings, TelemetrySettings};
use muster_infra::db::WarmPool;
use muster_infra::http::{Readiness, ops_routes, track_metrics};
use muster_infra::token_cache::TokenCache;
use muster_scim::ScimError;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::RateLimiter;
use crate::error::ApiError;
use crate::routes::{discovery, groups, users};

/// Defaults of the ingress's own listener.
pub const DEFAULTS: &str = r#"
[http]
addr = "0.0.0.0:8080"
"#;

/// Defaults of the SCIM API's limits.
pub const SCIM_DEFAULTS: &str = r#"
[scim]
max_body_bytes = 4194304
default_page_size = 100
max_page_size = 1000
rate_limit_per_second = 200
rate_limit_burst = 400
"#;

/// SCIM API limits and options.
#[derive(Debug, Clone, Deserialize)]
pub struct ScimSettings {
    /// Larger bodies are refused with 413.
    pub max_body_bytes: usize,
    /// `count` when a list request gives none.
    pub default_page_size: i64,
    /// `count` is clamped to this (also `filter.maxResults` in /ServiceProviderConfig).
    pub max_page_size: i64,
    /// Sustained requests per second per tenant before 429.
    pub rate_limit_per_second: u32,
    /// Requests a tenant may send at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// Public URL of the ingress (e.g. `https://muster.example.com`) for `meta.location`;
    /// from the request's Host header when absent.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// The ingress's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub scim: ScimSettings,
}

/// What every handler shares: one reference count per clone (axum clones the state for the
/// middleware and for each handler of every request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub pool: PgPool,
    /// The same pool, with connections handed from request to request without sqlx's ping:
    /// what every SCIM handler uses.
    pub db: WarmPool,
    pub scim: ScimSettings,
    pub limiter: RateLimiter,
    /// SCIM tokens already checked: the company and whether it accepts provisioning.
    pub tokens: Arc<TokenCache<(Uuid, bool)>>,
    /// Where `POST /Users` hands its user to be written.
    pub user_inserts: user_writes::UserWrites,
    /// Where `PUT`/`PATCH /Users` hand the next version of a user to be written.
    pub user_updates: user_writes::UserWrites,
    /// Where `GET /Users?filter=userName eq "…"` looks its user up.
    pub user_lookups: user_lookups::UserLookups,
}

/// The whole HTTP surface: `/scim/v2/…` plus `/healthz`, `/readyz`, `/metrics`. Starts the
/// ingress's writers on the current runtime.
pub fn router(pool: PgPool, scim: ScimSettings) -> Router {
    // Half the pool at most waits warm; the rest stays for readiness and token checks.
    let keep = (pool.options().get_max_connections() / 2).max(1) as usize;
    let db = WarmPool::new(pool.clone(), keep);
    let state = AppState(Arc::new(Shared {
        pool: pool.clone(),
        user_inserts: user_writes::UserWrites::spawn(db.clone(), store::UserStatement::Insert),
        user_updates: user_writes::UserWrites::spawn(db.clone(), store::UserStatement::Update),
        user_lookups: user_lookups::UserLookups::spawn(db.clone()),
        db,
        limiter: RateLimiter::new(scim.rate_limit_per_second, scim.rate_limit_burst),
        tokens: TokenCache::new(&pool),
        scim,
    }));
    let resources = Router::new()
        .route("/Users", get(users::list).post(users::create))
        .route("/Users/{id}", get(users::get).put(users::replace).patch(users::patch).delete(users::delete))
        .route("/Groups", get(groups::list).post(groups::create))
        .route("/Groups/{id}", get(groups::get).put(groups::replace).patch(groups::patch).delete(groups::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_tenant));
    let discovery = Router::new()
        .route("/ServiceProviderConfig", get(discovery::service_provider_config))
        .route("/Schemas", get(discovery::schemas))
        .route("/Schemas/{id}", get(discovery::schema))
        .route("/ResourceTypes", get(discovery::resource_types))
        .route("/ResourceTypes/{name}", get(discovery::resource_type));
    let scim = resources
        .merge(discovery)
        .fallback(|| async { ApiError(ScimError::not_found("no such SCIM endpoint")).into_response() })
        .method_not_allowed_fallback(|| async {
            ApiError(ScimError::method_not_allowed("this endpoint does not support that method")).into_response()
        })
        .with_state(state);
    Router::new()
        .nest("/scim/v2", scim)
        .merge(ops_routes(Readiness { pool, broker: None }))
        .layer(middleware::from_fn(track_metrics))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| -> Response {
            tracing::error!("request handler panicked");
            ApiError(ScimError::internal()).into_response()
        }))
}

/// A bound, not yet serving, ingress.
pub struct Ingress {
    listener: TcpListener,
    app: Router,
}

impl Ingress {
    /// Binds the listener (port 0 picks a free port) and builds the router.
    pub async fn bind(settings: &Settings, pool: PgPool) -> anyhow::Result<Ingress> {
        let listener = TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("binding the SCIM listener on {}", settings.http.addr))?;
        Ok(Ingress { listener, app: router(pool, settings.scim.clone()) })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr()?, "ingress listening");
        muster_infra::http::serve(self.listener, self.app, shutdown).await
    }
}

/// Runs the ingress until `shutdown`: the binary's entry point (`musterctl up` binds it with
/// [`pool`] beside the other services).
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ingress::bind(&settings, pool(&settings.database)?).await?.run(shutdown).await
}

/// The ingress's pool: its statements keep generic plans (see
/// [`muster_infra::db::pool_with_generic_plans`]); the binary, `musterctl up` and the tests
/// all take it from here.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    muster_infra::db::pool_with_generic_plans(settings)
}
