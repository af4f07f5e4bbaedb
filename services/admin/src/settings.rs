//! `/api/v1/settings`: the company's e-mail domains, default time zone, provisioning switch and
//! manager settings. A change that can alter members' outcome (domains, default time zone)
//! emits `tenant.settings_changed`, on which the normalizer re-evaluates the members concerned.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_contracts::{EventEnvelope, EventKind};
use muster_domain::CompanyDomain;
use muster_infra::tenancy::{self, Principal};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::AppState;
use crate::members::tenant_of;
use crate::problem::Problem;

#[derive(sqlx::FromRow)]
struct Flags {
    provisioning_enabled: bool,
    provisioning_source: String,
    notify_managers_on_import: bool,
    managers_toggle_data_capture: bool,
    version: i64,
}

async fn current(state: &AppState, tenant: Uuid) -> Result<Response, Problem> {
    let found =
        tenancy::find_tenant(&state.pool, tenant).await?.ok_or_else(|| Problem::not_found("tenant not found"))?;
    let (domains, timezone) = tenancy::company_settings(&state.pool, tenant).await?.unwrap_or_default();
    let flags: Flags = sqlx::query_as(
        "select provisioning_enabled, provisioning_source, notify_managers_on_import, managers_toggle_data_capture,
                version
         from tenancy.tenant_settings where tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&state.pool)
    .await?;
    Ok(Json(json!({
        "primary_domain": found.primary_domain,
        "domains": domains,
        "default_timezone": timezone,
        "provisioning_enabled": flags.provisioning_enabled,
        "provisioning_source": flags.provisioning_source,
        "notify_managers_on_import": flags.notify_managers_on_import,
        "managers_toggle_data_capture": flags.managers_toggle_data_capture,
        "version": flags.version,
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
    provisioning_enabled: Option<bool>,
    provisioning_source: Option<String>,
    notify_managers_on_import: Option<bool>,
    managers_toggle_data_capture: Option<bool>,
}

/// `PUT /api/v1/settings`.
pub async fn put(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<SettingsBody>, JsonRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Json(body) = body.map_err(Problem::bad_body)?;
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
    if let Some(source) = &body.provisioning_source
        && source != "azure"
    {
        return Err(Problem::invalid_setting("provisioning_source", format!("'{source}' is not supported; use azure")));
    }
    let mut tx = state.pool.begin().await?;
    let found = tenancy::find_tenant(&mut *tx, tenant).await?.ok_or_else(|| Problem::not_found("tenant not found"))?;
    let (old_domains, old_timezone) = tenancy::company_settings(&mut *tx, tenant).await?.unwrap_or_default();
    if let Some(domains) = &domains {
        let primary = found.primary_domain.to_lowercase();
        if !domains.iter().any(|d| d.as_str() == primary) {
            return Err(Problem::invalid_setting("domains", format!("the primary domain {primary} cannot be removed")));
        }
        sqlx::query("delete from tenancy.tenant_domains where tenant_id = $1").bind(tenant).execute(&mut *tx).await?;
        let names: Vec<&str> = domains.iter().map(CompanyDomain::as_str).collect();
        sqlx::query(
            "insert into tenancy.tenant_domains (tenant_id, domain) select $1, d from unnest($2::text[]) d
             on conflict do nothing",
        )
        .bind(tenant)
        .bind(&names)
        .execute(&mut *tx)
        .await?;
    }
    let version: i64 = sqlx::query_scalar(
        "update tenancy.tenant_settings set
             default_timezone = coalesce($2, default_timezone),
             provisioning_enabled = coalesce($3, provisioning_enabled),
             provisioning_source = coalesce($4, provisioning_source),
             notify_managers_on_import = coalesce($5, notify_managers_on_import),
             managers_toggle_data_capture = coalesce($6, managers_toggle_data_capture),
             version = version + 1, updated_at = now()
         where tenant_id = $1 returning version",
    )
    .bind(tenant)
    .bind(&timezone)
    .bind(body.provisioning_enabled)
    .bind(&body.provisioning_source)
    .bind(body.notify_managers_on_import)
    .bind(body.managers_toggle_data_capture)
    .fetch_one(&mut *tx)
    .await?;
    let (new_domains, new_timezone) = tenancy::company_settings(&mut *tx, tenant).await?.unwrap_or_default();
    if (new_domains, new_timezone) != (old_domains, old_timezone) {
        let event = EventEnvelope::new(
            tenant,
            EventKind::TenantSettingsChanged,
            tenant.to_string(),
            version,
            chrono::Utc::now(),
        );
        muster_infra::outbox::append(&mut tx, &[event], &muster_infra::telemetry::current_traceparent()).await?;
        tracing::info!(tenant_id = %tenant, version, "company rules changed; members will be re-evaluated");
    }
    tx.commit().await?;
    current(&state, tenant).await
}
