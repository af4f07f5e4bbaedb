//! The admin API's authentication, error form and dead-letter endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::net::SocketAddr;

use muster_admin::{Admin, Settings};
use muster_contracts::Names;
use muster_contracts::topology::NORMALIZER;
use muster_infra::config::HttpSettings;
use muster_testkit::broker::{Probe, broker_url, depth, publish_dead_letter, test_amqp};
use muster_testkit::{TestDb, test_telemetry};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct AdminApp {
    base: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl AdminApp {
    async fn start(db: &TestDb, amqp: muster_infra::config::AmqpSettings) -> AdminApp {
        let settings = Settings {
            database: db.settings(),
            amqp,
            http: HttpSettings { addr: SocketAddr::from(([127, 0, 0, 1], 0)) },
            telemetry: test_telemetry(),
        };
        let admin = Admin::bind(&settings, db.pool.clone()).await.unwrap();
        let base = format!("http://{}", admin.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(admin.run(shutdown.clone()));
        AdminApp { base, http: reqwest::Client::new(), shutdown }
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value, String) {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(token).send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (status, r.json().await.unwrap_or(Value::Null), ct)
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self.http.put(format!("{}{path}", self.base)).bearer_auth(token).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for AdminApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test]
async fn the_admin_token_reads_its_tenant_and_other_tokens_get_a_problem_document() {
    let db = TestDb::create().await;
    let tenant = db.create_tenant("Contoso", "contoso.com").await;
    let app = AdminApp::start(&db, test_amqp(&broker_url())).await;

    let (status, body, _) = app.get("/api/v1/tenant", &tenant.admin_token).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], tenant.id.to_string());
    assert_eq!(body["primary_domain"], "contoso.com");

    let (status, problem, content_type) = app.get("/api/v1/tenant", &tenant.scim_token).await;
    assert_eq!(status, 401);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["status"], 401);
    assert!(problem["detail"].as_str().unwrap().contains("admin"));

    let ready = app.http.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
}

#[tokio::test]
async fn dead_letters_through_the_admin_api_are_scoped_to_the_tenant_and_whole_for_operators() {
    let db = TestDb::create().await;
    let a = db.create_tenant("Contoso", "contoso.com").await;
    let b = db.create_tenant("Fabrikam", "fabrikam.com").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let (_, operator) = muster_infra::tenancy::issue_operator_token(&mut conn, "on-call").await.unwrap();
    let amqp = test_amqp(&broker_url());
    let names = Names::new(amqp.prefix.clone());
    let probe = Probe::bind(&names, "no.such.events").await.unwrap();
    let publisher = probe.publisher().await;
    let a_ids = [
        publish_dead_letter(&publisher, &names, &NORMALIZER, a.id, "a1").await,
        publish_dead_letter(&publisher, &names, &NORMALIZER, a.id, "a2").await,
    ];
    let b_id = publish_dead_letter(&publisher, &names, &NORMALIZER, b.id, "b1").await;
    let app = AdminApp::start(&db, amqp).await;
    let dlq = names.dead_letter_queue(&NORMALIZER);
    let depth_of = |v: &Value| {
        v["queues"].as_array().unwrap().iter().find(|q| q["queue"] == dlq.as_str()).unwrap()["depth"].clone()
    };

    let (status, mine, _) = app.get("/api/v1/dlq", &a.admin_token).await;
    assert_eq!(status, 200);
    assert_eq!(depth_of(&mine), 2);
    let (_, all, _) = app.get("/api/v1/dlq", &operator).await;
    assert_eq!(depth_of(&all), 3);

    let (_, shown, _) = app.get("/api/v1/dlq/normalizer", &a.admin_token).await;
    let shown = shown["messages"].as_array().unwrap();
    assert_eq!(shown.len(), 2);
    assert!(shown.iter().all(|m| m["tenant_id"] == a.id.to_string()));
    assert_eq!(shown[0]["reason"], "gave up after 5 attempts: database unavailable");

    // A tenant cannot touch another tenant's message, even by naming it.
    let (status, none) = app.post("/api/v1/dlq/normalizer/replay", &a.admin_token, json!({"event_ids": [b_id]})).await;
    assert_eq!((status, none["replayed"].clone()), (200, json!(0)));
    let (_, replayed) = app.post("/api/v1/dlq/normalizer/replay", &a.admin_token, json!({"all": true})).await;
    assert_eq!(replayed["replayed"], 2);
    let mut got: Vec<String> =
        replayed["event_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    got.sort();
    let mut want = a_ids.to_vec();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(depth(&probe.channel, &names.queue(&NORMALIZER)).await, 2);
    muster_testkit::eventually(std::time::Duration::from_secs(10), "B's message to stay in the DLQ", || async {
        (depth(&probe.channel, &dlq).await == 1).then_some(())
    })
    .await;

    let (status, problem) = app.post("/api/v1/dlq/normalizer/purge", &operator, json!({"all": true})).await;
    assert_eq!(status, 400);
    assert!(problem["detail"].as_str().unwrap().contains("confirm"));
    let (status, _) =
        app.post("/api/v1/dlq/normalizer/replay", &operator, json!({"all": true, "event_ids": ["x"]})).await;
    assert_eq!(status, 400);
    let (_, purged) =
        app.post("/api/v1/dlq/normalizer/purge", &a.admin_token, json!({"all": true, "confirm": true})).await;
    assert_eq!(purged["purged"], 0);
    let (_, purged) = app.post("/api/v1/dlq/normalizer/purge", &operator, json!({"all": true, "confirm": true})).await;
    assert_eq!(purged["purged"], 1);
    assert_eq!(depth(&probe.channel, &dlq).await, 0);

    let (status, _, content_type) = app.get("/api/v1/dlq/nonsense", &operator).await;
    assert_eq!((status, content_type.as_str()), (404, "application/problem+json"));
    let (status, _, _) = app.get("/api/v1/dlq", &a.scim_token).await;
    assert_eq!(status, 401);
    let (status, _, _) = app.get("/api/v1/tenant", &operator).await;
    assert_eq!(status, 404);
    probe.teardown(&names).await;
}

#[tokio::test]
async fn settings_hold_the_company_domains_and_default_time_zone() {
    let db = TestDb::create().await;
    let tenant = db.create_tenant("Contoso", "contoso.com").await;
    let app = AdminApp::start(&db, test_amqp(&broker_url())).await;
    let (status, settings, _) = app.get("/api/v1/settings", &tenant.admin_token).await;
    assert_eq!(status, 200);
    assert_eq!(
        settings,
        json!({"primary_domain": "contoso.com", "domains": ["contoso.com"], "default_timezone": "UTC",
               "provisioning_enabled": true, "provisioning_source": "azure", "notify_managers_on_import": false,
               "managers_toggle_data_capture": false, "version": 1})
    );

    let (status, settings) = app
        .put(
            "/api/v1/settings",
            &tenant.admin_token,
            json!({"domains": ["contoso.com", "Contoso.DE"], "default_timezone": "europe/berlin"}),
        )
        .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["domains"], json!(["contoso.com", "contoso.de"]));
    assert_eq!(settings["default_timezone"], "Europe/Berlin");
    let events: Vec<(String, String, i64)> =
        sqlx::query_as("select routing_key, entity_id, version from scim.outbox where tenant_id = $1")
            .bind(tenant.id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(events, vec![("tenant.settings_changed".to_string(), tenant.id.to_string(), 2)]);
    let (_, flags) = app.put("/api/v1/settings", &tenant.admin_token, json!({"notify_managers_on_import": true})).await;
    assert_eq!((flags["notify_managers_on_import"].clone(), flags["version"].clone()), (json!(true), json!(3)));
    let outbox: i64 = sqlx::query_scalar("select count(*) from scim.outbox where tenant_id = $1")
        .bind(tenant.id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(outbox, 1, "a flag that changes no member's outcome re-evaluates nobody");

    for (body, field) in [
        (json!({"default_timezone": "-05:00"}), "default_timezone"),
        (json!({"domains": ["contoso.de"]}), "domains"),
        (json!({"domains": ["not a domain"]}), "domains"),
        (json!({"provisioning_source": "okta"}), "provisioning_source"),
    ] {
        let (status, problem) = app.put("/api/v1/settings", &tenant.admin_token, body).await;
        assert_eq!(status, 422);
        assert_eq!(problem["type"], "https://muster.example/problems/invalid-setting");
        assert!(problem["detail"].as_str().unwrap().starts_with(field), "{problem}");
    }
    let (status, problem) = app.put("/api/v1/settings", &tenant.admin_token, json!({"colour": "blue"})).await;
    assert_eq!(status, 400, "unknown settings are refused");
    assert_eq!(problem["type"], "https://muster.example/problems/bad-request");
    let (_, unchanged, _) = app.get("/api/v1/settings", &tenant.admin_token).await;
    assert_eq!(unchanged["domains"], json!(["contoso.com", "contoso.de"]));
    let (status, members, _) = app.get("/api/v1/members?status=active", &tenant.admin_token).await;
    assert_eq!((status, members["total"].clone()), (200, json!(0)));
    let (status, _, _) = app.get("/api/v1/members?status=nonsense", &tenant.admin_token).await;
    assert_eq!(status, 400);
    let (status, problem, content_type) = app.get("/api/v1/members?limit=many", &tenant.admin_token).await;
    assert_eq!((status, content_type.as_str()), (400, "application/problem+json"));
    assert_eq!(problem["type"], "https://muster.example/problems/bad-request");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_every_error_has_a_stable_type() {
    let db = TestDb::create().await;
    let tenant = db.create_tenant("Contoso", "contoso.com").await;
    let app = AdminApp::start(&db, test_amqp(&broker_url())).await;
    let served = app.http.get(format!("{}/api/v1/openapi.json", app.base)).send().await.unwrap();
    assert_eq!(served.status(), 200, "served without a token");
    let doc: Value = served.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let problem_doc = doc["components"]["schemas"]["Problem"]["description"].as_str().unwrap();
    for (slug, _, _) in muster_admin::problem::PROBLEM_TYPES {
        assert!(problem_doc.contains(&format!("`{slug}`")), "problem type {slug} is not documented");
    }
    // Every documented operation is routed: it never lands on the router's fallbacks.
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "{:?}", paths.keys());
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{report}", &uuid::Uuid::new_v4().to_string())
            .replace("{queue}", "nonexistent");
        for method in item.as_object().unwrap().keys().filter(|m| *m != "parameters") {
            let url = format!("{}/api/v1{concrete}", app.base);
            let request = match method.as_str() {
                "get" => app.http.get(&url),
                "put" => app.http.put(&url).json(&json!({})),
                "patch" => app.http.patch(&url).json(&json!({"title": "x"})),
                "post" => app.http.post(&url).json(&json!({"all": true})),
                "delete" => app.http.delete(&url),
                other => panic!("undocumented method {other}"),
            };
            let r = request.bearer_auth(&tenant.admin_token).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}");
            assert!(body["detail"] != "no such admin endpoint", "{method} {path} is not routed");
            if status >= 400 {
                let slug = body["type"].as_str().unwrap().trim_start_matches(muster_admin::problem::PROBLEM_BASE);
                assert!(
                    muster_admin::problem::PROBLEM_TYPES.iter().any(|(s, code, _)| *s == slug && *code == status),
                    "{method} {path}: {body}"
                );
            }
        }
    }
    let r = app.http.delete(format!("{}/api/v1/settings", app.base)).bearer_auth(&tenant.admin_token).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "https://muster.example/problems/method-not-allowed");
}

#[tokio::test]
async fn the_catalog_and_assignments_are_validated_ordered_and_the_default_stays() {
    let db = TestDb::create().await;
    let tenant = db.create_tenant("Contoso", "contoso.com").await;
    let app = AdminApp::start(&db, test_amqp(&broker_url())).await;
    let token = &tenant.admin_token;
    let (status, listing, _) = app.get("/api/v1/assignments", token).await;
    assert_eq!(status, 200);
    let default = &listing["assignments"][0];
    assert_eq!((default["name"].as_str(), default["is_default"].as_bool()), (Some("Default"), Some(true)));
    assert_eq!((default["seats"].clone(), default["capture"].clone()), (json!([]), json!({})), "gives nothing");
    let (_, catalog, _) = app.get("/api/v1/catalog", token).await;
    let kinds: Vec<&str> =
        catalog["catalog"]["capture_kinds"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["web_conferences", "telephony", "email"]);

    let catalog = json!({
        "seat_types": [{"key": "recorder", "name": "Recorder", "capacity": 100}],
        "capture_kinds": [{"key": "web_conferences", "name": "Web", "requires_seat": "recorder"},
                          {"key": "telephony", "name": "Phone", "requires_seat": "recorder"},
                          {"key": "email", "name": "E-mail"}],
        "workspaces": [{"key": "sales", "name": "Sales", "profiles": [{"key": "rep", "name": "Rep"}]}]
    });
    let (status, body) = app.put("/api/v1/catalog", token, catalog.clone()).await;
    assert_eq!(status, 200, "{body}");
    let mut broken = catalog.clone();
    broken["capture_kinds"][2]["requires_seat"] = json!("pilot");
    let (status, problem) = app.put("/api/v1/catalog", token, broken).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("https://muster.example/problems/invalid-catalog")));
    assert!(problem["detail"].as_str().unwrap().contains("'pilot'"));

    let group = uuid::Uuid::now_v7();
    sqlx::query("insert into scim.groups (tenant_id, id, display_name, resource) values ($1, $2, 'Sales', '{}')")
        .bind(tenant.id)
        .bind(group)
        .execute(&db.pool)
        .await
        .unwrap();
    let sales = json!({"name": "Sales team", "mode": "automatic", "groups": [group], "seats": ["recorder"],
                       "permissions": {"sales": "rep"}, "capture": {"web_conferences": true}});
    let (status, created) = app.post("/api/v1/assignments", token, sales.clone()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["order"], 1);
    let (status, problem) = app.post("/api/v1/assignments", token, sales.clone()).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("https://muster.example/problems/name-taken")));
    let wrong = json!({"name": "Ghosts", "mode": "sometimes", "groups": [uuid::Uuid::now_v7()], "seats": ["pilot"],
                       "permissions": {"hr": "boss"}, "capture": {"fax": true}});
    let (status, problem) = app.post("/api/v1/assignments", token, wrong).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"].as_array().unwrap().len(), 5, "{problem}");
    let (status, second) = app
        .post("/api/v1/assignments", token, json!({"name": "Support", "mode": "manual", "capture": {"email": true}}))
        .await;
    assert_eq!((status, second["order"].clone()), (201, json!(2)));

    // Reorder: Support first; the default stays last.
    let (status, listing) =
        app.put("/api/v1/assignments/order", token, json!({"ids": [second["id"], created["id"]]})).await;
    assert_eq!(status, 200, "{listing}");
    let names: Vec<&str> =
        listing["assignments"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Support", "Sales team", "Default"]);
    let (status, _) = app.put("/api/v1/assignments/order", token, json!({"ids": [second["id"]]})).await;
    assert_eq!(status, 422, "every assignment exactly once");

    // The catalog cannot drop what an assignment uses.
    let mut shrunk = catalog.clone();
    shrunk["workspaces"] = json!([]);
    let (status, problem) = app.put("/api/v1/catalog", token, shrunk).await;
    assert_eq!(status, 422);
    assert!(problem["detail"].as_str().unwrap().contains("'Sales team'"), "{problem}");

    let default_id = listing["assignments"][2]["id"].as_str().unwrap().to_string();
    let delete =
        |id: String| app.http.delete(format!("{}/api/v1/assignments/{id}", app.base)).bearer_auth(token).send();
    let r = delete(default_id.clone()).await.unwrap();
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["type"], "https://muster.example/problems/default-assignment");
    let (status, _) = app
        .put(
            &format!("/api/v1/assignments/{default_id}"),
            token,
            json!({"name": "Default", "mode": "automatic", "groups": [group]}),
        )
        .await;
    assert_eq!(status, 422, "the default assignment takes no groups");
    assert_eq!(delete(second["id"].as_str().unwrap().to_string()).await.unwrap().status(), 204);
    let (_, listing, _) = app.get("/api/v1/assignments", token).await;
    assert_eq!(listing["assignments"].as_array().unwrap().len(), 2);
}
