//! A company's e-mail domain: members are imported only with a primary e-mail in one of them
//! (DESIGN.md, "Business rules"), compared case-insensitively, so it is stored lower-case.

/// Why a domain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{input}' is not a valid e-mail domain: {reason}")]
pub struct InvalidDomain {
    pub input: String,
    pub reason: &'static str,
}

/// A validated, lower-cased DNS domain such as `example.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompanyDomain(String);

impl CompanyDomain {
    /// Validates `input` (RFC 1035 labels, at least two of them; a leading `@` is dropped).
    pub fn parse(input: &str) -> Result<CompanyDomain, InvalidDomain> {
        let fail = |reason| InvalidDomain { input: input.to_string(), reason };
        let domain = input.trim().trim_start_matches('@').trim_end_matches('.').to_ascii_lowercase();
        if domain.is_empty() || domain.len() > 253 {
            return Err(fail("must be 1 to 253 characters"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(fail("needs at least two labels, like example.com"));
        }
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(fail("each label must be 1 to 63 characters"));
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(fail("labels may hold only letters, digits and '-'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(fail("labels may not start or end with '-'"));
            }
        }
        Ok(CompanyDomain(domain))
    }

    /// The domain, lower-case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `email`'s domain is this one (case-insensitive).
    pub fn owns_email(&self, email: &str) -> bool {
        email.rsplit_once('@').is_some_and(|(local, d)| !local.is_empty() && d.eq_ignore_ascii_case(&self.0))
    }
}

impl std::fmt::Display for CompanyDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_leading_at() {
        assert_eq!(CompanyDomain::parse(" @Contoso.COM ").unwrap().as_str(), "contoso.com");
    }

    #[test]
    fn refuses_what_is_not_a_domain() {
        for bad in ["", "localhost", "a..b", "-a.com", "a b.com", "x@y.com", &format!("{}.com", "a".repeat(64))] {
            assert!(CompanyDomain::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owns_email_ignores_case() {
        let d = CompanyDomain::parse("contoso.com").unwrap();
        assert!(d.owns_email("Ann@CONTOSO.com"));
        assert!(!d.owns_email("ann@contoso.com.evil"));
        assert!(!d.owns_email("@contoso.com"));
    }
}
