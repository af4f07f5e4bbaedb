//! Time zones: IANA names only. Offsets (`-05:00`, `UTC-5`), abbreviations (`PST`) and legacy
//! links (`US/Eastern`, `Etc/GMT+5`) are refused, never guessed: a valid name is one of the
//! canonical zones of tzdb's `zone.tab` (vendored from the tzdb release chrono-tz is built
//! from), or `UTC`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::OnceLock;

use chrono_tz::Tz;

/// `zone.tab` of tzdb 2025b (public domain): country code, coordinates, zone name.
const ZONE_TAB: &str = include_str!("../data/zone.tab");

/// Curated ISO 3166-2 subdivision → zone data for countries whose subdivisions differ.
const SUBDIVISION_ZONES: &str = include_str!("../data/subdivision_zones.tsv");

/// A value that is not an IANA time zone name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{raw}' is not an IANA time zone name such as America/New_York")]
pub struct InvalidTimezone {
    pub raw: String,
}

fn zones_by_country() -> &'static HashMap<&'static str, Vec<&'static str>> {
    static MAP: OnceLock<HashMap<&'static str, Vec<&'static str>>> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut map: HashMap<&'static str, Vec<&'static str>> = HashMap::new();
        for line in ZONE_TAB.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split('\t');
            if let (Some(country), Some(_), Some(zone)) = (fields.next(), fields.next(), fields.next()) {
                map.entry(country).or_default().push(zone);
            }
        }
        map
    })
}

/// Validates an IANA name (exact spelling, case-insensitive match accepted and corrected).
pub fn parse_timezone(raw: &str) -> Result<Tz, InvalidTimezone> {
    let fail = || InvalidTimezone { raw: raw.to_string() };
    let text = raw.trim();
    if text.eq_ignore_ascii_case("UTC") || text.eq_ignore_ascii_case("Etc/UTC") {
        return Ok(Tz::UTC);
    }
    let canonical = zones_by_country().values().flatten().find(|z| z.eq_ignore_ascii_case(text)).ok_or_else(fail)?;
    Tz::from_str(canonical).map_err(|_| fail())
}

/// The zones of a country (alpha-2) in `zone.tab`.
pub fn zones_of_country(alpha2: &str) -> &'static [&'static str] {
    zones_by_country().get(alpha2.to_ascii_uppercase().as_str()).map(Vec::as_slice).unwrap_or(&[])
}

/// The country's zone when all its zones keep the same time: one zone, or several that
/// agree (Germany's Europe/Busingen follows Europe/Berlin), compared in January and July so
/// that daylight saving counts. The first zone of `zone.tab` (the most populous) is taken.
pub fn single_zone_of_country(alpha2: &str) -> Option<Tz> {
    let zones: Vec<Tz> = zones_of_country(alpha2).iter().filter_map(|z| Tz::from_str(z).ok()).collect();
    let first = *zones.first()?;
    let offsets = |tz: Tz| -> Vec<i32> {
        use chrono::{Offset, TimeZone};
        [(1, 15), (7, 15)]
            .into_iter()
            .filter_map(|(month, day)| chrono::NaiveDate::from_ymd_opt(2025, month, day)?.and_hms_opt(12, 0, 0))
            .map(|instant| tz.offset_from_utc_datetime(&instant).fix().local_minus_utc())
            .collect()
    };
    let reference = offsets(first);
    zones.iter().all(|tz| offsets(*tz) == reference).then_some(first)
}

fn zones_by_subdivision() -> &'static HashMap<&'static str, &'static str> {
    static MAP: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    MAP.get_or_init(|| {
        SUBDIVISION_ZONES
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_once('\t'))
            .collect()
    })
}

/// The zone of an ISO 3166-2 subdivision (`US-CA`), where the curated data has it.
pub fn zone_of_subdivision(iso: &str) -> Option<Tz> {
    zones_by_subdivision().get(iso.trim().to_ascii_uppercase().as_str()).and_then(|z| Tz::from_str(z).ok())
}

/// Which rule gave a member's effective time zone (DESIGN.md, "Effective time zone").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimezoneSource {
    /// The member's own (valid) time zone attribute.
    Attribute,
    /// The member's country, which has a single zone.
    Country,
    /// The member's state or province, in a country whose subdivisions differ.
    State,
    /// None of the above applied: the company's default.
    CompanyDefault,
}

impl TimezoneSource {
    /// The name shown as `timezone_source`.
    pub fn as_str(self) -> &'static str {
        match self {
            TimezoneSource::Attribute => "attribute",
            TimezoneSource::Country => "country",
            TimezoneSource::State => "state",
            TimezoneSource::CompanyDefault => "company_default",
        }
    }
}

/// The first rule that applies: the attribute; a single-zone country; the state in a
/// multi-zone country; the company default. Inputs are already normalized (a valid zone,
/// an alpha-2 country, an ISO 3166-2 subdivision).
pub fn effective_timezone(
    attribute: Option<Tz>,
    country: Option<&str>,
    state: Option<&str>,
    company_default: Tz,
) -> (Tz, TimezoneSource) {
    if let Some(tz) = attribute {
        return (tz, TimezoneSource::Attribute);
    }
    if let Some(country) = country {
        if let Some(tz) = single_zone_of_country(country) {
            return (tz, TimezoneSource::Country);
        }
        let prefix = format!("{}-", country.to_ascii_uppercase());
        if let Some(tz) = state.filter(|s| s.to_ascii_uppercase().starts_with(&prefix)).and_then(zone_of_subdivision) {
            return (tz, TimezoneSource::State);
        }
    }
    (company_default, TimezoneSource::CompanyDefault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_curated_subdivision_exists_and_maps_to_a_zone_of_its_country() {
        let mut per_country: HashMap<&str, usize> = HashMap::new();
        for (iso, zone) in zones_by_subdivision() {
            let (country, code) = iso.split_once('-').unwrap();
            assert_eq!(
                crate::country::normalize_subdivision(country, code).as_deref(),
                Ok(*iso),
                "{iso} is an ISO 3166-2 code"
            );
            assert!(parse_timezone(zone).is_ok(), "{iso}: {zone} is canonical");
            assert!(zones_of_country(country).contains(zone), "{iso}: {zone} is a zone of {country}");
            *per_country.entry(country).or_default() += 1;
        }
        for (country, at_least) in [("US", 51), ("CA", 13), ("AU", 8), ("BR", 27), ("MX", 32), ("RU", 83)] {
            assert!(per_country.get(country).copied().unwrap_or(0) >= at_least, "{country}: {per_country:?}");
        }
    }

    #[test]
    fn effective_time_zone_rules_in_order() {
        let default = Tz::Europe__London;
        let ny = Some(Tz::America__New_York);
        assert_eq!(
            effective_timezone(ny, Some("FR"), None, default),
            (Tz::America__New_York, TimezoneSource::Attribute)
        );
        assert_eq!(
            effective_timezone(None, Some("FR"), Some("FR-IDF"), default),
            (Tz::Europe__Paris, TimezoneSource::Country)
        );
        assert_eq!(
            effective_timezone(None, Some("US"), Some("US-CA"), default),
            (Tz::America__Los_Angeles, TimezoneSource::State)
        );
        assert_eq!(
            effective_timezone(None, Some("CA"), Some("CA-ON"), default),
            (Tz::America__Toronto, TimezoneSource::State)
        );
        assert_eq!(
            effective_timezone(None, Some("AU"), Some("AU-WA"), default),
            (Tz::Australia__Perth, TimezoneSource::State)
        );
        assert_eq!(
            effective_timezone(None, Some("BR"), Some("BR-AM"), default),
            (Tz::America__Manaus, TimezoneSource::State)
        );
        assert_eq!(
            effective_timezone(None, Some("MX"), Some("MX-BCN"), default),
            (Tz::America__Tijuana, TimezoneSource::State)
        );
        assert_eq!(
            effective_timezone(None, Some("RU"), Some("RU-NVS"), default),
            (Tz::Asia__Novosibirsk, TimezoneSource::State)
        );
        // A multi-zone country without a usable state falls to the company default.
        assert_eq!(effective_timezone(None, Some("US"), None, default), (default, TimezoneSource::CompanyDefault));
        assert_eq!(
            effective_timezone(None, Some("US"), Some("CA-ON"), default),
            (default, TimezoneSource::CompanyDefault)
        );
        // Indonesia keeps three times and has no curated state data: the company default.
        assert_eq!(
            effective_timezone(None, Some("ID"), Some("ID-JK"), default),
            (default, TimezoneSource::CompanyDefault)
        );
        // Argentina has twelve zones that all keep one time: the country decides.
        assert_eq!(effective_timezone(None, Some("AR"), None, default).1, TimezoneSource::Country);
        assert_eq!(effective_timezone(None, None, None, default), (default, TimezoneSource::CompanyDefault));
    }

    #[test]
    fn iana_names_are_accepted_and_offsets_refused() {
        assert_eq!(parse_timezone("America/New_York"), Ok(Tz::America__New_York));
        assert_eq!(parse_timezone("europe/berlin"), Ok(Tz::Europe__Berlin));
        assert_eq!(parse_timezone("UTC"), Ok(Tz::UTC));
        for raw in ["-05:00", "+01:00", "UTC-5", "GMT+2", "PST", "EST", "US/Eastern", "Etc/GMT+5", "", "Mars/Olympus"] {
            assert!(parse_timezone(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn every_zone_tab_zone_is_known_to_chrono_tz() {
        let zones: Vec<&&str> = zones_by_country().values().flatten().collect();
        assert!(zones.len() > 400, "{}", zones.len());
        for zone in zones {
            assert!(Tz::from_str(zone).is_ok(), "{zone}");
        }
    }

    #[test]
    fn single_and_multi_zone_countries() {
        assert_eq!(single_zone_of_country("FR"), Some(Tz::Europe__Paris));
        assert_eq!(single_zone_of_country("il"), Some(Tz::Asia__Jerusalem));
        assert_eq!(single_zone_of_country("US"), None);
        assert_eq!(single_zone_of_country("DE"), Some(Tz::Europe__Berlin), "Busingen keeps Berlin's time");
        assert_eq!(single_zone_of_country("ES"), None, "the Canaries differ");
        assert!(zones_of_country("US").len() > 20);
        assert!(zones_of_country("RU").len() > 20);
        assert_eq!(single_zone_of_country("XX"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(raw in ".{0,80}") {
            let _ = parse_timezone(&raw);
        }
    }
}
