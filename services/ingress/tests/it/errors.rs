//! Every class of bad input gets its RFC 7644 error, in the SCIM error schema, and writes
//! nothing.

use muster_testkit::scim::{patch_body, user_body};
use std::time::Duration;

use muster_testkit::{Resp, TestApp, default_scim_settings, eventually};
use reqwest::Method;
use serde_json::json;

fn assert_scim_error(resp: &Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(resp.status, status, "{}", resp.text);
    assert_eq!(resp.header("content-type"), Some("application/scim+json"));
    assert_eq!(resp.body["schemas"], json!(["urn:ietf:params:scim:api:messages:2.0:Error"]));
    assert_eq!(resp.body["status"], status.to_string());
    assert_eq!(resp.body.get("scimType").and_then(|t| t.as_str()), scim_type, "{}", resp.text);
    assert!(resp.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

async fn user_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from scim.users").fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn bad_bodies_get_their_error_and_write_nothing() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let malformed = scim.send_raw(Method::POST, "/Users", Some(b"{\"userName\": ".to_vec()), &[]).await;
    assert_scim_error(&malformed, 400, Some("invalidSyntax"));

    let mut wrong_type = user_body("t@contoso.com");
    wrong_type["active"] = json!("perhaps");
    assert_scim_error(&scim.post("/Users", &wrong_type).await, 400, Some("invalidValue"));

    let mut unknown = user_body("t@contoso.com");
    unknown["shoeSize"] = json!(44);
    assert_scim_error(&scim.post("/Users", &unknown).await, 400, Some("invalidSyntax"));

    let mut too_long = user_body("t@contoso.com");
    too_long["title"] = json!("x".repeat(5000));
    assert_scim_error(&scim.post("/Users", &too_long).await, 400, Some("invalidValue"));

    let no_user_name = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "displayName": "x"});
    assert_scim_error(&scim.post("/Users", &no_user_name).await, 400, Some("invalidValue"));

    let not_json =
        scim.send_raw(Method::POST, "/Users", Some(b"userName=x".to_vec()), &[("content-type", "text/plain")]).await;
    assert_scim_error(&not_json, 415, None);
    let plain_json = scim
        .send_raw(
            Method::POST,
            "/Users",
            Some(user_body("ok@contoso.com").to_string().into_bytes()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(plain_json.status, 201, "application/json is accepted too: {}", plain_json.text);
    scim.delete(&format!("/Users/{}", plain_json.body["id"].as_str().unwrap())).await;

    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let mut settings = default_scim_settings();
    settings.max_body_bytes = 10_000;
    let app = TestApp::spawn_with(settings).await;
    let mut big = user_body("big@contoso.com");
    big["displayName"] = json!("y".repeat(20_000));
    assert_scim_error(&app.scim().post("/Users", &big).await, 413, None);
    assert_eq!(user_count(&app).await, 0);
}

#[tokio::test]
async fn bad_filters_get_invalid_filter() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    for filter in [
        "userName eq",
        "userName zz \"a\"",
        "shoeSize eq \"9\"",
        "userName eq \"a\" and (",
        "meta.created gt \"last tuesday\"",
        &format!("{}userName eq \"a\"{}", "(".repeat(30), ")".repeat(30)),
        &vec!["userName eq \"a\""; 80].join(" or "),
    ] {
        assert_scim_error(&scim.list("Users", filter).await, 400, Some("invalidFilter"));
    }
}

#[tokio::test]
async fn bad_patches_get_path_mutability_and_target_errors() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let id = scim.create_user("p@contoso.com").await;
    let path = format!("/Users/{id}");
    let cases = [
        (json!([{"op": "replace", "path": "nope.nothing", "value": "x"}]), 400, "invalidPath"),
        (json!([{"op": "replace", "path": "emails[type eq", "value": "x"}]), 400, "invalidPath"),
        (json!([{"op": "replace", "path": "id", "value": "x"}]), 400, "mutability"),
        (json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]), 400, "mutability"),
        (json!([{"op": "remove"}]), 400, "noTarget"),
        (json!([{"op": "replace", "path": "emails[value co \"nomatch\"].type", "value": "home"}]), 400, "noTarget"),
        (json!([{"op": "jump", "path": "title", "value": "x"}]), 400, "invalidSyntax"),
        (json!([{"op": "replace", "path": "active", "value": 3}]), 400, "invalidValue"),
    ];
    for (ops, status, scim_type) in cases {
        assert_scim_error(&scim.patch(&path, &patch_body(ops.clone())).await, status, Some(scim_type));
    }
    let no_schema = scim.patch(&path, &json!({"Operations": [{"op": "replace", "path": "title", "value": "x"}]})).await;
    assert_scim_error(&no_schema, 400, Some("invalidSyntax"));
    // A failed multi-operation PATCH applies none of its operations.
    let partial = scim
        .patch(&path, &patch_body(json!([{"op": "replace", "path": "title", "value": "Boss"}, {"op": "replace", "path": "id", "value": "x"}])))
        .await;
    assert_eq!(partial.status, 400);
    let user = scim.get(&path).await;
    assert!(user.body.get("title").is_none());
    assert_eq!(user.header("etag"), Some("W/\"1\""));
}

#[tokio::test]
async fn authentication_not_found_and_preconditions() {
    let app = TestApp::spawn().await;
    let anonymous = app.scim_as("");
    let resp = anonymous.get("/Users").await;
    assert_scim_error(&resp, 401, None);
    assert!(resp.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    assert_scim_error(&app.scim_as("mst_scim_forged").get("/Users").await, 401, None);
    assert_scim_error(&app.scim_as(&app.tenant.admin_token).get("/Users").await, 401, None);

    let scim = app.scim();
    assert_scim_error(&scim.get("/Users/not-a-uuid").await, 404, None);
    assert_scim_error(&scim.get("/Users/0193a5b2-7c1e-7d3a-9b1c-2f4e5d6a7b8c").await, 404, None);
    assert_scim_error(&scim.get("/Nothing").await, 404, None);
    assert_scim_error(&scim.send(Method::DELETE, "/Users", None, &[]).await, 405, None);

    let id = scim.create_user("etag@contoso.com").await;
    let stale = scim.send(Method::DELETE, &format!("/Users/{id}"), None, &[("If-Match", "W/\"7\"")]).await;
    assert_scim_error(&stale, 412, None);
    let current = scim.send(Method::DELETE, &format!("/Users/{id}"), None, &[("If-Match", "W/\"1\"")]).await;
    assert_eq!(current.status, 204);
}

#[tokio::test]
async fn a_revoked_token_stops_working_and_a_rotated_one_starts() {
    let app = TestApp::spawn().await;
    let mut conn = app.db.pool.acquire().await.unwrap();
    let (_, new_token) =
        muster_infra::tenancy::issue_token(&mut conn, app.tenant.id, muster_infra::tenancy::TokenKind::Scim, "rotated")
            .await
            .unwrap();
    assert_eq!(app.scim_as(&new_token).get("/Users").await.status, 200);
    assert_eq!(app.scim().get("/Users").await.status, 200, "both tokens live during the rotation");
    let tokens = muster_infra::tenancy::list_tokens(&app.db.pool, Some(app.tenant.id)).await.unwrap();
    let old = tokens.iter().find(|t| t.kind == "scim" && t.name == "test").unwrap();
    muster_infra::tenancy::revoke_token(&app.db.pool, Some(app.tenant.id), old.id).await.unwrap();
    // The ingress caches checked tokens and hears of the revocation through PostgreSQL:
    // within moments, not at once.
    let scim = app.scim();
    eventually(Duration::from_secs(5), "the revoked token to be refused", || async {
        (scim.get("/Users").await.status == 401).then_some(())
    })
    .await;
    assert_eq!(app.scim_as(&new_token).get("/Users").await.status, 200);
}

#[tokio::test]
async fn a_checked_token_is_served_from_the_cache_until_a_change_is_heard() {
    let app = TestApp::spawn().await;
    let (pool, tenant, scim) = (&app.db.pool, app.tenant.id, app.scim());
    // A revocation made behind the cache's back (its trigger off) shows what the cache holds.
    sqlx::query("alter table tenancy.api_tokens disable trigger api_tokens_changed").execute(pool).await.unwrap();
    let set_revoked = |revoked: bool| async move {
        sqlx::query("update tenancy.api_tokens set revoked_at = case when $2 then now() end where tenant_id = $1")
            .bind(tenant)
            .bind(revoked)
            .execute(pool)
            .await
            .unwrap();
    };
    // The cache keeps what it checks once it listens, which it starts doing on its own.
    eventually(Duration::from_secs(5), "the token to be served from the cache", || async {
        assert_eq!(scim.get("/Users").await.status, 200);
        set_revoked(true).await;
        let cached = scim.get("/Users").await.status == 200;
        if !cached {
            set_revoked(false).await;
        }
        cached.then_some(())
    })
    .await;
    // Any announced change (here a company setting) empties it: the revocation now counts.
    sqlx::query("update tenancy.tenant_settings set provisioning_enabled = true where tenant_id = $1")
        .bind(tenant)
        .execute(pool)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the revoked token to be refused once a change is heard", || async {
        (scim.get("/Users").await.status == 401).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let mut settings = default_scim_settings();
    settings.rate_limit_per_second = 1;
    settings.rate_limit_burst = 5;
    let app = TestApp::spawn_with(settings).await;
    let other = app.db.create_tenant("Fabrikam", "fabrikam.com").await;
    let scim = app.scim();
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(scim.get("/Users").await);
    }
    let throttled: Vec<&Resp> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(throttled.len() >= 2, "{:?}", statuses.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_scim_error(throttled[0], 429, None);
    assert!(throttled[0].header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    assert_eq!(app.scim_as(&other.scim_token).get("/Users").await.status, 200);
}

#[tokio::test]
async fn the_shipped_rate_limit_never_throttles_25_requests_per_second() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    // 60 requests at once exceed any 1-second window Entra ID produces at 25 req/s.
    let results = futures_util::future::join_all((0..60).map(|_| {
        let scim = scim.clone();
        async move { scim.get("/Users?count=1").await.status }
    }))
    .await;
    assert!(results.iter().all(|s| *s == 200), "{results:?}");
}

/// A membership PATCH writes its members before it takes the group's row, so the group may
/// be deleted in between: the members' foreign key refuses them, and that is a 404 for the
/// group, not a 500.
#[tokio::test]
async fn members_written_to_a_group_deleted_meanwhile_are_a_404() {
    let app = TestApp::spawn().await;
    let user = app.scim().create_user("ann@contoso.com").await;
    let refused = sqlx::query(
        "insert into scim.group_members (tenant_id, group_id, member_id, member_type) values ($1, $2, $3, 'User')",
    )
    .bind(app.tenant.id)
    .bind(uuid::Uuid::now_v7())
    .bind(uuid::Uuid::parse_str(&user).unwrap())
    .execute(&app.db.pool)
    .await
    .unwrap_err();
    let answer = axum::response::IntoResponse::into_response(muster_ingress::error::ApiError::from(refused));
    assert_eq!(answer.status(), 404);
}
