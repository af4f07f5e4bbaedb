//! Tenants never see or touch each other's resources: 404, never 403.

use muster_testkit::TestApp;
use muster_testkit::scim::{patch_body, user_body};
use serde_json::json;

#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_resources() {
    let app = TestApp::spawn().await;
    let other = app.db.create_tenant("Fabrikam", "fabrikam.com").await;
    let a = app.scim();
    let b = app.scim_as(&other.scim_token);
    let user = a.create_user("shared@contoso.com").await;
    let group = a.create_group("Shared").await;

    for (path, what) in [(format!("/Users/{user}"), "user"), (format!("/Groups/{group}"), "group")] {
        assert_eq!(b.get(&path).await.status, 404, "GET {what}");
        assert_eq!(
            b.patch(&path, &patch_body(json!([{"op": "replace", "path": "displayName", "value": "x"}]))).await.status,
            404,
            "PATCH {what}"
        );
        assert_eq!(b.delete(&path).await.status, 404, "DELETE {what}");
    }
    assert_eq!(b.put(&format!("/Users/{user}"), &user_body("shared@contoso.com")).await.status, 404);
    assert_eq!(b.list("Users", "userName eq \"shared@contoso.com\"").await.body["totalResults"], 0);
    assert_eq!(b.get("/Groups").await.body["totalResults"], 0);

    // Tenant B cannot add A's user to its own group either.
    let b_group = b.create_group("B's group").await;
    let steal = b
        .patch(
            &format!("/Groups/{b_group}"),
            &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": user}]}])),
        )
        .await;
    assert_eq!(steal.status, 400);

    // The same userName is free in another tenant.
    assert_eq!(b.post("/Users", &user_body("shared@contoso.com")).await.status, 201);
    // A's resources are untouched.
    assert_eq!(a.get(&format!("/Users/{user}")).await.status, 200);
    assert_eq!(a.get(&format!("/Groups/{group}")).await.status, 200);
}
