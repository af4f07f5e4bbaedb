//! PATCH (RFC 7644 §3.5.2) applied to a canonical document, in the dialect Entra ID speaks:
//! capitalised ops, string booleans, the manager as a bare id, `remove` of `members` with a
//! value list, and `add` to a filtered element that does not exist yet (which creates it).
//! A Group's `members` are not in the document: changes to them come back as [`MemberChange`].

use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::{AttrPath, CompareOp, Filter};
use crate::resource::{
    AttrName, MemberRef, container_mut, get_ci, member_refs, normalize_resource, normalize_scalar, normalize_single,
    normalize_value, set_schemas,
};
use crate::schema::{AttrType, Attribute, Mutability, PATCH_OP_SCHEMA, ResourceKind, ResourceType};

/// Most operations accepted in one PATCH request.
pub const MAX_OPERATIONS: usize = 1000;

/// The three PATCH operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Add,
    Replace,
    Remove,
}

/// One operation of a PatchOp request.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOperation {
    pub op: OpKind,
    pub path: Option<String>,
    pub value: Option<Value>,
}

/// A change to a Group's membership rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    Add(Vec<MemberRef>),
    Remove(Vec<String>),
    RemoveAll,
    Replace(Vec<MemberRef>),
}

/// The patched document and the membership changes to apply alongside it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOutcome {
    pub doc: Value,
    pub member_changes: Vec<MemberChange>,
}

/// Reads a PatchOp request body.
pub fn parse_patch_request(body: &Value) -> Result<Vec<PatchOperation>, ScimError> {
    let obj = body.as_object().ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    let schemas_ok = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP_SCHEMA))));
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!("'schemas' must list {PATCH_OP_SCHEMA}")));
    }
    let ops = get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("'Operations' must be an array"))?;
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax("'Operations' is empty"));
    }
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::too_many(format!("more than {MAX_OPERATIONS} operations in one request")));
    }
    ops.iter()
        .map(|op| {
            let o = op.as_object().ok_or_else(|| ScimError::invalid_syntax("each operation must be an object"))?;
            let kind = match get_ci(o, "op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
                Some("add") => OpKind::Add,
                Some("replace") => OpKind::Replace,
                Some("remove") => OpKind::Remove,
                Some(other) => return Err(ScimError::invalid_syntax(format!("unknown op '{other}'"))),
                None => return Err(ScimError::invalid_syntax("each operation needs an 'op'")),
            };
            let path = match get_ci(o, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.trim().is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(ScimError::invalid_path("'path' must be a string")),
            };
            let value = get_ci(o, "value").cloned();
            if kind != OpKind::Remove && value.is_none() {
                return Err(ScimError::invalid_value("add and replace need a 'value'"));
            }
            Ok(PatchOperation { op: kind, path, value })
        })
        .collect()
}

/// A parsed PATCH path: `attrPath`, or `attr[filter]` optionally followed by `.sub`.
#[derive(Debug, Clone)]
struct PatchPath {
    /// Canonical extension URN, `None` for the core schema.
    urn: Option<&'static str>,
    /// `None` when the path is a bare extension URN (the whole extension object).
    attr: Option<&'static Attribute>,
    /// `externalId` is a common attribute outside the schema table.
    external_id: bool,
    sub: Option<&'static Attribute>,
    filter: Option<Filter>,
}

fn parse_path(rt: &'static ResourceType, text: &str) -> Result<PatchPath, ScimError> {
    let text = text.trim();
    if let Some(ext) = rt.extension(text) {
        return Ok(PatchPath { urn: Some(ext.id), attr: None, external_id: false, sub: None, filter: None });
    }
    let (attr_text, filter, after) = match text.find('[') {
        Some(open) => {
            let close = text
                .rfind(']')
                .filter(|c| *c > open)
                .ok_or_else(|| ScimError::invalid_path(format!("'{text}' has an unclosed '['")))?;
            let filter = Filter::parse(&text[open + 1..close])
                .map_err(|e| ScimError::invalid_path(format!("'{text}': {}", e.detail)))?;
            let after = &text[close + 1..];
            let sub = match after.strip_prefix('.') {
                Some(s) => Some(s),
                None if after.is_empty() => None,
                None => return Err(ScimError::invalid_path(format!("'{text}' has text after ']'"))),
            };
            (&text[..open], Some(filter), sub)
        }
        None => (text, None, None),
    };
    let path = AttrPath::parse(attr_text).map_err(ScimError::invalid_path)?;
    let schema = rt
        .schema_for(path.urn.as_deref())
        .ok_or_else(|| ScimError::invalid_path(format!("'{text}' names an unknown schema")))?;
    let urn = (schema.id != rt.schema.id).then_some(schema.id);
    if urn.is_none() && path.attr.eq_ignore_ascii_case("externalId") && filter.is_none() && path.sub.is_none() {
        return Ok(PatchPath { urn, attr: None, external_id: true, sub: None, filter: None });
    }
    if urn.is_none() && ["id", "meta", "schemas"].iter().any(|a| path.attr.eq_ignore_ascii_case(a)) {
        return Err(ScimError::mutability(format!("'{}' is read-only", path.attr)));
    }
    let attribute = schema
        .attribute(&path.attr)
        .ok_or_else(|| ScimError::invalid_path(format!("'{text}' names no attribute of {}", rt.name)))?;
    let sub_name = match (path.sub.as_deref(), after) {
        (Some(_), Some(_)) => return Err(ScimError::invalid_path(format!("'{text}' names two sub-attributes"))),
        (s, a) => s.or(a),
    };
    let sub = match sub_name {
        Some(name) => Some(attribute.sub(name).ok_or_else(|| {
            ScimError::invalid_path(format!("'{text}': '{}' has no sub-attribute '{name}'", attribute.name))
        })?),
        None => None,
    };
    if filter.is_some() && !(attribute.multi_valued && attribute.ty == AttrType::Complex) {
        return Err(ScimError::invalid_path(format!("'{text}': only multi-valued attributes take a filter")));
    }
    for a in std::iter::once(attribute).chain(sub) {
        if a.mutability == Mutability::ReadOnly {
            return Err(ScimError::mutability(format!("'{text}' is read-only")));
        }
    }
    Ok(PatchPath { urn, attr: Some(attribute), external_id: false, sub, filter })
}

/// Applies `ops` in order to `doc` (canonical, as stored) and re-validates the result.
pub fn apply_patch(rt: &'static ResourceType, doc: &Value, ops: &[PatchOperation]) -> Result<PatchOutcome, ScimError> {
    let mut map = doc.as_object().cloned().unwrap_or_default();
    let mut member_changes = Vec::new();
    for op in ops {
        match (&op.path, op.op) {
            (None, OpKind::Remove) => return Err(ScimError::no_target("remove needs a 'path'")),
            (None, kind) => {
                let Some(Value::Object(values)) = &op.value else {
                    return Err(ScimError::invalid_value("an operation without 'path' needs an object 'value'"));
                };
                for (key, value) in values {
                    if key.eq_ignore_ascii_case("schemas") {
                        continue;
                    }
                    if let (Some(ext), Value::Object(ext_values)) = (rt.extension(key), value) {
                        for (ext_key, ext_value) in ext_values {
                            let path = parse_path(rt, &format!("{}:{ext_key}", ext.id))?;
                            apply_one(rt, &mut map, &mut member_changes, kind, &path, Some(ext_value))?;
                        }
                        continue;
                    }
                    let path = parse_path(rt, key)?;
                    apply_one(rt, &mut map, &mut member_changes, kind, &path, Some(value))?;
                }
            }
            (Some(text), kind) => {
                let path = parse_path(rt, text)?;
                apply_one(rt, &mut map, &mut member_changes, kind, &path, op.value.as_ref())?;
            }
        }
    }
    let mut patched = Value::Object(map);
    set_schemas(rt, &mut patched);
    let (doc, _) = normalize_resource(rt, &patched)?;
    Ok(PatchOutcome { doc, member_changes })
}

fn apply_one(
    rt: &ResourceType,
    doc: &mut Map<String, Value>,
    member_changes: &mut Vec<MemberChange>,
    kind: OpKind,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    if path.external_id {
        match (kind, value) {
            (OpKind::Remove, _) | (_, None | Some(Value::Null)) => {
                doc.remove("externalId");
            }
            (_, Some(Value::String(s))) => {
                doc.insert("externalId".into(), Value::String(s.clone()));
            }
            _ => return Err(ScimError::invalid_value("'externalId' must be a string")),
        }
        return Ok(());
    }
    let Some(attribute) = path.attr else {
        // The whole extension object.
        let urn = path.urn.unwrap_or_default();
        return match (kind, value) {
            (OpKind::Remove, _) => {
                doc.remove(urn);
                Ok(())
            }
            (_, Some(Value::Object(values))) => {
                let ext = rt.extension(urn).ok_or_else(|| ScimError::invalid_path(urn.to_string()))?;
                if kind == OpKind::Replace {
                    doc.remove(urn);
                }
                for (k, v) in values {
                    let a = ext
                        .attribute(k)
                        .ok_or_else(|| ScimError::invalid_syntax(format!("unknown attribute '{k}' in schema {urn}")))?;
                    crate::resource::set_attribute(doc, Some(ext.id), a, v)?;
                }
                Ok(())
            }
            _ => Err(ScimError::invalid_value(format!("'{urn}' needs an object value"))),
        };
    };
    if rt.kind == ResourceKind::Group && attribute.name == "members" {
        member_changes.push(member_change(kind, path, value)?);
        return Ok(());
    }
    let container = container_mut(doc, path.urn);
    let result = match kind {
        OpKind::Remove => remove(container, attribute, path, value),
        _ => add_or_replace(container, attribute, path, kind, value.unwrap_or(&Value::Null)),
    };
    if let Some(urn) = path.urn
        && doc.get(urn).and_then(Value::as_object).is_some_and(Map::is_empty)
    {
        doc.remove(urn);
    }
    result
}

fn member_change(kind: OpKind, path: &PatchPath, value: Option<&Value>) -> Result<MemberChange, ScimError> {
    if path.sub.is_some() {
        return Err(ScimError::invalid_path("member sub-attributes are immutable; add or remove the member"));
    }
    Ok(match (kind, &path.filter) {
        (OpKind::Remove, Some(filter)) => MemberChange::Remove(member_ids_in(filter).ok_or_else(|| {
            ScimError::invalid_filter("a members filter must compare value with eq, e.g. members[value eq \"id\"]")
        })?),
        (OpKind::Remove, None) => match value {
            None | Some(Value::Null) => MemberChange::RemoveAll,
            Some(v) => MemberChange::Remove(member_refs(v)?.into_iter().map(|m| m.value).collect()),
        },
        (OpKind::Add, None) => MemberChange::Add(member_refs(value.unwrap_or(&Value::Null))?),
        (OpKind::Replace, None) => MemberChange::Replace(member_refs(value.unwrap_or(&Value::Null))?),
        (_, Some(_)) => return Err(ScimError::invalid_path("add or replace members without a filter")),
    })
}

/// The ids a `value eq "…"` filter (possibly or-ed) names.
fn member_ids_in(filter: &Filter) -> Option<Vec<String>> {
    match filter {
        Filter::Compare(p, CompareOp::Eq, Value::String(id))
            if p.attr.eq_ignore_ascii_case("value") && p.sub.is_none() =>
        {
            Some(vec![id.clone()])
        }
        Filter::Or(a, b) => {
            let mut ids = member_ids_in(a)?;
            ids.extend(member_ids_in(b)?);
            Some(ids)
        }
        _ => None,
    }
}

fn case_exact_of(attribute: &Attribute) -> impl Fn(&AttrPath) -> bool + '_ {
    move |p: &AttrPath| attribute.sub(&p.attr).is_some_and(|s| s.case_exact)
}

fn add_or_replace(
    container: &mut Map<String, Value>,
    attribute: &Attribute,
    path: &PatchPath,
    kind: OpKind,
    value: &Value,
) -> Result<(), ScimError> {
    let name = attribute.name;
    if let Some(filter) = &path.filter {
        let items = container.entry(name).or_insert_with(|| Value::Array(Vec::new()));
        if !items.is_array() {
            *items = Value::Array(Vec::new());
        }
        let Value::Array(items) = items else { return Ok(()) };
        let case_exact = case_exact_of(attribute);
        let mut matched = false;
        for item in items.iter_mut().filter(|i| filter.matches(i, &case_exact)) {
            matched = true;
            merge_into_element(item, attribute, path.sub, value)?;
        }
        if !matched {
            // Entra ID adds (and sometimes replaces) `emails[type eq "work"].value` on a user
            // that has no work e-mail yet: the filter's equalities describe the new element.
            let eqs = filter.equalities().ok_or_else(|| {
                ScimError::no_target(format!(
                    "no value of '{name}' matches the filter, and it names no element to create"
                ))
            })?;
            let mut element = Value::Object(Map::new());
            for (sub_name, sub_value) in eqs {
                let sub = attribute
                    .sub(&sub_name)
                    .ok_or_else(|| ScimError::invalid_path(format!("'{name}' has no sub-attribute '{sub_name}'")))?;
                if let (Value::Object(m), Some(v)) =
                    (&mut element, normalize_scalar(sub, &sub_value, AttrName(sub.name, None))?)
                {
                    m.insert(sub.name.into(), v);
                }
            }
            merge_into_element(&mut element, attribute, path.sub, value)?;
            items.push(element);
        }
        return Ok(());
    }
    if let Some(sub) = path.sub {
        if attribute.multi_valued {
            return Err(ScimError::invalid_path(format!(
                "'{name}.{}' needs a filter to select which value, e.g. {name}[type eq \"work\"].{}",
                sub.name, sub.name
            )));
        }
        let obj = container.entry(name).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = obj {
            match normalize_scalar(sub, value, AttrName(name, Some(sub.name)))? {
                Some(v) => o.insert(sub.name.into(), v),
                None => o.remove(sub.name),
            };
            if o.is_empty() {
                container.remove(name);
            }
        }
        return Ok(());
    }
    if attribute.multi_valued {
        let incoming = match value {
            Value::Array(_) => value.clone(),
            Value::Null => Value::Array(Vec::new()),
            single => Value::Array(vec![single.clone()]),
        };
        let normalized = normalize_value(attribute, &incoming)?;
        let mut items = match (kind, container.remove(name)) {
            (OpKind::Add, Some(Value::Array(existing))) => existing,
            _ => Vec::new(),
        };
        if let Some(Value::Array(new_items)) = normalized {
            let new_has_primary = new_items.iter().any(|i| i.get("primary") == Some(&Value::Bool(true)));
            if new_has_primary {
                // RFC 7644 §3.5.2.1: a new primary value demotes the old one.
                for item in items.iter_mut() {
                    if let Some(o) = item.as_object_mut() {
                        o.remove("primary");
                    }
                }
            }
            for item in new_items {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        if !items.is_empty() {
            container.insert(name.into(), Value::Array(items));
        }
        return Ok(());
    }
    if attribute.ty == AttrType::Complex {
        let Some(Value::Object(incoming)) = normalize_single(attribute, value)? else {
            container.remove(name);
            return Ok(());
        };
        let obj = container.entry(name).or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = obj {
            o.extend(incoming);
        }
        return Ok(());
    }
    match normalize_value(attribute, value)? {
        Some(v) => container.insert(name.into(), v),
        None => container.remove(name),
    };
    Ok(())
}

fn merge_into_element(
    element: &mut Value,
    attribute: &Attribute,
    sub: Option<&Attribute>,
    value: &Value,
) -> Result<(), ScimError> {
    let Value::Object(target) = element else { return Ok(()) };
    match sub {
        Some(sub) => match normalize_scalar(sub, value, AttrName(attribute.name, Some(sub.name)))? {
            Some(v) => {
                target.insert(sub.name.into(), v);
            }
            None => {
                target.remove(sub.name);
            }
        },
        None => {
            if let Some(Value::Object(incoming)) = normalize_single(attribute, value)? {
                target.extend(incoming);
            }
        }
    }
    Ok(())
}

fn remove(
    container: &mut Map<String, Value>,
    attribute: &Attribute,
    path: &PatchPath,
    value: Option<&Value>,
) -> Result<(), ScimError> {
    let name = attribute.name;
    if let Some(filter) = &path.filter {
        let case_exact = case_exact_of(attribute);
        if let Some(Value::Array(items)) = container.get_mut(name) {
            match path.sub {
                Some(sub) => {
                    for item in items.iter_mut().filter(|i| filter.matches(i, &case_exact)) {
                        if let Some(o) = item.as_object_mut() {
                            o.remove(sub.name);
                        }
                    }
                    items.retain(|i| i.as_object().is_some_and(|o| !o.is_empty()));
                }
                None => items.retain(|i| !filter.matches(i, &case_exact)),
            }
            if items.is_empty() {
                container.remove(name);
            }
        }
        return Ok(());
    }
    if let Some(sub) = path.sub {
        if let Some(Value::Object(o)) = container.get_mut(name) {
            o.remove(sub.name);
            if o.is_empty() {
                container.remove(name);
            }
        }
        return Ok(());
    }
    match (attribute.multi_valued, value) {
        (true, Some(Value::Array(to_remove))) => {
            // Remove only the listed values, compared by their `value` sub-attribute.
            let values: Vec<&Value> = to_remove.iter().map(|v| v.get("value").unwrap_or(v)).collect();
            if let Some(Value::Array(items)) = container.get_mut(name) {
                items.retain(|i| !values.contains(&i.get("value").unwrap_or(i)));
                if items.is_empty() {
                    container.remove(name);
                }
            }
        }
        _ => {
            container.remove(name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ENTERPRISE_USER_SCHEMA, USER_SCHEMA, group_type, user_type};
    use serde_json::json;

    fn ops(v: Value) -> Vec<PatchOperation> {
        parse_patch_request(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": v})).unwrap()
    }

    fn base_user() -> Value {
        let (doc, _) = normalize_resource(
            user_type(),
            &json!({"schemas": [USER_SCHEMA], "userName": "a@x.com", "active": true,
                    "emails": [{"type": "work", "value": "a@x.com", "primary": true}],
                    "name": {"givenName": "A", "familyName": "B"}}),
        )
        .unwrap();
        doc
    }

    #[test]
    fn entra_replace_of_active_with_string_boolean() {
        let out = apply_patch(
            user_type(),
            &base_user(),
            &ops(json!([{"op": "Replace", "path": "active", "value": "False"}])),
        )
        .unwrap();
        assert_eq!(out.doc["active"], false);
    }

    #[test]
    fn manager_as_bare_string_and_removal() {
        let set = apply_patch(
            user_type(),
            &base_user(),
            &ops(json!([{"op": "Add", "path": format!("{ENTERPRISE_USER_SCHEMA}:manager"), "value": "m-42"}])),
        )
        .unwrap();
        assert_eq!(set.doc[ENTERPRISE_USER_SCHEMA]["manager"]["value"], "m-42");
        assert!(set.doc["schemas"].as_array().unwrap().contains(&json!(ENTERPRISE_USER_SCHEMA)));
        let removed = apply_patch(
            user_type(),
            &set.doc,
            &ops(json!([{"op": "Remove", "path": format!("{ENTERPRISE_USER_SCHEMA}:manager")}])),
        )
        .unwrap();
        assert!(removed.doc.get(ENTERPRISE_USER_SCHEMA).is_none());
        assert_eq!(removed.doc["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn add_to_a_missing_filtered_element_creates_it() {
        let out = apply_patch(
            user_type(),
            &base_user(),
            &ops(json!([
                {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "(212) 575-1994 ext 3437"},
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "new@x.com"},
            ])),
        )
        .unwrap();
        assert_eq!(out.doc["phoneNumbers"], json!([{"type": "work", "value": "(212) 575-1994 ext 3437"}]));
        assert_eq!(out.doc["emails"][0]["value"], "new@x.com");
        assert_eq!(out.doc["emails"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn pathless_values_with_dotted_and_urn_keys() {
        let out = apply_patch(
            user_type(),
            &base_user(),
            &ops(json!([{"op": "replace", "value": {
                "name.givenName": "Zed", "displayName": "Zed B",
                format!("{ENTERPRISE_USER_SCHEMA}:department"): "Sales",
                ENTERPRISE_USER_SCHEMA: {"employeeNumber": "7"}
            }}])),
        )
        .unwrap();
        assert_eq!(out.doc["name"], json!({"givenName": "Zed", "familyName": "B"}));
        assert_eq!(out.doc[ENTERPRISE_USER_SCHEMA], json!({"department": "Sales", "employeeNumber": "7"}));
    }

    #[test]
    fn errors_have_the_rfc_types() {
        let user = base_user();
        let err = |v: Value| apply_patch(user_type(), &user, &ops(v)).unwrap_err().scim_type;
        use crate::error::ScimType::*;
        assert_eq!(err(json!([{"op": "remove"}])), Some(NoTarget));
        assert_eq!(err(json!([{"op": "replace", "path": "id", "value": "x"}])), Some(Mutability));
        assert_eq!(err(json!([{"op": "replace", "path": "groups", "value": []}])), Some(Mutability));
        assert_eq!(err(json!([{"op": "replace", "path": "shoeSize", "value": 1}])), Some(InvalidPath));
        assert_eq!(
            err(json!([{"op": "replace", "path": "emails[value co \"zzz\"].type", "value": "home"}])),
            Some(NoTarget)
        );
        assert_eq!(err(json!([{"op": "replace", "path": "userName", "value": null}])), Some(InvalidValue));
        assert_eq!(err(json!([{"op": "replace", "path": "emails[type eq", "value": "x"}])), Some(InvalidPath));
        let bad_op =
            parse_patch_request(&json!({"schemas": [PATCH_OP_SCHEMA], "Operations": [{"op": "move", "path": "a"}]}));
        assert_eq!(bad_op.unwrap_err().scim_type, Some(InvalidSyntax));
    }

    #[test]
    fn remove_by_filter_and_by_sub_attribute() {
        let out = apply_patch(
            user_type(),
            &base_user(),
            &ops(json!([
                {"op": "remove", "path": "emails[type eq \"WORK\"]"},
                {"op": "remove", "path": "name.givenName"},
            ])),
        )
        .unwrap();
        assert!(out.doc.get("emails").is_none());
        assert_eq!(out.doc["name"], json!({"familyName": "B"}));
    }

    #[test]
    fn group_member_operations_become_changes() {
        let doc = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "G"});
        let out = apply_patch(
            group_type(),
            &doc,
            &ops(json!([
                {"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
                {"op": "Remove", "path": "members", "value": [{"value": "u1"}]},
                {"op": "remove", "path": "members[value eq \"u3\"]"},
                {"op": "replace", "value": {"displayName": "G2", "members": [{"value": "u9"}]}},
            ])),
        )
        .unwrap();
        assert_eq!(out.doc["displayName"], "G2");
        assert_eq!(
            out.member_changes,
            vec![
                MemberChange::Add(vec![
                    MemberRef { value: "u1".into(), kind: None },
                    MemberRef { value: "u2".into(), kind: None }
                ]),
                MemberChange::Remove(vec!["u1".into()]),
                MemberChange::Remove(vec!["u3".into()]),
                MemberChange::Replace(vec![MemberRef { value: "u9".into(), kind: None }]),
            ]
        );
    }
}
