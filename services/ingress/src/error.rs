//! `ApiError`: a [`ScimError`] that axum renders as `application/scim+json`, with the
//! mapping from database errors (unique violations by constraint name become 409).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_scim::ScimError;

/// The ingress's one error type at the HTTP boundary.
#[derive(Debug)]
pub struct ApiError(pub ScimError);

impl ApiError {
    /// 409 `uniqueness`: another user of the company has this `userName`.
    pub fn user_name_taken() -> ApiError {
        ApiError(ScimError::uniqueness("a User with this userName already exists"))
    }
}

impl From<ScimError> for ApiError {
    fn from(e: ScimError) -> Self {
        ApiError(e)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match muster_infra::db::violated_constraint(&err).as_deref() {
            Some("users_user_name_key") => return ApiError::user_name_taken(),
            Some("groups_display_name_key") => {
                return ApiError(ScimError::uniqueness("a Group with this displayName already exists"));
            }
            // Members added to a group deleted meanwhile (a membership PATCH does not hold the
            // group's row while it writes them).
            Some("group_members_tenant_id_group_id_fkey") => {
                return ApiError(ScimError::not_found("the Group was deleted while its members were written"));
            }
            _ => {}
        }
        if muster_infra::db::is_unstorable_text(&err) {
            return ApiError(ScimError::invalid_value("a value holds the character U+0000, which cannot be stored"));
        }
        if muster_infra::db::is_unavailable(&err) {
            tracing::error!(error = %err, "database unavailable");
            return ApiError(ScimError::unavailable());
        }
        tracing::error!(error = %err, "database error");
        ApiError(ScimError::internal())
    }
}

/// The media type of every SCIM response body (RFC 7644 §3.1).
pub const SCIM_JSON: &str = "application/scim+json";

/// A JSON body with the SCIM media type.
pub fn scim_json(status: StatusCode, body: &serde_json::Value) -> Response {
    // Straight into bytes: `to_string` goes through `fmt::Display`, nearly twice the instructions.
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|_| br#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"500"}"#.to_vec());
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_client_error() {
            tracing::info!(status = self.0.status, detail = %self.0.detail, "request refused");
        }
        let mut response = scim_json(status, &self.0.body());
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"muster-scim\", error=\"invalid_token\""),
            );
        }
        response
    }
}
