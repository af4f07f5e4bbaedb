//! What leaves the system: every accepted SCIM write becomes an event on the exchange, with
//! the envelope of DESIGN.md, once, in order, whatever the broker does meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use muster_contracts::Names;
use muster_contracts::topology::NORMALIZER;
use muster_relay::{Relay, RelayOptions};
use muster_testkit::broker::{Probe, broker_url, test_amqp};
use muster_testkit::proxy::TcpProxy;
use muster_testkit::scim::{patch_body, user_body};
use muster_testkit::{TestApp, eventually};
use serde_json::json;

fn options() -> RelayOptions {
    RelayOptions { batch_size: 100, idle_poll_ms: 20, confirm_timeout_ms: 5000, ..RelayOptions::default() }
}

fn start_relay(app: &TestApp, amqp: &muster_infra::config::AmqpSettings) -> Relay {
    let relay = Relay::new(app.db.pool.clone(), amqp.clone(), options());
    tokio::spawn(relay.clone().run(app.shutdown_token()));
    relay
}

const WAIT: Duration = Duration::from_secs(20);

/// A company with a fresh AMQP prefix and a probe queue bound with `pattern`.
async fn with_probe(pattern: &str) -> (TestApp, muster_infra::config::AmqpSettings, Names, Probe) {
    let app = TestApp::spawn().await;
    let amqp = test_amqp(&broker_url());
    let names = Names::new(amqp.prefix.clone());
    let probe = Probe::bind(&names, pattern).await.unwrap();
    (app, amqp, names, probe)
}

async fn until_nothing_pending(app: &TestApp, what: &str) {
    eventually(WAIT, what, || async {
        let pending: i64 = sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&app.db.pool).await.ok()?;
        (pending == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_scim_write_shows_up_on_a_bound_queue_with_the_envelope() {
    let (app, amqp, names, mut probe) = with_probe("scim.#").await;
    let scim = app.scim();
    let user = scim.create_user("ann@contoso.com").await;
    // Read before the relay runs: a published row is deleted.
    let stored: Option<String> = sqlx::query_scalar("select traceparent from scim.outbox where entity_id = $1")
        .bind(&user)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    start_relay(&app, &amqp);

    let received = probe.next(WAIT).await.expect("the user's event");
    assert_eq!(received.routing_key, "scim.user.upserted");
    let e = &received.body;
    assert_eq!(e["kind"], "scim.user.upserted");
    assert_eq!(e["tenant_id"], app.tenant.id.to_string());
    assert_eq!(e["entity_id"], user.as_str());
    assert_eq!(e["version"], 1);
    assert!(e["occurred_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(received.message_id.as_deref(), e["event_id"].as_str(), "message id is the event id, for dedup");
    assert!(received.traceparent.is_some(), "every message carries a traceparent");
    assert_eq!(received.traceparent, stored);
    until_nothing_pending(&app, "the published row deleted").await;

    let group = scim.create_group("Sales").await;
    scim.patch(
        &format!("/Groups/{group}"),
        &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": user}]}])),
    )
    .await;
    let upserted = probe.next(WAIT).await.expect("group upserted");
    assert_eq!(upserted.routing_key, "scim.group.upserted");
    let changed = probe.next(WAIT).await.expect("members changed");
    assert_eq!(changed.routing_key, "scim.group.members_changed");
    assert_eq!(changed.body["version"], 2);
    assert_eq!(changed.body["data"], json!({"added": [user], "removed": []}));

    scim.delete(&format!("/Users/{user}")).await;
    let first = probe.next(WAIT).await.expect("membership removal");
    let second = probe.next(WAIT).await.expect("user deleted");
    assert_eq!(
        (first.routing_key.as_str(), second.routing_key.as_str()),
        ("scim.group.members_changed", "scim.user.deleted")
    );
    assert_eq!(second.body["version"], 2);

    // Published rows are marked (right after their confirms), so nothing is sent twice.
    until_nothing_pending(&app, "every row marked published").await;
    assert!(probe.next(Duration::from_millis(300)).await.is_none());
    probe.teardown(&names).await;
}

#[tokio::test]
async fn writes_made_while_the_broker_is_unreachable_are_published_when_it_returns() {
    let app = TestApp::spawn().await;
    let upstream: SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = TcpProxy::start(upstream).await.unwrap();
    let direct = test_amqp(&broker_url());
    let names = Names::new(direct.prefix.clone());
    let mut probe = Probe::bind(&names, "scim.user.*").await.unwrap();
    let mut via_proxy = direct.clone();
    via_proxy.url = format!("amqp://guest:guest@{}/%2f", proxy.addr).into();
    let relay = start_relay(&app, &via_proxy);
    eventually(WAIT, "the relay to connect", || async { relay.health().is_connected().then_some(()) }).await;

    proxy.cut();
    let scim = app.scim();
    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = scim.post("/Users", &user_body(&format!("offline{i}@contoso.com"))).await;
        assert_eq!(resp.status, 201, "SCIM writes succeed while the broker is away");
        ids.push(resp.body["id"].as_str().unwrap().to_string());
    }
    eventually(WAIT, "the relay to notice the outage", || async { (!relay.health().is_connected()).then_some(()) })
        .await;
    assert!(probe.next(Duration::from_millis(500)).await.is_none(), "nothing can be published during the outage");
    let pending: i64 = sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(pending, 3);

    proxy.restore();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = probe.next(Duration::from_secs(30)).await.expect("published after the broker returned");
        got.push(m.body["entity_id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ids, "in the order they were accepted");
    assert!(relay.health().is_connected());
    probe.teardown(&names).await;
}

#[tokio::test]
async fn an_unroutable_event_stays_pending_until_a_queue_is_bound() {
    let (app, amqp, names, probe) = with_probe("nothing.routes.here").await;
    let relay = start_relay(&app, &amqp);
    eventually(WAIT, "the relay to connect", || async { relay.health().is_connected().then_some(()) }).await;
    // Only the normalizer binds scim.user.*: without it the event has nowhere to go.
    probe.channel.queue_delete(names.queue(&NORMALIZER).as_str().into(), Default::default()).await.unwrap();

    let user = app.scim().create_user("lost@contoso.com").await;
    let error: String = eventually(WAIT, "the relay to record the failure", || async {
        sqlx::query_scalar::<_, Option<String>>("select last_error from scim.outbox where entity_id = $1")
            .bind(&user)
            .fetch_optional(&app.db.pool)
            .await
            .ok()
            .flatten()
            .flatten()
    })
    .await;
    assert!(error.contains("unroutable"), "{error}");

    muster_infra::amqp::declare_worker_queue(&probe.channel, &names, &NORMALIZER).await.unwrap();
    until_nothing_pending(&app, "the event to be published once routable").await;
    let queued = probe
        .channel
        .queue_declare(
            names.queue(&NORMALIZER).as_str().into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(queued.message_count(), 1);
    probe.teardown(&names).await;
}

#[tokio::test]
async fn two_relay_replicas_publish_each_event_once_in_order() {
    let (app, amqp, names, mut probe) = with_probe("scim.user.*").await;
    start_relay(&app, &amqp);
    start_relay(&app, &amqp);
    let scim = app.scim();
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(scim.create_user(&format!("r{i}@contoso.com")).await);
    }
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(probe.next(WAIT).await.expect("an event").body["entity_id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, ids);
    assert!(probe.next(Duration::from_millis(500)).await.is_none(), "no duplicates");
    probe.teardown(&names).await;
}

#[tokio::test]
async fn a_row_committed_after_later_rows_were_published_is_published_too() {
    let (app, amqp, names, mut probe) = with_probe("scim.user.*").await;
    start_relay(&app, &amqp);
    let scim = app.scim();
    let first = scim.create_user("first@contoso.com").await;
    assert_eq!(probe.next(WAIT).await.expect("the first event").body["entity_id"], first.as_str());

    // A row whose id is taken now and that becomes visible only after later rows are published.
    let mut slow = app.db.pool.begin().await.unwrap();
    let late: uuid::Uuid = sqlx::query_scalar(
        "insert into scim.outbox (event_id, tenant_id, routing_key, entity_id, version, envelope)
         values (gen_random_uuid(), $1, 'scim.user.upserted', $2, 2, $3) returning event_id",
    )
    .bind(app.tenant.id)
    .bind(&first)
    .bind(json!({"kind": "scim.user.upserted", "tenant_id": app.tenant.id, "entity_id": first, "version": 2}))
    .fetch_one(&mut *slow)
    .await
    .unwrap();
    let later = scim.create_user("later@contoso.com").await;
    assert_eq!(probe.next(WAIT).await.expect("the later event").body["entity_id"], later.as_str());
    slow.commit().await.unwrap();

    let received = probe.next(WAIT).await.expect("the row committed late");
    assert_eq!(received.message_id, Some(late.to_string()));
    until_nothing_pending(&app, "nothing left behind").await;
    probe.teardown(&names).await;
}

#[tokio::test]
async fn when_the_leading_replica_stops_a_standby_takes_over() {
    let (app, amqp, names, mut probe) = with_probe("scim.user.*").await;
    let leader_stop = tokio_util::sync::CancellationToken::new();
    let leader = tokio::spawn(Relay::new(app.db.pool.clone(), amqp.clone(), options()).run(leader_stop.clone()));
    let scim = app.scim();
    let mut ids = vec![scim.create_user("before@contoso.com").await];
    assert_eq!(probe.next(WAIT).await.expect("published by the leader").body["entity_id"], ids[0].as_str());
    start_relay(&app, &amqp);

    leader_stop.cancel();
    leader.await.unwrap().unwrap();
    for i in 0..5 {
        ids.push(scim.create_user(&format!("after{i}@contoso.com")).await);
    }
    let mut got = Vec::new();
    for _ in 1..ids.len() {
        got.push(
            probe.next(WAIT).await.expect("published by the standby").body["entity_id"].as_str().unwrap().to_string(),
        );
    }
    assert_eq!(got, ids[1..]);
    assert!(probe.next(Duration::from_millis(500)).await.is_none(), "no duplicates");
    probe.teardown(&names).await;
}

#[tokio::test]
async fn an_event_only_for_integrations_is_published_even_when_nobody_binds_it() {
    let (app, amqp, names, mut probe) = with_probe("scim.user.*").await;
    // No worker consumes `member.assignment_applied`, and nothing here binds it.
    sqlx::query(
        "insert into scim.outbox (event_id, tenant_id, routing_key, entity_id, version, envelope)
         values (gen_random_uuid(), $1, 'member.assignment_applied', $2, 1, $3)",
    )
    .bind(app.tenant.id)
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(json!({"kind": "member.assignment_applied", "tenant_id": app.tenant.id, "version": 1}))
    .execute(&app.db.pool)
    .await
    .unwrap();
    start_relay(&app, &amqp);
    let user = app.scim().create_user("after@contoso.com").await;
    assert_eq!(probe.next(WAIT).await.expect("the later event").body["entity_id"], user.as_str());
    // Published and gone, not kept for another attempt as an unroutable worker event would be.
    until_nothing_pending(&app, "the integration event published").await;
    probe.teardown(&names).await;
}

/// A relay that treats 10 SCIM events a second as a burst.
fn start_burst_relay(
    app: &TestApp,
    amqp: &muster_infra::config::AmqpSettings,
    quiet_ms: u64,
    max_defer_ms: u64,
) -> Relay {
    let options = RelayOptions {
        burst_events_per_second: 10,
        burst_quiet_ms: quiet_ms,
        burst_max_defer_ms: max_defer_ms,
        ..options()
    };
    let relay = Relay::new(app.db.pool.clone(), amqp.clone(), options);
    tokio::spawn(relay.clone().run(app.shutdown_token()));
    relay
}

/// The entity ids of the next `count` events, failing with `what` if one does not come.
async fn entity_ids(probe: &mut Probe, count: usize, what: &str) -> Vec<String> {
    let mut got = Vec::with_capacity(count);
    for _ in 0..count {
        let event = probe.next(WAIT).await.unwrap_or_else(|| panic!("{what}: {} of {count} came", got.len()));
        got.push(event.body["entity_id"].as_str().unwrap_or_default().to_string());
    }
    got
}

async fn pending_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from scim.outbox").fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn a_burst_of_scim_writes_is_held_back_until_it_is_over() {
    let (app, amqp, names, mut probe) = with_probe("scim.user.*").await;
    let relay = start_burst_relay(&app, &amqp, 1_500, 60_000);
    eventually(WAIT, "the relay to connect", || async { relay.health().is_connected().then_some(()) }).await;

    let ids = app.scim().create_users("burst", 60).await;
    let last_write = std::time::Instant::now();
    // What went out before the relay saw the burst is at most what it read while crossing it.
    assert!(pending_events(&app).await >= 30, "most of the burst is held back");

    let got = entity_ids(&mut probe, ids.len(), "published once the burst is over").await;
    assert!(
        last_write.elapsed() >= Duration::from_secs(1),
        "the held events went out only after the intake stayed quiet (after {:?})",
        last_write.elapsed()
    );
    assert_eq!(got, ids, "in the order they were accepted");
    assert!(probe.next(Duration::from_millis(300)).await.is_none(), "no duplicates");
    probe.teardown(&names).await;
}

#[tokio::test]
async fn no_event_is_held_back_longer_than_the_bound_while_a_burst_goes_on() {
    let (app, amqp, names, mut probe) = with_probe("scim.user.*").await;
    // The burst never counts as over here; only the one-second bound lets events out.
    let relay = start_burst_relay(&app, &amqp, 600_000, 1_000);
    eventually(WAIT, "the relay to connect", || async { relay.health().is_connected().then_some(()) }).await;

    let scim = app.scim();
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        ids.push(scim.create_user(&format!("steady{}@contoso.com", ids.len())).await);
        // About 40 a second: a burst to this relay, and under the test company's rate limit.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let oldest_waiting: f64 =
        sqlx::query_scalar("select coalesce(extract(epoch from now() - min(created_at))::float8, 0) from scim.outbox")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(pending_events(&app).await >= 10, "the relay holds the burst back");
    assert!(oldest_waiting < 3.0, "nothing waits much past the bound: the oldest waited {oldest_waiting:.1} s");

    let got = entity_ids(&mut probe, ids.len(), "every event, within the bound").await;
    assert_eq!(got, ids, "in the order they were accepted");
    probe.teardown(&names).await;
}
