//! Locales: BCP 47 tags such as `en-US` (Entra's `en_US` accepted), default `en-US`. An
//! invalid value falls back to the default and says so; the region decides the weekend later.

/// The locale used when none (or an invalid one) is given.
pub const DEFAULT_LOCALE: &str = "en-US";

/// A member's locale and whether the given value was replaced by the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedLocale {
    /// Canonical BCP 47, e.g. `en-US`, `he-IL`, `pt-BR`.
    pub tag: String,
    /// The raw value when it was invalid and the default was used instead.
    pub invalid: Option<String>,
}

/// Resolves `raw` (absent or blank → default).
pub fn resolve_locale(raw: Option<&str>) -> ResolvedLocale {
    let default = || ResolvedLocale { tag: DEFAULT_LOCALE.into(), invalid: None };
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else { return default() };
    let candidate = text.replace('_', "-");
    match icu_locale::Locale::try_from_str(&candidate) {
        Ok(locale) if text.len() <= 64 && !locale.id.language.is_unknown() => {
            ResolvedLocale { tag: locale.to_string(), invalid: None }
        }
        _ => ResolvedLocale { invalid: Some(text.to_string()), ..default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_canonicalised_and_underscores_accepted() {
        for (raw, tag) in [
            ("en-US", "en-US"),
            ("en_US", "en-US"),
            ("EN-us", "en-US"),
            ("he-IL", "he-IL"),
            ("pt_br", "pt-BR"),
            ("fr", "fr"),
        ] {
            let resolved = resolve_locale(Some(raw));
            assert_eq!((resolved.tag.as_str(), resolved.invalid), (tag, None), "{raw}");
        }
    }

    #[test]
    fn missing_gives_the_default_and_invalid_is_noted() {
        assert_eq!(resolve_locale(None), ResolvedLocale { tag: "en-US".into(), invalid: None });
        assert_eq!(resolve_locale(Some("  ")), ResolvedLocale { tag: "en-US".into(), invalid: None });
        let bad = resolve_locale(Some("english please"));
        assert_eq!(bad.tag, "en-US");
        assert_eq!(bad.invalid.as_deref(), Some("english please"));
        assert!(resolve_locale(Some("und")).invalid.is_some());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(raw in ".{0,100}") {
            let _ = resolve_locale(Some(&raw));
        }
    }
}
