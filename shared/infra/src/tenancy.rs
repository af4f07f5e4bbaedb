//! Tenants (companies) and their API tokens. Tokens are random, shown once at creation and
//! stored only as SHA-256 hashes; a tenant may hold several of each kind, so a token can be
//! rotated without downtime (create the new one, switch Entra ID over, revoke the old).

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

/// What a token grants: the SCIM API (for Entra ID), a tenant's admin API, or the
/// operator's view across tenants (dead-letter queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Scim,
    Admin,
    Operator,
}

impl TokenKind {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Scim => "scim",
            TokenKind::Admin => "admin",
            TokenKind::Operator => "operator",
        }
    }

    /// Parses `scim` or `admin`.
    pub fn parse(s: &str) -> Option<TokenKind> {
        match s {
            "scim" => Some(TokenKind::Scim),
            "admin" => Some(TokenKind::Admin),
            "operator" => Some(TokenKind::Operator),
            _ => None,
        }
    }
}

/// A company.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub primary_domain: String,
    pub created_at: DateTime<Utc>,
}

/// A token's metadata (never its secret).
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct TokenInfo {
    pub id: Uuid,
    /// `None` for operator tokens.
    pub tenant_id: Option<Uuid>,
    pub kind: String,
    pub name: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// SHA-256 of a token's text: what is stored and looked up.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a tenant with its primary domain and default settings. `primary_domain` must
/// already be validated (`muster_domain`).
pub async fn create_tenant(conn: &mut PgConnection, name: &str, primary_domain: &str) -> sqlx::Result<Tenant> {
    let tenant = sqlx::query_as::<_, Tenant>(
        "insert into tenancy.tenants (id, name, primary_domain) values ($1, $2, $3)
         returning id, name, primary_domain, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(primary_domain)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("insert into tenancy.tenant_domains (tenant_id, domain) values ($1, lower($2))")
        .bind(tenant.id)
        .bind(primary_domain)
        .execute(&mut *conn)
        .await?;
    sqlx::query("insert into tenancy.tenant_settings (tenant_id) values ($1)")
        .bind(tenant.id)
        .execute(&mut *conn)
        .await?;
    // Every company starts with the documented capture kinds and a default assignment that
    // gives nothing (DESIGN.md, "Assignments").
    sqlx::query("insert into assignments.catalogs (tenant_id, catalog) values ($1, $2)")
        .bind(tenant.id)
        .bind(crate::tenancy::default_catalog())
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "insert into assignments.assignments (id, tenant_id, name, mode, position, is_default)
         values ($1, $2, 'Default', 'automatic', 2147483647, true)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant.id)
    .execute(&mut *conn)
    .await?;
    Ok(tenant)
}

/// The catalog a new company starts with: the documented data-capture kinds, no seat types,
/// no workspaces.
pub fn default_catalog() -> serde_json::Value {
    serde_json::json!({
        "seat_types": [],
        "capture_kinds": [
            {"key": "web_conferences", "name": "Web conferences"},
            {"key": "telephony", "name": "Telephony"},
            {"key": "email", "name": "E-mail"}
        ],
        "workspaces": []
    })
}

/// A tenant's e-mail domains (primary first) and default time zone, in one query: what the
/// normalizer reads for every event.
pub async fn company_settings(
    executor: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> sqlx::Result<Option<(Vec<String>, String)>> {
    sqlx::query_as(
        "select coalesce(array_agg(d.domain order by d.domain <> lower(t.primary_domain), d.domain)
                         filter (where d.domain is not null), '{}'),
                s.default_timezone
         from tenancy.tenants t
         join tenancy.tenant_settings s on s.tenant_id = t.id
         left join tenancy.tenant_domains d on d.tenant_id = t.id
         where t.id = $1
         group by s.default_timezone",
    )
    .bind(tenant_id)
    .fetch_optional(executor)
    .await
}

/// Looks a tenant up.
pub async fn find_tenant(executor: impl PgExecutor<'_>, tenant_id: Uuid) -> sqlx::Result<Option<Tenant>> {
    sqlx::query_as::<_, Tenant>("select id, name, primary_domain, created_at from tenancy.tenants where id = $1")
        .bind(tenant_id)
        .fetch_optional(executor)
        .await
}

/// Issues a new tenant token (`scim` or `admin`) and returns it with its plaintext, which is
/// not stored anywhere.
pub async fn issue_token(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    kind: TokenKind,
    name: &str,
) -> sqlx::Result<(TokenInfo, String)> {
    insert_token(conn, Some(tenant_id), kind, name).await
}

/// Issues an operator token (no tenant: it sees every tenant's dead letters).
pub async fn issue_operator_token(conn: &mut PgConnection, name: &str) -> sqlx::Result<(TokenInfo, String)> {
    insert_token(conn, None, TokenKind::Operator, name).await
}

async fn insert_token(
    conn: &mut PgConnection,
    tenant_id: Option<Uuid>,
    kind: TokenKind,
    name: &str,
) -> sqlx::Result<(TokenInfo, String)> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let plaintext = format!("mst_{}_{}", kind.as_str(), hex::encode(secret));
    let prefix: String = plaintext.chars().take(16).collect();
    let info = sqlx::query_as::<_, TokenInfo>(
        "insert into tenancy.api_tokens (id, tenant_id, kind, name, token_hash, prefix)
         values ($1, $2, $3, $4, $5, $6)
         returning id, tenant_id, kind, name, prefix, created_at, revoked_at",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(name)
    .bind(hash_token(&plaintext))
    .bind(prefix)
    .fetch_one(conn)
    .await?;
    Ok((info, plaintext))
}

/// A tenant's tokens (operator tokens when `tenant_id` is `None`), newest first, revoked
/// ones included.
pub async fn list_tokens(executor: impl PgExecutor<'_>, tenant_id: Option<Uuid>) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as::<_, TokenInfo>(
        "select id, tenant_id, kind, name, prefix, created_at, revoked_at from tenancy.api_tokens
         where tenant_id is not distinct from $1 order by created_at desc, id desc",
    )
    .bind(tenant_id)
    .fetch_all(executor)
    .await
}

/// Revokes a token of the tenant (an operator token when `tenant_id` is `None`); `None` when
/// there is no such token.
pub async fn revoke_token(
    executor: impl PgExecutor<'_>,
    tenant_id: Option<Uuid>,
    token_id: Uuid,
) -> sqlx::Result<Option<TokenInfo>> {
    sqlx::query_as::<_, TokenInfo>(
        "update tenancy.api_tokens set revoked_at = coalesce(revoked_at, now()), updated_at = now()
         where tenant_id is not distinct from $1 and id = $2
         returning id, tenant_id, kind, name, prefix, created_at, revoked_at",
    )
    .bind(tenant_id)
    .bind(token_id)
    .fetch_optional(executor)
    .await
}

/// The company a SCIM token belongs to, and whether it accepts provisioning now.
pub async fn authenticate_scim(executor: impl PgExecutor<'_>, token: &str) -> sqlx::Result<Option<(Uuid, bool)>> {
    sqlx::query_as(
        "select t.tenant_id, coalesce(s.provisioning_enabled, true) from tenancy.api_tokens t
         left join tenancy.tenant_settings s on s.tenant_id = t.tenant_id
         where t.token_hash = $1 and t.kind = 'scim' and t.revoked_at is null and t.tenant_id is not null",
    )
    .bind(hash_token(token))
    .fetch_optional(executor)
    .await
}

/// Who an admin-API token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// A tenant's admin: sees only that tenant.
    TenantAdmin(Uuid),
    /// An operator: sees every tenant's dead letters.
    Operator,
}

/// The principal of a live admin or operator token.
pub async fn authenticate_admin(executor: impl PgExecutor<'_>, token: &str) -> sqlx::Result<Option<Principal>> {
    let found: Option<(String, Option<Uuid>)> = sqlx::query_as(
        "select kind, tenant_id from tenancy.api_tokens
         where token_hash = $1 and kind in ('admin', 'operator') and revoked_at is null",
    )
    .bind(hash_token(token))
    .fetch_optional(executor)
    .await?;
    Ok(match found {
        Some((kind, Some(tenant))) if kind == "admin" => Some(Principal::TenantAdmin(tenant)),
        Some((kind, None)) if kind == "operator" => Some(Principal::Operator),
        _ => None,
    })
}
