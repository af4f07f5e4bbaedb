//! Request extractors whose failures are SCIM errors: the JSON body (with the size limit and
//! media-type check), ETag preconditions, and the base URL for `meta.location`.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use muster_scim::ScimError;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

/// A request body parsed as JSON, at most `scim.max_body_bytes` long.
#[derive(Debug)]
pub struct ScimBody(pub Value);

impl FromRequest<AppState> for ScimBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            if !(essence.ends_with("/json") || essence.ends_with("+json")) {
                return Err(ScimError::unsupported_media_type(format!(
                    "content type '{essence}' is not supported; send application/scim+json"
                ))
                .into());
            }
        }
        let limit = state.scim.max_body_bytes;
        if let Some(len) =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            && len > limit
        {
            return Err(ScimError::payload_too_large(format!("the body is over the {limit}-byte limit")).into());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| ScimError::payload_too_large(format!("the body is over the {limit}-byte limit")))?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ScimError::invalid_syntax(format!("the body is not valid JSON: {e}")))?;
        Ok(ScimBody(value))
    }
}

/// The versions named by `If-Match` (`None` when absent); `*` matches any.
pub fn if_match(headers: &HeaderMap) -> Option<Vec<String>> {
    let raw = headers.get(header::IF_MATCH)?.to_str().ok()?;
    Some(raw.split(',').map(|t| t.trim().trim_start_matches("W/").trim_matches('"').to_string()).collect())
}

/// Whether a resource at `version` satisfies `If-Match`; 412 otherwise (RFC 7644 §3.14).
pub fn check_if_match(headers: &HeaderMap, version: i64) -> Result<(), ApiError> {
    match if_match(headers) {
        None => Ok(()),
        Some(tags) if tags.iter().any(|t| t == "*" || *t == version.to_string()) => Ok(()),
        Some(_) => Err(ScimError::precondition_failed(format!(
            "the resource is at version W/\"{version}\"; fetch it again before changing it"
        ))
        .into()),
    }
}

/// Whether `If-None-Match` names `version` (a GET may then answer 304).
pub fn none_match(headers: &HeaderMap, version: i64) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|raw| {
        raw.split(',').any(|t| {
            let t = t.trim().trim_start_matches("W/").trim_matches('"');
            t == "*" || t == version.to_string()
        })
    })
}

/// The public base URL of the SCIM API (`…/scim/v2`), for `meta.location`.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(url) = &state.scim.public_url {
            return Ok(BaseUrl(format!("{}/scim/v2", url.trim_end_matches('/'))));
        }
        let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
        let scheme = parts.headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
        Ok(BaseUrl(format!("{scheme}://{host}/scim/v2")))
    }
}
