//! What every service serves besides its API: `/healthz` (the process is alive), `/readyz`
//! (its database and, where it uses one, its broker answer) and `/metrics` (Prometheus text),
//! plus the request-metrics middleware and a server loop with graceful shutdown.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether a service's broker connection is up; set by whoever owns the connection.
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth(Arc<AtomicBool>);

impl BrokerHealth {
    /// Records the connection state.
    pub fn set_connected(&self, connected: bool) {
        self.0.store(connected, Ordering::Relaxed);
    }
    /// The last recorded connection state.
    pub fn is_connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What `/readyz` checks.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub pool: PgPool,
    /// `None` for services that never talk to the broker on their own path (the ingress:
    /// a broker outage must not take it out of the load balancer).
    pub broker: Option<BrokerHealth>,
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
        let builder = PrometheusBuilder::new()
            .set_buckets(&buckets)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("write_batch_size".into()), &sizes))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => {
                let upkeep = handle.clone();
                // Without its own HTTP listener the exporter needs periodic upkeep (DEPENDENCIES.md).
                std::thread::spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
                handle
            }
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn ops_routes(readiness: Readiness) -> Router {
    let _ = metrics_handle();
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(|| async { metrics_handle().render() }))
        .with_state(readiness)
}

async fn readyz(State(readiness): State<Readiness>) -> Response {
    let database = tokio::time::timeout(Duration::from_secs(2), sqlx::query("select 1").execute(&readiness.pool))
        .await
        .is_ok_and(|r| r.is_ok());
    let broker = readiness.broker.as_ref().map(BrokerHealth::is_connected);
    let ready = database && broker.unwrap_or(true);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let mut checks = json!({"database": word(database)});
    if let (Some(b), Some(map)) = (broker, checks.as_object_mut()) {
        map.insert("broker".into(), json!(word(b)));
    }
    (status, Json(json!({"status": if ready { "ready" } else { "not ready" }, "checks": checks}))).into_response()
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Middleware: `http_requests_total` and `http_request_duration_seconds`, labelled by route
/// template (never by raw path, which would explode cardinality with ids).
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish.
pub async fn serve(listener: TcpListener, app: Router, shutdown: CancellationToken) -> anyhow::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
    Ok(())
}
