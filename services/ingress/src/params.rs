//! List query parameters (RFC 7644 §3.4.2): filter, pagination, attribute selection.

use std::collections::HashMap;

use muster_scim::ScimError;
use muster_scim::filter::Filter;

use crate::ScimSettings;

/// Parsed list parameters.
#[derive(Debug)]
pub struct ListParams {
    pub filter: Option<Filter>,
    /// 1-based, as SCIM counts.
    pub start_index: i64,
    pub count: i64,
    pub attributes: Option<String>,
    pub excluded: Option<String>,
}

fn get<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn number(params: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ScimError> {
    get(params, name)
        .map(|v| v.trim().parse::<i64>().map_err(|_| ScimError::invalid_value(format!("'{name}' must be an integer"))))
        .transpose()
}

/// Attribute selection only (single-resource GET).
pub fn selection(params: &HashMap<String, String>) -> (Option<String>, Option<String>) {
    (get(params, "attributes").map(str::to_string), get(params, "excludedAttributes").map(str::to_string))
}

impl ListParams {
    /// Reads the parameters; `startIndex` below 1 counts as 1 and `count` is clamped to
    /// `0..=max_page_size` (RFC 7644 §3.4.2.4).
    pub fn parse(params: &HashMap<String, String>, settings: &ScimSettings) -> Result<ListParams, ScimError> {
        let filter = match get(params, "filter").map(str::trim).filter(|f| !f.is_empty()) {
            Some(f) => Some(Filter::parse(f)?),
            None => None,
        };
        if get(params, "sortBy").is_some() {
            return Err(ScimError::invalid_value("sorting is not supported (see /ServiceProviderConfig)"));
        }
        let start_index = number(params, "startIndex")?.unwrap_or(1).max(1);
        let count = number(params, "count")?.unwrap_or(settings.default_page_size).clamp(0, settings.max_page_size);
        let (attributes, excluded) = selection(params);
        Ok(ListParams { filter, start_index, count, attributes, excluded })
    }
}
