//! Entra groups and admin assignments become each member's seats, permissions and data
//! capture: SCIM → ingress → relay → normalizer / hierarchy / assignments workers, all real.

use muster_domain::assignment::allocate;
use muster_testkit::eventually;
use muster_testkit::scim::{Scim, patch_body};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::system::{System, WAIT};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

async fn user(scim: &Scim, name: &str) -> String {
    scim.create_user(&format!("{name}@contoso.com")).await
}

async fn add(scim: &Scim, group: &str, members: &[&str]) {
    let value: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    let body = patch_body(json!([{"op": "Add", "path": "members", "value": value}]));
    assert_eq!(scim.patch(&format!("/Groups/{group}"), &body).await.status, 204);
}

async fn remove(scim: &Scim, group: &str, member: &str) {
    let body = patch_body(json!([{"op": "Remove", "path": format!("members[value eq \"{member}\"]")}]));
    assert_eq!(scim.patch(&format!("/Groups/{group}"), &body).await.status, 204);
}

/// Creates an assignment; returns its id.
async fn assignment(sys: &System, body: Value) -> String {
    let (status, created) = sys.admin_send(Method::POST, "/assignments", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

/// The member's assignment once `check` holds for it.
async fn assignment_of(sys: &System, member: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(WAIT, &format!("{member}: {what}"), || async {
        let view = sys.admin_try_get(&format!("/members/{member}")).await?;
        let assignment = view["assignment"].clone();
        check(&assignment).then_some(assignment)
    })
    .await
}

fn named(name: &'static str) -> impl Fn(&Value) -> bool {
    move |a: &Value| a["name"] == name
}

#[tokio::test]
async fn groups_and_assignments_in_order_give_each_member_settings_and_seats_within_capacity() {
    let sys = System::start().await;
    let scim = sys.app.scim();
    let catalog = json!({
        "seat_types": [{"key": "recorder", "name": "Recorder", "capacity": 2}],
        "capture_kinds": [{"key": "web_conferences", "name": "Web conferences", "requires_seat": "recorder"},
                          {"key": "telephony", "name": "Telephony", "requires_seat": "recorder"},
                          {"key": "email", "name": "E-mail"}],
        "workspaces": [{"key": "deals", "name": "Deals", "profiles": [{"key": "rep", "name": "Rep"},
                                                                      {"key": "lead", "name": "Lead"}]}]
    });
    assert_eq!(sys.admin_send(Method::PUT, "/catalog", catalog.clone()).await.0, 200);
    let (ann, bob, cy, dee, eve) = (
        user(&scim, "ann").await,
        user(&scim, "bob").await,
        user(&scim, "cy").await,
        user(&scim, "dee").await,
        user(&scim, "eve").await,
    );
    let (sales, support) = (scim.create_group("Sales").await, scim.create_group("Support").await);
    let sales_assignment = assignment(
        &sys,
        json!({
        "name": "Sales", "mode": "automatic", "groups": [sales], "seats": ["recorder"],
        "capture": {"web_conferences": true, "email": true}, "permissions": {"deals": "rep"}}),
    )
    .await;
    let support_assignment = assignment(
        &sys,
        json!({
        "name": "Support", "mode": "manual", "groups": [support], "capture": {"email": true},
        "permissions": {"deals": "lead"}}),
    )
    .await;
    add(&scim, &sales, &[&ann, &bob]).await;
    add(&scim, &support, &[&bob, &dee]).await;
    for m in [&ann, &bob] {
        assignment_of(&sys, m, "a recorder seat", |a| a["settings"]["seats"] == json!(["recorder"])).await;
    }
    add(&scim, &sales, &[&cy]).await;

    // Bob is in both groups: the first assignment in order wins.
    let b = assignment_of(&sys, &bob, "Sales", named("Sales")).await;
    assert_eq!(b["via_group"]["display_name"], "Sales");
    let d = assignment_of(&sys, &dee, "Support", named("Support")).await;
    assert_eq!(d["settings"], json!({"seats": [], "capture": {"email": true}, "permissions": {"deals": "lead"}}));
    assert_eq!(d["mode"], "manual");
    let e = assignment_of(&sys, &eve, "Default", named("Default")).await;
    assert_eq!(e["settings"], json!({"seats": [], "capture": {}, "permissions": {}}), "the default gives nothing");
    assert!(e["via_group"].is_null());

    // Three members want a recorder seat and two were bought: two are granted, in request
    // order (the domain's `allocate` decides the same), the third waits with its place.
    let sales_members = [ann.clone(), bob.clone(), cy.clone()];
    for m in &sales_members {
        assignment_of(&sys, m, "Sales", named("Sales")).await;
    }
    let requests: Vec<(Uuid, i64)> =
        sqlx::query_as("select scim_user_id, id from assignments.seat_requests where seat = 'recorder'")
            .fetch_all(&sys.app.db.pool)
            .await
            .unwrap();
    let (granted, waiting) = allocate(Some(2), &requests);
    assert_eq!((granted.len(), waiting.len()), (2, 1));
    let waiter = waiting[0].0.to_string();
    assert_eq!(waiter, cy, "the last to ask waits");
    for m in &sales_members {
        let a = sys.admin_get(&format!("/members/{m}")).await["assignment"].clone();
        if *m == waiter {
            assert_eq!(a["settings"]["seats"], json!([]));
            assert_eq!(a["settings"]["capture"], json!({"web_conferences": false, "email": true}), "kept off");
            assert_eq!(a["pending_seats"], json!([{"setting": "capture:web_conferences", "seat": "recorder"}]));
            assert_eq!(a["waiting_for_seats"], json!([{"seat": "recorder", "place_in_line": 1}]));
        } else {
            assert_eq!(a["settings"]["seats"], json!(["recorder"]));
            assert_eq!(a["settings"]["capture"], json!({"web_conferences": true, "email": true}));
            assert_eq!(a["pending_seats"], json!([]));
        }
    }
    let used: i64 = sqlx::query_scalar("select count(*) from assignments.seat_requests where granted")
        .fetch_one(&sys.app.db.pool)
        .await
        .unwrap();
    assert_eq!(used, 2, "capacity is never exceeded");

    // A dry run of deleting "Sales": who would change, and nothing changes.
    let (status, preview) =
        sys.admin_send(Method::POST, "/assignments/preview", json!({"delete": {"id": sales_assignment}})).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["members_changing"], 3, "{preview}");
    let moved_to: Vec<&str> = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["after"]["assignment"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(moved_to.iter().filter(|n| **n == "Support").count(), 1, "bob falls to Support: {moved_to:?}");
    assert_eq!(sys.admin_get(&format!("/assignments/{sales_assignment}")).await["name"], "Sales");
    assert_eq!(sys.admin_get(&format!("/members/{ann}")).await["assignment"]["name"], "Sales");

    // Support first: bob moves to it and releases his seat; the waiting member gets it and
    // their capture goes on.
    let order = json!({"ids": [support_assignment, sales_assignment]});
    assert_eq!(sys.admin_send(Method::PUT, "/assignments/order", order).await.0, 200);
    let b = assignment_of(&sys, &bob, "Support", named("Support")).await;
    assert_eq!(b["settings"]["permissions"], json!({"deals": "lead"}), "applied on landing");
    assert_eq!(b["history"][0]["cause"], "assignment order changed");
    let c = assignment_of(&sys, &cy, "a seat", |a| a["settings"]["seats"] == json!(["recorder"])).await;
    assert_eq!(c["settings"]["capture"]["web_conferences"], true);
    assert_eq!((c["pending_seats"].clone(), c["waiting_for_seats"].clone()), (json!([]), json!([])));
    assert_eq!(c["history"][0]["cause"], "a 'recorder' seat became available");

    // The Support group is deleted in Entra: dee falls back to the default assignment, bob to
    // Sales, where both seats are taken now — he waits first in line.
    assert_eq!(scim.delete(&format!("/Groups/{support}")).await.status, 204);
    let d = assignment_of(&sys, &dee, "Default after the group is gone", named("Default")).await;
    assert_eq!(d["history"][0]["cause"], "group 'Support' deleted");
    let b = assignment_of(&sys, &bob, "Sales again", named("Sales")).await;
    assert_eq!(b["waiting_for_seats"], json!([{"seat": "recorder", "place_in_line": 1}]));
    assert_eq!(b["settings"]["capture"]["web_conferences"], false);

    // One seat fewer: the last granted in line (cy) waits again, ahead of bob; then enough
    // seats for the whole line.
    let with_capacity = |n: i64| {
        let mut c = catalog.clone();
        c["seat_types"][0]["capacity"] = json!(n);
        c
    };
    assert_eq!(sys.admin_send(Method::PUT, "/catalog", with_capacity(1)).await.0, 200);
    let c = assignment_of(&sys, &cy, "waiting after the reduction", |a| a["settings"]["seats"] == json!([])).await;
    assert_eq!(c["history"][0]["cause"], "the 'recorder' seats were reduced");
    assert_eq!(c["waiting_for_seats"], json!([{"seat": "recorder", "place_in_line": 1}]));
    assert_eq!(c["settings"]["capture"]["web_conferences"], false);
    let b = sys.admin_get(&format!("/members/{bob}")).await["assignment"].clone();
    assert_eq!(b["waiting_for_seats"], json!([{"seat": "recorder", "place_in_line": 2}]));
    assert_eq!(sys.admin_get(&format!("/members/{ann}")).await["assignment"]["settings"]["seats"], json!(["recorder"]));
    assert_eq!(sys.admin_send(Method::PUT, "/catalog", with_capacity(3)).await.0, 200);
    for m in [&cy, &bob] {
        let a = assignment_of(&sys, m, "granted", |a| a["settings"]["seats"] == json!(["recorder"])).await;
        assert_eq!(a["history"][0]["cause"], "a 'recorder' seat became available");
    }
    let used: i64 = sqlx::query_scalar("select count(*) from assignments.seat_requests where granted")
        .fetch_one(&sys.app.db.pool)
        .await
        .unwrap();
    assert_eq!(used, 3);
    sys.stop().await;
}

#[tokio::test]
async fn a_member_moved_between_groups_keeps_manual_edits_and_follows_automatic_ones() {
    let mut sys = System::start().await;
    let scim = sys.app.scim();
    let ann = user(&scim, "ann").await;
    assignment_of(&sys, &ann, "Default", named("Default")).await;
    let (manual_group, automatic_group) = (scim.create_group("Recorded").await, scim.create_group("Phones").await);
    let manual = assignment(
        &sys,
        json!({"name": "Recorded", "mode": "manual", "groups": [manual_group],
                                         "capture": {"email": true}}),
    )
    .await;
    let automatic = assignment(
        &sys,
        json!({"name": "Phones", "mode": "automatic", "groups": [automatic_group],
                                            "capture": {"telephony": true}}),
    )
    .await;
    add(&scim, &manual_group, &[&ann]).await;
    let a = assignment_of(&sys, &ann, "Recorded", named("Recorded")).await;
    assert_eq!(a["settings"]["capture"], json!({"email": true}));
    // Whichever of the two events the worker handled after both writes had landed.
    let cause = a["history"][0]["cause"].as_str().unwrap();
    assert!(["added to group 'Recorded'", "assignment 'Recorded' created"].contains(&cause), "{cause}");

    // Manual: an admin edits the member; a later edit of the assignment does not overwrite it.
    let member = format!("/members/{ann}");
    let path = format!("{member}/assignment");
    let (status, edited) = sys.admin_send(Method::PATCH, &path, json!({"capture": {"email": false}})).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["assignment"]["settings"]["capture"], json!({"email": false}));
    assert_eq!(edited["assignment"]["history"][0]["cause"], "edited by an admin");
    let (status, problem) = sys.admin_send(Method::PATCH, &path, json!({"capture": {"fax": true}})).await;
    assert_eq!((status, problem["type"].as_str()), (422, Some("https://muster.example/problems/invalid-assignment")));
    // Renamed too, so that the recomputation leaves a trace in the member's history.
    let changed = json!({"name": "Recorded v2", "mode": "manual", "groups": [manual_group],
                         "capture": {"email": true, "telephony": true}});
    assert_eq!(sys.admin_send(Method::PUT, &format!("/assignments/{manual}"), changed).await.0, 200);
    let a = assignment_of(&sys, &ann, "Recorded v2", named("Recorded v2")).await;
    assert_eq!(a["history"][0]["cause"], "assignment 'Recorded v2' edited");
    assert_eq!(a["settings"]["capture"], json!({"email": false}), "a manual member keeps their settings");
    let bob = user(&scim, "bob").await;
    add(&scim, &manual_group, &[&bob]).await;
    let b = assignment_of(&sys, &bob, "Recorded v2", named("Recorded v2")).await;
    assert_eq!(b["settings"]["capture"], json!({"email": true, "telephony": true}), "new members get the new settings");

    // Moved to an automatic assignment: its settings apply and edits are refused.
    remove(&scim, &manual_group, &ann).await;
    add(&scim, &automatic_group, &[&ann]).await;
    let a = assignment_of(&sys, &ann, "Phones", named("Phones")).await;
    assert_eq!(a["settings"]["capture"], json!({"telephony": true}));
    let (status, problem) = sys.admin_send(Method::PATCH, &path, json!({"capture": {"telephony": false}})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "https://muster.example/problems/assignment-governed");
    assert!(problem["detail"].as_str().unwrap().contains("'Phones'"), "{problem}");
    // Automatic: an edit of the assignment reaches its members.
    let changed = json!({"name": "Phones", "mode": "automatic", "groups": [automatic_group],
                         "capture": {"telephony": false, "email": true}});
    assert_eq!(sys.admin_send(Method::PUT, &format!("/assignments/{automatic}"), changed).await.0, 200);
    let a = assignment_of(&sys, &ann, "the edited Phones", |a| a["settings"]["capture"]["email"] == true).await;
    // The edit reached her, whichever of the queued events recomputed her last.
    let causes: Vec<&str> = a["history"].as_array().unwrap().iter().filter_map(|h| h["cause"].as_str()).collect();
    assert!(causes.contains(&"assignment 'Phones' edited") || causes[0].contains("group"), "{causes:?}");

    // Back to the manual assignment: landing again applies its current settings.
    remove(&scim, &automatic_group, &ann).await;
    add(&scim, &manual_group, &[&ann]).await;
    let a = assignment_of(&sys, &ann, "Recorded again", named("Recorded v2")).await;
    assert_eq!(a["settings"]["capture"], json!({"email": true, "telephony": true}));

    // Deactivation turns everything off; reactivation restores what the member held.
    let off = patch_body(json!([{"op": "Replace", "path": "active", "value": false}]));
    assert_eq!(scim.patch(&format!("/Users/{ann}"), &off).await.status, 200);
    let a = assignment_of(&sys, &ann, "deactivated", |a| a["active"] == false).await;
    assert_eq!(a["settings"]["capture"], json!({}));
    let on = patch_body(json!([{"op": "Replace", "path": "active", "value": true}]));
    assert_eq!(scim.patch(&format!("/Users/{ann}"), &on).await.status, 200);
    let a = assignment_of(&sys, &ann, "reactivated", |a| a["active"] == true).await;
    assert_eq!(a["settings"]["capture"], json!({"email": true, "telephony": true}));
    // One `member.assignment_applied` per change, versioned like the member's assignment.
    let last = a["version"].as_i64().unwrap();
    let versions: Vec<i64> = sys
        .collect("member.assignment_applied", |seen| {
            seen.iter().any(|e| e["entity_id"] == ann.as_str() && e["version"] == last)
        })
        .await
        .iter()
        .filter(|e| e["entity_id"] == ann.as_str())
        .filter_map(|e| e["version"].as_i64())
        .collect();
    assert_eq!(versions, (1..=last).collect::<Vec<_>>());
    assert_eq!(a["history"].as_array().unwrap().len(), versions.len());
    sys.stop().await;
}

#[tokio::test]
async fn a_manager_may_toggle_a_direct_reports_capture_only_when_allowed() {
    let sys = System::start().await;
    let scim = sys.app.scim();
    let (boss, other, rep) = (user(&scim, "boss").await, user(&scim, "other").await, user(&scim, "rep").await);
    let set_manager = patch_body(json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": boss}]));
    assert_eq!(scim.patch(&format!("/Users/{rep}"), &set_manager).await.status, 200);
    let team = scim.create_group("Team").await;
    let id = assignment(
        &sys,
        json!({"name": "Team", "mode": "manual", "groups": [team],
                                     "capture": {"web_conferences": false}}),
    )
    .await;
    add(&scim, &team, &[&rep]).await;
    assignment_of(&sys, &rep, "Team", named("Team")).await;
    eventually(WAIT, "rep placed under boss", || async {
        let view = sys.admin_try_get(&format!("/members/{rep}")).await?;
        (view["manager_id"] == boss.as_str()).then_some(())
    })
    .await;

    let toggle = |manager: &str| format!("/members/{manager}/reports/{rep}/capture");
    let on = json!({"capture": {"web_conferences": true}});
    let (status, problem) = sys.admin_send(Method::PATCH, &toggle(&boss), on.clone()).await;
    assert_eq!((status, problem["type"].as_str()), (403, Some("https://muster.example/problems/not-permitted")));
    assert!(problem["detail"].as_str().unwrap().contains("does not let managers"), "{problem}");

    assert_eq!(sys.admin_send(Method::PUT, "/settings", json!({"managers_toggle_data_capture": true})).await.0, 200);
    let (status, problem) = sys.admin_send(Method::PATCH, &toggle(&other), on.clone()).await;
    assert_eq!((status, problem["type"].as_str()), (403, Some("https://muster.example/problems/not-permitted")));
    assert!(problem["detail"].as_str().unwrap().contains("direct manager"), "{problem}");
    let (status, view) = sys.admin_send(Method::PATCH, &toggle(&boss), on.clone()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["assignment"]["settings"]["capture"], json!({"web_conferences": true}));
    assert!(view["assignment"]["history"][0]["cause"].as_str().unwrap().contains("their manager"));

    // Under automatic updates Entra governs: refused, naming the assignment.
    let automatic =
        json!({"name": "Team", "mode": "automatic", "groups": [team], "capture": {"web_conferences": false}});
    assert_eq!(sys.admin_send(Method::PUT, &format!("/assignments/{id}"), automatic).await.0, 200);
    assignment_of(&sys, &rep, "automatic", |a| a["mode"] == "automatic").await;
    let (status, problem) = sys.admin_send(Method::PATCH, &toggle(&boss), on).await;
    assert_eq!((status, problem["type"].as_str()), (409, Some("https://muster.example/problems/assignment-governed")));
    sys.stop().await;
}

/// Waiting seat requests are granted through their partial index even on a young table (no
/// statistics), where the primary key with `not granted` as a filter looked as cheap and read
/// every request of the seat.
#[tokio::test]
async fn waiting_seat_requests_are_granted_through_their_index_on_a_young_table() {
    let db = muster_testkit::db::TestDb::create().await;
    let explain = muster_members::assignments::GRANT_WAITING
        .replace("$1", &format!("'{}'", Uuid::now_v7()))
        .replace("$2", "'{recorder}'");
    let plan: Value =
        sqlx::query_scalar(&format!("explain (format json) {explain}")).fetch_one(&db.pool).await.unwrap();
    assert!(plan.to_string().contains("\"Index Name\":\"seat_requests_waiting\""), "{plan}");
}

/// The members an assignment change affects are paged through each group's index: a page
/// reads about a page of memberships, not every membership after it.
#[tokio::test]
async fn a_page_of_affected_members_is_read_through_the_groups_index_in_id_order() {
    let db = muster_testkit::db::TestDb::create().await;
    let tenant = db.create_tenant("Contoso", "contoso.com").await.id;
    let group = Uuid::now_v7();
    sqlx::query("insert into scim.groups (tenant_id, id, display_name, resource) values ($1, $2, 'Everyone', '{}')")
        .bind(tenant)
        .bind(group)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "insert into scim.group_members (tenant_id, group_id, member_id, member_type)
         select $1, $2, gen_random_uuid(), case when n % 100 = 0 then 'Group' else 'User' end
         from generate_series(1, 3000) as n",
    )
    .bind(tenant)
    .bind(group)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("analyze scim.group_members").execute(&db.pool).await.unwrap();
    let users: Vec<Uuid> =
        sqlx::query_scalar("select member_id from scim.group_members where member_type = 'User' order by member_id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let page = |after: Uuid| {
        sqlx::query_scalar::<_, Uuid>(muster_members::assignments::AFFECTED_PAGE)
            .bind(tenant)
            .bind(vec![Uuid::now_v7()])
            .bind(vec![group])
            .bind(after)
            .bind(500_i64)
            .fetch_all(&db.pool)
    };
    assert_eq!(page(Uuid::nil()).await.unwrap(), users[..500]);
    assert_eq!(page(users[499]).await.unwrap(), users[500..1000]);
    assert_eq!(page(users[2900]).await.unwrap(), users[2901..]);

    let explain = muster_members::assignments::AFFECTED_PAGE
        .replace("$1", &format!("'{tenant}'"))
        .replace("$2", &format!("'{{{}}}'", Uuid::now_v7()))
        .replace("$3", &format!("'{{{group}}}'"))
        .replace("$4", &format!("'{}'", users[499]))
        .replace("$5", "500");
    let plan: Value =
        sqlx::query_scalar(&format!("explain (format json) {explain}")).fetch_one(&db.pool).await.unwrap();
    assert!(!plan.to_string().contains("Seq Scan"), "{plan}");
}
