//! Bearer-token authentication (the token names the tenant) and per-tenant rate limiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use muster_infra::tenancy;
use muster_scim::ScimError;
use tracing::Instrument;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated tenant of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantId(pub Uuid);

/// Resolves the bearer token to a tenant, applies the tenant's rate limit, and runs the rest
/// of the request in a span carrying the tenant id (continuing an incoming `traceparent`).
pub async fn require_tenant(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(token) = muster_infra::http::bearer_token(req.headers()).map(str::to_string) else {
        return ApiError(ScimError::unauthorized("an Authorization: Bearer token is required")).into_response();
    };
    let found = state.tokens.get_or_load(&token, || tenancy::authenticate_scim(&state.pool, &token)).await;
    let tenant = match found {
        Ok(Some((tenant, true))) => tenant,
        Ok(Some((_, false))) => {
            return ApiError(ScimError::forbidden(
                "provisioning is turned off for this company in Muster (admin API: PUT /api/v1/settings)",
            ))
            .into_response();
        }
        Ok(None) => return ApiError(ScimError::unauthorized("the bearer token is not valid")).into_response(),
        Err(err) => return ApiError::from(err).into_response(),
    };
    if let Err(retry_after) = state.limiter.check(tenant) {
        metrics::counter!("scim_requests_throttled_total").increment(1);
        let mut response = ApiError(ScimError::too_many_requests("request rate over this tenant's limit; retry later"))
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let span =
        tracing::info_span!("scim_request", tenant_id = %tenant, method = %req.method(), path = %req.uri().path());
    if let Some(tp) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
        muster_infra::telemetry::continue_trace(&span, tp);
    }
    req.extensions_mut().insert(TenantId(tenant));
    let started = std::time::Instant::now();
    async move {
        let response = next.run(req).await;
        // The access log: one line per request, inside the span that names the tenant.
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "scim request"
        );
        response
    }
    .instrument(span)
    .await
}

/// A token bucket per tenant, in this process. With several ingress replicas each enforces
/// its own share; the limit is set far above Entra ID's pace so that only a runaway client
/// is slowed.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second` sustained, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `tenant`, or says in how many whole seconds one will be there.
    pub fn check(&self, tenant: Uuid) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = buckets.entry(tenant).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_throttles_with_retry_after() {
        let limiter = RateLimiter::new(1, 3);
        let t = Uuid::now_v7();
        for _ in 0..3 {
            assert!(limiter.check(t).is_ok());
        }
        assert_eq!(limiter.check(t), Err(1));
        assert!(limiter.check(Uuid::now_v7()).is_ok(), "another tenant has its own bucket");
    }
}
