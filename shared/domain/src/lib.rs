//! Muster's pure business rules: no IO, no clock. Profile normalization (phones, countries,
//! subdivisions, locales, time zones), company domains and provenance (the normalizer and the
//! admin API apply them), manager resolution (the hierarchy worker), assignments, and when notifications may be delivered.

pub mod assignment;
pub mod company_domain;
pub mod country;
pub mod delivery;
pub mod hierarchy;
pub mod locale;
pub mod phone;
pub mod profile;
pub mod provenance;
pub mod text;
pub mod timezone;

pub use company_domain::{CompanyDomain, InvalidDomain};
