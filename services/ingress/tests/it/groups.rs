//! Groups: memberships as rows, deltas only.

use muster_testkit::TestApp;
use muster_testkit::scim::patch_body;
use serde_json::{Value, json};

use super::event_versions;

#[tokio::test]
async fn membership_patch_touches_only_the_delta_and_records_it() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let group = scim.create_group("Engineering").await;
    let users = scim.create_users("m", 30).await;
    let add: Vec<Value> = users.iter().map(|u| json!({"value": u})).collect();
    let resp = scim
        .patch(&format!("/Groups/{group}"), &patch_body(json!([{"op": "Add", "path": "members", "value": add}])))
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text);
    assert_eq!(resp.header("etag"), Some("W/\"2\""));
    // Entra's remove-with-value form and the RFC's filter form, in one request; plus a
    // re-add of an existing member, which changes nothing.
    let resp = scim
        .patch(
            &format!("/Groups/{group}"),
            &patch_body(json!([
                {"op": "Remove", "path": "members", "value": [{"value": users[0]}, {"value": users[1]}]},
                {"op": "remove", "path": format!("members[value eq \"{}\"]", users[2])},
                {"op": "add", "path": "members", "value": [{"value": users[3]}]},
            ])),
        )
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text);
    let got = scim.get(&format!("/Groups/{group}")).await;
    let members: Vec<&str> =
        got.body["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(members.len(), 27);
    assert!(!members.contains(&users[0].as_str()) && members.contains(&users[3].as_str()));
    let deltas: Vec<Value> = sqlx::query_scalar(
        "select envelope -> 'data' from scim.outbox where routing_key = 'scim.group.members_changed' order by id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(deltas.len(), 2);
    assert_eq!(deltas[0]["added"].as_array().unwrap().len(), 30);
    let mut removed: Vec<&str> = deltas[1]["removed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    removed.sort();
    let mut expected = vec![users[0].as_str(), users[1].as_str(), users[2].as_str()];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(deltas[1]["added"], json!([]));
}

#[tokio::test]
async fn unknown_members_are_refused_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let group = scim.create_group("G").await;
    let user = scim.create_user("real@contoso.com").await;
    let resp = scim
        .patch(
            &format!("/Groups/{group}"),
            &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": user}, {"value": "f648f8d5ea4e4cd38e9c"}]}])),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.body["scimType"], "invalidValue");
    assert!(resp.body["detail"].as_str().unwrap().contains("f648f8d5ea4e4cd38e9c"));
    // A well-formed id of nobody: the existing member is added in the same statement that
    // finds the other missing, and must be taken back.
    let nobody = uuid::Uuid::now_v7().to_string();
    let resp = scim
        .patch(
            &format!("/Groups/{group}"),
            &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": user}, {"value": nobody}]}])),
        )
        .await;
    assert_eq!(resp.status, 400, "{}", resp.text);
    assert!(resp.body["detail"].as_str().unwrap().contains(&nobody), "{}", resp.text);
    let got = scim.get(&format!("/Groups/{group}")).await;
    assert!(got.body.get("members").is_none(), "the valid member was not added either: {}", got.text);
    assert_eq!(got.header("etag"), Some("W/\"1\""));
    assert_eq!(event_versions(&app, &group).await, [1], "only the group's creation");
}

#[tokio::test]
async fn deleting_a_user_removes_its_memberships() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let group = scim.create_group("G").await;
    let user = scim.create_user("leaver@contoso.com").await;
    scim.patch(
        &format!("/Groups/{group}"),
        &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": user}]}])),
    )
    .await;
    assert_eq!(scim.delete(&format!("/Users/{user}")).await.status, 204);
    let got = scim.get(&format!("/Groups/{group}")).await;
    assert!(got.body.get("members").is_none(), "{}", got.text);
    let last: (String, Value) = sqlx::query_as(
        "select routing_key, envelope -> 'data' from scim.outbox where routing_key like 'scim.group.%' order by id desc limit 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(last.0, "scim.group.members_changed");
    assert_eq!(last.1["removed"], json!([user]));
}

#[tokio::test]
async fn group_display_names_are_unique_and_groups_nest() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let parent = scim.create_group("Parent").await;
    let dup = scim
        .post("/Groups", &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "PARENT"}))
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["scimType"], "uniqueness");
    let child = scim.create_group("Child").await;
    let nest = scim
        .patch(
            &format!("/Groups/{parent}"),
            &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": child, "type": "Group"}]}])),
        )
        .await;
    assert_eq!(nest.status, 204);
    assert_eq!(scim.get(&format!("/Groups/{parent}")).await.body["members"][0]["type"], "Group");
    let itself = scim
        .patch(
            &format!("/Groups/{parent}"),
            &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": parent}]}])),
        )
        .await;
    assert_eq!(itself.status, 400);
}

#[tokio::test]
async fn create_with_members_and_put_replaces_them() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let a = scim.create_user("a@contoso.com").await;
    let b = scim.create_user("b@contoso.com").await;
    let created = scim
        .post("/Groups", &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Team", "members": [{"value": a}]}))
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.body["members"][0]["value"], a.as_str());
    let id = created.body["id"].as_str().unwrap();
    let put = scim
        .put(&format!("/Groups/{id}"), &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Team", "members": [{"value": b}]}))
        .await;
    assert_eq!(put.status, 200);
    let members: Vec<&str> =
        put.body["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap()).collect();
    assert_eq!(members, [b.as_str()]);
    let by_user = scim.list("Users", &format!("groups.value eq \"{id}\"")).await;
    assert_eq!(by_user.body["Resources"][0]["id"], b.as_str());
    // A listed user carries its groups, read along in the list's own query.
    let groups = &by_user.body["Resources"][0]["groups"];
    assert_eq!(groups.as_array().map(Vec::len), Some(1), "{groups}");
    assert_eq!(groups[0]["value"], id);
    assert_eq!(groups[0]["display"], "Team");
    assert!(groups[0]["$ref"].as_str().unwrap().ends_with(&format!("/Groups/{id}")));
    let no_groups = scim.list("Users", &format!("id eq \"{a}\"")).await;
    assert_eq!(no_groups.body["totalResults"], 1, "{}", no_groups.text);
    assert!(no_groups.body["Resources"][0].get("groups").is_none(), "{}", no_groups.text);
}
