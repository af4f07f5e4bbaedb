//! From a SCIM user (the canonical document the ingress stores) to a team member's profile,
//! under DESIGN.md's business rules: which attribute each field comes from, what is
//! normalized how, and whether the member can be imported or is skipped, with the reasons.
//! Invalid optional values (phone, country, state, time zone, locale) never block an import:
//! they are kept raw and flagged.

use chrono_tz::Tz;
use serde_json::Value;

use crate::company_domain::CompanyDomain;
use crate::country::{normalize_country, normalize_subdivision};
use crate::locale::resolve_locale;
use crate::phone::normalize_phone;
use crate::provenance::{ENTERPRISE, Field, FieldValues, MUSTER, Provenance, provenance};
use crate::timezone::{TimezoneSource, effective_timezone, parse_timezone};

/// What the company's rules need.
#[derive(Debug, Clone)]
pub struct CompanyRules {
    /// The primary domain first, then further verified ones.
    pub domains: Vec<CompanyDomain>,
    pub default_timezone: Tz,
}

/// A value as sent and as normalized; `normalized` is `None` when it was invalid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalized {
    pub raw: Option<String>,
    pub normalized: Option<String>,
}

impl Normalized {
    /// A raw value was sent but could not be normalized.
    pub fn is_invalid(&self) -> bool {
        self.raw.is_some() && self.normalized.is_none()
    }
}

/// The work phone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PhoneField {
    pub raw: Option<String>,
    pub e164: Option<String>,
    pub extension: Option<String>,
}

/// The manager reference, kept for the hierarchy worker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManagerRef {
    /// The manager's SCIM id (enterprise `manager.value`).
    pub id: Option<String>,
    pub email: Option<String>,
    /// "firstname lastname".
    pub full_name: Option<String>,
    /// `id` was set by an admin (Entra ID sent no reference).
    pub manual: bool,
}

/// A member's profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub display_name: Option<String>,
    pub title: Option<String>,
    pub primary_email: Option<String>,
    pub secondary_email: Option<String>,
    pub private_email: Option<String>,
    pub phone: PhoneField,
    pub manager: ManagerRef,
    pub country: Normalized,
    pub state: Normalized,
    /// The time zone attribute as sent (normalized when it is a valid IANA name).
    pub timezone_attribute: Normalized,
    /// The effective time zone and the rule that gave it.
    pub timezone: Tz,
    pub timezone_source: TimezoneSource,
    pub locale: String,
    /// The locale sent, when it was invalid and the default was used.
    pub locale_invalid: Option<String>,
    /// SCIM `active` (true when absent).
    pub active: bool,
    /// Where each field's value came from.
    pub provenance: Vec<(Field, Provenance)>,
    /// The values admins set manually (used only where Entra ID sends none).
    pub manual: FieldValues,
}

/// Whether the member can be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Import,
    /// Skipped, with every reason (each names the field to fix).
    Skip(Vec<String>),
}

/// Derives the profile and the verdict from a canonical SCIM user document and the values
/// admins set manually where Entra ID sent none (see `provenance`).
pub fn derive_profile(doc: &Value, manual: &FieldValues, rules: &CompanyRules) -> (Profile, Verdict) {
    let entra = FieldValues::from_scim(doc);
    let values = entra.or(manual);
    let get = |field: Field| values.get(field).map(str::to_string);

    let country_raw = get(Field::Country);
    let country =
        Normalized { normalized: country_raw.as_deref().and_then(|c| normalize_country(c).ok()), raw: country_raw };
    let state_raw = get(Field::State);
    let state = Normalized {
        normalized: match (&country.normalized, &state_raw) {
            (Some(c), Some(s)) => normalize_subdivision(c, s).ok(),
            _ => None,
        },
        raw: state_raw,
    };

    let phone_raw = get(Field::Phone);
    let separate_extension = get(Field::PhoneExtension);
    let phone = match &phone_raw {
        Some(raw) => match normalize_phone(raw, country.normalized.as_deref(), separate_extension.as_deref()) {
            Ok(p) => PhoneField { raw: phone_raw.clone(), e164: Some(p.e164), extension: p.extension },
            Err(_) => PhoneField { raw: phone_raw.clone(), e164: None, extension: separate_extension },
        },
        None => PhoneField { raw: None, e164: None, extension: separate_extension },
    };

    let tz_raw = get(Field::Timezone);
    let tz_attribute = tz_raw.as_deref().and_then(|t| parse_timezone(t).ok());
    let timezone_attribute = Normalized { normalized: tz_attribute.map(|t| t.name().to_string()), raw: tz_raw };
    let (timezone, timezone_source) = effective_timezone(
        tz_attribute,
        country.normalized.as_deref(),
        state.normalized.as_deref(),
        rules.default_timezone,
    );

    let locale = resolve_locale(values.get(Field::Locale));
    let enterprise = doc.get(ENTERPRISE);
    let muster = doc.get(MUSTER);
    let text =
        |v: Option<&Value>| v.and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);

    let profile = Profile {
        given_name: get(Field::GivenName),
        family_name: get(Field::FamilyName),
        display_name: get(Field::DisplayName),
        title: get(Field::Title),
        primary_email: get(Field::PrimaryEmail),
        secondary_email: get(Field::SecondaryEmail),
        private_email: get(Field::PrivateEmail),
        manager: match (entra.get(Field::ManagerId), manual.get(Field::ManagerId)) {
            (None, Some(id)) => ManagerRef { id: Some(id.to_string()), manual: true, ..ManagerRef::default() },
            _ => ManagerRef {
                id: text(enterprise.and_then(|e| e.get("manager")).and_then(|m| m.get("value").or(Some(m)))),
                email: text(muster.and_then(|m| m.get("managerEmail"))),
                full_name: text(muster.and_then(|m| m.get("managerFullName"))),
                manual: false,
            },
        },
        active: doc.get("active").and_then(Value::as_bool).unwrap_or(true),
        phone,
        country,
        state,
        timezone_attribute,
        timezone,
        timezone_source,
        locale: locale.tag,
        locale_invalid: locale.invalid,
        provenance: Field::ALL.into_iter().map(|f| (f, provenance(f, &entra, manual))).collect(),
        manual: manual.clone(),
    };
    let verdict = verdict(&profile, rules);
    (profile, verdict)
}

fn verdict(profile: &Profile, rules: &CompanyRules) -> Verdict {
    let mut reasons = Vec::new();
    if profile.given_name.is_none() {
        reasons.push("missing given name (name.givenName)".to_string());
    }
    if profile.family_name.is_none() {
        reasons.push("missing last name (name.familyName)".to_string());
    }
    match &profile.primary_email {
        None => reasons
            .push("missing primary e-mail (emails[primary eq true], emails[type eq \"work\"] or userName)".to_string()),
        Some(email) if !rules.domains.iter().any(|d| d.owns_email(email)) => {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or(email.as_str());
            let allowed: Vec<&str> = rules.domains.iter().map(CompanyDomain::as_str).collect();
            reasons.push(format!(
                "primary e-mail domain '{domain}' is not one of the company's domains ({})",
                allowed.join(", ")
            ));
        }
        Some(_) => {}
    }
    if reasons.is_empty() { Verdict::Import } else { Verdict::Skip(reasons) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> CompanyRules {
        CompanyRules {
            domains: vec![CompanyDomain::parse("contoso.com").unwrap(), CompanyDomain::parse("contoso.de").unwrap()],
            default_timezone: Tz::Europe__London,
        }
    }

    fn derive_profile_entra(doc: &Value, rules: &CompanyRules) -> (Profile, Verdict) {
        derive_profile(doc, &FieldValues::default(), rules)
    }

    fn entra_user() -> Value {
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, MUSTER],
            "userName": "ann.lee@contoso.com",
            "active": true,
            "displayName": "Ann Lee",
            "title": "Engineer",
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [
                {"type": "work", "value": "Ann.Lee@Contoso.com", "primary": true},
                {"type": "other", "value": "ann@contoso.de"},
                {"type": "home", "value": "ann@example.org"}
            ],
            "phoneNumbers": [{"type": "work", "value": "(212) 575-1994 ext 3437"}],
            "addresses": [{"type": "work", "country": "United States", "region": "California"}],
            "locale": "en_US",
            ENTERPRISE: {"manager": {"value": "m-1"}},
            MUSTER: {"managerEmail": "boss@contoso.com", "managerFullName": "Bo Ss"}
        })
    }

    #[test]
    fn an_entra_user_maps_field_by_field_and_is_imported() {
        let (p, verdict) = derive_profile_entra(&entra_user(), &rules());
        assert_eq!(verdict, Verdict::Import);
        assert_eq!((p.given_name.as_deref(), p.family_name.as_deref()), (Some("Ann"), Some("Lee")));
        assert_eq!(p.primary_email.as_deref(), Some("Ann.Lee@Contoso.com"));
        assert_eq!(p.secondary_email.as_deref(), Some("ann@contoso.de"));
        assert_eq!(p.private_email.as_deref(), Some("ann@example.org"));
        assert_eq!(p.phone.e164.as_deref(), Some("+12125751994"));
        assert_eq!(p.phone.extension.as_deref(), Some("3437"));
        assert_eq!(p.country.normalized.as_deref(), Some("US"));
        assert_eq!(p.state.normalized.as_deref(), Some("US-CA"));
        assert_eq!((p.timezone, p.timezone_source), (Tz::America__Los_Angeles, TimezoneSource::State));
        assert_eq!(p.locale, "en-US");
        assert_eq!(
            p.manager,
            ManagerRef {
                id: Some("m-1".into()),
                email: Some("boss@contoso.com".into()),
                full_name: Some("Bo Ss".into()),
                manual: false,
            }
        );
        assert!(p.active);
    }

    #[test]
    fn missing_mandatory_fields_and_foreign_domains_skip_with_named_reasons() {
        let mut doc = entra_user();
        doc["name"] = json!({"givenName": "Ann"});
        doc["emails"] = json!([{"type": "work", "value": "ann@fabrikam.com"}]);
        let (_, verdict) = derive_profile_entra(&doc, &rules());
        let Verdict::Skip(reasons) = verdict else { panic!("should be skipped") };
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("name.familyName"));
        assert!(reasons[1].contains("'fabrikam.com'") && reasons[1].contains("contoso.com, contoso.de"));

        let mut no_email = entra_user();
        no_email.as_object_mut().unwrap().remove("emails");
        no_email["userName"] = json!("annlee");
        let (_, verdict) = derive_profile_entra(&no_email, &rules());
        assert!(matches!(verdict, Verdict::Skip(r) if r[0].contains("missing primary e-mail")));
    }

    #[test]
    fn primary_email_falls_back_to_work_then_user_name() {
        let mut doc = entra_user();
        doc["emails"] = json!([{"type": "work", "value": "work@contoso.com"}]);
        assert_eq!(derive_profile_entra(&doc, &rules()).0.primary_email.as_deref(), Some("work@contoso.com"));
        doc.as_object_mut().unwrap().remove("emails");
        assert_eq!(derive_profile_entra(&doc, &rules()).0.primary_email.as_deref(), Some("ann.lee@contoso.com"));
    }

    #[test]
    fn invalid_optional_values_are_kept_raw_and_do_not_block_the_import() {
        let mut doc = entra_user();
        doc["phoneNumbers"] = json!([{"type": "work", "value": "call the front desk"}]);
        doc["addresses"] = json!([{"type": "work", "country": "Atlantis", "region": "Deep"}]);
        doc["timezone"] = json!("-05:00");
        doc["locale"] = json!("klingon please");
        let (p, verdict) = derive_profile_entra(&doc, &rules());
        assert_eq!(verdict, Verdict::Import);
        assert_eq!(p.phone, PhoneField { raw: Some("call the front desk".into()), e164: None, extension: None });
        assert!(p.country.is_invalid() && p.state.is_invalid() && p.timezone_attribute.is_invalid());
        assert_eq!((p.timezone, p.timezone_source), (Tz::Europe__London, TimezoneSource::CompanyDefault));
        assert_eq!((p.locale.as_str(), p.locale_invalid.as_deref()), ("en-US", Some("klingon please")));
    }

    #[test]
    fn time_zone_attribute_wins_and_a_single_zone_country_follows() {
        let mut doc = entra_user();
        doc["timezone"] = json!("Asia/Tokyo");
        assert_eq!(derive_profile_entra(&doc, &rules()).0.timezone_source, TimezoneSource::Attribute);
        doc.as_object_mut().unwrap().remove("timezone");
        doc["addresses"] = json!([{"type": "work", "country": "DEU"}]);
        let (p, _) = derive_profile_entra(&doc, &rules());
        assert_eq!((p.timezone, p.timezone_source), (Tz::Europe__Berlin, TimezoneSource::Country));
    }

    #[test]
    fn the_separate_phone_extension_and_deactivation_are_read() {
        let mut doc = entra_user();
        doc["phoneNumbers"] = json!([{"type": "work", "value": "(865) 365-1900"}]);
        doc[MUSTER]["primaryPhoneExtension"] = json!("42");
        doc["active"] = json!(false);
        let (p, verdict) = derive_profile_entra(&doc, &rules());
        assert_eq!(p.phone.extension.as_deref(), Some("42"));
        assert!(!p.active);
        assert_eq!(verdict, Verdict::Import, "deactivation is a lifecycle state, not a skip");
    }

    #[test]
    fn manual_values_fill_what_entra_left_empty_and_entra_wins_later() {
        let mut doc = entra_user();
        doc["name"] = json!({"givenName": "Ann"});
        doc.as_object_mut().unwrap().remove("title");
        let mut manual = FieldValues::default();
        manual.set(Field::FamilyName, "Lee");
        manual.set(Field::Title, "Staff Engineer");
        let (p, verdict) = derive_profile(&doc, &manual, &rules());
        assert_eq!(verdict, Verdict::Import, "the manual last name fixes the skip");
        assert_eq!((p.family_name.as_deref(), p.title.as_deref()), (Some("Lee"), Some("Staff Engineer")));
        let source = |f: Field| p.provenance.iter().find(|(g, _)| *g == f).map(|(_, s)| *s);
        assert_eq!(source(Field::FamilyName), Some(Provenance::Manual));
        assert_eq!(source(Field::GivenName), Some(Provenance::Entra));
        assert_eq!(source(Field::Timezone), Some(Provenance::Empty));

        doc["title"] = json!("Principal Engineer");
        let (p, _) = derive_profile(&doc, &manual, &rules());
        assert_eq!(p.title.as_deref(), Some("Principal Engineer"));
        assert!(p.provenance.contains(&(Field::Title, Provenance::Entra)));
    }

    #[test]
    fn the_manager_id_may_be_a_bare_string() {
        let mut doc = entra_user();
        doc[ENTERPRISE]["manager"] = json!("m-2");
        assert_eq!(derive_profile_entra(&doc, &rules()).0.manager.id.as_deref(), Some("m-2"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_strings(user in ".{0,40}", given in ".{0,20}", phone in ".{0,30}", country in ".{0,20}", tz in ".{0,20}") {
            let doc = json!({"userName": user, "name": {"givenName": given}, "phoneNumbers": [{"type": "work", "value": phone}],
                "addresses": [{"type": "work", "country": country, "region": country}], "timezone": tz, "locale": tz});
            let _ = derive_profile_entra(&doc, &rules());
        }
    }
}
