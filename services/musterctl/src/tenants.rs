//! `musterctl tenant …` and `musterctl token …`: print one JSON document each, for scripts.

use anyhow::{Context, bail};
use clap::Subcommand;
use muster_domain::CompanyDomain;
use muster_infra::config::DatabaseSettings;
use muster_infra::tenancy::{self, TokenKind};
use serde_json::json;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create a tenant with one SCIM token and one admin token.
    Create {
        /// The company's name.
        #[arg(long)]
        name: String,
        /// The company's primary e-mail domain, e.g. contoso.com.
        #[arg(long)]
        domain: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a new token (the old ones stay valid until revoked). `--kind operator` issues an
    /// operator token, which belongs to no tenant and sees every tenant's dead letters.
    Create {
        /// The tenant; not given for operator tokens.
        #[arg(long, required_unless_present = "kind")]
        tenant: Option<Uuid>,
        /// `scim` (for Entra ID), `admin`, or `operator`.
        #[arg(long, default_value = "scim")]
        kind: String,
        /// A label to tell tokens apart.
        #[arg(long, default_value = "rotated")]
        name: String,
    },
    /// List a tenant's tokens, or the operator tokens without `--tenant` (never their secrets).
    List {
        #[arg(long)]
        tenant: Option<Uuid>,
    },
    /// Revoke a token: requests bearing it get 401 from now on.
    Revoke {
        /// The token's tenant; not given for an operator token.
        #[arg(long)]
        tenant: Option<Uuid>,
        /// The token's id, as `token list` shows it.
        #[arg(long)]
        token_id: Uuid,
    },
}

pub async fn tenant(database: &DatabaseSettings, cmd: TenantCommand) -> anyhow::Result<()> {
    let pool = muster_infra::db::pool(database)?;
    match cmd {
        TenantCommand::Create { name, domain } => {
            let name = name.trim();
            if name.is_empty() {
                bail!("--name must not be empty");
            }
            let domain = CompanyDomain::parse(&domain)?;
            let mut tx = pool.begin().await.context("connecting to the database")?;
            let tenant = tenancy::create_tenant(&mut tx, name, domain.as_str()).await.context("creating the tenant")?;
            let (scim, scim_token) = tenancy::issue_token(&mut tx, tenant.id, TokenKind::Scim, "initial").await?;
            let (admin, admin_token) = tenancy::issue_token(&mut tx, tenant.id, TokenKind::Admin, "initial").await?;
            tx.commit().await?;
            println!(
                "{}",
                json!({
                    "tenant_id": tenant.id,
                    "name": tenant.name,
                    "primary_domain": tenant.primary_domain,
                    "scim_token": scim_token,
                    "scim_token_id": scim.id,
                    "admin_token": admin_token,
                    "admin_token_id": admin.id,
                })
            );
        }
    }
    Ok(())
}

pub async fn token(database: &DatabaseSettings, cmd: TokenCommand) -> anyhow::Result<()> {
    let pool = muster_infra::db::pool(database)?;
    match cmd {
        TokenCommand::Create { tenant, kind, name } => {
            let kind = TokenKind::parse(&kind)
                .with_context(|| format!("--kind must be scim, admin or operator, not '{kind}'"))?;
            let mut conn = pool.acquire().await.context("connecting to the database")?;
            let (info, token) = match (kind, tenant) {
                (TokenKind::Operator, None) => tenancy::issue_operator_token(&mut conn, &name).await?,
                (TokenKind::Operator, Some(_)) => bail!("operator tokens belong to no tenant; drop --tenant"),
                (_, None) => bail!("--tenant is required for {} tokens", kind.as_str()),
                (_, Some(tenant)) => {
                    if tenancy::find_tenant(&mut *conn, tenant).await?.is_none() {
                        bail!("no tenant {tenant}");
                    }
                    tenancy::issue_token(&mut conn, tenant, kind, &name).await?
                }
            };
            println!(
                "{}",
                json!({"token_id": info.id, "tenant_id": info.tenant_id, "kind": info.kind, "name": info.name, "token": token})
            );
        }
        TokenCommand::List { tenant } => {
            let tokens = tenancy::list_tokens(&pool, tenant).await?;
            println!("{}", serde_json::to_string(&tokens)?);
        }
        TokenCommand::Revoke { tenant, token_id } => match tenancy::revoke_token(&pool, tenant, token_id).await? {
            Some(info) => println!("{}", serde_json::to_string(&info)?),
            None => match tenant {
                Some(tenant) => bail!("tenant {tenant} has no token {token_id}"),
                None => bail!("there is no operator token {token_id}"),
            },
        },
    }
    Ok(())
}
