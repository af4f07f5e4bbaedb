//! musterctl as an operator runs it: against a real PostgreSQL, printing JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;

use muster_testkit::db::server_url;
use serde_json::Value;

fn database_url(name: &str) -> String {
    let base = server_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}")
}

fn musterctl(db: &str, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_musterctl"))
        .args(args)
        .env("DATABASE_URL", database_url(db))
        .env("APP_TELEMETRY__LOG_FORMAT", "pretty")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (out.status.success(), json, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn migrate_creates_the_database_then_tenants_and_tokens_rotate() {
    let db = format!("muster_test_{}", muster_testkit::unique_suffix());
    let (ok, out, err) = musterctl(&db, &["migrate"]);
    assert!(ok, "{err}");
    assert_eq!(out["migrated"], true);
    let (ok, _, err) = musterctl(&db, &["migrate"]);
    assert!(ok, "migrating twice is harmless: {err}");

    let (ok, tenant, err) = musterctl(&db, &["tenant", "create", "--name", "Contoso", "--domain", "Contoso.COM"]);
    assert!(ok, "{err}");
    assert_eq!(tenant["primary_domain"], "contoso.com");
    let tenant_id = tenant["tenant_id"].as_str().unwrap().to_string();
    assert!(tenant["scim_token"].as_str().unwrap().starts_with("mst_scim_"));
    assert!(tenant["admin_token"].as_str().unwrap().starts_with("mst_admin_"));

    let (ok, created, err) =
        musterctl(&db, &["token", "create", "--tenant", &tenant_id, "--kind", "scim", "--name", "2027 rotation"]);
    assert!(ok, "{err}");
    assert_ne!(created["token"], tenant["scim_token"]);
    let (_, listed, _) = musterctl(&db, &["token", "list", "--tenant", &tenant_id]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(
        listed.iter().all(|t| t.get("token").is_none() && t.get("token_hash").is_none()),
        "secrets are never listed"
    );

    let old = tenant["scim_token_id"].as_str().unwrap();
    let (ok, revoked, err) = musterctl(&db, &["token", "revoke", "--tenant", &tenant_id, "--token-id", old]);
    assert!(ok, "{err}");
    assert!(revoked["revoked_at"].is_string());

    let (ok, _, err) = musterctl(&db, &["tenant", "create", "--name", "Bad", "--domain", "not a domain"]);
    assert!(!ok);
    assert!(err.contains("not a valid e-mail domain"), "{err}");
    let (ok, _, err) = musterctl(
        &db,
        &["token", "revoke", "--tenant", &tenant_id, "--token-id", "01a2183d-ac34-757d-b463-9600941d7138"],
    );
    assert!(!ok && err.contains("has no token"), "{err}");
}
