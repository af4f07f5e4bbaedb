//! Muster's pure business rules: no IO, no clock. Later issues add profile normalization,
//! time zones and weekends here.

pub mod company_domain;

pub use company_domain::{CompanyDomain, InvalidDomain};
