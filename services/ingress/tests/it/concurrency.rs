//! Races Entra ID (or two of its workers) can cause.

use futures_util::future::join_all;
use muster_testkit::TestApp;
use muster_testkit::scim::{patch_body, user_body};
use serde_json::{Value, json};

#[tokio::test]
async fn parallel_creates_of_one_user_name_make_one_user_and_409s() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let attempts = (0..16).map(|i| {
        let scim = scim.clone();
        // Differently cased: uniqueness is case-insensitive.
        let name = if i % 2 == 0 { "race@contoso.com" } else { "RACE@contoso.com" };
        async move { scim.post("/Users", &user_body(name)).await }
    });
    let results = join_all(attempts).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let conflicts = results.iter().filter(|r| r.status == 409 && r.body["scimType"] == "uniqueness").count();
    assert_eq!((created, conflicts), (1, 15), "{:?}", results.iter().map(|r| r.status).collect::<Vec<_>>());
    assert_eq!(scim.get("/Users").await.body["totalResults"], 1);
}

#[tokio::test]
async fn parallel_membership_patches_to_one_group_all_land() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let group = scim.create_group("Everyone").await;
    let mut users = Vec::new();
    for i in 0..80 {
        users.push(scim.create_user(&format!("u{i}@contoso.com")).await);
    }
    let patches =
        users.chunks(10).map(|chunk| {
            let scim = scim.clone();
            let path = format!("/Groups/{group}");
            let value: Vec<Value> = chunk.iter().map(|u| json!({"value": u})).collect();
            async move {
                scim.patch(&path, &patch_body(json!([{"op": "Add", "path": "members", "value": value}]))).await.status
            }
        });
    let statuses = join_all(patches).await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");
    let got = scim.get(&format!("/Groups/{group}")).await;
    assert_eq!(got.body["members"].as_array().unwrap().len(), 80);
    assert_eq!(got.header("etag"), Some("W/\"9\""), "one version per PATCH, none lost");
}
