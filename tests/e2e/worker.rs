//! The worker runtime under faults, against the real RabbitMQ and PostgreSQL: poison
//! messages, flaky dependencies, duplicates, replicas, and a severed broker connection.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use lapin::Channel;
use muster_contracts::topology::NORMALIZER;
use muster_contracts::{EventEnvelope, EventKind, Names};
use muster_infra::config::AmqpSettings;
use muster_infra::http::BrokerHealth;
use muster_infra::worker::dlq::{self, Selection};
use muster_infra::worker::{Worker, WorkerSettings};
use muster_testkit::broker::{Probe, broker_url, publish_event, teardown_on, test_amqp};
use muster_testkit::proxy::TcpProxy;
use muster_testkit::worker::{Behaviour, Recorder, fast_settings};
use muster_testkit::{TestDb, eventually};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

struct Rig {
    _db: TestDb,
    amqp: AmqpSettings,
    names: Names,
    probe: Probe,
    publisher: Channel,
    recorder: Recorder,
    tenant: Uuid,
    shutdown: CancellationToken,
}

impl Rig {
    async fn new() -> Rig {
        muster_infra::telemetry::init_for_tests();
        let db = TestDb::create().await;
        let amqp = test_amqp(&broker_url());
        let names = Names::new(amqp.prefix.clone());
        let probe = Probe::bind(&names, "no.such.events").await.unwrap();
        let publisher = probe.publisher().await;
        let recorder = Recorder::new(db.pool.clone()).await;
        Rig {
            _db: db,
            amqp,
            names,
            probe,
            publisher,
            recorder,
            tenant: Uuid::now_v7(),
            shutdown: CancellationToken::new(),
        }
    }

    fn start(&self, amqp: &AmqpSettings, settings: WorkerSettings) -> BrokerHealth {
        let worker = Worker::new("test-worker", NORMALIZER, amqp.clone(), settings, self.recorder.clone());
        let health = worker.health();
        tokio::spawn(worker.run(self.shutdown.clone()));
        health
    }

    fn event(&self, entity: &str, version: i64) -> EventEnvelope {
        EventEnvelope::new(self.tenant, EventKind::ScimUserUpserted, entity, version, Utc::now())
    }

    async fn publish(&self, event: &EventEnvelope) {
        publish_event(&self.publisher, &self.names, event).await;
    }

    async fn dlq(&self) -> Vec<dlq::DeadLetter> {
        dlq::peek(&self.probe.connection, &self.names.dead_letter_queue(&NORMALIZER), 100).await.unwrap()
    }

    async fn until_applied(&self, total: i64) {
        eventually(WAIT, &format!("{total} effects applied"), || async {
            (self.recorder.total_applied().await >= total).then_some(())
        })
        .await;
    }

    async fn teardown(self) {
        self.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        teardown_on(&self.probe.channel, &self.names, &fast_settings().retry_delays_ms).await;
        self.probe.teardown(&self.names).await;
    }
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_exactly_max_attempts_while_others_flow_and_replays_once() {
    let rig = Rig::new().await;
    rig.recorder.set(Behaviour::AlwaysTransient("poison".into()));
    rig.start(&rig.amqp, fast_settings());
    let poison = rig.event("poison", 1);
    rig.publish(&poison).await;
    for i in 0..20 {
        rig.publish(&rig.event(&format!("ok-{i}"), 1)).await;
    }
    rig.until_applied(20).await;
    let letters = eventually(WAIT, "the poison message in the DLQ", || async {
        let letters = rig.dlq().await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.attempts, Some(3), "exactly max_attempts");
    assert_eq!(letter.event_id.as_deref(), Some(poison.event_id.to_string().as_str()));
    assert_eq!(letter.tenant_id.as_deref(), Some(rig.tenant.to_string().as_str()));
    assert_eq!(letter.routing_key.as_deref(), Some("scim.user.upserted"));
    assert_eq!(letter.exchange.as_deref(), Some(rig.names.events_exchange().as_str()));
    assert_eq!(letter.service.as_deref(), Some("test-worker"));
    assert_eq!(letter.failure_kind.as_deref(), Some("transient"));
    assert!(
        letter
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("gave up after 3 attempts") && r.contains("dependency unavailable"))
    );
    assert!(letter.first_failure.is_some() && letter.first_failure <= letter.last_failure);
    assert_eq!(letter.payload["entity_id"], "poison");
    assert_eq!(rig.dlq().await.len(), 1, "show does not consume");
    // The depth a moment after a `show` may lag while the queue takes the message back.
    let normalizer = eventually(WAIT, "the DLQ's depth", || async {
        let summary = dlq::summaries(&rig.probe.connection, &rig.names).await.ok()?;
        summary.into_iter().find(|s| s.queue == rig.names.dead_letter_queue(&NORMALIZER) && s.depth == 1)
    })
    .await;
    assert!(normalizer.oldest_age_seconds.is_some_and(|a| a >= 0));

    // The bug is fixed; the operator replays; the message is processed once.
    rig.recorder.set(Behaviour::Normal);
    let dlq_name = dlq::resolve(&rig.names, "normalizer").unwrap();
    let replayed = dlq::replay(&rig.probe.connection, &rig.names, &dlq_name, &Selection::all()).await.unwrap();
    assert_eq!(replayed.len(), 1);
    eventually(WAIT, "the replayed message processed", || async { rig.recorder.effect("poison").await }).await;
    assert_eq!(rig.recorder.effect("poison").await, Some((1, 1)));
    assert!(rig.dlq().await.is_empty());
    rig.teardown().await;
}

#[tokio::test]
async fn transient_failures_are_retried_and_succeed_with_nothing_dead_lettered() {
    let rig = Rig::new().await;
    rig.recorder.set(Behaviour::FlakyTimes(2));
    rig.start(&rig.amqp, fast_settings());
    for i in 0..10 {
        rig.publish(&rig.event(&format!("flaky-{i}"), 1)).await;
    }
    rig.until_applied(10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.recorder.total_applied().await, 10, "each applied once");
    let delivered: i64 =
        sqlx::query_scalar("select count(*) from test_deliveries").fetch_one(&rig._db.pool).await.unwrap();
    assert_eq!(delivered, 30, "two failed attempts and a good one each");
    assert!(rig.dlq().await.is_empty());
    rig.teardown().await;
}

#[tokio::test]
async fn a_permanent_failure_goes_to_the_dlq_at_once_and_purge_discards_it() {
    let rig = Rig::new().await;
    rig.recorder.set(Behaviour::Permanent("bad".into()));
    rig.start(&rig.amqp, fast_settings());
    let bad = rig.event("bad", 1);
    rig.publish(&bad).await;
    let letters = eventually(WAIT, "the bad message in the DLQ", || async {
        let l = rig.dlq().await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters[0].attempts, Some(1));
    assert_eq!(letters[0].failure_kind.as_deref(), Some("permanent"));
    let dlq_name = rig.names.dead_letter_queue(&NORMALIZER);
    let other = dlq::purge(&rig.probe.connection, &dlq_name, &Selection::events(vec![Uuid::now_v7().to_string()]))
        .await
        .unwrap();
    assert!(other.is_empty(), "an unknown event id purges nothing");
    let purged =
        dlq::purge(&rig.probe.connection, &dlq_name, &Selection::events(vec![bad.event_id.to_string()])).await.unwrap();
    assert_eq!(purged.len(), 1);
    assert!(rig.dlq().await.is_empty());
    assert_eq!(rig.recorder.effect("bad").await, None);
    rig.teardown().await;
}

#[tokio::test]
async fn duplicated_and_out_of_order_deliveries_end_in_the_latest_version() {
    let rig = Rig::new().await;
    // One at a time, so the deliveries reach the handler in the order sent (with more
    // concurrency the end state is the same, which the replica test checks).
    rig.start(&rig.amqp, WorkerSettings { prefetch: 1, concurrency: 1, ..fast_settings() });
    for version in [3, 1, 2, 3, 2, 1] {
        rig.publish(&rig.event("moving", version)).await;
    }
    rig.publish(&rig.event("marker", 1)).await;
    eventually(WAIT, "all deliveries handled", || async { rig.recorder.effect("marker").await }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (version, applied) = rig.recorder.effect("moving").await.unwrap();
    assert_eq!(version, 3);
    assert_eq!(applied, 1, "versions at or below 3 arriving later are skipped");
    assert_eq!(rig.recorder.deliveries("moving").await, 6, "all six were delivered");
    rig.teardown().await;
}

#[tokio::test]
async fn two_replicas_produce_the_state_one_replica_does() {
    let rig = Rig::new().await;
    rig.start(&rig.amqp, fast_settings());
    rig.start(&rig.amqp, fast_settings());
    let mut expected = Vec::new();
    for e in 0..20 {
        let entity = format!("e{e:02}");
        for version in [2, 5, 1, 4, 3] {
            rig.publish(&rig.event(&entity, version)).await;
        }
        expected.push((entity, 5));
    }
    eventually(WAIT, "every entity at its latest version", || async {
        (rig.recorder.versions().await == expected).then_some(())
    })
    .await;
    assert!(rig.dlq().await.is_empty());
    rig.teardown().await;
}

#[tokio::test]
async fn a_severed_broker_connection_is_recovered_without_losing_a_message() {
    let rig = Rig::new().await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse::<SocketAddr>().unwrap()).await.unwrap();
    let mut via_proxy = rig.amqp.clone();
    via_proxy.url = format!("amqp://guest:guest@{}/%2f", proxy.addr).into();
    let worker = Worker::new("test-worker", NORMALIZER, via_proxy, fast_settings(), rig.recorder.clone());
    let health = worker.health();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let readyz = format!("http://{}/readyz", listener.local_addr().unwrap());
    tokio::spawn(worker.run_with_ops(rig._db.pool.clone(), listener, rig.shutdown.clone()));
    let ready = || async { reqwest::get(&readyz).await.map(|r| r.status().as_u16()).unwrap_or(0) };
    eventually(WAIT, "the worker to be ready", || async { (ready().await == 200).then_some(()) }).await;
    for i in 0..50 {
        rig.publish(&rig.event(&format!("before-{i}"), 1)).await;
    }
    proxy.cut();
    eventually(WAIT, "the worker to notice", || async { (!health.is_connected()).then_some(()) }).await;
    assert_eq!(ready().await, 503, "/readyz goes false without the broker");
    for i in 0..50 {
        rig.publish(&rig.event(&format!("during-{i}"), 1)).await;
    }
    proxy.restore();
    rig.until_applied(100).await;
    assert!(health.is_connected());
    assert_eq!(ready().await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.recorder.total_applied().await, 100, "every message applied exactly once");
    let delivered: i64 =
        sqlx::query_scalar("select count(*) from test_deliveries").fetch_one(&rig._db.pool).await.unwrap();
    eprintln!("severed connection: published 100, delivered {delivered}, redelivered {}, applied 100", delivered - 100);
    assert!(rig.dlq().await.is_empty());
    rig.teardown().await;
}

/// A worker process started from the `muster-test-worker` binary, killed with SIGKILL.
struct Child(std::process::Child);

impl Child {
    async fn start(db_url: &str, prefix: &str, behaviour: &str) -> Child {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_muster-test-worker"))
            .env("DATABASE_URL", db_url)
            .env("AMQP_URL", broker_url())
            .env("APP_AMQP__PREFIX", prefix)
            .env("BEHAVIOUR", behaviour)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            line
        });
        let line = tokio::time::timeout(WAIT, ready).await.expect("the worker process to start").unwrap();
        assert_eq!(line.trim(), "consuming");
        Child(child)
    }

    fn kill_9(mut self) {
        self.0.kill().unwrap(); // SIGKILL: no shutdown, no ack, no rollback by the process
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

#[tokio::test]
async fn a_worker_killed_mid_message_has_it_redelivered_and_applied_exactly_once() {
    use secrecy::ExposeSecret;
    let rig = Rig::new().await;
    let db_url = rig._db.settings().url.expose_secret().to_string();
    let prefix = rig.amqp.prefix.clone();

    // Killed inside the transaction: nothing was applied; the redelivery applies it once.
    let first = Child::start(&db_url, &prefix, "pause-before-commit:victim:60000").await;
    rig.publish(&rig.event("victim", 1)).await;
    eventually(WAIT, "the victim delivery to reach the handler", || async {
        (rig.recorder.deliveries("victim").await == 1).then_some(())
    })
    .await;
    first.kill_9();
    assert_eq!(rig.recorder.effect("victim").await, None, "the killed transaction left nothing");
    let second = Child::start(&db_url, &prefix, "normal").await;
    eventually(WAIT, "the redelivered victim applied", || async { rig.recorder.effect("victim").await }).await;
    assert_eq!(rig.recorder.effect("victim").await, Some((1, 1)));
    assert_eq!(rig.recorder.deliveries("victim").await, 2, "delivered, then redelivered");
    second.kill_9();

    // Killed after commit, before the ack: the redelivery is recognised and skipped.
    let third = Child::start(&db_url, &prefix, "pause-after-commit:victim2:60000").await;
    rig.publish(&rig.event("victim2", 1)).await;
    eventually(WAIT, "victim2 committed", || async { rig.recorder.effect("victim2").await }).await;
    third.kill_9();
    let _fourth = Child::start(&db_url, &prefix, "normal").await;
    eventually(WAIT, "victim2 redelivered", || async { (rig.recorder.deliveries("victim2").await == 2).then_some(()) })
        .await;
    let queue = rig.names.queue(&NORMALIZER);
    eventually(WAIT, "the queue drained (redelivery acked)", || async {
        let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
        let q = rig.probe.channel.queue_declare(queue.as_str().into(), passive, Default::default()).await.ok()?;
        (q.message_count() == 0).then_some(())
    })
    .await;
    assert_eq!(rig.recorder.effect("victim2").await, Some((1, 1)), "applied exactly once");
    assert!(rig.dlq().await.is_empty());
    rig.teardown().await;
}

#[tokio::test]
async fn shutdown_finishes_the_delivery_in_hand_before_closing() {
    let rig = Rig::new().await;
    rig.recorder.set(Behaviour::PauseBeforeCommit("slow".into(), 700));
    let worker = Worker::new("test-worker", NORMALIZER, rig.amqp.clone(), fast_settings(), rig.recorder.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    rig.publish(&rig.event("slow", 1)).await;
    eventually(WAIT, "the slow delivery in the handler", || async {
        (rig.recorder.deliveries("slow").await == 1).then_some(())
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(WAIT, running).await.expect("the worker to stop").unwrap().unwrap();
    assert_eq!(rig.recorder.effect("slow").await, Some((1, 1)), "the in-flight delivery was finished");
    let queue = rig.names.queue(&NORMALIZER);
    assert_eq!(muster_testkit::broker::depth(&rig.probe.channel, &queue).await, 0, "and acked, so nothing comes back");
    rig.teardown().await;
}
