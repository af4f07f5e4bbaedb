//! Discovery endpoints (RFC 7644 §4): what the server supports, told truthfully.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use muster_scim::ScimError;
use muster_scim::schema::{LIST_RESPONSE_SCHEMA, all_schemas, group_type, user_type};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, scim_json};
use crate::extract::BaseUrl;

fn list(resources: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_RESPONSE_SCHEMA],
            "totalResults": resources.len(),
            "startIndex": 1,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

/// `GET /ServiceProviderConfig`.
pub async fn service_provider_config(State(state): State<AppState>, BaseUrl(base): BaseUrl) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://github.com/muster/muster#scim-20-api",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": state.scim.max_page_size},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "A tenant's SCIM token (musterctl tenant create / token create), sent as Authorization: Bearer.",
                "primary": true,
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
        }),
    )
}

/// `GET /Schemas`.
pub async fn schemas(BaseUrl(base): BaseUrl) -> Response {
    list(all_schemas().into_iter().map(|s| s.to_json(&base)).collect())
}

/// `GET /Schemas/{id}`.
pub async fn schema(BaseUrl(base): BaseUrl, Path(id): Path<String>) -> Result<Response, ApiError> {
    let schema = all_schemas()
        .into_iter()
        .find(|s| s.id.eq_ignore_ascii_case(&id))
        .ok_or_else(|| ApiError(ScimError::not_found(format!("schema {id} not found"))))?;
    Ok(scim_json(StatusCode::OK, &schema.to_json(&base)))
}

/// `GET /ResourceTypes`.
pub async fn resource_types(BaseUrl(base): BaseUrl) -> Response {
    list(vec![user_type().to_json(&base), group_type().to_json(&base)])
}

/// `GET /ResourceTypes/{name}`.
pub async fn resource_type(BaseUrl(base): BaseUrl, Path(name): Path<String>) -> Result<Response, ApiError> {
    [user_type(), group_type()]
        .into_iter()
        .find(|rt| rt.name.eq_ignore_ascii_case(&name))
        .map(|rt| scim_json(StatusCode::OK, &rt.to_json(&base)))
        .ok_or_else(|| ApiError(ScimError::not_found(format!("resource type {name} not found"))))
}
