//! Stored rows to SCIM JSON: the canonical document plus `id`, `meta`, and the attributes
//! kept as rows (`members` of a Group, `groups` of a User).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use muster_contracts::{EventEnvelope, EventKind};
use muster_scim::schema::ResourceType;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::scim_json;
use crate::store::{MemberRow, ResourceRow};

/// The weak ETag of a version (RFC 7644 §3.14).
pub fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The resource's JSON; `related` fills `members` (Groups) or `groups` (Users) when loaded.
/// Takes the row: its document becomes the answer, without a copy per response.
pub fn render(rt: &ResourceType, row: ResourceRow, base: &str, related: Option<Value>) -> Value {
    let mut doc = row.resource;
    if let Some(map) = doc.as_object_mut() {
        map.insert("id".into(), json!(row.id.to_string()));
        let attr = crate::routes::related_attribute(rt);
        if let Some(Value::Array(items)) = related
            && !items.is_empty()
        {
            map.insert(attr.into(), Value::Array(items));
        }
        map.insert(
            "meta".into(),
            json!({
                "resourceType": rt.name,
                "created": timestamp(row.created_at),
                "lastModified": timestamp(row.updated_at),
                "location": format!("{base}{}/{}", rt.endpoint, row.id),
                "version": etag(row.version),
            }),
        );
    }
    doc
}

/// `members` of a Group.
pub fn members_json(base: &str, members: &[MemberRow]) -> Value {
    Value::Array(
        members
            .iter()
            .map(|m| {
                let endpoint = if m.member_type == "Group" { "Groups" } else { "Users" };
                let mut v = json!({"value": m.member_id.to_string(), "type": m.member_type, "$ref": format!("{base}/{endpoint}/{}", m.member_id)});
                if let (Some(d), Some(map)) = (&m.display, v.as_object_mut()) {
                    map.insert("display".into(), json!(d));
                }
                v
            })
            .collect(),
    )
}

/// `groups` of a User.
pub fn groups_json(base: &str, groups: &[(Uuid, String)]) -> Value {
    Value::Array(
        groups
            .iter()
            .map(|(id, name)| json!({"value": id.to_string(), "display": name, "type": "direct", "$ref": format!("{base}/Groups/{id}")}))
            .collect(),
    )
}

/// A single-resource response with its `ETag` (and `Location` on creation).
pub fn resource_response(status: StatusCode, body: &Value, version: i64) -> Response {
    let mut response = scim_json(status, body);
    if let Ok(v) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if status == StatusCode::CREATED
        && let Some(loc) = body.pointer("/meta/location").and_then(Value::as_str)
        && let Ok(v) = HeaderValue::from_str(loc)
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The event for a change of `row`.
pub fn event(tenant: Uuid, kind: EventKind, id: Uuid, version: i64, at: DateTime<Utc>) -> EventEnvelope {
    EventEnvelope::new(tenant, kind, id.to_string(), version, at)
}
