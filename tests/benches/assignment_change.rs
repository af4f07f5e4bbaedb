//! How long an assignment change takes to reach every member it affects.
//!
//!   cargo bench -p muster-e2e --bench assignment_change -- [MEMBERS] [CONNECTIONS]
//!
//! Runs ingress, relay, normalizer, the assignments worker and the admin API in this process
//! (shipped settings: 10 database connections each, prefetch 32) against a fresh database and
//! AMQP prefix. MEMBERS users (default 10,000) are created over CONNECTIONS (default 8)
//! connections and put in one Entra group in PATCHes of 1,000, and settle under the default
//! assignment. Then, timed from the admin's request until every member shows the outcome:
//! 1. an automatic assignment is created for that group (a seat, data capture, a permission);
//! 2. its settings are edited (capture off, another profile);
//! 3. it is deleted (everyone back to the default assignment).
//!
//! Needs PostgreSQL (`DATABASE_URL`) and RabbitMQ (`AMQP_URL`).

mod pipeline;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use muster_infra::config::HttpSettings;
use muster_testkit::scim::patch_body;
use muster_testkit::test_telemetry;
use pipeline::Pipeline;
use serde_json::{Value, json};
use uuid::Uuid;

/// Members whose state satisfies `condition` (SQL over `s`, the member_state row).
async fn count(pool: &sqlx::PgPool, tenant: Uuid, condition: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(&format!(
        "select count(*) from assignments.member_state s where s.tenant_id = $1 and {condition}"
    ))
    .bind(tenant)
    .fetch_one(pool)
    .await?)
}

/// Waits until `target` members satisfy `condition`; returns how long it took.
async fn until(pool: &sqlx::PgPool, tenant: Uuid, condition: &str, target: i64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let done = count(pool, tenant, condition).await?;
        if done >= target {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("only {done} of {target} members reached `{condition}` after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (members, connections) = pipeline::members_and_connections(10_000);
    let pipeline = Pipeline::start().await?;
    let (app, database, worker_settings) = (&pipeline.app, &pipeline.database, &pipeline.workers);
    let (pool, tenant) = (app.db.pool.clone(), app.tenant.id);
    let normalizer = muster_normalizer::worker(worker_settings, muster_infra::db::pool(database)?);
    tokio::spawn(normalizer.run(app.shutdown_token()));
    let assignments = muster_assignments::worker(worker_settings, muster_infra::db::pool(database)?);
    tokio::spawn(assignments.run(app.shutdown_token()));
    let admin_settings = muster_admin::Settings {
        database: database.clone(),
        amqp: pipeline.amqp.clone(),
        http: HttpSettings { addr: "127.0.0.1:0".parse()? },
        telemetry: test_telemetry(),
    };
    let admin = muster_admin::Admin::bind(&admin_settings, muster_infra::db::pool(database)?).await?;
    let admin_url = format!("http://{}/api/v1", admin.local_addr()?);
    tokio::spawn(admin.run(app.shutdown_token()));
    let http = reqwest::Client::new();
    let admin_token = app.tenant.admin_token.clone();
    let send = |method: reqwest::Method, path: &str, body: Value| {
        let request = http.request(method, format!("{admin_url}{path}")).bearer_auth(&admin_token).json(&body);
        async move {
            let r = request.send().await?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            anyhow::ensure!(status.is_success(), "admin API answered {status}: {body}");
            Ok::<Value, anyhow::Error>(body)
        }
    };
    let catalog = json!({
        "seat_types": [{"key": "recorder", "name": "Recorder"}],
        "capture_kinds": [{"key": "web_conferences", "name": "Web conferences", "requires_seat": "recorder"},
                          {"key": "telephony", "name": "Telephony", "requires_seat": "recorder"},
                          {"key": "email", "name": "E-mail"}],
        "workspaces": [{"key": "deals", "name": "Deals", "profiles": [{"key": "rep", "name": "Rep"},
                                                                      {"key": "viewer", "name": "Viewer"}]}]
    });
    send(reqwest::Method::PUT, "/catalog", catalog).await?;

    let scim = Arc::new(app.scim());
    let setup = Instant::now();
    let ids: Vec<String> = futures_util::stream::iter(0..members)
        .map(|i| {
            let scim = scim.clone();
            async move { scim.create_user(&format!("p{i}@contoso.com")).await }
        })
        .buffer_unordered(connections)
        .collect()
        .await;
    let group = scim.create_group("Everyone").await;
    for chunk in ids.chunks(1000) {
        let value: Vec<Value> = chunk.iter().map(|id| json!({"value": id})).collect();
        let r = scim
            .patch(&format!("/Groups/{group}"), &patch_body(json!([{"op": "Add", "path": "members", "value": value}])))
            .await;
        anyhow::ensure!(r.status == 204, "membership PATCH: {}", r.text);
    }
    let target = i64::try_from(members)?;
    until(&pool, tenant, "s.active", target).await?;
    println!(
        "members: {members}; set up (created, grouped, default applied) in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let created = send(
        reqwest::Method::POST,
        "/assignments",
        json!({"name": "Recorded", "mode": "automatic", "groups": [group], "seats": ["recorder"],
               "capture": {"web_conferences": true, "email": true}, "permissions": {"deals": "rep"}}),
    )
    .await?;
    let id = created["id"].as_str().unwrap_or_default().to_string();
    let condition = format!("s.assignment_id = '{id}' and (s.effective->'capture'->>'web_conferences')::boolean");
    until(&pool, tenant, &condition, target).await?;
    let create = started.elapsed();

    let started = Instant::now();
    send(
        reqwest::Method::PUT,
        &format!("/assignments/{id}"),
        json!({"name": "Recorded", "mode": "automatic", "groups": [group], "seats": ["recorder"],
               "capture": {"web_conferences": false, "email": true}, "permissions": {"deals": "viewer"}}),
    )
    .await?;
    until(&pool, tenant, "s.effective->'permissions'->>'deals' = 'viewer'", target).await?;
    let edit = started.elapsed();

    let started = Instant::now();
    send(reqwest::Method::DELETE, &format!("/assignments/{id}"), Value::Null).await?;
    until(&pool, tenant, "s.assignment_name = 'Default' and s.effective->'seats' = '[]'", target).await?;
    let delete = started.elapsed();
    let seats: i64 = sqlx::query_scalar("select count(*) from assignments.seat_requests where tenant_id = $1")
        .bind(tenant)
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(seats == 0, "{seats} seat requests left after the assignment was deleted");

    pipeline.stop().await?;

    let rate = |d: Duration| members as f64 / d.as_secs_f64();
    println!(
        "assignment created for the group: every member applied in {:.2} s ({:.0} members/s)",
        create.as_secs_f64(),
        rate(create)
    );
    println!(
        "assignment edited:                 every member applied in {:.2} s ({:.0} members/s)",
        edit.as_secs_f64(),
        rate(edit)
    );
    println!(
        "assignment deleted:                every member applied in {:.2} s ({:.0} members/s)",
        delete.as_secs_f64(),
        rate(delete)
    );
    println!("peak RSS of the whole process: {:.0} MiB", peak_rss_mib());
    Ok(())
}
