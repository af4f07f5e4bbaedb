//! Provenance (DESIGN.md, "Business rules"): a profile field Entra ID sent is Entra's and cannot
//! be edited in Muster; a field Entra ID left empty may be set manually once, then it is locked
//! too. When Entra later sends a value for a manually set field, Entra's value wins.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::country::{normalize_country, normalize_subdivision};
use crate::locale::resolve_locale;
use crate::phone::normalize_phone;
use crate::profile::CompanyRules;
use crate::timezone::parse_timezone;

pub(crate) const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub(crate) const MUSTER: &str = "urn:ietf:params:scim:schemas:extension:muster:2.0:User";

/// The longest manual value accepted (SCIM strings from Entra are far shorter).
const MAX_MANUAL_LEN: usize = 256;

/// A profile field with a single source value, which Entra ID or an admin can provide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    GivenName,
    FamilyName,
    DisplayName,
    Title,
    PrimaryEmail,
    SecondaryEmail,
    PrivateEmail,
    Phone,
    PhoneExtension,
    Country,
    State,
    Timezone,
    Locale,
    /// The manager: Entra's if it sent any reference (id, e-mail or full name), else a
    /// member's SCIM id set by an admin.
    ManagerId,
}

impl Field {
    /// Every field, in the order the member view lists them.
    pub const ALL: [Field; 14] = [
        Field::GivenName,
        Field::FamilyName,
        Field::DisplayName,
        Field::Title,
        Field::PrimaryEmail,
        Field::SecondaryEmail,
        Field::PrivateEmail,
        Field::Phone,
        Field::PhoneExtension,
        Field::Country,
        Field::State,
        Field::Timezone,
        Field::Locale,
        Field::ManagerId,
    ];

    /// The field's name in the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Field::GivenName => "given_name",
            Field::FamilyName => "family_name",
            Field::DisplayName => "display_name",
            Field::Title => "title",
            Field::PrimaryEmail => "primary_email",
            Field::SecondaryEmail => "secondary_email",
            Field::PrivateEmail => "private_email",
            Field::Phone => "phone",
            Field::PhoneExtension => "phone_extension",
            Field::Country => "country",
            Field::State => "state",
            Field::Timezone => "timezone",
            Field::Locale => "locale",
            Field::ManagerId => "manager_id",
        }
    }

    /// The field an admin API name denotes.
    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Where Entra ID sends it, for messages that tell the admin where to change it.
    pub fn scim_attribute(self) -> &'static str {
        match self {
            Field::GivenName => "name.givenName",
            Field::FamilyName => "name.familyName",
            Field::DisplayName => "displayName",
            Field::Title => "title",
            Field::PrimaryEmail => "emails[primary eq true]",
            Field::SecondaryEmail => "emails[type eq \"other\"]",
            Field::PrivateEmail => "emails[type eq \"home\"]",
            Field::Phone => "phoneNumbers[type eq \"work\"]",
            Field::PhoneExtension => "primaryPhoneExtension",
            Field::Country => "addresses[type eq \"work\"].country",
            Field::State => "addresses[type eq \"work\"].region",
            Field::Timezone => "timezone",
            Field::Locale => "locale",
            Field::ManagerId => "manager, managerEmail or managerFullName",
        }
    }
}

/// Where a field's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Sent by Entra ID: locked.
    Entra,
    /// Set once by an admin while Entra ID left it empty: locked.
    Manual,
    /// Neither: an admin may set it once.
    Empty,
}

impl Provenance {
    /// The form the admin API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Entra => "entra",
            Provenance::Manual => "manual",
            Provenance::Empty => "empty",
        }
    }
}

/// Raw (not yet normalized) values per field, trimmed, never blank.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldValues(BTreeMap<Field, String>);

impl FieldValues {
    /// The value of `field`, if any.
    pub fn get(&self, field: Field) -> Option<&str> {
        self.0.get(&field).map(String::as_str)
    }

    /// Sets `field`; a blank value removes it.
    pub fn set(&mut self, field: Field, value: &str) {
        match value.trim() {
            "" => self.0.remove(&field),
            v => self.0.insert(field, v.to_string()),
        };
    }

    /// The fields that have a value, with it.
    pub fn iter(&self) -> impl Iterator<Item = (Field, &str)> {
        self.0.iter().map(|(f, v)| (*f, v.as_str()))
    }

    /// Reads the admin API's `{"title": "…", …}` form (unknown names and non-strings ignored).
    pub fn from_json(value: &Value) -> FieldValues {
        let mut out = FieldValues::default();
        for (name, v) in value.as_object().into_iter().flatten() {
            if let (Some(field), Some(text)) = (Field::parse(name), v.as_str()) {
                out.set(field, text);
            }
        }
        out
    }

    /// The admin API's `{"title": "…", …}` form.
    pub fn to_json(&self) -> Value {
        Value::Object(self.iter().map(|(f, v)| (f.name().to_string(), Value::String(v.to_string()))).collect())
    }

    /// Each field's value from `self`, else from `fallback`.
    pub fn or(&self, fallback: &FieldValues) -> FieldValues {
        let mut merged = fallback.clone();
        merged.0.extend(self.0.iter().map(|(f, v)| (*f, v.clone())));
        merged
    }

    /// What Entra ID sent, per field, in a canonical SCIM user document (DESIGN.md, "Field
    /// sources").
    pub fn from_scim(doc: &Value) -> FieldValues {
        let mut out = FieldValues::default();
        let mut put = |field: Field, value: Option<&Value>| {
            if let Some(text) = value.and_then(Value::as_str) {
                out.set(field, text);
            }
        };
        let name = doc.get("name");
        let muster = doc.get(MUSTER);
        put(Field::GivenName, name.and_then(|n| n.get("givenName")));
        put(Field::FamilyName, name.and_then(|n| n.get("familyName")));
        put(Field::DisplayName, doc.get("displayName"));
        put(Field::Title, doc.get("title"));
        // Primary e-mail: the primary one, else the work one, else userName if it is an address.
        let primary = items(doc, "emails")
            .find(|e| e.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| of_type(doc, "emails", "work"))
            .and_then(|e| non_blank(e.get("value")))
            .or_else(|| doc.get("userName").filter(|u| u.as_str().is_some_and(|s| s.contains('@'))));
        put(Field::PrimaryEmail, primary);
        put(Field::SecondaryEmail, of_type(doc, "emails", "other").and_then(|e| e.get("value")));
        let home = of_type(doc, "emails", "home").and_then(|e| non_blank(e.get("value")));
        put(Field::PrivateEmail, home.or_else(|| muster.and_then(|m| m.get("privateEmail"))));
        put(Field::Phone, of_type(doc, "phoneNumbers", "work").and_then(|p| p.get("value")));
        put(Field::PhoneExtension, muster.and_then(|m| m.get("primaryPhoneExtension")));
        let work_address = of_type(doc, "addresses", "work");
        put(Field::Country, work_address.and_then(|a| a.get("country")));
        put(Field::State, work_address.and_then(|a| a.get("region")));
        put(Field::Timezone, doc.get("timezone"));
        put(Field::Locale, non_blank(doc.get("locale")).or_else(|| doc.get("preferredLanguage")));
        // Any manager reference makes the manager Entra's; the value is the first one sent.
        let manager = doc.get(ENTERPRISE).and_then(|e| e.get("manager")).and_then(|m| m.get("value").or(Some(m)));
        let reference = non_blank(manager)
            .or_else(|| non_blank(muster.and_then(|m| m.get("managerEmail"))))
            .or_else(|| non_blank(muster.and_then(|m| m.get("managerFullName"))));
        put(Field::ManagerId, reference);
        out
    }
}

/// A string value that is not blank.
fn non_blank(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| v.as_str().is_some_and(|s| !s.trim().is_empty()))
}

fn items<'a>(doc: &'a Value, attr: &str) -> impl Iterator<Item = &'a Value> {
    doc.get(attr).and_then(Value::as_array).into_iter().flatten()
}

pub(crate) fn of_type<'a>(doc: &'a Value, attr: &str, kind: &str) -> Option<&'a Value> {
    items(doc, attr).find(|i| i.get("type").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case(kind)))
}

/// Where `field`'s value comes from, given what Entra sent and what admins set.
pub fn provenance(field: Field, entra: &FieldValues, manual: &FieldValues) -> Provenance {
    if entra.get(field).is_some() {
        Provenance::Entra
    } else if manual.get(field).is_some() {
        Provenance::Manual
    } else {
        Provenance::Empty
    }
}

/// Why a manual edit was refused; the message tells the admin what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EditRefused {
    /// The field came from Entra ID.
    FromEntra(Field),
    /// The field was already set manually.
    AlreadySet(Field),
    /// The value is not valid for the field.
    Invalid(Field, String),
}

impl EditRefused {
    /// The field concerned.
    pub fn field(&self) -> Field {
        match self {
            EditRefused::FromEntra(f) | EditRefused::AlreadySet(f) | EditRefused::Invalid(f, _) => *f,
        }
    }
}

impl fmt::Display for EditRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EditRefused::FromEntra(field) => write!(
                f,
                "{} came from Entra ID ({}) and is locked; change it in Entra ID",
                field.name(),
                field.scim_attribute()
            ),
            EditRefused::AlreadySet(field) => write!(
                f,
                "{} was already set manually and is locked; a field Entra ID left empty can be set once",
                field.name()
            ),
            EditRefused::Invalid(field, why) => write!(f, "{}: {why}", field.name()),
        }
    }
}

/// Checks a manual edit of several fields at once against provenance and validity, and returns
/// the member's manual values after it. All or nothing: every refusal is reported.
pub fn plan_manual_edit(
    entra: &FieldValues,
    manual: &FieldValues,
    edits: &FieldValues,
    rules: &CompanyRules,
) -> Result<FieldValues, Vec<EditRefused>> {
    let mut refusals = Vec::new();
    // Validation sees the values the member will have, so a country and its state can be set
    // together.
    let after = entra.or(&edits.or(manual));
    for (field, value) in edits.iter() {
        let refused = match provenance(field, entra, manual) {
            Provenance::Entra => Some(EditRefused::FromEntra(field)),
            Provenance::Manual => Some(EditRefused::AlreadySet(field)),
            Provenance::Empty => {
                validate(field, value, &after, rules).err().map(|why| EditRefused::Invalid(field, why))
            }
        };
        refusals.extend(refused);
    }
    if refusals.is_empty() { Ok(edits.or(manual)) } else { Err(refusals) }
}

fn validate(field: Field, value: &str, member: &FieldValues, rules: &CompanyRules) -> Result<(), String> {
    if value.chars().count() > MAX_MANUAL_LEN {
        return Err(format!("longer than {MAX_MANUAL_LEN} characters"));
    }
    match field {
        Field::GivenName | Field::FamilyName | Field::DisplayName | Field::Title => Ok(()),
        Field::SecondaryEmail | Field::PrivateEmail => email_shape(value),
        Field::PrimaryEmail => {
            email_shape(value)?;
            if rules.domains.iter().any(|d| d.owns_email(value)) {
                Ok(())
            } else {
                let allowed: Vec<&str> = rules.domains.iter().map(|d| d.as_str()).collect();
                Err(format!("the domain is not one of the company's domains ({})", allowed.join(", ")))
            }
        }
        Field::Phone => {
            let country = member.get(Field::Country).and_then(|c| normalize_country(c).ok());
            normalize_phone(value, country.as_deref(), member.get(Field::PhoneExtension))
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Field::PhoneExtension => {
            if value.len() <= 10 && value.chars().all(|c| c.is_ascii_digit()) {
                Ok(())
            } else {
                Err("an extension is 1 to 10 digits".into())
            }
        }
        Field::Country => normalize_country(value).map(|_| ()).map_err(|e| e.to_string()),
        Field::State => {
            let Some(country) = member.get(Field::Country).and_then(|c| normalize_country(c).ok()) else {
                return Err("a state or province needs the member's country; set the country first".into());
            };
            normalize_subdivision(&country, value).map(|_| ()).map_err(|e| e.to_string())
        }
        Field::Timezone => parse_timezone(value).map(|_| ()).map_err(|e| e.to_string()),
        Field::ManagerId => match uuid::Uuid::parse_str(value) {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("'{value}' is not a member's SCIM id")),
        },
        Field::Locale => match resolve_locale(Some(value)).invalid {
            None => Ok(()),
            Some(_) => Err(format!("'{value}' is not a BCP 47 locale such as en-US")),
        },
    }
}

fn email_shape(value: &str) -> Result<(), String> {
    match value.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && !value.contains(char::is_whitespace) => {
            Ok(())
        }
        _ => Err(format!("'{value}' is not an e-mail address")),
    }
}

#[cfg(test)]
mod tests {
    use chrono_tz::Tz;
    use serde_json::json;

    use super::*;
    use crate::CompanyDomain;

    fn rules() -> CompanyRules {
        CompanyRules { domains: vec![CompanyDomain::parse("contoso.com").unwrap()], default_timezone: Tz::UTC }
    }

    fn values(pairs: &[(Field, &str)]) -> FieldValues {
        let mut out = FieldValues::default();
        for (f, v) in pairs {
            out.set(*f, v);
        }
        out
    }

    #[test]
    fn entra_fields_are_read_from_the_documented_attributes() {
        let doc = json!({
            "userName": "ann@contoso.com", "displayName": "Ann Lee", "title": "Engineer",
            "name": {"givenName": " Ann ", "familyName": ""},
            "emails": [{"type": "work", "value": "ann.lee@contoso.com"}, {"type": "other", "value": "a@x.org"}],
            "phoneNumbers": [{"type": "work", "value": "(865) 365-1900"}],
            "addresses": [{"type": "work", "country": "US", "region": "TN"}],
            "preferredLanguage": "en_GB",
            MUSTER: {"privateEmail": "ann@home.org", "primaryPhoneExtension": "12"}
        });
        let v = FieldValues::from_scim(&doc);
        assert_eq!(v.get(Field::GivenName), Some("Ann"));
        assert_eq!(v.get(Field::FamilyName), None, "blank is empty");
        assert_eq!(v.get(Field::PrimaryEmail), Some("ann.lee@contoso.com"));
        assert_eq!(v.get(Field::SecondaryEmail), Some("a@x.org"));
        assert_eq!(v.get(Field::PrivateEmail), Some("ann@home.org"));
        assert_eq!(v.get(Field::PhoneExtension), Some("12"));
        assert_eq!((v.get(Field::Country), v.get(Field::State)), (Some("US"), Some("TN")));
        assert_eq!(v.get(Field::Locale), Some("en_GB"));
        assert_eq!(v.get(Field::Timezone), None);
    }

    #[test]
    fn provenance_is_entra_then_manual_then_empty() {
        let entra = values(&[(Field::Title, "Engineer")]);
        let manual = values(&[(Field::Title, "Boss"), (Field::Locale, "fr-FR")]);
        assert_eq!(provenance(Field::Title, &entra, &manual), Provenance::Entra, "Entra's value wins");
        assert_eq!(provenance(Field::Locale, &entra, &manual), Provenance::Manual);
        assert_eq!(provenance(Field::Country, &entra, &manual), Provenance::Empty);
    }

    #[test]
    fn an_empty_field_can_be_set_once_then_it_is_locked() {
        let entra = values(&[(Field::GivenName, "Ann")]);
        let first = plan_manual_edit(&entra, &FieldValues::default(), &values(&[(Field::Title, "CTO")]), &rules());
        let manual = first.unwrap();
        assert_eq!(manual.get(Field::Title), Some("CTO"));
        let second = plan_manual_edit(&entra, &manual, &values(&[(Field::Title, "CEO")]), &rules());
        assert_eq!(second, Err(vec![EditRefused::AlreadySet(Field::Title)]));
    }

    #[test]
    fn entra_fields_are_refused_with_where_to_change_them() {
        let entra = values(&[(Field::GivenName, "Ann")]);
        let refused =
            plan_manual_edit(&entra, &FieldValues::default(), &values(&[(Field::GivenName, "Anne")]), &rules())
                .unwrap_err();
        assert_eq!(refused, vec![EditRefused::FromEntra(Field::GivenName)]);
        let message = refused[0].to_string();
        assert!(message.contains("Entra ID") && message.contains("name.givenName"), "{message}");
    }

    #[test]
    fn manual_values_are_validated_and_all_refusals_reported() {
        let none = FieldValues::default();
        for (field, value) in [
            (Field::Country, "Atlantis"),
            (Field::Timezone, "-05:00"),
            (Field::Locale, "klingon please"),
            (Field::Phone, "call the front desk"),
            (Field::PhoneExtension, "ext 12"),
            (Field::PrimaryEmail, "ann@fabrikam.com"),
            (Field::SecondaryEmail, "not an address"),
            (Field::State, "California"),
        ] {
            let refused = plan_manual_edit(&none, &none, &values(&[(field, value)]), &rules()).unwrap_err();
            assert!(matches!(&refused[..], [EditRefused::Invalid(f, _)] if *f == field), "{field:?}: {refused:?}");
        }
        let two =
            plan_manual_edit(&none, &none, &values(&[(Field::Country, "Atlantis"), (Field::Title, "")]), &rules());
        assert_eq!(two.unwrap_err().len(), 1, "a blank value is no edit");
        let long = "x".repeat(300);
        assert!(plan_manual_edit(&none, &none, &values(&[(Field::Title, &long)]), &rules()).is_err());
    }

    #[test]
    fn a_state_can_be_set_with_its_country_or_after_it() {
        let none = FieldValues::default();
        let together = values(&[(Field::Country, "Canada"), (Field::State, "Ontario")]);
        assert!(plan_manual_edit(&none, &none, &together, &rules()).is_ok());
        let entra_country = values(&[(Field::Country, "AUS")]);
        assert!(plan_manual_edit(&entra_country, &none, &values(&[(Field::State, "NSW")]), &rules()).is_ok());
        let valid = [
            (Field::PrimaryEmail, "Ann@Contoso.com"),
            (Field::Phone, "(212) 575-1994 ext 3437"),
            (Field::Timezone, "Europe/Berlin"),
            (Field::Locale, "he_IL"),
            (Field::PhoneExtension, "468"),
        ];
        for (field, value) in valid {
            assert!(plan_manual_edit(&none, &none, &values(&[(field, value)]), &rules()).is_ok(), "{field:?}");
        }
    }

    #[test]
    fn the_json_form_round_trips_and_names_parse() {
        let v = values(&[(Field::Title, "CTO"), (Field::Locale, "fr-FR")]);
        assert_eq!(FieldValues::from_json(&v.to_json()), v);
        for f in Field::ALL {
            assert_eq!(Field::parse(f.name()), Some(f));
        }
        assert_eq!(Field::parse("manager"), None);
        let managed = json!({ENTERPRISE: {"manager": "m-1"}});
        assert_eq!(FieldValues::from_scim(&managed).get(Field::ManagerId), Some("m-1"));
        let by_name = json!({MUSTER: {"managerFullName": "Bo Ss"}});
        assert_eq!(FieldValues::from_scim(&by_name).get(Field::ManagerId), Some("Bo Ss"), "any reference is Entra's");
    }

    proptest::proptest! {
        #[test]
        fn edits_never_panic(field in 0usize..14, value in ".{0,60}") {
            let none = FieldValues::default();
            let _ = plan_manual_edit(&none, &none, &values(&[(Field::ALL[field], &value)]), &rules());
        }
    }
}
