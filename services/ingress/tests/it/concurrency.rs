//! Races Entra ID (or two of its workers) can cause.

use futures_util::future::join_all;
use muster_testkit::TestApp;
use muster_testkit::scim::{patch_body, user_body};
use serde_json::{Value, json};

use super::event_versions;

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
    let users = scim.create_users("u", 80).await;
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

/// Entra's membership PATCHes of one group arrive together. They write their members side by
/// side and take the group's row only for the version, so each event's delta must still be
/// what its version changed: replayed in version order, the deltas give the final members.
#[tokio::test]
async fn parallel_adds_and_removes_of_one_group_leave_events_that_replay_to_its_members() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let group = scim.create_group("Everyone").await;
    let users = scim.create_users("u", 40).await;
    // The first half joins, then 24 PATCHes at once: the second half joins in fours, and each
    // of the first half is removed, some twice, some re-added.
    let path = format!("/Groups/{group}");
    let add = |ids: &[String]| {
        let value: Vec<Value> = ids.iter().map(|u| json!({"value": u})).collect();
        patch_body(json!([{"op": "Add", "path": "members", "value": value}]))
    };
    let remove = |id: &str| patch_body(json!([{"op": "Remove", "path": format!("members[value eq \"{id}\"]")}]));
    assert_eq!(scim.patch(&path, &add(&users[..20])).await.status, 204);
    let mut bodies: Vec<Value> = users[20..].chunks(4).map(add).collect();
    bodies.extend(users[..12].iter().map(|u| remove(u)));
    bodies.extend(users[..4].iter().map(|u| remove(u)));
    bodies.push(add(&users[..2]));
    bodies.push(add(&users[30..32]));
    let statuses = join_all(bodies.iter().map(|body| {
        let (scim, path) = (scim.clone(), path.clone());
        async move { scim.patch(&path, body).await.status }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 204), "{statuses:?}");

    let got = scim.get(&path).await;
    let members: std::collections::BTreeSet<String> =
        got.body["members"].as_array().unwrap().iter().map(|m| m["value"].as_str().unwrap().to_string()).collect();
    let events: Vec<(i64, Value)> = sqlx::query_as(
        "select version, envelope from scim.outbox where entity_id = $1 and routing_key = 'scim.group.members_changed' order by version",
    )
    .bind(&group)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let versions: Vec<i64> = events.iter().map(|(v, _)| *v).collect();
    let last = *versions.last().unwrap();
    assert_eq!(versions, (2..=last).collect::<Vec<_>>(), "one members_changed event per version after the creation");
    assert_eq!(got.header("etag"), Some(format!("W/\"{last}\"").as_str()));
    let mut replayed = std::collections::BTreeSet::new();
    for (version, envelope) in &events {
        let delta = &envelope["data"];
        for id in delta["removed"].as_array().unwrap() {
            assert!(replayed.remove(id.as_str().unwrap()), "version {version} removes a non-member: {delta}");
        }
        for id in delta["added"].as_array().unwrap() {
            assert!(replayed.insert(id.as_str().unwrap().to_string()), "version {version} adds a member: {delta}");
        }
    }
    assert_eq!(replayed, members, "the events replayed in version order give the group's members");
    // The first two were removed and re-added at once: either order is right.
    assert!(users[12..].iter().all(|u| members.contains(u)), "{members:?}");
    assert!(users[2..12].iter().all(|u| !members.contains(u)), "{members:?}");
}

#[tokio::test]
async fn parallel_patches_of_one_user_each_land_once_with_their_own_version() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let id = scim.create_user("busy@contoso.com").await;
    // Each PATCH changes a different attribute: a write computed from a stale document would
    // put an earlier value back, and an event without its own version would repeat one.
    let attributes = ["title", "displayName", "nickName", "userType", "preferredLanguage", "locale", "timezone"];
    let mut patches = Vec::new();
    for round in 0..2 {
        for attribute in attributes {
            let (scim, path) = (scim.clone(), format!("/Users/{id}"));
            let value = format!("{attribute}-{round}");
            patches.push(async move {
                let ops = json!([{"op": "Replace", "path": attribute, "value": value}]);
                scim.patch(&path, &patch_body(ops)).await
            });
        }
    }
    let answers = join_all(patches).await;
    assert!(answers.iter().all(|a| a.status == 200), "{:?}", answers.iter().map(|a| &a.text).collect::<Vec<_>>());
    let mut etags: Vec<&str> = answers.iter().filter_map(|a| a.header("etag")).collect();
    etags.sort_unstable();
    etags.dedup();
    assert_eq!(etags.len(), 14, "every PATCH answered with a version of its own: {etags:?}");

    let user = scim.get(&format!("/Users/{id}")).await;
    assert_eq!(user.header("etag"), Some("W/\"15\""), "one version per PATCH, none lost");
    for attribute in attributes {
        let value = user.body[attribute].as_str().unwrap_or_default();
        assert!(value.starts_with(attribute), "{attribute} lost: {}", user.text);
    }
    assert_eq!(event_versions(&app, &id).await, (1..=15).collect::<Vec<i64>>(), "one event per version, in order");
}

#[tokio::test]
async fn parallel_creates_share_statements_and_each_gets_its_own_user_and_event() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let names: Vec<String> = (0..48).map(|i| format!("crowd{i}@contoso.com")).collect();
    let answers = join_all(names.iter().map(|name| {
        let scim = scim.clone();
        async move { scim.post("/Users", &user_body(name)).await }
    }))
    .await;
    for (name, answer) in names.iter().zip(&answers) {
        assert_eq!(answer.status, 201, "{}", answer.text);
        assert_eq!(answer.body["userName"], name.as_str(), "an answer carries its own user");
        let id = answer.body["id"].as_str().unwrap();
        assert_eq!(scim.get(&format!("/Users/{id}")).await.body["userName"], name.as_str());
        assert_eq!(event_versions(&app, id).await, [1], "one event per user, its own");
    }
    let events: i64 = sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(events, 48);

    let (single, batches) = batches_of(&app, "user_inserts").await;
    assert!(single < batches, "some creations shared a statement: {single} of {batches} batches held one");
}

#[tokio::test]
async fn parallel_lookups_by_user_name_share_statements_and_each_gets_its_own_answer() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let ids = scim.create_users("seek", 24).await;
    let group = scim.create_group("Seekers").await;
    let members: Vec<Value> = ids.iter().step_by(2).map(|id| json!({"value": id})).collect();
    let added = scim
        .patch(&format!("/Groups/{group}"), &patch_body(json!([{"op": "add", "path": "members", "value": members}])))
        .await;
    assert_eq!(added.status, 204, "{}", added.text);

    // Every stored user, asked for in another case, and as many names nobody has.
    let asked: Vec<(String, Option<usize>)> = (0..24)
        .map(|n| (format!("SEEK{n}@Contoso.com"), Some(n)))
        .chain((0..24).map(|n| (format!("nobody{n}@contoso.com"), None)))
        .collect();
    let answers = join_all(asked.iter().map(|(name, _)| {
        let scim = scim.clone();
        async move { scim.list("Users", &format!("userName eq \"{name}\"")).await }
    }))
    .await;
    for ((name, user), answer) in asked.iter().zip(&answers) {
        assert_eq!(answer.status, 200, "{name}: {}", answer.text);
        match user {
            Some(n) => {
                assert_eq!(answer.body["totalResults"], 1, "{name}: {}", answer.text);
                let found = &answer.body["Resources"][0];
                assert_eq!(found["id"], ids[*n].as_str(), "{name} answered with its own user");
                assert_eq!(found["userName"], format!("seek{n}@contoso.com"));
                let groups = found["groups"].as_array().map_or(0, Vec::len);
                assert_eq!(groups, usize::from(n % 2 == 0), "{name}'s groups: {found}");
            }
            None => {
                assert_eq!(answer.body["totalResults"], 0, "{name}: {}", answer.text);
                assert_eq!(answer.body["Resources"], json!([]));
            }
        }
    }
    let (single, batches) = batches_of(&app, "user_lookups").await;
    assert!(single < batches, "some lookups shared a statement: {single} of {batches} batches held one");
}

#[tokio::test]
async fn a_create_the_database_refuses_fails_alone() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let mut bodies: Vec<Value> = (0..24).map(|i| user_body(&format!("fine{i}@contoso.com"))).collect();
    // Valid JSON, but PostgreSQL stores no U+0000: the statement it shares with the others fails.
    bodies[12]["displayName"] = json!("nul\u{0}here");
    let answers = join_all(bodies.iter().map(|body| {
        let scim = scim.clone();
        async move { scim.post("/Users", body).await }
    }))
    .await;
    for (i, answer) in answers.iter().enumerate() {
        if i == 12 {
            assert_eq!(answer.status, 400, "{}", answer.text);
            assert_eq!(answer.body["scimType"], "invalidValue");
        } else {
            assert_eq!(answer.status, 201, "{}", answer.text);
        }
    }
    assert_eq!(scim.get("/Users").await.body["totalResults"], 23);
    let events: i64 = sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(events, 23, "no event for the refused user");
}

#[tokio::test]
async fn parallel_patches_of_many_users_share_statements_and_a_refused_one_fails_alone() {
    let app = TestApp::spawn().await;
    let scim = app.scim();
    let mut ids = Vec::new();
    for i in 0..32 {
        ids.push(scim.create_user(&format!("many{i}@contoso.com")).await);
    }
    let answers = join_all(ids.iter().enumerate().map(|(i, id)| {
        let (scim, path) = (scim.clone(), format!("/Users/{id}"));
        // One renames itself to a name another holds: its statement's batch fails as a whole.
        let ops = if i == 7 {
            json!([{"op": "Replace", "path": "userName", "value": "MANY3@contoso.com"}])
        } else {
            json!([{"op": "Replace", "path": "title", "value": format!("title {i}")}])
        };
        async move { scim.patch(&path, &patch_body(ops)).await }
    }))
    .await;
    for (i, (id, answer)) in ids.iter().zip(&answers).enumerate() {
        if i == 7 {
            assert_eq!(answer.status, 409, "{}", answer.text);
            assert_eq!(answer.body["scimType"], "uniqueness");
            assert_eq!(event_versions(&app, id).await, [1], "nothing written for the refused PATCH");
            continue;
        }
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.body["id"], id.as_str(), "an answer carries its own user");
        assert_eq!(answer.body["title"], format!("title {i}"));
        assert_eq!(answer.header("etag"), Some("W/\"2\""));
        let stored = scim.get(&format!("/Users/{id}")).await;
        assert_eq!(stored.body["title"], format!("title {i}"));
        assert_eq!(event_versions(&app, id).await, [1, 2]);
    }
    let (single, batches) = batches_of(&app, "user_updates").await;
    assert!(single < batches, "some PATCHes shared a statement: {single} of {batches} batches held one");
    let (single, batches) = batches_of(&app, "user_reads").await;
    assert!(single < batches, "some reads before a write shared a statement: {single} of {batches} batches held one");
}

/// From the ingress's metrics: how many of `batch`'s statements wrote a single user, and how
/// many statements there were.
async fn batches_of(app: &TestApp, batch: &str) -> (f64, f64) {
    let metrics = app.http.get(format!("{}/metrics", app.base_url())).send().await.unwrap().text().await.unwrap();
    let sample = |series: String| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&series)).unwrap_or_else(|| panic!("{series}: {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    (
        sample(format!("write_batch_size_bucket{{batch=\"{batch}\",le=\"1\"}}")),
        sample(format!("write_batch_size_count{{batch=\"{batch}\"}}")),
    )
}
