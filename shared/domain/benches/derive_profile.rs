//! What normalizing one profile costs, by how many countries a company's people are in (the
//! phone patterns of each country are compiled once and cached).
//!
//! `cargo bench -p muster-domain --bench derive_profile -- [profiles]`

use std::time::Instant;

use muster_domain::CompanyDomain;
use muster_domain::profile::{CompanyRules, derive_profile};
use muster_domain::provenance::FieldValues;
use serde_json::{Value, json};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let profiles: usize =
        std::env::args().skip(1).find(|a| !a.starts_with('-')).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let rules =
        CompanyRules { domains: vec![CompanyDomain::parse("contoso.example")?], default_timezone: chrono_tz::Tz::UTC };
    // Every country with an example fixed-line number, written internationally.
    let countries: Vec<(String, String)> = phonenumber::metadata::DATABASE
        .iter()
        .filter_map(|meta| {
            let example = meta.descriptors().fixed_line()?.example()?;
            Some((meta.id().to_string(), format!("+{} {example}", meta.country_code())))
        })
        .collect();
    println!("countries   µs per profile (first pass)   µs per profile (steady)");
    for spread in [1, 14, 50, 150] {
        let docs: Vec<Value> = (0..profiles)
            .map(|i| {
                let (country, phone) = &countries[i % spread.min(countries.len())];
                json!({
                    "userName": format!("user{i}@contoso.example"), "active": true,
                    "name": {"givenName": "Zoë", "familyName": "Müller"}, "displayName": "Zoë Müller",
                    "emails": [{"type": "work", "primary": true, "value": format!("user{i}@contoso.example")}],
                    "phoneNumbers": [{"type": "work", "value": phone}],
                    "addresses": [{"type": "work", "country": country}],
                    "preferredLanguage": "en-US",
                })
            })
            .collect();
        let mut passes = Vec::new();
        for _ in 0..2 {
            let started = Instant::now();
            let imported = docs
                .iter()
                .filter(|d| derive_profile(d, &FieldValues::default(), &rules).0.phone.e164.is_some())
                .count();
            if imported == 0 {
                return Err("no phone number was normalized".into());
            }
            passes.push(started.elapsed().as_secs_f64() * 1e6 / profiles as f64);
        }
        println!("{spread:>9}   {:>27.1}   {:>22.1}", passes[0], passes[1]);
    }
    Ok(())
}
