//! SCIM users become team members: ingress → outbox → relay → RabbitMQ → normalizer, all real.

use std::time::Duration;

use muster_contracts::Names;
use muster_infra::config::{AmqpSettings, HttpSettings};
use muster_relay::{Relay, RelayOptions};
use muster_testkit::broker::{Probe, broker_url, teardown_on, test_amqp};
use muster_testkit::scim::patch_body;
use muster_testkit::worker::fast_settings;
use muster_testkit::{TestApp, eventually, test_telemetry};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

struct System {
    app: TestApp,
    names: Names,
    probe: Probe,
    admin: String,
}

impl System {
    async fn start() -> System {
        let app = TestApp::spawn().await;
        let amqp: AmqpSettings = test_amqp(&broker_url());
        let names = Names::new(amqp.prefix.clone());
        let probe = Probe::bind(&names, "member.#").await.unwrap();
        let relay = Relay::new(
            app.db.pool.clone(),
            amqp.clone(),
            RelayOptions { batch_size: 100, idle_poll_ms: 20, confirm_timeout_ms: 5000, retention_hours: 24 },
        );
        tokio::spawn(relay.run(app.shutdown_token()));
        let settings = muster_normalizer::Settings {
            database: app.db.settings(),
            amqp,
            http: HttpSettings { addr: "127.0.0.1:0".parse().unwrap() },
            telemetry: test_telemetry(),
            worker: fast_settings(),
        };
        let worker = muster_normalizer::worker(&settings, app.db.pool.clone());
        tokio::spawn(worker.run(app.shutdown_token()));
        let admin_settings = muster_admin::Settings {
            database: app.db.settings(),
            amqp: settings.amqp.clone(),
            http: HttpSettings { addr: "127.0.0.1:0".parse().unwrap() },
            telemetry: test_telemetry(),
        };
        let admin = muster_admin::Admin::bind(&admin_settings, app.db.pool.clone()).await.unwrap();
        let admin_url = format!("http://{}/api/v1", admin.local_addr().unwrap());
        tokio::spawn(admin.run(app.shutdown_token()));
        System { app, names, probe, admin: admin_url }
    }

    /// A GET on the admin API with the tenant's admin token.
    async fn admin_get(&self, path: &str) -> Value {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.admin))
            .bearer_auth(&self.app.tenant.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// (status, skip_reason, profile) of a member.
    async fn member(&self, id: &str) -> Option<(String, Option<String>, Value)> {
        sqlx::query_as("select status, skip_reason, profile from members.members where scim_user_id::text = $1")
            .bind(id)
            .fetch_optional(&self.app.db.pool)
            .await
            .unwrap()
    }

    async fn until_status(&self, id: &str, status: &str) -> (String, Option<String>, Value) {
        eventually(WAIT, &format!("member {id} {status}"), || async { self.member(id).await.filter(|m| m.0 == status) })
            .await
    }

    async fn next_event(&mut self) -> String {
        self.probe.next(WAIT).await.expect("a member event").routing_key
    }

    async fn stop(self) {
        self.app.shutdown_token().cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        teardown_on(&self.probe.channel, &self.names, &fast_settings().retry_delays_ms).await;
        self.probe.teardown(&self.names).await;
    }
}

fn entra_user(user_name: &str, email: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "userName": user_name,
        "active": true,
        "displayName": "Ann Lee",
        "title": "Engineer",
        "name": {"givenName": "Ann", "familyName": "Lee"},
        "emails": [{"primary": true, "type": "work", "value": email}],
        "phoneNumbers": [{"type": "work", "value": "540.946.4600 Ext. 143"}],
        "addresses": [{"type": "work", "country": "usa", "region": "new york"}],
        "locale": "en_US",
    })
}

#[tokio::test]
async fn a_scim_user_is_imported_as_a_normalized_member() {
    let mut sys = System::start().await;
    let resp = sys.app.scim().post("/Users", &entra_user("ann@contoso.com", "Ann@Contoso.com")).await;
    let id = resp.body["id"].as_str().unwrap().to_string();
    let (_, skip_reason, profile) = sys.until_status(&id, "active").await;
    assert_eq!(skip_reason, None);
    assert_eq!(
        profile["phone"],
        json!({"raw": "540.946.4600 Ext. 143", "e164": "+15409464600", "extension": "143", "invalid": false})
    );
    assert_eq!((profile["country"].as_str(), profile["state"].as_str()), (Some("US"), Some("US-NY")));
    assert_eq!(
        (profile["timezone"].as_str(), profile["timezone_source"].as_str()),
        (Some("America/New_York"), Some("state"))
    );
    assert_eq!(profile["locale"], "en-US");
    assert_eq!(sys.next_event().await, "member.imported");
    let log: Vec<String> = sqlx::query_scalar("select action from members.provisioning_log order by id")
        .fetch_all(&sys.app.db.pool)
        .await
        .unwrap();
    assert_eq!(log, ["imported"]);
    sys.stop().await;
}

#[tokio::test]
async fn a_skipped_member_is_imported_once_a_later_patch_fixes_it() {
    let mut sys = System::start().await;
    let resp = sys.app.scim().post("/Users", &entra_user("bob@fabrikam.com", "bob@fabrikam.com")).await;
    assert_eq!(resp.status, 201, "the SCIM request itself succeeds");
    let id = resp.body["id"].as_str().unwrap().to_string();
    let (_, reason, _) = sys.until_status(&id, "skipped").await;
    assert!(reason.as_deref().is_some_and(|r| r.contains("'fabrikam.com'") && r.contains("contoso.com")), "{reason:?}");
    assert_eq!(sys.next_event().await, "member.skipped");
    let log = sys.admin_get("/provisioning-log").await;
    assert_eq!(log["entries"][0]["action"], "skipped");
    assert!(log["entries"][0]["reason"].as_str().unwrap().contains("fabrikam.com"));
    assert_eq!(sys.admin_get(&format!("/members/{id}")).await["skip_reason"], reason.unwrap().as_str());

    let fix =
        patch_body(json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "bob@contoso.com"}]));
    assert_eq!(sys.app.scim().patch(&format!("/Users/{id}"), &fix).await.status, 200);
    let (_, reason, profile) = sys.until_status(&id, "active").await;
    assert_eq!(reason, None);
    assert_eq!(profile["emails"]["primary"], "bob@contoso.com");
    assert_eq!(sys.next_event().await, "member.imported");
    sys.stop().await;
}

#[tokio::test]
async fn deactivation_reactivation_and_delete_keep_the_member() {
    let mut sys = System::start().await;
    let scim = sys.app.scim();
    let id = scim.post("/Users", &entra_user("cy@contoso.com", "cy@contoso.com")).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    sys.until_status(&id, "active").await;
    assert_eq!(sys.next_event().await, "member.imported");

    scim.patch(&format!("/Users/{id}"), &patch_body(json!([{"op": "Replace", "path": "active", "value": "False"}])))
        .await;
    sys.until_status(&id, "deactivated").await;
    assert_eq!(sys.next_event().await, "member.deactivated");

    scim.patch(&format!("/Users/{id}"), &patch_body(json!([{"op": "Replace", "path": "active", "value": "True"}])))
        .await;
    sys.until_status(&id, "active").await;
    assert_eq!(sys.next_event().await, "member.reactivated");

    scim.patch(&format!("/Users/{id}"), &patch_body(json!([{"op": "Replace", "path": "title", "value": "Lead"}])))
        .await;
    eventually(WAIT, "the title to change", || async { sys.member(&id).await.filter(|m| m.2["title"] == "Lead") })
        .await;
    assert_eq!(sys.next_event().await, "member.updated");

    assert_eq!(scim.delete(&format!("/Users/{id}")).await.status, 204);
    sys.until_status(&id, "deactivated").await;
    assert_eq!(sys.next_event().await, "member.deactivated");
    assert_eq!(scim.get(&format!("/Users/{id}")).await.status, 404, "the SCIM resource is gone, the member stays");
    let log: Vec<String> = sqlx::query_scalar("select action from members.provisioning_log order by id")
        .fetch_all(&sys.app.db.pool)
        .await
        .unwrap();
    assert_eq!(log, ["imported", "deactivated", "reactivated", "updated", "deactivated"]);
    sys.stop().await;
}
