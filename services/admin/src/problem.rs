//! RFC 9457 problem documents, the admin API's error form. Every error carries a stable `type`
//! URI clients may branch on; the list, with what each means, is `PROBLEM_TYPES` (also in the
//! OpenAPI document and docs/admin-api.md).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Where the problem types live; each type is this plus its slug.
pub const PROBLEM_BASE: &str = "https://muster.example/problems/";

/// Every problem type the admin API answers with: slug, HTTP status, meaning.
pub const PROBLEM_TYPES: &[(&str, u16, &str)] = &[
    ("unauthorized", 401, "no bearer token, or not a valid admin or operator token"),
    ("not-found", 404, "no such endpoint, or no such resource for this token's company"),
    ("method-not-allowed", 405, "the endpoint exists but not with this HTTP method"),
    ("bad-request", 400, "the request is malformed: query parameter, JSON body, or missing confirmation"),
    ("invalid-setting", 422, "a company setting's value is refused; `detail` names the setting and why"),
    ("field-locked", 409, "a member field came from Entra ID, or was already set manually once; see `errors`"),
    ("invalid-field", 422, "a manual member value is unknown or invalid; see `errors`"),
    ("invalid-catalog", 422, "the catalog is inconsistent or drops something an assignment uses; see `errors`"),
    (
        "invalid-assignment",
        422,
        "an assignment or a member's settings name unknown groups, seats, workspaces or capture kinds; see `errors`",
    ),
    ("name-taken", 409, "another assignment already has this name"),
    ("default-assignment", 409, "the default assignment cannot be deleted"),
    ("member-gone", 409, "the member's SCIM user was deleted; the member is kept for history only"),
    ("member-inactive", 409, "the member is deactivated or not imported; their settings cannot be edited"),
    ("assignment-governed", 409, "the member's assignment uses automatic updates: Entra ID governs these settings"),
    ("not-retryable", 409, "only a failed notification can be retried"),
    ("not-permitted", 403, "a manager may not do this: the company does not allow it, or not their direct report"),
    ("unavailable", 503, "PostgreSQL or RabbitMQ is unreachable; retry later"),
    ("internal", 500, "an unexpected failure; it was logged with the request's trace"),
];

/// An admin API error.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: &'static str,
    pub detail: String,
    /// The slug of the stable problem type (one of `PROBLEM_TYPES`).
    pub kind: &'static str,
    /// Per-field errors (`[{"field": …, "reason": …}]`) when several things were refused.
    pub errors: Option<Value>,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, kind: &'static str, detail: impl Into<String>) -> Self {
        Problem { status, title, detail: detail.into(), kind, errors: None }
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "unauthorized", detail)
    }
    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "Not Found", "not-found", detail)
    }
    /// 400.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "Bad Request", "bad-request", detail)
    }
    /// 405.
    pub fn method_not_allowed() -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
            "method-not-allowed",
            "the endpoint does not take this HTTP method",
        )
    }
    /// 400 for a JSON body axum could not read.
    pub fn bad_body(rejection: JsonRejection) -> Self {
        Problem::bad_request(rejection.body_text())
    }
    /// 400 for a query string axum could not read.
    pub fn bad_query(rejection: QueryRejection) -> Self {
        Problem::bad_request(rejection.body_text())
    }
    /// 503: a dependency is down; the client should retry.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable", "unavailable", detail)
    }
    /// 422: a setting's value is refused.
    pub fn invalid_setting(field: &str, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid setting",
            "invalid-setting",
            format!("{field}: {}", detail.into()),
        )
    }
    /// 409: a manual edit touched locked fields.
    pub fn field_locked(detail: impl Into<String>, errors: Value) -> Self {
        Problem { errors: Some(errors), ..Problem::new(StatusCode::CONFLICT, "Field locked", "field-locked", detail) }
    }
    /// 422: a manual edit carried unknown or invalid values.
    pub fn invalid_field(detail: impl Into<String>, errors: Value) -> Self {
        Problem {
            errors: Some(errors),
            ..Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid field", "invalid-field", detail)
        }
    }
    fn listed(status: StatusCode, title: &'static str, kind: &'static str, problems: Vec<String>) -> Self {
        let errors: Vec<serde_json::Value> = problems.iter().map(|p| json!({"reason": p})).collect();
        Problem { errors: Some(json!(errors)), ..Problem::new(status, title, kind, problems.join("; ")) }
    }
    /// 422: the catalog is refused, with every problem.
    pub fn invalid_catalog(problems: Vec<String>) -> Self {
        Problem::listed(StatusCode::UNPROCESSABLE_ENTITY, "Invalid catalog", "invalid-catalog", problems)
    }
    /// 422: an assignment is refused, with every problem.
    pub fn invalid_assignment(problems: Vec<String>) -> Self {
        Problem::listed(StatusCode::UNPROCESSABLE_ENTITY, "Invalid assignment", "invalid-assignment", problems)
    }
    /// 409: the name is another assignment's.
    pub fn name_taken(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "Name taken", "name-taken", detail)
    }
    /// 409: the default assignment stays.
    pub fn default_assignment(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "Default assignment", "default-assignment", detail)
    }
    /// 409: the member's SCIM user is gone.
    pub fn member_gone(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "Member gone", "member-gone", detail)
    }
    /// 409: the member is not active.
    pub fn member_inactive(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "Member inactive", "member-inactive", detail)
    }
    /// 409: Entra governs the member's settings.
    pub fn assignment_governed(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "Governed by the assignment", "assignment-governed", detail)
    }
    /// 409: the notification is not failed.
    pub fn not_retryable(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::CONFLICT, "Not retryable", "not-retryable", detail)
    }
    /// 403: a manager's right is missing.
    pub fn not_permitted(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "Not permitted", "not-permitted", detail)
    }
    /// 503 for a broker operation that failed; the cause is logged, not shown.
    pub fn broker(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "broker operation failed");
        Problem::unavailable("the message broker operation failed; retry later")
    }

    /// The full `type` URI.
    pub fn type_uri(&self) -> String {
        format!("{PROBLEM_BASE}{}", self.kind)
    }
}

impl From<sqlx::Error> for Problem {
    fn from(err: sqlx::Error) -> Self {
        tracing::error!(error = %err, "database error");
        if muster_infra::db::is_unavailable(&err) {
            return Problem::unavailable("the database is unavailable; retry later");
        }
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "internal",
            "internal error; the failure was logged",
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({"type": self.type_uri(), "title": self.title, "status": self.status.as_u16(), "detail": self.detail});
        if let Some(errors) = self.errors {
            body["errors"] = errors;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_constructor_uses_a_documented_type_with_its_status() {
        let problems = [
            Problem::unauthorized("x"),
            Problem::not_found("x"),
            Problem::method_not_allowed(),
            Problem::bad_request("x"),
            Problem::unavailable("x"),
            Problem::invalid_setting("domains", "x"),
            Problem::field_locked("x", json!([])),
            Problem::invalid_field("x", json!([])),
            Problem::member_gone("x"),
            Problem::member_inactive("x"),
            Problem::assignment_governed("x"),
            Problem::not_permitted("x"),
            Problem::not_retryable("x"),
            Problem::invalid_catalog(vec!["x".into()]),
            Problem::invalid_assignment(vec!["x".into()]),
            Problem::name_taken("x"),
            Problem::default_assignment("x"),
            Problem::from(sqlx::Error::RowNotFound),
        ];
        for p in problems {
            let documented = PROBLEM_TYPES.iter().find(|(slug, _, _)| *slug == p.kind);
            assert_eq!(documented.map(|(_, status, _)| *status), Some(p.status.as_u16()), "{}", p.kind);
        }
    }
}
