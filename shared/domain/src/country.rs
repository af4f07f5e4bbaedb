//! Countries and their subdivisions: a full English name, an ISO 3166-1 alpha-2 or alpha-3
//! code, in any case, becomes alpha-2; a state or province, by name or code, becomes its
//! ISO 3166-2 code (`US-CA`, `CA-ON`, `AU-NSW`). Unknown values are refused, never guessed.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::text::fold;

/// A value that names no country or subdivision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{raw}' is not a known {what}")]
pub struct UnknownPlace {
    pub raw: String,
    pub what: &'static str,
}

/// Every name and code of every country and subdivision, folded, built once.
struct Index {
    /// Folded alpha-2, alpha-3 and names → alpha-2.
    countries: HashMap<String, String>,
    /// Alpha-2 → folded subdivision code (without the country prefix) or name → ISO 3166-2.
    subdivisions: HashMap<String, HashMap<String, String>>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        // keshvar builds each country's data (subdivisions, translations) as one large value
        // on the stack: debug builds overflow a 2 MiB thread stack. Read it all once on a
        // thread with room to spare, and keep only the folded names.
        std::thread::Builder::new()
            .stack_size(256 * 1024 * 1024)
            .spawn(build_index)
            .ok()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_else(|| Index { countries: HashMap::new(), subdivisions: HashMap::new() })
    })
}

fn build_index() -> Index {
    let mut countries = HashMap::new();
    let mut subdivisions = HashMap::new();
    // Codes first, so that no translated name of one country can shadow another's code.
    for country in keshvar::CountryIterator::new() {
        let alpha2 = country.alpha2().to_string();
        countries.insert(fold(&alpha2), alpha2.clone());
        countries.insert(fold(&country.alpha3().to_string()), alpha2);
    }
    for country in keshvar::CountryIterator::new() {
        let alpha2 = country.alpha2().to_string();
        let mut names: Vec<String> = vec![country.iso_short_name().to_string()];
        names.push(country.iso_long_name().to_string());
        names.extend(country.unofficial_name_list().iter().map(|n| n.to_string()));
        names.extend(country.translations().values().map(|n| n.to_string()));
        for name in names {
            countries.entry(fold(&name)).or_insert_with(|| alpha2.clone());
        }
        let mut own = HashMap::new();
        for (code, subdivision) in country.subdivisions() {
            let iso = format!("{alpha2}-{code}");
            let mut names: Vec<String> = vec![code.to_string(), subdivision.name().to_string()];
            names.extend(subdivision.unofficial_name_list().iter().map(|n| n.to_string()));
            if let Some(english) = subdivision.translations().get("en") {
                names.push(english.to_string());
            }
            for name in names {
                own.entry(fold(&name)).or_insert_with(|| iso.clone());
            }
        }
        subdivisions.insert(alpha2, own);
    }
    Index { countries, subdivisions }
}

/// The ISO 3166-1 alpha-2 code of a country given by alpha-2, alpha-3, ISO short or long
/// name, or a common or translated name ("United States", "South Korea", "Deutschland").
pub fn normalize_country(raw: &str) -> Result<String, UnknownPlace> {
    let text = raw.trim();
    if text.is_empty() || text.chars().count() > 100 {
        return Err(UnknownPlace { raw: raw.to_string(), what: "country" });
    }
    index().countries.get(&fold(text)).cloned().ok_or_else(|| UnknownPlace { raw: raw.to_string(), what: "country" })
}

/// The ISO 3166-2 code of a subdivision of `country` (alpha-2) given by its code (`CA`,
/// `US-CA`) or its name ("California", "Québec", "Bavaria") in any case.
pub fn normalize_subdivision(country: &str, raw: &str) -> Result<String, UnknownPlace> {
    let fail = || UnknownPlace { raw: raw.to_string(), what: "state or province" };
    let text = raw.trim();
    if text.is_empty() || text.chars().count() > 100 {
        return Err(fail());
    }
    let alpha2 = country.trim().to_ascii_uppercase();
    let own = index().subdivisions.get(&alpha2).ok_or_else(fail)?;
    let folded = fold(text);
    let code = folded.strip_prefix(&format!("{}-", alpha2.to_lowercase())).unwrap_or(&folded).to_string();
    own.get(&code).or_else(|| own.get(&folded)).cloned().ok_or_else(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_by_name_and_code_in_any_case() {
        for (raw, alpha2) in [
            ("US", "US"),
            ("us", "US"),
            ("USA", "US"),
            ("usa", "US"),
            ("United States", "US"),
            ("united states of america", "US"),
            ("Germany", "DE"),
            ("DEU", "DE"),
            ("France", "FR"),
            ("Israel", "IL"),
            ("Australia", "AU"),
            ("AUS", "AU"),
            ("Canada", "CA"),
            ("Brazil", "BR"),
            ("Mexico", "MX"),
            ("India", "IN"),
            ("Japan", "JP"),
            ("United Kingdom", "GB"),
            ("South Korea", "KR"),
            ("Deutschland", "DE"),
        ] {
            assert_eq!(normalize_country(raw).as_deref(), Ok(alpha2), "{raw}");
        }
    }

    #[test]
    fn unknown_countries_are_refused() {
        for raw in ["", "Atlantis", "XX", "ZZZ", "U.S. of nowhere"] {
            assert!(normalize_country(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn subdivisions_by_name_and_code_in_several_countries() {
        for (country, raw, code) in [
            ("US", "CA", "US-CA"),
            ("US", "California", "US-CA"),
            ("US", "us-ny", "US-NY"),
            ("US", "new york", "US-NY"),
            ("CA", "ON", "CA-ON"),
            ("CA", "Ontario", "CA-ON"),
            ("CA", "Quebec", "CA-QC"),
            ("AU", "NSW", "AU-NSW"),
            ("AU", "New South Wales", "AU-NSW"),
            ("BR", "SP", "BR-SP"),
            ("MX", "Jalisco", "MX-JAL"),
            ("DE", "BY", "DE-BY"),
            ("IN", "Maharashtra", "IN-MH"),
            ("DE", "Bavaria", "DE-BY"),
            ("CA", "Québec", "CA-QC"),
        ] {
            assert_eq!(normalize_subdivision(country, raw).as_deref(), Ok(code), "{country} {raw}");
        }
        assert!(normalize_subdivision("US", "Ontario").is_err());
        assert!(normalize_subdivision("XX", "CA").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panic(raw in ".{0,120}", country in "[A-Za-z]{0,3}") {
            let _ = normalize_country(&raw);
            let _ = normalize_subdivision(&country, &raw);
        }
    }
}
