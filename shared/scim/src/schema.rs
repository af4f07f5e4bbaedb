//! The schemas Muster serves (RFC 7643 §4 and §8.7, plus Muster's extension): one table that
//! drives validation, attribute-name canonicalisation, filter case rules and `/Schemas`.

use std::sync::OnceLock;

use serde_json::{Value, json};

/// Core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// Core Group schema URN.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// Enterprise User extension URN.
pub const ENTERPRISE_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Muster's own User extension URN (DESIGN.md).
pub const MUSTER_USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:muster:2.0:User";
/// ListResponse message URN.
pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// PatchOp message URN.
pub const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Longest string value accepted in any attribute, in characters.
pub const MAX_STRING_LEN: usize = 2048;
/// Most values in one multi-valued attribute stored in the resource document.
pub const MAX_MULTI_VALUES: usize = 100;

/// SCIM attribute data types (RFC 7643 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Reference,
    Complex,
    Binary,
}

impl AttrType {
    fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Boolean => "boolean",
            AttrType::Decimal => "decimal",
            AttrType::Integer => "integer",
            AttrType::DateTime => "dateTime",
            AttrType::Reference => "reference",
            AttrType::Complex => "complex",
            AttrType::Binary => "binary",
        }
    }
}

/// RFC 7643 §7 `mutability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

/// RFC 7643 §7 `returned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Default,
    Never,
    Request,
}

/// One attribute definition.
#[derive(Debug, Clone)]
pub struct Attribute {
    /// Canonical name.
    pub name: &'static str,
    pub ty: AttrType,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    /// `server` uniqueness where true.
    pub unique: bool,
    pub sub_attributes: Vec<Attribute>,
    pub canonical_values: Vec<&'static str>,
    pub reference_types: Vec<&'static str>,
    pub description: &'static str,
}

impl Attribute {
    /// Looks a sub-attribute up case-insensitively.
    pub fn sub(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "type": self.ty.as_str(),
            "multiValued": self.multi_valued,
            "description": self.description,
            "required": self.required,
            "caseExact": self.case_exact,
            "mutability": match self.mutability {
                Mutability::ReadOnly => "readOnly",
                Mutability::ReadWrite => "readWrite",
                Mutability::Immutable => "immutable",
                Mutability::WriteOnly => "writeOnly",
            },
            "returned": match self.returned {
                Returned::Always => "always",
                Returned::Default => "default",
                Returned::Never => "never",
                Returned::Request => "request",
            },
            "uniqueness": if self.unique { "server" } else { "none" },
        });
        if let Some(map) = v.as_object_mut() {
            if !self.sub_attributes.is_empty() {
                map.insert("subAttributes".into(), self.sub_attributes.iter().map(Attribute::to_json).collect());
            }
            if !self.canonical_values.is_empty() {
                map.insert("canonicalValues".into(), json!(self.canonical_values));
            }
            if !self.reference_types.is_empty() {
                map.insert("referenceTypes".into(), json!(self.reference_types));
            }
        }
        v
    }
}

/// A schema: an id (URN) and its attributes.
#[derive(Debug, Clone)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: Vec<Attribute>,
}

impl Schema {
    /// Looks an attribute up case-insensitively.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// The `/Schemas/{id}` representation (RFC 7643 §7).
    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "attributes": self.attributes.iter().map(Attribute::to_json).collect::<Vec<_>>(),
            "meta": {"resourceType": "Schema", "location": format!("{base_url}/Schemas/{}", self.id)},
        })
    }
}

/// Which kind of resource a type is; the ingress stores the two differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    User,
    Group,
}

/// A resource type: its core schema and extensions (RFC 7643 §6).
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub kind: ResourceKind,
    pub name: &'static str,
    pub endpoint: &'static str,
    pub description: &'static str,
    pub schema: Schema,
    pub extensions: Vec<Schema>,
}

impl ResourceType {
    /// The extension schema with this URN (case-insensitive).
    pub fn extension(&self, urn: &str) -> Option<&Schema> {
        self.extensions.iter().find(|s| s.id.eq_ignore_ascii_case(urn))
    }

    /// The schema (core or extension) a URN names.
    pub fn schema_for(&self, urn: Option<&str>) -> Option<&Schema> {
        match urn {
            None => Some(&self.schema),
            Some(u) if u.eq_ignore_ascii_case(self.schema.id) => Some(&self.schema),
            Some(u) => self.extension(u),
        }
    }

    /// The `/ResourceTypes/{name}` representation.
    pub fn to_json(&self, base_url: &str) -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema.id,
            "schemaExtensions": self.extensions.iter().map(|e| json!({"schema": e.id, "required": false})).collect::<Vec<_>>(),
            "meta": {"resourceType": "ResourceType", "location": format!("{base_url}/ResourceTypes/{}", self.name)},
        })
    }
}

fn attr(name: &'static str, ty: AttrType) -> Attribute {
    Attribute {
        name,
        ty,
        multi_valued: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        unique: false,
        sub_attributes: Vec::new(),
        canonical_values: Vec::new(),
        reference_types: Vec::new(),
        description: "",
    }
}

fn string(name: &'static str, description: &'static str) -> Attribute {
    Attribute { description, ..attr(name, AttrType::String) }
}

fn complex(name: &'static str, description: &'static str, subs: Vec<Attribute>) -> Attribute {
    Attribute { description, sub_attributes: subs, ..attr(name, AttrType::Complex) }
}

/// A multi-valued complex attribute with the usual value/display/type/primary sub-attributes.
fn multi(name: &'static str, description: &'static str, value_type: AttrType, types: Vec<&'static str>) -> Attribute {
    Attribute {
        multi_valued: true,
        ..complex(
            name,
            description,
            vec![
                Attribute { description: "The attribute's value.", ..attr("value", value_type) },
                string("display", "A human-readable name, primarily used for display purposes."),
                Attribute { canonical_values: types, ..string("type", "A label indicating the attribute's function.") },
                Attribute { description: "Whether this is the primary value.", ..attr("primary", AttrType::Boolean) },
            ],
        )
    }
}

fn read_only(a: Attribute) -> Attribute {
    Attribute { mutability: Mutability::ReadOnly, ..a }
}

fn user_schema() -> Schema {
    Schema {
        id: USER_SCHEMA,
        name: "User",
        description: "User Account",
        attributes: vec![
            Attribute {
                required: true,
                unique: true,
                ..string("userName", "Unique identifier for the User, unique per tenant, compared case-insensitively.")
            },
            complex(
                "name",
                "The components of the user's real name.",
                vec![
                    string("formatted", "The full name."),
                    string("familyName", "The family name (last name)."),
                    string("givenName", "The given name (first name)."),
                    string("middleName", "The middle name(s)."),
                    string("honorificPrefix", "The honorific prefix(es)."),
                    string("honorificSuffix", "The honorific suffix(es)."),
                ],
            ),
            string("displayName", "The name of the User, suitable for display to end-users."),
            string("nickName", "The casual way to address the user."),
            Attribute { reference_types: vec!["external"], ..attr("profileUrl", AttrType::Reference) },
            string("title", "The user's title, such as \"Vice President\"."),
            string("userType", "The relationship between the organization and the user."),
            string("preferredLanguage", "The user's preferred written or spoken language."),
            string("locale", "The user's default location, e.g. en-US."),
            string("timezone", "The User's time zone in IANA format, e.g. America/Los_Angeles."),
            Attribute { description: "The User's administrative status.", ..attr("active", AttrType::Boolean) },
            Attribute {
                mutability: Mutability::WriteOnly,
                returned: Returned::Never,
                case_exact: true,
                description: "Accepted for compatibility and never stored: Muster does not authenticate users.",
                ..attr("password", AttrType::String)
            },
            multi("emails", "Email addresses for the user.", AttrType::String, vec!["work", "home", "other"]),
            multi(
                "phoneNumbers",
                "Phone numbers for the User.",
                AttrType::String,
                vec!["work", "home", "mobile", "fax", "pager", "other"],
            ),
            multi("ims", "Instant messaging addresses for the User.", AttrType::String, vec![]),
            multi("photos", "URLs of photos of the User.", AttrType::Reference, vec!["photo", "thumbnail"]),
            Attribute {
                multi_valued: true,
                ..complex(
                    "addresses",
                    "A physical mailing address for this User.",
                    vec![
                        string("formatted", "The full mailing address."),
                        string("streetAddress", "The full street address component."),
                        string("locality", "The city or locality component."),
                        string("region", "The state or region component."),
                        string("postalCode", "The zip code or postal code component."),
                        string("country", "The country name component."),
                        Attribute {
                            canonical_values: vec!["work", "home", "other"],
                            ..string("type", "A label indicating the attribute's function.")
                        },
                        attr("primary", AttrType::Boolean),
                    ],
                )
            },
            read_only(Attribute {
                multi_valued: true,
                ..complex(
                    "groups",
                    "The groups the user belongs to, derived from group memberships.",
                    vec![
                        read_only(string("value", "The identifier of the User's group.")),
                        read_only(Attribute { reference_types: vec!["Group"], ..attr("$ref", AttrType::Reference) }),
                        read_only(string("display", "The group's displayName.")),
                        read_only(string("type", "direct or indirect.")),
                    ],
                )
            }),
            multi("entitlements", "A list of entitlements for the User.", AttrType::String, vec![]),
            multi("roles", "A list of roles for the User.", AttrType::String, vec![]),
            multi("x509Certificates", "A list of certificates issued to the User.", AttrType::Binary, vec![]),
        ],
    }
}

fn enterprise_schema() -> Schema {
    Schema {
        id: ENTERPRISE_USER_SCHEMA,
        name: "EnterpriseUser",
        description: "Enterprise User",
        attributes: vec![
            string("employeeNumber", "Numeric or alphanumeric identifier assigned to a person."),
            string("costCenter", "Identifies the name of a cost center."),
            string("organization", "Identifies the name of an organization."),
            string("division", "Identifies the name of a division."),
            string("department", "Identifies the name of a department."),
            complex(
                "manager",
                "The User's manager; Entra ID may send the manager's id as a bare string.",
                vec![
                    Attribute {
                        case_exact: true,
                        ..string("value", "The id of the SCIM resource representing the User's manager.")
                    },
                    Attribute { reference_types: vec!["User"], ..attr("$ref", AttrType::Reference) },
                    read_only(string("displayName", "The displayName of the User's manager.")),
                ],
            ),
        ],
    }
}

fn muster_schema() -> Schema {
    Schema {
        id: MUSTER_USER_SCHEMA,
        name: "MusterUser",
        description: "Muster's extension: what the team-member profile needs beyond the core and enterprise schemas.",
        attributes: vec![
            string("managerEmail", "Primary e-mail of the user's manager, used when no Manager ID is given."),
            string(
                "managerFullName",
                "\"firstname lastname\" of the user's manager, the last resort for the hierarchy.",
            ),
            string("privateEmail", "Private e-mail address."),
            string("primaryPhoneExtension", "Extension of the work phone, when sent apart from the number."),
        ],
    }
}

fn group_schema() -> Schema {
    Schema {
        id: GROUP_SCHEMA,
        name: "Group",
        description: "Group",
        attributes: vec![
            Attribute {
                required: true,
                unique: true,
                ..string("displayName", "A human-readable name for the Group, unique per tenant.")
            },
            Attribute {
                multi_valued: true,
                ..complex(
                    "members",
                    "A list of members of the Group (stored as rows; PATCH touches only the delta).",
                    vec![
                        Attribute {
                            mutability: Mutability::Immutable,
                            case_exact: true,
                            ..string("value", "Identifier of the member of this Group.")
                        },
                        Attribute {
                            mutability: Mutability::Immutable,
                            reference_types: vec!["User", "Group"],
                            ..attr("$ref", AttrType::Reference)
                        },
                        read_only(string("display", "The member's display name.")),
                        Attribute {
                            mutability: Mutability::Immutable,
                            canonical_values: vec!["User", "Group"],
                            ..string("type", "User or Group.")
                        },
                    ],
                )
            },
        ],
    }
}

/// The User resource type (core + enterprise + Muster extensions).
pub fn user_type() -> &'static ResourceType {
    static TYPE: OnceLock<ResourceType> = OnceLock::new();
    TYPE.get_or_init(|| ResourceType {
        kind: ResourceKind::User,
        name: "User",
        endpoint: "/Users",
        description: "User Account",
        schema: user_schema(),
        extensions: vec![enterprise_schema(), muster_schema()],
    })
}

/// The Group resource type.
pub fn group_type() -> &'static ResourceType {
    static TYPE: OnceLock<ResourceType> = OnceLock::new();
    TYPE.get_or_init(|| ResourceType {
        kind: ResourceKind::Group,
        name: "Group",
        endpoint: "/Groups",
        description: "Group",
        schema: group_schema(),
        extensions: Vec::new(),
    })
}

/// Every schema served at `/Schemas`.
pub fn all_schemas() -> Vec<&'static Schema> {
    let user = user_type();
    let mut out = vec![&user.schema];
    out.extend(user.extensions.iter());
    out.push(&group_type().schema);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_found_case_insensitively() {
        let user = user_type();
        assert_eq!(user.schema.attribute("USERNAME").map(|a| a.name), Some("userName"));
        let emails = user.schema.attribute("emails").unwrap();
        assert_eq!(emails.sub("VALUE").map(|a| a.name), Some("value"));
        assert!(user.extension("urn:ietf:params:scim:schemas:extension:Enterprise:2.0:User").is_some());
    }

    #[test]
    fn schema_json_tells_user_name_is_case_insensitive_and_unique() {
        let v = user_type().schema.to_json("http://x/scim/v2");
        let user_name = &v["attributes"][0];
        assert_eq!(user_name["name"], "userName");
        assert_eq!(user_name["caseExact"], false);
        assert_eq!(user_name["uniqueness"], "server");
    }
}
