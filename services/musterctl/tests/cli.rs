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

    let (ok, operator, err) = musterctl(&db, &["token", "create", "--kind", "operator", "--name", "on-call"]);
    assert!(ok, "{err}");
    assert!(operator["token"].as_str().unwrap().starts_with("mst_operator_"));
    assert!(operator["tenant_id"].is_null());
    let (_, operators, _) = musterctl(&db, &["token", "list"]);
    assert_eq!(operators.as_array().unwrap().len(), 1);
    let (ok, _, err) = musterctl(&db, &["token", "create", "--kind", "operator", "--tenant", &tenant_id]);
    assert!(!ok && err.contains("no tenant"), "{err}");

    let (ok, _, err) = musterctl(&db, &["tenant", "create", "--name", "Bad", "--domain", "not a domain"]);
    assert!(!ok);
    assert!(err.contains("not a valid e-mail domain"), "{err}");
    let (ok, _, err) = musterctl(
        &db,
        &["token", "revoke", "--tenant", &tenant_id, "--token-id", "01a2183d-ac34-757d-b463-9600941d7138"],
    );
    assert!(!ok && err.contains("has no token"), "{err}");
}

mod dlq {
    use std::process::Command;

    use muster_contracts::Names;
    use muster_contracts::topology::NORMALIZER;
    use muster_testkit::broker::{Probe, broker_url, depth, publish_dead_letter, test_amqp};
    use serde_json::Value;

    fn musterctl(prefix: &str, args: &[&str]) -> (bool, Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_musterctl"))
            .args(args)
            .env("AMQP_URL", broker_url())
            .env("APP_AMQP__PREFIX", prefix)
            .env("APP_TELEMETRY__LOG_FORMAT", "pretty")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        (
            out.status.success(),
            serde_json::from_str(stdout.trim()).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    #[tokio::test]
    async fn dlq_list_show_replay_and_purge_as_an_operator_runs_them() {
        let amqp = test_amqp(&broker_url());
        let names = Names::new(amqp.prefix.clone());
        let probe = Probe::bind(&names, "no.such.events").await.unwrap();
        let publisher = probe.publisher().await;
        let dlq = names.dead_letter_queue(&NORMALIZER);
        let tenant = uuid::Uuid::now_v7();
        let ids = [
            publish_dead_letter(&publisher, &names, &NORMALIZER, tenant, "u0").await,
            publish_dead_letter(&publisher, &names, &NORMALIZER, tenant, "u1").await,
        ];
        let prefix = amqp.prefix.as_str();

        let (ok, list, err) = musterctl(prefix, &["dlq", "list", "--json"]);
        assert!(ok, "{err}");
        let normalizer = list.as_array().unwrap().iter().find(|q| q["queue"] == dlq.as_str()).unwrap().clone();
        assert_eq!(normalizer["depth"], 2);

        let (ok, shown, err) = musterctl(prefix, &["dlq", "show", "normalizer", "--json"]);
        assert!(ok, "{err}");
        let shown = shown.as_array().unwrap();
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0]["attempts"], 5);
        assert_eq!(shown[0]["routing_key"], "scim.user.upserted");
        assert!(shown[0]["reason"].as_str().unwrap().contains("database unavailable"));
        assert_eq!(shown[0]["payload"]["entity_id"], "u0");
        // Shown messages go back to the queue as the CLI's channel closes.
        muster_testkit::eventually(std::time::Duration::from_secs(10), "show to consume nothing", || async {
            (depth(&probe.channel, &dlq).await == 2).then_some(())
        })
        .await;

        let (ok, _, err) = musterctl(prefix, &["dlq", "purge", "normalizer", "--all"]);
        assert!(!ok && err.contains("--yes"), "{err}");

        let (ok, replayed, err) = musterctl(prefix, &["dlq", "replay", "normalizer", "--event-id", &ids[0]]);
        assert!(ok, "{err}");
        assert_eq!(replayed["replayed"], 1);
        assert_eq!(depth(&probe.channel, &names.queue(&NORMALIZER)).await, 1, "replayed into the worker's queue");

        let (ok, purged, err) = musterctl(prefix, &["dlq", "purge", &dlq, "--all", "--yes"]);
        assert!(ok, "{err}");
        assert_eq!(purged["purged"], 1);
        assert!(err.contains(&ids[1]), "each purged message is logged: {err}");
        assert_eq!(depth(&probe.channel, &dlq).await, 0);

        let (ok, _, err) = musterctl(prefix, &["dlq", "show", "nonsense"]);
        assert!(!ok && err.contains("not a worker"), "{err}");
        probe.teardown(&names).await;
    }
}
