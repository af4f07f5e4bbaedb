//! Validation and canonicalisation of resource documents against the schema table, and the
//! `attributes` / `excludedAttributes` projection of RFC 7644 §3.9.
//!
//! A canonical document uses the schema's spelling for every key, holds extension attributes
//! under their schema URN, carries `schemas`, and never holds `id`, `meta`, read-only or
//! write-only attributes, nor a Group's `members` (stored as rows).

use serde_json::{Map, Value, json};

use crate::error::ScimError;
use crate::filter::AttrPath;
use crate::schema::{AttrType, Attribute, MAX_MULTI_VALUES, MAX_STRING_LEN, Mutability, ResourceKind, ResourceType};

/// A Group member reference as sent by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRef {
    /// The member's SCIM id.
    pub value: String,
    /// `User` or `Group`, when the client said.
    pub kind: Option<String>,
}

pub(crate) fn get_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// Validates a POST/PUT body and returns the canonical document. For Groups, `members` is
/// returned apart (`None` when the body had no `members` key).
pub fn normalize_resource(rt: &ResourceType, input: &Value) -> Result<(Value, Option<Vec<MemberRef>>), ScimError> {
    let obj = input.as_object().ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    check_schemas(rt, obj)?;
    let mut out = Map::new();
    let mut members = None;
    for (key, value) in obj {
        if ["schemas", "id", "meta"].iter().any(|k| key.eq_ignore_ascii_case(k)) {
            continue; // read-only: ignored on input (RFC 7643 §7)
        }
        if key.eq_ignore_ascii_case("externalId") {
            if let Some(v) = normalize_scalar(&external_id_attribute(), value, AttrName("externalId", None))? {
                out.insert("externalId".into(), v);
            }
            continue;
        }
        if rt.kind == ResourceKind::Group && key.eq_ignore_ascii_case("members") {
            members = Some(member_refs(value)?);
            continue;
        }
        if let Some(ext) = rt.extension(key) {
            let ext_obj = value.as_object().ok_or_else(|| {
                ScimError::invalid_value(format!("'{}' must be an object of extension attributes", ext.id))
            })?;
            for (ext_key, ext_value) in ext_obj {
                let attribute = ext.attribute(ext_key).ok_or_else(|| {
                    ScimError::invalid_syntax(format!("unknown attribute '{ext_key}' in schema {}", ext.id))
                })?;
                set_attribute(&mut out, Some(ext.id), attribute, ext_value)?;
            }
            continue;
        }
        let path = AttrPath::parse(key).map_err(ScimError::invalid_syntax)?;
        let schema = rt
            .schema_for(path.urn.as_deref())
            .ok_or_else(|| ScimError::invalid_syntax(format!("unknown attribute '{key}'")))?;
        let attribute = schema
            .attribute(&path.attr)
            .ok_or_else(|| ScimError::invalid_syntax(format!("unknown attribute '{key}'")))?;
        if path.sub.is_some() {
            return Err(ScimError::invalid_syntax(format!("'{key}' is a path, not an attribute name")));
        }
        let urn = (schema.id != rt.schema.id).then_some(schema.id);
        set_attribute(&mut out, urn, attribute, value)?;
    }
    for attribute in rt.schema.attributes.iter().filter(|a| a.required) {
        if !out.contains_key(attribute.name) {
            return Err(ScimError::invalid_value(format!("'{}' is required", attribute.name)));
        }
    }
    let mut doc = Value::Object(out);
    set_schemas(rt, &mut doc);
    Ok((doc, members))
}

/// Recomputes `schemas`: the core schema plus each extension the document holds.
pub fn set_schemas(rt: &ResourceType, doc: &mut Value) {
    let Some(map) = doc.as_object_mut() else { return };
    let mut schemas = vec![Value::String(rt.schema.id.into())];
    for ext in &rt.extensions {
        match map.get(ext.id) {
            Some(Value::Object(o)) if !o.is_empty() => schemas.push(Value::String(ext.id.into())),
            Some(_) => {
                map.remove(ext.id);
            }
            None => {}
        }
    }
    map.insert("schemas".into(), Value::Array(schemas));
}

fn check_schemas(rt: &ResourceType, obj: &Map<String, Value>) -> Result<(), ScimError> {
    let schemas = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax(format!("'schemas' must be an array listing {}", rt.schema.id)))?;
    let mut has_core = false;
    for s in schemas {
        let s = s.as_str().ok_or_else(|| ScimError::invalid_syntax("'schemas' must hold strings"))?;
        if s.eq_ignore_ascii_case(rt.schema.id) {
            has_core = true;
        }
        // Other URNs are tolerated: Entra ID lists Microsoft's own group schema
        // (http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group) without
        // sending attributes under it. Attributes under an unknown URN are still refused.
    }
    if !has_core {
        return Err(ScimError::invalid_syntax(format!("'schemas' must list {}", rt.schema.id)));
    }
    Ok(())
}

fn external_id_attribute() -> Attribute {
    Attribute {
        name: "externalId",
        ty: AttrType::String,
        multi_valued: false,
        required: false,
        case_exact: true,
        mutability: Mutability::ReadWrite,
        returned: crate::schema::Returned::Default,
        unique: false,
        sub_attributes: Vec::new(),
        canonical_values: Vec::new(),
        reference_types: Vec::new(),
        description: "",
    }
}

/// Normalises `value` for `attribute` and stores it in `doc` (core) or `doc[urn]`; null
/// unassigns. Read-only and write-only attributes are dropped, as RFC 7643 §7 allows.
pub(crate) fn set_attribute(
    doc: &mut Map<String, Value>,
    urn: Option<&'static str>,
    attribute: &Attribute,
    value: &Value,
) -> Result<(), ScimError> {
    if matches!(attribute.mutability, Mutability::ReadOnly | Mutability::WriteOnly) {
        return Ok(());
    }
    let normalized = normalize_value(attribute, value)?;
    let container = container_mut(doc, urn);
    match normalized {
        Some(v) => {
            container.insert(attribute.name.into(), v);
        }
        None => {
            container.remove(attribute.name);
        }
    }
    Ok(())
}

/// The object that holds an attribute: the document itself, or its extension object.
pub(crate) fn container_mut<'a>(doc: &'a mut Map<String, Value>, urn: Option<&str>) -> &'a mut Map<String, Value> {
    match urn {
        None => doc,
        Some(urn) => {
            let slot = doc.entry(urn.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !slot.is_object() {
                *slot = Value::Object(Map::new());
            }
            match slot {
                Value::Object(map) => map,
                _ => unreachable!("slot was just made an object"),
            }
        }
    }
}

/// Normalises a whole attribute value (array for multi-valued ones). `None` means unassigned.
pub(crate) fn normalize_value(attribute: &Attribute, value: &Value) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if !attribute.multi_valued {
        return normalize_single(attribute, value);
    }
    let items =
        value.as_array().ok_or_else(|| ScimError::invalid_value(format!("'{}' must be an array", attribute.name)))?;
    if items.len() > MAX_MULTI_VALUES {
        return Err(ScimError::invalid_value(format!("'{}' has more than {MAX_MULTI_VALUES} values", attribute.name)));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let Some(v) = normalize_single(attribute, item)?
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
    let primaries = out.iter().filter(|v| v.get("primary") == Some(&Value::Bool(true))).count();
    if primaries > 1 {
        return Err(ScimError::invalid_value(format!("'{}' has more than one value marked primary", attribute.name)));
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}

/// Normalises one value (one element of a multi-valued attribute).
pub(crate) fn normalize_single(attribute: &Attribute, value: &Value) -> Result<Option<Value>, ScimError> {
    if attribute.ty != AttrType::Complex {
        return normalize_scalar(attribute, value, AttrName(attribute.name, None));
    }
    let obj = match value {
        Value::Object(o) => o,
        Value::Null => return Ok(None),
        // Entra ID sends the enterprise manager as a bare id string: it means {"value": id}.
        scalar if !scalar.is_array() && attribute.sub("value").is_some() => {
            return normalize_single(attribute, &json!({ "value": scalar }));
        }
        _ => return Err(ScimError::invalid_value(format!("'{}' must be an object", attribute.name))),
    };
    let mut out = Map::new();
    for (key, sub_value) in obj {
        let sub = attribute.sub(key).ok_or_else(|| {
            ScimError::invalid_syntax(format!("unknown sub-attribute '{key}' of '{}'", attribute.name))
        })?;
        if sub.mutability == Mutability::ReadOnly {
            continue;
        }
        if let Some(v) = normalize_scalar(sub, sub_value, AttrName(attribute.name, Some(sub.name)))? {
            out.insert(sub.name.into(), v);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// An attribute's name in an error message, `parent.sub` for a sub-attribute: written only
/// when an error is (every value of every request is checked; few are refused).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttrName<'a>(pub &'a str, pub Option<&'a str>);

impl std::fmt::Display for AttrName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            Some(sub) => write!(f, "{}.{sub}", self.0),
            None => f.write_str(self.0),
        }
    }
}

/// Type-checks a simple value. Entra ID's string booleans ("True", "False") are accepted.
pub(crate) fn normalize_scalar(
    attribute: &Attribute,
    value: &Value,
    path: AttrName<'_>,
) -> Result<Option<Value>, ScimError> {
    let wrong = || ScimError::invalid_value(format!("'{path}' must be of type {:?}", attribute.ty));
    Ok(Some(match (attribute.ty, value) {
        (_, Value::Null) => return Ok(None),
        (AttrType::String | AttrType::Reference | AttrType::Binary, Value::String(s)) => {
            // Bytes first: a string no longer than the limit in bytes is within it in characters.
            if s.len() > MAX_STRING_LEN && s.chars().count() > MAX_STRING_LEN {
                return Err(ScimError::invalid_value(format!("'{path}' is longer than {MAX_STRING_LEN} characters")));
            }
            value.clone()
        }
        (AttrType::Boolean, Value::Bool(_)) => value.clone(),
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
        (AttrType::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
        (AttrType::Integer, Value::Number(n)) if n.is_i64() => value.clone(),
        (AttrType::Decimal, Value::Number(_)) => value.clone(),
        (AttrType::DateTime, Value::String(s)) if is_date_time(s) => value.clone(),
        (AttrType::DateTime, Value::String(_)) => {
            return Err(ScimError::invalid_value(format!(
                "'{path}' must be an xsd:dateTime such as 2024-01-31T12:00:00Z"
            )));
        }
        (AttrType::Complex, _) => return Err(wrong()),
        _ => return Err(wrong()),
    }))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`, the xsd:dateTime form RFC 7643 §2.3.5 asks for.
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let head = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match &b[i..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    }
}

/// Reads a `members` value: an array of `{"value": id, "type": …}` (a lone object is accepted).
pub fn member_refs(value: &Value) -> Result<Vec<MemberRef>, ScimError> {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![value],
        Value::Null => Vec::new(),
        _ => return Err(ScimError::invalid_value("'members' must be an array of {\"value\": id}")),
    };
    items
        .into_iter()
        .map(|item| {
            let obj = item
                .as_object()
                .ok_or_else(|| ScimError::invalid_value("each member must be an object with a 'value'"))?;
            for key in obj.keys() {
                if !["value", "type", "display", "$ref"].iter().any(|k| key.eq_ignore_ascii_case(k)) {
                    return Err(ScimError::invalid_syntax(format!("unknown sub-attribute '{key}' of 'members'")));
                }
            }
            let value = get_ci(obj, "value")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ScimError::invalid_value("each member needs a string 'value'"))?;
            let kind = get_ci(obj, "type").and_then(Value::as_str).map(str::to_string);
            if let Some(k) = &kind
                && !k.eq_ignore_ascii_case("User")
                && !k.eq_ignore_ascii_case("Group")
            {
                return Err(ScimError::invalid_value(format!("member type '{k}' must be User or Group")));
            }
            Ok(MemberRef { value: value.to_string(), kind })
        })
        .collect()
}

/// One entry of `attributes` / `excludedAttributes`, resolved against the schema.
#[derive(Debug, Clone)]
struct Selector {
    urn: Option<&'static str>,
    /// `None` selects the whole extension object.
    attr: Option<&'static str>,
    sub: Option<String>,
}

fn selectors(rt: &ResourceType, list: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(ext) = rt.extension(item) {
            out.push(Selector { urn: Some(ext.id), attr: None, sub: None });
            continue;
        }
        if item.eq_ignore_ascii_case("meta") || item.to_ascii_lowercase().starts_with("meta.") {
            out.push(Selector { urn: None, attr: Some("meta"), sub: None });
            continue;
        }
        let Ok(path) = AttrPath::parse(item) else { continue };
        let Some(schema) = rt.schema_for(path.urn.as_deref()) else { continue };
        let urn = (schema.id != rt.schema.id).then_some(schema.id);
        let name = if path.attr.eq_ignore_ascii_case("externalId") {
            Some("externalId")
        } else {
            schema.attribute(&path.attr).map(|a| a.name)
        };
        if let Some(name) = name {
            out.push(Selector { urn, attr: Some(name), sub: path.sub });
        }
    }
    out
}

/// Whether the `attributes` / `excludedAttributes` lists mention `members` at all (the
/// ingress skips loading memberships it will not return).
pub fn wants_attribute(rt: &ResourceType, attributes: Option<&str>, excluded: Option<&str>, name: &str) -> bool {
    if let Some(list) = attributes.filter(|l| !l.trim().is_empty()) {
        return selectors(rt, list).iter().any(|s| s.urn.is_none() && s.attr == Some(name));
    }
    if let Some(list) = excluded {
        return !selectors(rt, list).iter().any(|s| s.urn.is_none() && s.attr == Some(name) && s.sub.is_none());
    }
    true
}

/// Applies RFC 7644 §3.9: `attributes` keeps only what is listed (plus `id` and `schemas`,
/// which are always returned); otherwise `excludedAttributes` drops what is listed.
pub fn project(rt: &ResourceType, doc: Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let Value::Object(map) = doc else { return doc };
    if let Some(list) = attributes.filter(|l| !l.trim().is_empty()) {
        let wanted = selectors(rt, list);
        let mut out = Map::new();
        for (key, value) in map {
            if key == "id" || key == "schemas" {
                out.insert(key, value);
                continue;
            }
            if let Some(ext) = rt.extension(&key) {
                if wanted.iter().any(|s| s.urn == Some(ext.id) && s.attr.is_none()) {
                    out.insert(key, value);
                    continue;
                }
                let picked: Vec<&Selector> = wanted.iter().filter(|s| s.urn == Some(ext.id)).collect();
                if let Value::Object(ext_map) = value {
                    let kept: Map<String, Value> =
                        ext_map.into_iter().filter_map(|(k, v)| pick(&picked, &k, v).map(|v| (k, v))).collect();
                    if !kept.is_empty() {
                        out.insert(key, Value::Object(kept));
                    }
                }
                continue;
            }
            let picked: Vec<&Selector> = wanted.iter().filter(|s| s.urn.is_none()).collect();
            if let Some(v) = pick(&picked, &key, value) {
                out.insert(key, v);
            }
        }
        return Value::Object(out);
    }
    let Some(list) = excluded else { return Value::Object(map) };
    let dropped = selectors(rt, list);
    let mut out = Map::new();
    for (key, value) in map {
        if key == "id" || key == "schemas" {
            out.insert(key, value);
            continue;
        }
        if let Some(ext) = rt.extension(&key) {
            if dropped.iter().any(|s| s.urn == Some(ext.id) && s.attr.is_none()) {
                continue;
            }
            if let Value::Object(ext_map) = value {
                let kept: Map<String, Value> = ext_map
                    .into_iter()
                    .filter(|(k, _)| {
                        !dropped.iter().any(|s| s.urn == Some(ext.id) && s.attr == Some(k.as_str()) && s.sub.is_none())
                    })
                    .collect();
                if !kept.is_empty() {
                    out.insert(key, Value::Object(kept));
                }
            }
            continue;
        }
        if dropped.iter().any(|s| s.urn.is_none() && s.attr == Some(key.as_str()) && s.sub.is_none()) {
            continue;
        }
        out.insert(key, value);
    }
    Value::Object(out)
}

/// Keeps `value` under `key` if a selector names it; a selector with a sub-attribute keeps
/// only that sub-attribute (of each element, for multi-valued attributes).
fn pick(selectors: &[&Selector], key: &str, value: Value) -> Option<Value> {
    let matching: Vec<&&Selector> = selectors.iter().filter(|s| s.attr == Some(key)).collect();
    if matching.is_empty() {
        return None;
    }
    if matching.iter().any(|s| s.sub.is_none()) {
        return Some(value);
    }
    let keep_subs = |obj: Map<String, Value>| -> Map<String, Value> {
        obj.into_iter()
            .filter(|(k, _)| matching.iter().any(|s| s.sub.as_deref().is_some_and(|sub| sub.eq_ignore_ascii_case(k))))
            .collect()
    };
    match value {
        Value::Object(obj) => {
            Some(Value::Object(keep_subs(obj))).filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .into_iter()
                .map(|i| match i {
                    Value::Object(o) => Value::Object(keep_subs(o)),
                    other => other,
                })
                .collect(),
        )),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA, group_type, user_type};

    fn user(v: Value) -> Result<Value, ScimError> {
        normalize_resource(user_type(), &v).map(|(d, _)| d)
    }

    #[test]
    fn a_refused_value_is_named_by_its_path() {
        let detail = |v: Value| user(v).expect_err("refused").detail;
        let wrong_sub = detail(json!({"schemas": [USER_SCHEMA], "userName": "a@x.com", "name": {"givenName": 7}}));
        assert!(wrong_sub.contains("'name.givenName' must be of type"), "{wrong_sub}");
        let wrong_top = detail(json!({"schemas": [USER_SCHEMA], "userName": "a@x.com", "active": 3}));
        assert!(wrong_top.contains("'active' must be of type"), "{wrong_top}");
        let wrong_external = detail(json!({"schemas": [USER_SCHEMA], "userName": "a@x.com", "externalId": 3}));
        assert!(wrong_external.contains("'externalId' must be of type"), "{wrong_external}");
    }

    #[test]
    fn strings_are_limited_in_characters_not_bytes() {
        // 'é' is two bytes: over the limit in bytes, at it in characters.
        let at_limit = "é".repeat(MAX_STRING_LEN);
        assert!(user(json!({"schemas": [USER_SCHEMA], "userName": "a@x.com", "displayName": at_limit})).is_ok());
        let over = "é".repeat(MAX_STRING_LEN + 1);
        let refused =
            user(json!({"schemas": [USER_SCHEMA], "userName": "a@x.com", "displayName": over})).expect_err("over");
        assert!(refused.detail.contains("'displayName' is longer than"), "{}", refused.detail);
    }

    #[test]
    fn canonicalises_names_and_entra_string_booleans() {
        let doc = user(json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_USER_SCHEMA],
            "UserName": "a@x.com",
            "ACTIVE": "False",
            "emails": [{"Primary": "true", "type": "work", "value": "a@x.com"}],
            ENTERPRISE_USER_SCHEMA: {"Manager": "m-1", "department": "R&D"},
            "id": "ignored", "meta": {"created": "ignored"}
        }))
        .unwrap();
        assert_eq!(doc["userName"], "a@x.com");
        assert_eq!(doc["active"], false);
        assert_eq!(doc["emails"][0]["primary"], true);
        assert_eq!(doc[ENTERPRISE_USER_SCHEMA]["manager"]["value"], "m-1");
        assert!(doc.get("id").is_none() && doc.get("meta").is_none());
        assert_eq!(doc["schemas"], json!([USER_SCHEMA, ENTERPRISE_USER_SCHEMA]));
    }

    #[test]
    fn rejects_what_the_schema_does_not_allow() {
        let base = |extra: Value| {
            let mut v = json!({"schemas": [USER_SCHEMA], "userName": "a"});
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            user(v).unwrap_err()
        };
        assert_eq!(base(json!({"shoeSize": 42})).scim_type, Some(crate::error::ScimType::InvalidSyntax));
        assert_eq!(base(json!({"active": "maybe"})).scim_type, Some(crate::error::ScimType::InvalidValue));
        assert_eq!(base(json!({"title": 7})).scim_type, Some(crate::error::ScimType::InvalidValue));
        assert_eq!(base(json!({"title": "x".repeat(3000)})).scim_type, Some(crate::error::ScimType::InvalidValue));
        assert_eq!(
            base(json!({"emails": [{"value": "a", "primary": true}, {"value": "b", "primary": true}]})).scim_type,
            Some(crate::error::ScimType::InvalidValue)
        );
        let no_user_name = user(json!({"schemas": [USER_SCHEMA]})).unwrap_err();
        assert!(no_user_name.detail.contains("userName"));
        let no_schemas = user(json!({"userName": "a"})).unwrap_err();
        assert_eq!(no_schemas.scim_type, Some(crate::error::ScimType::InvalidSyntax));
    }

    #[test]
    fn group_members_are_returned_apart_from_the_document() {
        let (doc, members) = normalize_resource(
            group_type(),
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G", "members": [{"value": "u1"}]}),
        )
        .unwrap();
        assert!(doc.get("members").is_none());
        assert_eq!(members.unwrap(), vec![MemberRef { value: "u1".into(), kind: None }]);
    }

    #[test]
    fn date_times_follow_xsd() {
        assert!(is_date_time("2011-05-13T04:42:34Z"));
        assert!(is_date_time("2011-05-13T04:42:34.123+02:00"));
        assert!(!is_date_time("2011-05-13"));
        assert!(!is_date_time("yesterday at noon, roughly"));
    }

    #[test]
    fn projection_keeps_id_and_schemas_and_honours_both_lists() {
        let doc = json!({"id": "1", "schemas": [USER_SCHEMA], "userName": "a", "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "a@x", "type": "work"}], ENTERPRISE_USER_SCHEMA: {"department": "D", "costCenter": "C"}});
        let only = project(
            user_type(),
            doc.clone(),
            Some("userName,name.givenName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
            None,
        );
        assert_eq!(
            only,
            json!({"id": "1", "schemas": [USER_SCHEMA], "userName": "a", "name": {"givenName": "A"}, ENTERPRISE_USER_SCHEMA: {"department": "D"}})
        );
        let without = project(user_type(), doc, None, Some("emails,name,id"));
        assert!(without.get("emails").is_none() && without.get("name").is_none());
        assert_eq!(without["id"], "1");
        assert!(!wants_attribute(group_type(), None, Some("members"), "members"));
        assert!(wants_attribute(group_type(), None, Some("displayName"), "members"));
    }
}
