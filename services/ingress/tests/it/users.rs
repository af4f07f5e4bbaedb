//! Users as Entra ID provisions them.

use muster_testkit::TestApp;
use muster_testkit::scim::{patch_body, user_body};
use serde_json::json;

use super::event_versions;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const MUSTER: &str = "urn:ietf:params:scim:schemas:extension:muster:2.0:User";

#[tokio::test]
async fn entra_dialect_patch_is_accepted_as_entra_sends_it() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let manager = scim.create_user("boss@contoso.com").await;
    let id = scim.create_user("ann@contoso.com").await;
    let resp = scim
        .patch(
            &format!("/Users/{id}"),
            &patch_body(json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": manager},
                {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "(212) 575-1994 ext 3437"},
                {"op": "Add", "path": "addresses[type eq \"work\"].country", "value": "US"},
                {"op": "Replace", "path": format!("{MUSTER}:managerEmail"), "value": "boss@contoso.com"},
                {"op": "replace", "value": {"displayName": "Ann L.", "name.givenName": "Ann", format!("{ENTERPRISE}:department"): "Sales"}},
            ])),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let user = &resp.body;
    assert_eq!(user["active"], false);
    assert_eq!(user[ENTERPRISE]["manager"]["value"], manager.as_str());
    assert_eq!(user[ENTERPRISE]["department"], "Sales");
    assert_eq!(user[MUSTER]["managerEmail"], "boss@contoso.com");
    assert_eq!(user["phoneNumbers"], json!([{"type": "work", "value": "(212) 575-1994 ext 3437"}]));
    assert_eq!(user["addresses"], json!([{"type": "work", "country": "US"}]));
    assert_eq!(user["displayName"], "Ann L.");
    let schemas = user["schemas"].as_array().unwrap();
    assert!(schemas.contains(&json!(ENTERPRISE)) && schemas.contains(&json!(MUSTER)), "{schemas:?}");

    // Removing the manager as Entra does leaves no manager behind.
    let removed = scim
        .patch(&format!("/Users/{id}"), &patch_body(json!([{"op": "Remove", "path": format!("{ENTERPRISE}:manager")}])))
        .await;
    assert_eq!(removed.status, 200);
    assert!(removed.body[ENTERPRISE].get("manager").is_none(), "{}", removed.text);
}

#[tokio::test]
async fn deactivated_users_still_come_back_from_get_and_filters() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let id = scim.create_user("gone@contoso.com").await;
    scim.patch(&format!("/Users/{id}"), &patch_body(json!([{"op": "Replace", "path": "active", "value": false}])))
        .await;
    assert_eq!(scim.get(&format!("/Users/{id}")).await.body["active"], false);
    let by_name = scim.list("Users", "userName eq \"GONE@contoso.com\"").await;
    assert_eq!(by_name.body["totalResults"], 1);
    let inactive = scim.list("Users", "active eq false").await;
    assert_eq!(inactive.body["Resources"][0]["id"], id.as_str());
}

#[tokio::test]
async fn unchanged_patch_keeps_the_version_and_etag() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let id = scim.create_user("same@contoso.com").await;
    let once = scim
        .patch(&format!("/Users/{id}"), &patch_body(json!([{"op": "Replace", "path": "title", "value": "Engineer"}])))
        .await;
    assert_eq!(once.header("etag"), Some("W/\"2\""));
    let again = scim
        .patch(&format!("/Users/{id}"), &patch_body(json!([{"op": "Replace", "path": "title", "value": "Engineer"}])))
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("etag"), Some("W/\"2\""), "Entra re-sends unchanged values each cycle");
    assert_eq!(event_versions(&app, &id).await, [1, 2], "create and one real change: no event for the no-op");
}

#[tokio::test]
async fn every_write_commits_its_event_with_the_envelope() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let id = scim.create_user("evt@contoso.com").await;
    scim.delete(&format!("/Users/{id}")).await;
    let rows: Vec<(String, serde_json::Value, Option<String>)> =
        sqlx::query_as("select routing_key, envelope, traceparent from scim.outbox order by id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let keys: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(keys, ["scim.user.upserted", "scim.user.deleted"]);
    let envelope = &rows[1].1;
    assert_eq!(envelope["kind"], "scim.user.deleted");
    assert_eq!(envelope["entity_id"], id.as_str());
    assert_eq!(envelope["tenant_id"], app.tenant.id.to_string());
    assert_eq!(envelope["version"], 2);
    assert!(rows[1].2.as_deref().is_some_and(|t| t.starts_with("00-") && t.len() == 55), "{:?}", rows[1].2);
}

#[tokio::test]
async fn if_none_match_on_get_answers_304() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let id = scim.create_user("cache@contoso.com").await;
    let resp = scim.send(reqwest::Method::GET, &format!("/Users/{id}"), None, &[("If-None-Match", "W/\"1\"")]).await;
    assert_eq!(resp.status, 304);
}

#[tokio::test]
async fn discovery_tells_what_is_supported() {
    let app = TestApp::spawn().await;
    let scim = app.scim_as("no token needed");
    let spc = scim.get("/ServiceProviderConfig").await;
    assert_eq!(spc.status, 200);
    assert_eq!(spc.body["patch"]["supported"], true);
    assert_eq!(spc.body["bulk"]["supported"], false);
    assert_eq!(spc.body["sort"]["supported"], false);
    assert_eq!(spc.body["etag"]["supported"], true);
    assert_eq!(spc.body["filter"]["maxResults"], 1000);
    let schemas = scim.get("/Schemas").await;
    let ids: Vec<&str> =
        schemas.body["Resources"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "urn:ietf:params:scim:schemas:core:2.0:User",
            ENTERPRISE,
            MUSTER,
            "urn:ietf:params:scim:schemas:core:2.0:Group"
        ]
    );
    let user_schema = scim.get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User").await;
    assert_eq!(user_schema.body["attributes"][0]["caseExact"], false);
    let types = scim.get("/ResourceTypes").await;
    assert_eq!(types.body["totalResults"], 2);
    assert_eq!(scim.get("/ResourceTypes/User").await.body["schemaExtensions"][0]["schema"], ENTERPRISE);
}

#[tokio::test]
async fn put_replaces_and_drops_what_is_not_sent() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let mut body = user_body("put@contoso.com");
    body["title"] = json!("Engineer");
    let id = scim.post("/Users", &body).await.body["id"].as_str().unwrap().to_string();
    let replaced = scim.put(&format!("/Users/{id}"), &user_body("put@contoso.com")).await;
    assert_eq!(replaced.status, 200);
    assert!(replaced.body.get("title").is_none(), "{}", replaced.text);
    assert_eq!(replaced.header("etag"), Some("W/\"2\""));
}

#[tokio::test]
async fn pagination_is_clamped_and_counts_the_total() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    for i in 0..5 {
        scim.create_user(&format!("p{i}@contoso.com")).await;
    }
    let page = scim.get("/Users?startIndex=0&count=2").await;
    assert_eq!(page.body["startIndex"], 1);
    assert_eq!(page.body["itemsPerPage"], 2);
    assert_eq!(page.body["totalResults"], 5);
    let count_only = scim.get("/Users?count=0").await;
    assert_eq!(count_only.body["totalResults"], 5);
    assert_eq!(count_only.body["Resources"], json!([]));
    let past_end = scim.get("/Users?startIndex=10").await;
    assert_eq!(past_end.body["totalResults"], 5);
    let clamped = scim.get("/Users?count=100000").await;
    assert_eq!(clamped.body["itemsPerPage"], 5);
    let projected = scim.get("/Users?count=1&excludedAttributes=emails,name").await;
    let first = &projected.body["Resources"][0];
    assert!(first.get("emails").is_none() && first.get("name").is_none() && first.get("userName").is_some());
}

/// Entra looks every user up before creating it, so that statement must be planned once per
/// connection, not on every execution: with an `offset $n` PostgreSQL costed its generic plan
/// above the custom ones and planned each lookup anew (half of its CPU per lookup).
#[tokio::test]
async fn a_lookup_by_user_name_keeps_one_generic_plan_instead_of_being_planned_each_time() {
    let app = TestApp::spawn().await;
    app.scim().create_user("ann@contoso.com").await;
    let filter = muster_scim::filter::Filter::parse("userName eq \"ANN@contoso.com\"").unwrap();
    let mut conn = app.db.pool.acquire().await.unwrap();
    for _ in 0..8 {
        let (rows, total) = muster_ingress::store::list(
            &mut conn,
            muster_scim::schema::user_type(),
            app.tenant.id,
            Some(&filter),
            0,
            100,
            true,
        )
        .await
        .unwrap();
        assert_eq!((rows.len(), total), (1, 1));
    }
    let plans: Vec<(i64, i64, String)> = sqlx::query_as(
        "select generic_plans, custom_plans, statement from pg_prepared_statements where statement like 'select r.id, r.resource%from scim.users r%user_name%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(plans.len(), 1, "one prepared lookup statement: {plans:?}");
    let (generic, custom, _) = plans[0];
    assert!(
        generic >= 3 && custom <= 5,
        "generic plans {generic}, custom plans {custom}: the lookup is planned anew each time"
    );
}

/// Concurrent user writes share one statement over `unnest` of arrays, one to 64 users at a
/// time. With a custom plan PostgreSQL knows each array's length and a small batch looks ten
/// times cheaper than the generic plan's guess, so it was planned anew on every execution;
/// the ingress's pool keeps the generic plan.
#[tokio::test]
async fn batched_user_writes_are_planned_once_per_connection_not_on_every_batch() {
    let app = TestApp::spawn().await;
    let mut conn = app.pool.acquire().await.unwrap();
    for (batch, size) in [1usize, 2, 3, 1, 2, 3, 1, 2].into_iter().enumerate() {
        let users: Vec<muster_ingress::store::UserWrite> = (0..size)
            .map(|n| muster_ingress::store::UserWrite {
                tenant: app.tenant.id,
                id: uuid::Uuid::now_v7(),
                doc: user_body(&format!("user{batch}.{n}@contoso.com")),
                version: 1,
                at: chrono::Utc::now(),
                events: Vec::new(),
                traceparent: String::new(),
            })
            .collect();
        let refs: Vec<&muster_ingress::store::UserWrite> = users.iter().collect();
        let written =
            muster_ingress::store::write_users(&mut *conn, muster_ingress::store::UserStatement::Insert, &refs)
                .await
                .unwrap();
        assert_eq!(written.len(), size);
    }
    let plans: Vec<(i64, i64)> = sqlx::query_as(
        "select generic_plans, custom_plans from pg_prepared_statements where statement like 'with written as (insert into scim.users%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(plans, vec![(8, 0)], "(generic, custom) plans of the one prepared batch insert");
}

#[tokio::test]
async fn consecutive_requests_share_a_warm_connection_and_the_metrics_say_so() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    scim.create_user("ann@contoso.com").await;
    let found = scim.list("Users", "userName eq \"ann@contoso.com\"").await;
    assert_eq!(found.body["totalResults"], 1);
    let metrics = app.http.get(format!("{}/metrics", app.base_url())).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("db_connections_lent_total{from=\"pool\"}"), "{metrics}");
    assert!(
        metrics.contains("db_connections_lent_total{from=\"parked\"}"),
        "the lookup took the create's connection, without the pool: {metrics}"
    );
}

#[tokio::test]
async fn renaming_a_user_to_a_taken_user_name_is_refused_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    scim.create_user("taken@contoso.com").await;
    let id = scim.create_user("mine@contoso.com").await;
    let ops = json!([{"op": "Replace", "path": "userName", "value": "TAKEN@contoso.com"}]);
    let resp = scim.patch(&format!("/Users/{id}"), &patch_body(ops)).await;
    assert_eq!(resp.status, 409, "{}", resp.text);
    assert_eq!(resp.body["scimType"], "uniqueness");
    let user = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(user.body["userName"], "mine@contoso.com");
    assert_eq!(user.header("etag"), Some("W/\"1\""));
    assert_eq!(event_versions(&app, &id).await, [1], "no event for the refused write");
}
