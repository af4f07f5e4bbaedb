//! `/api/v1/settings`: the company's e-mail domains and default time zone.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_domain::CompanyDomain;
use muster_infra::tenancy::{self, Principal};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::AppState;
use crate::members::tenant_of;
use crate::problem::Problem;

async fn current(state: &AppState, tenant: Uuid) -> Result<Response, Problem> {
    let found =
        tenancy::find_tenant(&state.pool, tenant).await?.ok_or_else(|| Problem::not_found("tenant not found"))?;
    let (domains, timezone) = tenancy::company_settings(&state.pool, tenant).await?.unwrap_or_default();
    Ok(Json(json!({
        "primary_domain": found.primary_domain,
        "domains": domains,
        "default_timezone": timezone,
    }))
    .into_response())
}

/// `GET /api/v1/settings`.
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, Problem> {
    current(&state, tenant_of(principal)?).await
}

/// Body of `PUT /api/v1/settings`; absent keys keep their value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    domains: Option<Vec<String>>,
    default_timezone: Option<String>,
}

/// `PUT /api/v1/settings`.
pub async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<SettingsBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(body) = body.map_err(|e| Problem::bad_request(e.body_text()))?;
    let timezone = match &body.default_timezone {
        Some(raw) => Some(
            muster_domain::timezone::parse_timezone(raw)
                .map_err(|e| Problem::invalid_setting("default_timezone", e.to_string()))?
                .name()
                .to_string(),
        ),
        None => None,
    };
    let domains = match &body.domains {
        Some(list) => {
            let mut parsed = Vec::with_capacity(list.len());
            for d in list {
                parsed.push(CompanyDomain::parse(d).map_err(|e| Problem::invalid_setting("domains", e.to_string()))?);
            }
            Some(parsed)
        }
        None => None,
    };
    let mut tx = state.pool.begin().await?;
    let found = tenancy::find_tenant(&mut *tx, tenant).await?.ok_or_else(|| Problem::not_found("tenant not found"))?;
    if let Some(domains) = domains {
        let primary = found.primary_domain.to_lowercase();
        if !domains.iter().any(|d| d.as_str() == primary) {
            return Err(Problem::invalid_setting("domains", format!("the primary domain {primary} cannot be removed")));
        }
        sqlx::query("delete from tenancy.tenant_domains where tenant_id = $1").bind(tenant).execute(&mut *tx).await?;
        for d in domains {
            sqlx::query(
                "insert into tenancy.tenant_domains (tenant_id, domain) values ($1, $2) on conflict do nothing",
            )
            .bind(tenant)
            .bind(d.as_str())
            .execute(&mut *tx)
            .await?;
        }
    }
    if let Some(tz) = timezone {
        sqlx::query(
            "update tenancy.tenant_settings set default_timezone = $2, updated_at = now() where tenant_id = $1",
        )
        .bind(tenant)
        .bind(tz)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    current(&state, tenant).await
}
