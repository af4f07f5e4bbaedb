//! Compiles a SCIM filter to a SQL condition over `scim.users` / `scim.groups` (alias `r`).
//!
//! Hot attributes map to indexed columns (`userName eq` uses the `lower(user_name)` index,
//! `id eq` the primary key); everything else reads the JSONB document. Attribute names come
//! from the schema table, never from the request, so only values are ever bound.

use muster_scim::ScimError;
use muster_scim::filter::{AttrPath, CompareOp, Filter};
use muster_scim::resource::is_date_time;
use muster_scim::schema::{AttrType, Attribute, ResourceKind, ResourceType};
use serde_json::Value;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

/// Where the attributes of a (sub-)filter are read from.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// The resource row `r`.
    Resource,
    /// An element `alias.v` of a multi-valued complex attribute stored in JSONB.
    Element { alias: &'a str, attribute: &'a Attribute },
    /// A membership row `alias` of `scim.group_members`: `value` is `column`.
    Membership { alias: &'a str, column: &'a str },
}

/// A value the leaf comparison reads.
struct Operand {
    sql: String,
    ty: AttrType,
    case_exact: bool,
    /// For multi-valued attributes, where the comparison runs once per value.
    each: Each,
    /// What kind of SQL value `sql` is, which decides the casts a comparison needs.
    native: Native,
}

/// The SQL type of an operand's expression.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Native {
    /// Text (a text column or a JSONB `->>` extraction): cast to the attribute's type.
    Text,
    /// A column that already has the attribute's type (timestamptz, boolean).
    Typed,
    /// The uuid primary key `r.id`: compared as a uuid so the index is used.
    PrimaryKey,
}

impl Operand {
    fn native(mut self, native: Native) -> Operand {
        self.native = native;
        self
    }
}

/// How a multi-valued operand is iterated.
enum Each {
    /// Single-valued: compare directly.
    None,
    /// `exists (select 1 from <from clause> where …)` over JSONB array elements.
    From(String),
    /// `exists` over `scim.group_members` rows aliased so.
    Membership(String),
}

/// The name in `userName eq "…"` (any case of the attribute, with or without the core
/// schema's URN), the filter of Entra's lookup before every create; `None` for any other filter.
pub fn user_name_eq<'f>(rt: &ResourceType, filter: &'f Filter) -> Option<&'f str> {
    let Filter::Compare(path, CompareOp::Eq, value) = filter else { return None };
    let core = path.urn.as_deref().is_none_or(|u| u.eq_ignore_ascii_case(rt.schema.id));
    let user_name = rt.kind == ResourceKind::User && path.attr.eq_ignore_ascii_case("userName");
    (core && user_name && path.sub.is_none()).then(|| value.as_str()).flatten()
}

/// Appends ` and (<condition>)` for `filter` to `qb`.
pub fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, rt: &ResourceType, filter: &Filter) -> Result<(), ScimError> {
    let mut compiler = Compiler { rt, aliases: 0 };
    qb.push(" and (");
    compiler.push(qb, filter, Scope::Resource)?;
    qb.push(")");
    Ok(())
}

struct Compiler<'r> {
    rt: &'r ResourceType,
    aliases: usize,
}

impl Compiler<'_> {
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("e{}", self.aliases)
    }

    fn push(
        &mut self,
        qb: &mut QueryBuilder<'_, Postgres>,
        filter: &Filter,
        scope: Scope<'_>,
    ) -> Result<(), ScimError> {
        match filter {
            Filter::And(a, b) | Filter::Or(a, b) => {
                qb.push("(");
                self.push(qb, a, scope)?;
                qb.push(if matches!(filter, Filter::And(..)) { " and " } else { " or " });
                self.push(qb, b, scope)?;
                qb.push(")");
            }
            Filter::Not(inner) => {
                qb.push("not coalesce((");
                self.push(qb, inner, scope)?;
                qb.push("), false)");
            }
            Filter::ValuePath(path, inner) => self.push_value_path(qb, path, inner, scope)?,
            Filter::Present(path) => {
                let operand = self.operand(path, scope)?;
                self.push_leaf(qb, &operand, None)?;
            }
            Filter::Compare(path, op, value) => {
                let operand = self.operand(path, scope)?;
                self.push_leaf(qb, &operand, Some((*op, value)))?;
            }
        }
        Ok(())
    }

    fn push_value_path(
        &mut self,
        qb: &mut QueryBuilder<'_, Postgres>,
        path: &AttrPath,
        inner: &Filter,
        scope: Scope<'_>,
    ) -> Result<(), ScimError> {
        if !matches!(scope, Scope::Resource) {
            return Err(ScimError::invalid_filter("value filters cannot be nested"));
        }
        if let Some(column) = self.membership_column(path) {
            let alias = self.alias();
            push_membership_exists(qb, self.rt, &alias);
            qb.push(" and (");
            self.push(qb, inner, Scope::Membership { alias: &alias, column })?;
            qb.push("))");
            return Ok(());
        }
        let (json, attribute) = self.json_attribute(path)?;
        if !(attribute.multi_valued && attribute.ty == AttrType::Complex) {
            return Err(ScimError::invalid_filter(format!("'{path}' is not a multi-valued complex attribute")));
        }
        let alias = self.alias();
        qb.push(format!(
            "exists (select 1 from jsonb_array_elements(coalesce({json}, '[]'::jsonb)) as {alias}(v) where "
        ));
        self.push(qb, inner, Scope::Element { alias: &alias, attribute })?;
        qb.push(")");
        Ok(())
    }

    /// `members` of a Group, `groups` of a User: rows in `scim.group_members`.
    fn membership_column(&self, path: &AttrPath) -> Option<&'static str> {
        if path.urn.is_some() {
            return None;
        }
        match self.rt.kind {
            ResourceKind::Group if path.attr.eq_ignore_ascii_case("members") => Some("member_id"),
            ResourceKind::User if path.attr.eq_ignore_ascii_case("groups") => Some("group_id"),
            _ => None,
        }
    }

    /// The JSONB expression holding a top-level attribute, and its definition.
    fn json_attribute(&self, path: &AttrPath) -> Result<(String, &'static Attribute), ScimError> {
        let unknown = || ScimError::invalid_filter(format!("'{path}' is not an attribute of {}", self.rt.name));
        let rt: &'static ResourceType = match self.rt.kind {
            ResourceKind::User => muster_scim::schema::user_type(),
            ResourceKind::Group => muster_scim::schema::group_type(),
        };
        let schema = rt.schema_for(path.urn.as_deref()).ok_or_else(unknown)?;
        let attribute = schema.attribute(&path.attr).ok_or_else(unknown)?;
        let json = if schema.id == rt.schema.id {
            format!("r.resource -> '{}'", attribute.name)
        } else {
            format!("r.resource -> '{}' -> '{}'", schema.id, attribute.name)
        };
        Ok((json, attribute))
    }

    fn operand(&mut self, path: &AttrPath, scope: Scope<'_>) -> Result<Operand, ScimError> {
        let simple =
            |sql: String, ty, case_exact| Operand { sql, ty, case_exact, each: Each::None, native: Native::Text };
        match scope {
            Scope::Membership { alias, column } => {
                return match path.attr.to_ascii_lowercase().as_str() {
                    "value" if path.sub.is_none() => {
                        Ok(simple(format!("{alias}.{column}::text"), AttrType::String, true))
                    }
                    "type" if path.sub.is_none() && column == "member_id" => {
                        Ok(simple(format!("{alias}.member_type"), AttrType::String, false))
                    }
                    _ => Err(ScimError::invalid_filter(format!("'{path}' cannot be filtered on; use value"))),
                };
            }
            Scope::Element { alias, attribute } => {
                let sub = attribute.sub(&path.attr).filter(|_| path.sub.is_none() && path.urn.is_none()).ok_or_else(
                    || ScimError::invalid_filter(format!("'{}' has no sub-attribute '{path}'", attribute.name)),
                )?;
                return Ok(simple(format!("({alias}.v ->> '{}')", sub.name), sub.ty, sub.case_exact));
            }
            Scope::Resource => {}
        }
        let core = path.urn.is_none() || path.urn.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(self.rt.schema.id));
        if core {
            let attr = path.attr.to_ascii_lowercase();
            let sub = path.sub.as_deref().map(str::to_ascii_lowercase);
            match (attr.as_str(), sub.as_deref(), self.rt.kind) {
                ("id", None, _) => return Ok(simple("r.id".into(), AttrType::String, true).native(Native::PrimaryKey)),
                ("externalid", None, _) => return Ok(simple("r.external_id".into(), AttrType::String, true)),
                ("meta", Some("created"), _) => {
                    return Ok(simple("r.created_at".into(), AttrType::DateTime, true).native(Native::Typed));
                }
                ("meta", Some("lastmodified"), _) => {
                    return Ok(simple("r.updated_at".into(), AttrType::DateTime, true).native(Native::Typed));
                }
                ("meta", Some("resourcetype"), _) => {
                    return Ok(simple(format!("'{}'::text", self.rt.name), AttrType::String, true));
                }
                ("meta", _, _) => return Err(ScimError::invalid_filter(format!("'{path}' cannot be filtered on"))),
                ("username", None, ResourceKind::User) => {
                    return Ok(simple("r.user_name".into(), AttrType::String, false));
                }
                ("active", None, ResourceKind::User) => {
                    return Ok(simple("r.active".into(), AttrType::Boolean, true).native(Native::Typed));
                }
                ("displayname", None, ResourceKind::Group) => {
                    return Ok(simple("r.display_name".into(), AttrType::String, false));
                }
                ("schemas", None, _) => {
                    let alias = self.alias();
                    return Ok(Operand {
                        sql: format!("{alias}.v"),
                        ty: AttrType::Reference,
                        case_exact: false,
                        each: Each::From(format!("jsonb_array_elements_text(r.resource -> 'schemas') as {alias}(v)")),
                        native: Native::Text,
                    });
                }
                _ => {}
            }
            if let Some(column) = self.membership_column(path) {
                // `members eq "id"` / `members.value eq "id"`: rows, not JSONB.
                if path.sub.as_deref().is_some_and(|s| !s.eq_ignore_ascii_case("value")) {
                    return Err(ScimError::invalid_filter(format!("'{path}' cannot be filtered on; use value")));
                }
                let alias = self.alias();
                return Ok(Operand {
                    sql: format!("{alias}.{column}::text"),
                    ty: AttrType::String,
                    case_exact: true,
                    each: Each::Membership(alias),
                    native: Native::Text,
                });
            }
        }
        let (json, attribute) = self.json_attribute(path)?;
        let target = match &path.sub {
            Some(sub) => Some(attribute.sub(sub).ok_or_else(|| {
                ScimError::invalid_filter(format!("'{}' has no sub-attribute '{sub}'", attribute.name))
            })?),
            // A complex attribute stands for its `value` (RFC 7644 §3.4.2.2: `emails co "x"`).
            None if attribute.ty == AttrType::Complex => Some(attribute.sub("value").ok_or_else(|| {
                ScimError::invalid_filter(format!("'{}' is complex: name a sub-attribute", attribute.name))
            })?),
            None => None,
        };
        if attribute.multi_valued {
            let alias = self.alias();
            let (sql, ty, case_exact) = match target {
                Some(sub) => (format!("({alias}.v ->> '{}')", sub.name), sub.ty, sub.case_exact),
                None => (format!("({alias}.v #>> '{{}}')"), attribute.ty, attribute.case_exact),
            };
            return Ok(Operand {
                sql,
                ty,
                case_exact,
                each: Each::From(format!("jsonb_array_elements(coalesce({json}, '[]'::jsonb)) as {alias}(v)")),
                native: Native::Text,
            });
        }
        Ok(match target {
            Some(sub) => simple(format!("({json} ->> '{}')", sub.name), sub.ty, sub.case_exact),
            None => simple(format!("({json} #>> '{{}}')"), attribute.ty, attribute.case_exact),
        })
    }

    fn push_leaf(
        &mut self,
        qb: &mut QueryBuilder<'_, Postgres>,
        operand: &Operand,
        comparison: Option<(CompareOp, &Value)>,
    ) -> Result<(), ScimError> {
        let negate = matches!(comparison, Some((CompareOp::Ne, _)));
        // For a multi-valued attribute `ne` means "no value equals" (RFC 7644 §3.4.2.2).
        let per_value = match comparison {
            Some((CompareOp::Ne, v)) => Some((CompareOp::Eq, v)),
            c => c,
        };
        match &operand.each {
            Each::None => push_comparison(qb, operand, comparison),
            Each::From(from) => {
                qb.push(if negate { "not exists (select 1 from " } else { "exists (select 1 from " });
                qb.push(from.as_str());
                qb.push(" where ");
                push_comparison(qb, operand, per_value)?;
                qb.push(")");
                Ok(())
            }
            Each::Membership(alias) => {
                if negate {
                    qb.push("not ");
                }
                push_membership_exists(qb, self.rt, alias);
                qb.push(" and ");
                push_comparison(qb, operand, per_value)?;
                qb.push(")");
                Ok(())
            }
        }
    }
}

fn push_membership_exists(qb: &mut QueryBuilder<'_, Postgres>, rt: &ResourceType, alias: &str) {
    let own = if rt.kind == ResourceKind::Group { "group_id" } else { "member_id" };
    qb.push(format!(
        "exists (select 1 from scim.group_members {alias} where {alias}.tenant_id = r.tenant_id and {alias}.{own} = r.id"
    ));
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

fn push_comparison(
    qb: &mut QueryBuilder<'_, Postgres>,
    operand: &Operand,
    comparison: Option<(CompareOp, &Value)>,
) -> Result<(), ScimError> {
    let sql = &operand.sql;
    let Some((op, value)) = comparison else {
        qb.push(match operand.ty {
            AttrType::String | AttrType::Reference | AttrType::Binary | AttrType::DateTime
                if operand.native == Native::Text =>
            {
                format!("({sql} is not null and {sql}::text <> '')")
            }
            _ => format!("({sql} is not null)"),
        });
        return Ok(());
    };
    if value.is_null() {
        return match op {
            CompareOp::Eq => {
                qb.push(format!("({sql} is null)"));
                Ok(())
            }
            CompareOp::Ne => {
                qb.push(format!("({sql} is not null)"));
                Ok(())
            }
            _ => Err(ScimError::invalid_filter("null can only be compared with eq or ne")),
        };
    }
    match operand.ty {
        AttrType::Boolean => {
            let Value::Bool(b) = value else {
                return Err(ScimError::invalid_filter("a boolean attribute is compared with true or false"));
            };
            let lhs = if operand.native == Native::Typed { sql.clone() } else { format!("({sql})::boolean") };
            match op {
                CompareOp::Eq => qb.push(format!("({lhs} = ")).push_bind(*b).push(")"),
                CompareOp::Ne => qb.push(format!("({lhs} is distinct from ")).push_bind(*b).push(")"),
                _ => return Err(ScimError::invalid_filter("booleans can only be compared with eq or ne")),
            };
        }
        AttrType::Integer | AttrType::Decimal => {
            let Value::Number(n) = value else {
                return Err(ScimError::invalid_filter("a numeric attribute is compared with a number"));
            };
            let sym = ordering_symbol(op).ok_or_else(|| ScimError::invalid_filter("numbers take eq ne gt ge lt le"))?;
            qb.push(format!("(({sql})::numeric {sym} ")).push_bind(n.to_string()).push("::numeric)");
        }
        AttrType::DateTime => {
            let Value::String(s) = value else {
                return Err(ScimError::invalid_filter("a dateTime is compared with a quoted xsd:dateTime"));
            };
            if !is_date_time(s) {
                return Err(ScimError::invalid_filter(format!("'{s}' is not an xsd:dateTime")));
            }
            let sym =
                ordering_symbol(op).ok_or_else(|| ScimError::invalid_filter("dateTimes take eq ne gt ge lt le"))?;
            let lhs = if operand.native == Native::Typed { sql.clone() } else { format!("({sql})::timestamptz") };
            qb.push(format!("({lhs} {sym} ")).push_bind(s.clone()).push("::timestamptz)");
        }
        AttrType::String | AttrType::Reference | AttrType::Binary | AttrType::Complex => {
            let Value::String(s) = value else {
                return Err(ScimError::invalid_filter("a string attribute is compared with a quoted string"));
            };
            if operand.native == Native::PrimaryKey {
                // The primary key: an id that is not a UUID matches nothing.
                match (op, Uuid::parse_str(s)) {
                    (CompareOp::Eq, Ok(id)) => qb.push("(r.id = ").push_bind(id).push(")"),
                    (CompareOp::Eq, Err(_)) => qb.push("false"),
                    (CompareOp::Ne, Ok(id)) => qb.push("(r.id <> ").push_bind(id).push(")"),
                    (CompareOp::Ne, Err(_)) => qb.push("true"),
                    _ => return push_string(qb, "r.id::text", true, op, s),
                };
                return Ok(());
            }
            push_string(qb, sql, operand.case_exact, op, s)?;
        }
    }
    Ok(())
}

fn push_string(
    qb: &mut QueryBuilder<'_, Postgres>,
    sql: &str,
    case_exact: bool,
    op: CompareOp,
    s: &str,
) -> Result<(), ScimError> {
    let (lhs, open, close) =
        if case_exact { (sql.to_string(), "", "") } else { (format!("lower({sql})"), "lower(", ")") };
    match op {
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew => {
            let pattern = match op {
                CompareOp::Co => format!("%{}%", escape_like(s)),
                CompareOp::Sw => format!("{}%", escape_like(s)),
                _ => format!("%{}", escape_like(s)),
            };
            qb.push(format!("({lhs} like {open}")).push_bind(pattern).push(format!("{close})"));
        }
        CompareOp::Ne => {
            qb.push(format!("({lhs} is distinct from {open}")).push_bind(s.to_string()).push(format!("{close})"));
        }
        _ => {
            let sym = ordering_symbol(op).unwrap_or("=");
            qb.push(format!("({lhs} {sym} {open}")).push_bind(s.to_string()).push(format!("{close})"));
        }
    }
    Ok(())
}

fn ordering_symbol(op: CompareOp) -> Option<&'static str> {
    Some(match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_scim::schema::{group_type, user_type};

    fn sql(rt: &ResourceType, f: &str) -> String {
        let mut qb = QueryBuilder::<Postgres>::new("select 1 from t r where true");
        push_filter(&mut qb, rt, &Filter::parse(f).unwrap()).unwrap();
        qb.sql().to_string()
    }

    #[test]
    fn user_name_eq_uses_the_indexed_expression() {
        assert_eq!(
            sql(user_type(), r#"userName eq "A""#),
            "select 1 from t r where true and ((lower(r.user_name) = lower($1)))"
        );
    }

    #[test]
    fn value_paths_and_members_compile_to_exists() {
        let s = sql(user_type(), r#"emails[type eq "work" and value co "@x"]"#);
        assert!(s.contains("jsonb_array_elements(coalesce(r.resource -> 'emails'"), "{s}");
        let g = sql(group_type(), r#"members[value eq "abc"]"#);
        assert!(g.contains("scim.group_members e1 where e1.tenant_id = r.tenant_id and e1.group_id = r.id"), "{g}");
        let m = sql(group_type(), r#"members.value eq "abc""#);
        assert!(m.contains("scim.group_members"), "{m}");
    }

    #[test]
    fn unknown_attributes_and_wrong_types_are_invalid_filters() {
        for f in [
            r#"shoeSize eq "9""#,
            "userName eq true",
            r#"active eq "yes""#,
            r#"meta.created gt "yesterday""#,
            r#"emails[nope eq "x"]"#,
        ] {
            let mut qb = QueryBuilder::<Postgres>::new("");
            let err = push_filter(&mut qb, user_type(), &Filter::parse(f).unwrap()).unwrap_err();
            assert_eq!(err.scim_type, Some(muster_scim::ScimType::InvalidFilter), "{f}");
        }
    }
}
