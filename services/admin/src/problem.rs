//! RFC 9457 problem documents, the admin API's error form.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An admin API error.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    /// A stable problem type (RFC 9457 `type`) clients may branch on; `about:blank` when the
    /// status says it all.
    pub kind: &'static str,
}

impl Problem {
    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem { status: StatusCode::UNAUTHORIZED, title: "Unauthorized", detail: detail.into(), kind: "about:blank" }
    }
    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem { status: StatusCode::NOT_FOUND, title: "Not Found", detail: detail.into(), kind: "about:blank" }
    }
    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem { status: StatusCode::BAD_REQUEST, title: "Bad Request", detail: detail.into(), kind: "about:blank" }
    }
    /// 503: a dependency is down; the client should retry.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Service Unavailable",
            detail: detail.into(),
            kind: "about:blank",
        }
    }
    /// 422 with type `…/invalid-setting`: a setting's value is refused.
    pub fn invalid_setting(field: &str, detail: impl Into<String>) -> Self {
        Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Invalid setting",
            detail: format!("{field}: {}", detail.into()),
            kind: "https://muster.example/problems/invalid-setting",
        }
    }
    /// 503 for a broker operation that failed; the cause is logged, not shown.
    pub fn broker(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "broker operation failed");
        Problem::unavailable("the message broker operation failed; retry later")
    }
}

impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Self {
        tracing::error!(error = %err, "database error");
        if muster_infra::db::is_unavailable(&err) {
            return Problem::unavailable("the database is unavailable; retry later");
        }
        Problem {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Internal Server Error",
            detail: "internal error; the failure was logged".into(),
            kind: "about:blank",
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body =
            json!({"type": self.kind, "title": self.title, "status": self.status.as_u16(), "detail": self.detail});
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"muster-admin\""));
        }
        response
    }
}
