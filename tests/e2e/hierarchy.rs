//! The org tree through the real system: SCIM → normalizer → hierarchy → admin API. Whatever
//! order Entra ID sends people and manager references in, the tree comes out the same.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use muster_testkit::eventually;
use muster_testkit::scim::patch_body;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use crate::system::{System, WAIT};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const MUSTER: &str = "urn:ietf:params:scim:schemas:extension:muster:2.0:User";

/// How a member refers to its manager.
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    /// The manager's SCIM id, sent in a later PATCH (as Entra does once both exist).
    Id,
    /// `managerEmail` in the user itself, possibly before the manager exists.
    Email,
    /// `managerFullName`, in another case and without accents.
    Name,
}

struct Person {
    user_name: String,
    given: String,
    family: String,
    manager: Option<usize>,
    by: By,
}

/// A company of `n` people: a binary tree under one root (depth ⌊log2 n⌋), references mostly
/// by id, some by e-mail and some by full name.
fn org(n: usize) -> Vec<Person> {
    (0..n)
        .map(|i| Person {
            user_name: format!("p{i}@contoso.com"),
            given: if i % 9 == 0 { format!("Jösé{i}") } else { format!("Given{i}") },
            family: format!("Family{i}"),
            manager: (i > 0).then(|| (i - 1) / 2),
            by: match i % 10 {
                7 | 8 => By::Email,
                9 => By::Name,
                _ => By::Id,
            },
        })
        .collect()
}

fn user_body(org: &[Person], i: usize) -> Value {
    let p = &org[i];
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, MUSTER],
        "userName": p.user_name,
        "active": true,
        "name": {"givenName": p.given, "familyName": p.family},
        "emails": [{"primary": true, "type": "work", "value": p.user_name}],
        MUSTER: {},
    });
    if let Some(m) = p.manager {
        match p.by {
            By::Id => {}
            By::Email => body[MUSTER]["managerEmail"] = json!(org[m].user_name.to_uppercase()),
            By::Name => {
                let plain = org[m].given.replace('ö', "o").replace('é', "e");
                body[MUSTER]["managerFullName"] = json!(format!("{} {}", plain.to_uppercase(), org[m].family));
            }
        }
    }
    body
}

/// The (member, manager) e-mails the company's tree should have.
fn expected_edges(org: &[Person]) -> BTreeSet<(String, String)> {
    org.iter().filter_map(|p| p.manager.map(|m| (p.user_name.clone(), org[m].user_name.clone()))).collect()
}

/// The (member, manager) e-mails of the tree the admin API shows, and how many members it has.
fn edges_of(tree: &Value) -> (BTreeSet<(String, String)>, usize) {
    let mut edges = BTreeSet::new();
    let mut nodes = 0;
    let mut stack: Vec<&Value> = tree["roots"].as_array().map(|r| r.iter().collect()).unwrap_or_default();
    while let Some(node) = stack.pop() {
        nodes += 1;
        for report in node["reports"].as_array().into_iter().flatten() {
            edges.insert((report["email"].as_str().unwrap().to_string(), node["email"].as_str().unwrap().to_string()));
            stack.push(report);
        }
    }
    (edges, nodes)
}

/// Pushes the company through SCIM: users in `create_order` (`parallel` requests at a time),
/// then the id references in `link_order`; with `duplicate`, every write is sent twice, as
/// Entra does when it re-sends a cycle.
async fn push(
    sys: &System,
    org: &[Person],
    create_order: &[usize],
    link_order: &[usize],
    parallel: usize,
    duplicate: bool,
) {
    let scim = sys.app.scim();
    let times = if duplicate { 2 } else { 1 };
    let created: Vec<(usize, String)> = futures_util::stream::iter(create_order.iter().copied())
        .map(|i| {
            let scim = &scim;
            async move {
                let r = scim.post("/Users", &user_body(org, i)).await;
                assert_eq!(r.status, 201, "{}", r.body);
                let id = r.body["id"].as_str().unwrap().to_string();
                if duplicate {
                    assert_eq!(scim.put(&format!("/Users/{id}"), &user_body(org, i)).await.status, 200);
                }
                (i, id)
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut ids = vec![String::new(); org.len()];
    for (i, id) in created {
        ids[i] = id;
    }
    let links: Vec<(usize, usize)> = link_order
        .iter()
        .filter_map(|&i| org[i].manager.filter(|_| org[i].by == By::Id).map(|m| (i, m)))
        .flat_map(|link| std::iter::repeat_n(link, times))
        .collect();
    let ids = &ids;
    futures_util::stream::iter(links)
        .for_each_concurrent(parallel, |(i, m)| {
            let scim = &scim;
            async move {
                let set = patch_body(json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": ids[m]}]));
                let r = scim.patch(&format!("/Users/{}", ids[i]), &set).await;
                assert!(r.status == 200 || r.status == 204, "{}", r.body);
            }
        })
        .await;
}

/// Pushes the company in the given order and waits for the tree the admin API shows to be the
/// company's, with nobody left pending.
async fn converges(create_order: Vec<usize>, link_order: Vec<usize>, parallel: usize, duplicate: bool) {
    const N: usize = 300;
    let company = org(N);
    let sys = System::start().await;
    push(&sys, &company, &create_order, &link_order, parallel, duplicate).await;
    let expected = expected_edges(&company);
    let tree = eventually(WAIT * 2, "the org tree to be the company's", || async {
        let tree = sys.admin_get("/org-tree").await;
        (edges_of(&tree) == (expected.clone(), N)).then_some(tree)
    })
    .await;
    assert_eq!(tree["roots"].as_array().unwrap().len(), 1, "one root: the CEO");
    assert_eq!(tree["roots"][0]["total_reports"], N - 1);
    let unresolved = sys.admin_get("/members?manager_resolution=pending").await;
    assert_eq!(unresolved["total"], 0, "{unresolved}");
    let by_name = sys.admin_get("/members?manager_resolution=resolved&limit=1000").await;
    let vias: BTreeSet<&str> =
        by_name["members"].as_array().unwrap().iter().filter_map(|m| m["manager_resolution"]["via"].as_str()).collect();
    assert_eq!(vias, BTreeSet::from(["email", "id", "name"]));
    sys.stop().await;
}

fn depth_order(descending: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..300).collect();
    order.sort_by_key(|i| (usize::BITS - (i + 1).leading_zeros(), *i));
    if descending {
        order.reverse();
    }
    order
}

#[tokio::test]
async fn reports_before_their_managers_give_the_same_tree() {
    converges(depth_order(true), depth_order(true), 1, false).await;
}

#[tokio::test]
async fn managers_before_their_reports_give_the_same_tree() {
    converges(depth_order(false), depth_order(false), 1, false).await;
}

#[tokio::test]
async fn an_interleaved_concurrent_push_with_every_write_sent_twice_gives_the_same_tree() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut create: Vec<usize> = (0..300).collect();
    create.shuffle(&mut rng);
    let mut link = create.clone();
    link.shuffle(&mut rng);
    converges(create, link, 8, true).await;
}

async fn create(sys: &System, user_name: &str, given: &str, family: &str, extension: Value) -> String {
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, MUSTER],
        "userName": user_name, "active": true,
        "name": {"givenName": given, "familyName": family},
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        MUSTER: extension,
    });
    let r = sys.app.scim().post("/Users", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn set_manager(sys: &System, member: &str, manager: &str) {
    let set = patch_body(json!([{"op": "Replace", "path": format!("{ENTERPRISE}:manager"), "value": manager}]));
    let status = sys.app.scim().patch(&format!("/Users/{member}"), &set).await.status;
    assert!(status == 200 || status == 204);
}

async fn resolution(sys: &System, member: &str, status: &str) -> Value {
    eventually(WAIT, &format!("{member}'s manager {status}"), || async {
        let m = sys.admin_try_get(&format!("/members/{member}")).await?;
        (m["manager_resolution"]["status"] == status).then_some(m)
    })
    .await
}

#[tokio::test]
async fn ambiguity_cycles_deactivated_and_manual_managers_are_shown_with_their_reasons() {
    let sys = System::start().await;
    let sam1 = create(&sys, "sam1@contoso.com", "Sam", "Park", json!({})).await;
    let sam2 = create(&sys, "sam2@contoso.com", "Såm", "PARK", json!({})).await;
    let ann = create(&sys, "ann@contoso.com", "Ann", "Lee", json!({"managerFullName": "sam park"})).await;
    let m = resolution(&sys, &ann, "ambiguous").await;
    let mut expected = vec![sam1.clone(), sam2.clone()];
    expected.sort();
    assert_eq!(m["manager_resolution"]["candidates"], json!(expected));
    assert_eq!(m["manager_id"], Value::Null);
    let listed = sys.admin_get("/members?manager_resolution=ambiguous").await;
    assert_eq!((listed["total"].clone(), listed["members"][0]["scim_user_id"].clone()), (json!(1), json!(ann)));

    // Entra then sends the manager by id: the id wins over the ambiguous name.
    set_manager(&sys, &ann, &sam2).await;
    let m = resolution(&sys, &ann, "resolved").await;
    assert_eq!((m["manager_id"].as_str(), m["manager_resolution"]["via"].as_str()), (Some(sam2.as_str()), Some("id")));

    // sam2 → ann would close ann → sam2 → ann: refused with the path.
    set_manager(&sys, &sam2, &ann).await;
    let m = resolution(&sys, &sam2, "cycle").await;
    assert_eq!(m["manager_resolution"]["path"], json!([sam2, ann, sam2]));
    assert!(m["manager_resolution"]["detail"].as_str().unwrap().contains("cycle"));
    // A self-reference is a cycle of one.
    set_manager(&sys, &sam1, &sam1).await;
    let m = resolution(&sys, &sam1, "cycle").await;
    assert_eq!(m["manager_resolution"]["path"], json!([sam1, sam1]));

    // ann moves under a new boss: sam2's refused link no longer closes a cycle and heals.
    let boss = create(&sys, "boss@contoso.com", "Bo", "Ss", json!({})).await;
    set_manager(&sys, &ann, &boss).await;
    let m = resolution(&sys, &sam2, "resolved").await;
    assert_eq!(m["manager_id"], json!(ann));
    let chain = eventually(WAIT, "sam2's chain up to the boss", || async {
        let chain = sys.admin_get(&format!("/members/{sam2}/chain")).await;
        (chain["depth"] == 2).then_some(chain)
    })
    .await;
    let ids: Vec<&str> =
        chain["chain"].as_array().unwrap().iter().map(|m| m["scim_user_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [ann.as_str(), boss.as_str()]);
    let reports = sys.admin_get(&format!("/members/{boss}/reports")).await;
    assert_eq!((reports["total"].clone(), reports["reports"][0]["scim_user_id"].clone()), (json!(1), json!(ann)));

    // A deactivated manager stays linked and is shown as deactivated.
    let off = patch_body(json!([{"op": "Replace", "path": "active", "value": false}]));
    sys.app.scim().patch(&format!("/Users/{boss}"), &off).await;
    eventually(WAIT, "the manager shown deactivated", || async {
        let m = sys.admin_get(&format!("/members/{ann}")).await;
        (m["manager_status"] == "deactivated").then_some(m)
    })
    .await;
    assert_eq!(sys.admin_get(&format!("/members/{ann}")).await["manager_id"], json!(boss));

    // Where Entra sent no reference, an admin may set the manager, once.
    let lone = create(&sys, "lone@contoso.com", "Lo", "Ne", json!({})).await;
    resolution(&sys, &lone, "none").await;
    let admin = sys.app.http.patch(format!("{}/members/{lone}", sys.admin)).bearer_auth(&sys.app.tenant.admin_token);
    let r = admin.json(&json!({"manager_id": sam1})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = resolution(&sys, &lone, "resolved").await;
    assert_eq!(
        (m["manager_id"].as_str(), m["manager_resolution"]["via"].as_str()),
        (Some(sam1.as_str()), Some("manual"))
    );
    assert_eq!(m["provenance"]["manager_id"], "manual");
    let again = sys.app.http.patch(format!("{}/members/{lone}", sys.admin)).bearer_auth(&sys.app.tenant.admin_token);
    let r = again.json(&json!({"manager_id": boss})).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let entra = sys.app.http.patch(format!("{}/members/{ann}", sys.admin)).bearer_auth(&sys.app.tenant.admin_token);
    let r = entra.json(&json!({"manager_id": sam1})).send().await.unwrap();
    assert_eq!(r.status(), 409, "ann's manager comes from Entra ID");
    sys.stop().await;
}
