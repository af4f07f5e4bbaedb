//! The admin API's authentication and error form.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::net::SocketAddr;

use muster_admin::{Admin, Settings};
use muster_infra::config::HttpSettings;
use muster_testkit::{TestDb, test_telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn the_admin_token_reads_its_tenant_and_other_tokens_get_a_problem_document() {
    let db = TestDb::create().await;
    let tenant = db.create_tenant("Contoso", "contoso.com").await;
    let settings = Settings {
        database: db.settings(),
        http: HttpSettings { addr: SocketAddr::from(([127, 0, 0, 1], 0)) },
        telemetry: test_telemetry(),
    };
    let admin = Admin::bind(&settings, db.pool.clone()).await.unwrap();
    let base = format!("http://{}", admin.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(admin.run(shutdown.clone()));
    let http = reqwest::Client::new();

    let ok = http.get(format!("{base}/api/v1/tenant")).bearer_auth(&tenant.admin_token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let body: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(body["id"], tenant.id.to_string());
    assert_eq!(body["primary_domain"], "contoso.com");

    let refused = http.get(format!("{base}/api/v1/tenant")).bearer_auth(&tenant.scim_token).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["status"], 401);
    assert!(problem["detail"].as_str().unwrap().contains("admin token"));

    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    shutdown.cancel();
}
