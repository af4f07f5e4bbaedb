//! Phone numbers in every form the product documentation lists — `(865) 365-1900`,
//! `(212) 575-1994 ext 3437`, `(317) 251-0700 ext. 468`, `(202) 903-2585 x2991`,
//! `(206) 324-1800 x 229`, `540.946.4600 Ext. 143` — and international `+` numbers, to E.164
//! plus extension. A number without a country code is read in the member's country (US when
//! none). An unparseable or impossible number is refused with its raw value, never guessed.

use std::sync::{Once, PoisonError};

use phonenumber::Mode;

/// A normalized phone number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    /// E.164, e.g. `+12125751994` (E.164 has no extension).
    pub e164: String,
    /// The extension, digits only, e.g. `3437`.
    pub extension: Option<String>,
}

/// Why a phone number was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{raw}' is not a valid phone number: {reason}")]
pub struct InvalidPhone {
    pub raw: String,
    pub reason: &'static str,
}

/// Longest input considered, in characters: anything longer is not a phone number.
const MAX_LEN: usize = 64;

/// Compiled patterns phonenumber keeps. Its own cache holds 100, fewer than a dozen countries'
/// number patterns together, so a company with people in many countries recompiled regexes
/// on almost every number (2.4 ms per profile with the bench's 14 countries). Each country
/// needs a few dozen (the bench's 14 countries: 126; all 245: 1,475, at ~100 KiB each):
/// 1,024 keeps some 150 countries compiled within ~100 MiB.
const REGEX_CACHE_ENTRIES: usize = 1_024;

fn enlarge_regex_cache() {
    static ENLARGED: Once = Once::new();
    ENLARGED.call_once(|| {
        let cache = phonenumber::metadata::DATABASE.cache();
        *cache.lock().unwrap_or_else(PoisonError::into_inner) = regex_cache::RegexCache::new(REGEX_CACHE_ENTRIES);
    });
}

/// Normalizes `raw`, reading national numbers in `country` (ISO 3166-1 alpha-2; US when
/// `None` or unknown to the phone metadata). `extension` is an extension sent apart from the
/// number (Muster's `primaryPhoneExtension`), used when the number carries none.
pub fn normalize_phone(raw: &str, country: Option<&str>, extension: Option<&str>) -> Result<Phone, InvalidPhone> {
    let fail = |reason| InvalidPhone { raw: raw.to_string(), reason };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(fail("empty"));
    }
    if trimmed.chars().count() > MAX_LEN {
        return Err(fail("too long"));
    }
    if !trimmed.chars().any(|c| c.is_ascii_digit()) {
        return Err(fail("no digits"));
    }
    enlarge_regex_cache();
    let region = country
        .and_then(|c| c.trim().to_ascii_uppercase().parse::<phonenumber::country::Id>().ok())
        .unwrap_or(phonenumber::country::Id::US);
    let parsed = phonenumber::parse(Some(region), trimmed).map_err(|_| fail("cannot be parsed"))?;
    if !parsed.is_valid() {
        return Err(fail("not a possible number for its country"));
    }
    let e164 = parsed.format().mode(Mode::E164).to_string();
    let from_number = parsed.extension().map(|e| e.to_string()).filter(|e| !e.is_empty());
    let separate =
        extension.map(|e| e.chars().filter(char::is_ascii_digit).collect::<String>()).filter(|e| !e.is_empty());
    Ok(Phone { e164, extension: from_number.or(separate) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str, country: Option<&str>) -> Phone {
        normalize_phone(raw, country, None).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_documented_form_parses_with_its_extension() {
        let cases = [
            ("(865) 365-1900", "+18653651900", None),
            ("(212) 575-1994 ext 3437", "+12125751994", Some("3437")),
            ("(317) 251-0700 ext. 468", "+13172510700", Some("468")),
            ("(202) 903-2585 x2991", "+12029032585", Some("2991")),
            ("(206) 324-1800 x 229", "+12063241800", Some("229")),
            ("540.946.4600 Ext. 143", "+15409464600", Some("143")),
        ];
        for (raw, e164, extension) in cases {
            let phone = ok(raw, None);
            assert_eq!(phone.e164, e164, "{raw}");
            assert_eq!(phone.extension.as_deref(), extension, "{raw}");
        }
    }

    #[test]
    fn international_numbers_keep_their_country_and_national_ones_take_the_members() {
        assert_eq!(ok("+44 20 7946 0958", Some("US")).e164, "+442079460958");
        assert_eq!(ok("020 7946 0958", Some("GB")).e164, "+442079460958");
        assert_eq!(ok("030 901820", Some("de")).e164, "+4930901820");
        assert_eq!(ok("(865) 365-1900", Some("XX")).e164, "+18653651900", "unknown country → US");
    }

    #[test]
    fn a_separate_extension_fills_in_but_never_overrides() {
        assert_eq!(normalize_phone("(865) 365-1900", None, Some("77")).unwrap().extension.as_deref(), Some("77"));
        assert_eq!(
            normalize_phone("(212) 575-1994 ext 3437", None, Some("77")).unwrap().extension.as_deref(),
            Some("3437")
        );
    }

    #[test]
    fn impossible_and_garbage_numbers_are_refused_with_the_raw_value() {
        for raw in ["", "   ", "call me", "555-0100", "12", &"9".repeat(80), "+999 123"] {
            let err = normalize_phone(raw, None, None).unwrap_err();
            assert_eq!(err.raw, raw);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(raw in ".{0,80}", country in proptest::option::of("[A-Za-z]{0,3}")) {
            let _ = normalize_phone(&raw, country.as_deref(), None);
        }
    }
}
