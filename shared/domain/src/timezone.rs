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

/// The country's zone when it has exactly one.
pub fn single_zone_of_country(alpha2: &str) -> Option<Tz> {
    match zones_of_country(alpha2) {
        [only] => Tz::from_str(only).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
