//! SCIM users become team members: ingress → outbox → relay → RabbitMQ → normalizer, all real.

use muster_testkit::eventually;
use muster_testkit::scim::patch_body;
use serde_json::{Value, json};

use crate::system::{System, WAIT};

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

#[tokio::test]
async fn an_admin_sets_fields_entra_left_empty_once_and_entra_fields_stay_locked() {
    let mut sys = System::start().await;
    let mut user = entra_user("dee@contoso.com", "dee@contoso.com");
    user["name"] = json!({"givenName": "Dee"});
    user.as_object_mut().unwrap().remove("title");
    let id = sys.app.scim().post("/Users", &user).await.body["id"].as_str().unwrap().to_string();
    let (_, reason, _) = sys.until_status(&id, "skipped").await;
    assert!(reason.unwrap().contains("name.familyName"));
    assert_eq!(sys.next_event().await, "member.skipped");
    let member = format!("/members/{id}");
    let view = sys.admin_get(&member).await;
    assert_eq!(view["provenance"]["family_name"], "empty");
    assert_eq!(view["provenance"]["given_name"], "entra");

    // The admin fixes the skip: the member is imported at once, with the edit in the log.
    let (status, view) =
        sys.admin_send(reqwest::Method::PATCH, &member, json!({"family_name": "Doe", "title": "Designer"})).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!((view["status"].as_str(), view["family_name"].as_str()), (Some("active"), Some("Doe")));
    assert_eq!(
        (view["provenance"]["family_name"].as_str(), view["title"].as_str()),
        (Some("manual"), Some("Designer"))
    );
    assert_eq!(sys.next_event().await, "member.imported");
    let log = sys.admin_get(&format!("/provisioning-log?scim_user_id={id}")).await;
    assert_eq!(log["entries"][0]["action"], "imported");
    assert!(log["entries"][0]["reason"].as_str().unwrap().contains("family_name = 'Doe'"), "{log}");

    // Set once, then locked; Entra's fields never; every refusal says why, nothing is applied.
    let (status, problem) = sys
        .admin_send(
            reqwest::Method::PATCH,
            &member,
            json!({"title": "Lead", "given_name": "D", "timezone": "Europe/Paris"}),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "https://muster.example/problems/field-locked");
    let reasons: Vec<(String, String)> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["field"].as_str().unwrap().to_string(), e["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(reasons.len(), 2, "{problem}");
    assert!(reasons.iter().any(|(f, r)| f == "title" && r.contains("already set manually")));
    assert!(reasons.iter().any(|(f, r)| f == "given_name" && r.contains("Entra ID") && r.contains("name.givenName")));
    let unchanged = sys.admin_get(&member).await;
    assert_eq!(unchanged["timezone"], "America/New_York", "all or nothing");
    assert_eq!(unchanged["provenance"]["timezone"], "empty");
    let (status, problem) = sys.admin_send(reqwest::Method::PATCH, &member, json!({"timezone": "-05:00"})).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("https://muster.example/problems/invalid-field")));
    let (status, problem) = sys.admin_send(reqwest::Method::PATCH, &member, json!({"manager": "x"})).await;
    assert_eq!(status, 422, "{problem}");

    // Entra sends a title later: Entra's value wins and the field is Entra's from then on.
    let set_title = patch_body(json!([{"op": "Add", "path": "title", "value": "Head of Design"}]));
    assert_eq!(sys.app.scim().patch(&format!("/Users/{id}"), &set_title).await.status, 200);
    eventually(WAIT, "Entra's title", || async { sys.member(&id).await.filter(|m| m.2["title"] == "Head of Design") })
        .await;
    let view = sys.admin_get(&member).await;
    assert_eq!((view["provenance"]["title"].as_str(), view["family_name"].as_str()), (Some("entra"), Some("Doe")));
    assert_eq!(sys.next_event().await, "member.updated");
    sys.stop().await;
}

#[tokio::test]
async fn company_settings_changes_re_evaluate_the_members_they_affect() {
    let mut sys = System::start().await;
    let scim = sys.app.scim();
    let foreign = scim.post("/Users", &entra_user("eve@fabrikam.com", "eve@fabrikam.com")).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut nowhere = entra_user("fay@contoso.com", "fay@contoso.com");
    nowhere["addresses"] = json!([{"type": "work", "country": "United States"}]);
    let nowhere = scim.post("/Users", &nowhere).await.body["id"].as_str().unwrap().to_string();
    let placed = scim.post("/Users", &entra_user("gus@contoso.com", "gus@contoso.com")).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    sys.until_status(&foreign, "skipped").await;
    let (_, _, profile) = sys.until_status(&nowhere, "active").await;
    assert_eq!(
        (profile["timezone"].as_str(), profile["timezone_source"].as_str()),
        (Some("UTC"), Some("company_default"))
    );
    sys.until_status(&placed, "active").await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(sys.next_event().await);
    }

    let change = json!({"domains": ["contoso.com", "fabrikam.com"], "default_timezone": "America/Chicago"});
    let (status, settings) = sys.admin_send(reqwest::Method::PUT, "/settings", change).await;
    assert_eq!(status, 200, "{settings}");
    sys.until_status(&foreign, "active").await;
    eventually(WAIT, "the new default time zone", || async {
        sys.member(&nowhere).await.filter(|m| m.2["timezone"] == "America/Chicago")
    })
    .await;
    let mut after = vec![sys.next_event().await, sys.next_event().await];
    after.sort();
    assert_eq!(after, ["member.imported", "member.updated"]);
    assert_eq!(sys.member(&placed).await.unwrap().2["timezone"], "America/New_York", "its state decides");
    let log = sys.admin_get(&format!("/provisioning-log?scim_user_id={foreign}")).await;
    assert_eq!(log["entries"][0]["reason"], "company settings changed");

    // Removing the domain again skips its members, with the reason.
    let (status, _) = sys.admin_send(reqwest::Method::PUT, "/settings", json!({"domains": ["contoso.com"]})).await;
    assert_eq!(status, 200);
    let (_, reason, _) = sys.until_status(&foreign, "skipped").await;
    assert!(reason.unwrap().contains("fabrikam.com"));
    sys.stop().await;
}

#[tokio::test]
async fn with_provisioning_turned_off_the_scim_api_answers_403() {
    let sys = System::start().await;
    let (status, _) = sys.admin_send(reqwest::Method::PUT, "/settings", json!({"provisioning_enabled": false})).await;
    assert_eq!(status, 200);
    // The ingress hears of the change through PostgreSQL: within moments.
    eventually(WAIT, "provisioning to be refused", || async {
        (sys.app.scim().get("/Users").await.status == 403).then_some(())
    })
    .await;
    let refused = sys.app.scim().post("/Users", &entra_user("hal@contoso.com", "hal@contoso.com")).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body["detail"].as_str().unwrap().contains("provisioning is turned off"), "{}", refused.body);
    assert_eq!(refused.body["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error");
    let (status, _) = sys.admin_send(reqwest::Method::PUT, "/settings", json!({"provisioning_enabled": true})).await;
    assert_eq!(status, 200);
    eventually(WAIT, "provisioning to be accepted again", || async {
        (sys.app.scim().get("/Users").await.status == 200).then_some(())
    })
    .await;
    let accepted = sys.app.scim().post("/Users", &entra_user("hal@contoso.com", "hal@contoso.com")).await;
    assert_eq!(accepted.status, 201);
    sys.stop().await;
}
