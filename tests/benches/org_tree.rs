//! How long after Entra ID's last SCIM write a company's whole org tree is linked.
//!
//!   cargo bench -p muster-e2e --bench org_tree -- [MEMBERS] [CONNECTIONS]
//!
//! Runs ingress, relay, normalizer and hierarchy in this process (their shipped settings: 10
//! database connections each, prefetch 32, concurrency 8) against a fresh database and AMQP
//! prefix, like `musterctl up`. The company: MEMBERS people (default 100,000) under one root,
//! four reports per manager (depth ⌈log4 n⌉, 9 for 100,000); 80 % refer to their manager by
//! SCIM id in a later PATCH, 15 % by `managerEmail` and 5 % by `managerFullName` in the user
//! itself. Users are created, then linked, each in a shuffled order over CONNECTIONS (default
//! 8) concurrent connections. Prints the write rates, and the time from the last write until
//! every member is linked.
//!
//! Needs PostgreSQL (`DATABASE_URL`) and RabbitMQ (`AMQP_URL`); `sslmode=disable` in
//! DATABASE_URL matches a production setup where TLS is terminated elsewhere.

mod pipeline;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use muster_testkit::scim::patch_body;
use pipeline::Pipeline;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const MUSTER: &str = "urn:ietf:params:scim:schemas:extension:muster:2.0:User";
const SPAN: usize = 4;

fn manager_of(i: usize) -> Option<usize> {
    (i > 0).then(|| (i - 1) / SPAN)
}

fn user(i: usize) -> Value {
    let mut body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE, MUSTER],
        "userName": format!("p{i}@contoso.com"),
        "active": true,
        "displayName": format!("Given{i} Family{i}"),
        "title": "Engineer",
        "name": {"givenName": format!("Given{i}"), "familyName": format!("Family{i}")},
        "emails": [{"primary": true, "type": "work", "value": format!("p{i}@contoso.com")}],
        "phoneNumbers": [{"type": "work", "value": "(212) 575-1994 ext 3437"}],
        "addresses": [{"type": "work", "country": "United States", "region": "New York"}],
        MUSTER: {},
    });
    if let Some(m) = manager_of(i) {
        match i % 20 {
            0..=2 => body[MUSTER]["managerEmail"] = json!(format!("P{m}@Contoso.com")),
            3 => body[MUSTER]["managerFullName"] = json!(format!("given{m} FAMILY{m}")),
            _ => {}
        }
    }
    body
}

fn by_id(i: usize) -> bool {
    manager_of(i).is_some() && i % 20 > 3
}

async fn linked(pool: &sqlx::PgPool, tenant: uuid::Uuid) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("select count(*) from hierarchy.links where tenant_id = $1 and resolution = 'resolved'")
        .bind(tenant)
        .fetch_one(pool)
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (members, connections) = pipeline::members_and_connections(100_000);
    let pipeline = Pipeline::start().await?;
    let (app, database, worker_settings) = (&pipeline.app, &pipeline.database, &pipeline.workers);
    let normalizer = muster_normalizer::worker(worker_settings, muster_infra::db::pool(database)?);
    tokio::spawn(normalizer.run(app.shutdown_token()));
    let hierarchy = muster_hierarchy::worker(worker_settings, muster_infra::db::pool(database)?);
    tokio::spawn(hierarchy.run(app.shutdown_token()));

    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut create: Vec<usize> = (0..members).collect();
    create.shuffle(&mut rng);
    let mut link: Vec<usize> = (0..members).filter(|i| by_id(*i)).collect();
    link.shuffle(&mut rng);

    let scim = Arc::new(app.scim());
    let started = Instant::now();
    let ids: Vec<(usize, String)> = futures_util::stream::iter(create)
        .map(|i| {
            let scim = scim.clone();
            async move {
                let r = scim.post("/Users", &user(i)).await;
                assert_eq!(r.status, 201, "{}", r.body);
                (i, r.body["id"].as_str().unwrap_or_default().to_string())
            }
        })
        .buffer_unordered(connections)
        .collect()
        .await;
    let created = started.elapsed();
    let mut id_of = vec![String::new(); members];
    for (i, id) in ids {
        id_of[i] = id;
    }
    let id_of = Arc::new(id_of);
    let links = link.len();
    let linking = Instant::now();
    futures_util::stream::iter(link)
        .for_each_concurrent(connections, |i| {
            let (scim, id_of) = (scim.clone(), id_of.clone());
            async move {
                let Some(m) = manager_of(i) else { return };
                let set =
                    patch_body(json!([{"op": "Add", "path": format!("{ENTERPRISE}:manager"), "value": id_of[m]}]));
                let r = scim.patch(&format!("/Users/{}", id_of[i]), &set).await;
                assert!(r.status == 200 || r.status == 204, "{}", r.body);
            }
        })
        .await;
    let patched = linking.elapsed();
    let last_write = Instant::now();
    let mut linked_at_last_write = None;
    let target = i64::try_from(members - 1)?;
    loop {
        let done = linked(&app.db.pool, app.tenant.id).await?;
        linked_at_last_write.get_or_insert(done);
        if done >= target {
            break;
        }
        if last_write.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("only {done} of {target} linked after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let settle = last_write.elapsed();
    let depth: i32 = sqlx::query_scalar(
        "with recursive down(id, depth) as (
             select n.scim_user_id, 0 from hierarchy.nodes n
             left join hierarchy.links l on l.tenant_id = n.tenant_id and l.scim_user_id = n.scim_user_id
             where n.tenant_id = $1 and l.manager_id is null and n.candidate
           union all
             select l.scim_user_id, d.depth + 1 from down d join hierarchy.links l on l.tenant_id = $1 and l.manager_id = d.id)
         select max(depth) from down",
    )
    .bind(app.tenant.id)
    .fetch_one(&app.db.pool)
    .await?;
    pipeline.stop().await?;

    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!("members: {members}, depth: {depth}, connections: {connections}");
    println!("POST /Users:          {members} in {:.1} s ({:.0}/s)", created.as_secs_f64(), rate(members, created));
    println!("PATCH manager by id:  {links} in {:.1} s ({:.0}/s)", patched.as_secs_f64(), rate(links, patched));
    println!(
        "linked at the last write: {} of {target}; fully linked {:.1} s after the last write ({:.1} s after the first)",
        linked_at_last_write.unwrap_or_default(),
        settle.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
