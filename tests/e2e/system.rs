//! The whole system in one test process: ingress, relay, the normalizer, hierarchy,
//! assignments and notifier workers and admin on the real PostgreSQL and RabbitMQ, with a probe
//! queue bound to `member.#`, an SMTP sink on 127.0.0.1 and the notifier on a hand-moved clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use muster_contracts::Names;
use muster_infra::config::{AmqpSettings, HttpSettings};
use muster_ingress::ScimSettings;
use muster_relay::{Relay, RelayOptions};
use muster_testkit::broker::{Probe, broker_url, teardown_on, test_amqp};
use muster_testkit::smtp::SmtpSink;
use muster_testkit::worker::fast_settings;
use muster_testkit::{TestApp, default_scim_settings, eventually, test_telemetry};
use serde_json::Value;

/// How long a test waits for the system to settle.
pub const WAIT: Duration = Duration::from_secs(30);

pub struct System {
    pub app: TestApp,
    names: Names,
    probe: Probe,
    pub admin: String,
    /// Where the notifier's e-mails go.
    pub sink: SmtpSink,
    /// The notifier's clock: it stands still until a test moves it.
    pub clock: Arc<Mutex<DateTime<Utc>>>,
    /// The notifier's settings, to start another replica.
    pub notifier: muster_notifier::Settings,
}

impl System {
    pub async fn start() -> System {
        // Tests push faster than Entra ID's pace; the per-tenant limit has its own tests.
        let scim =
            ScimSettings { rate_limit_per_second: 100_000, rate_limit_burst: 100_000, ..default_scim_settings() };
        let app = TestApp::spawn_with(scim).await;
        let amqp: AmqpSettings = test_amqp(&broker_url());
        let names = Names::new(amqp.prefix.clone());
        let probe = Probe::bind(&names, "member.#").await.unwrap();
        let relay = Relay::new(
            app.db.pool.clone(),
            amqp.clone(),
            RelayOptions { batch_size: 100, idle_poll_ms: 20, confirm_timeout_ms: 5000, ..RelayOptions::default() },
        );
        tokio::spawn(relay.run(app.shutdown_token()));
        let settings = muster_normalizer::Settings {
            database: app.db.settings(),
            amqp,
            http: HttpSettings { addr: "127.0.0.1:0".parse().unwrap() },
            telemetry: test_telemetry(),
            worker: fast_settings(),
        };
        let worker = muster_normalizer::worker(&settings, app.db.pool.clone());
        tokio::spawn(worker.run(app.shutdown_token()));
        let hierarchy = muster_hierarchy::worker(&settings, app.db.pool.clone());
        tokio::spawn(hierarchy.run(app.shutdown_token()));
        let assignments = muster_assignments::worker(&settings, app.db.pool.clone());
        tokio::spawn(assignments.run(app.shutdown_token()));
        let sink = SmtpSink::start().await.unwrap();
        let clock = Arc::new(Mutex::new(Utc::now()));
        let notifier = notifier_settings(&settings, sink.port());
        let system_clock = clock.clone();
        spawn_notifier(&notifier, &app, &system_clock);
        let admin_settings = muster_admin::Settings {
            database: app.db.settings(),
            amqp: settings.amqp.clone(),
            http: HttpSettings { addr: "127.0.0.1:0".parse().unwrap() },
            telemetry: test_telemetry(),
        };
        let admin = muster_admin::Admin::bind(&admin_settings, app.db.pool.clone()).await.unwrap();
        let admin_url = format!("http://{}/api/v1", admin.local_addr().unwrap());
        tokio::spawn(admin.run(app.shutdown_token()));
        System { app, names, probe, admin: admin_url, sink, clock, notifier }
    }

    /// Another notifier replica (trigger and dispatcher) on the same queue, database and clock.
    pub fn start_notifier_replica(&self) {
        spawn_notifier(&self.notifier, &self.app, &self.clock);
    }

    /// Moves the notifier's clock.
    pub fn set_clock(&self, now: DateTime<Utc>) {
        *self.clock.lock().unwrap() = now;
    }

    /// A GET on the admin API that may not find its resource yet.
    pub async fn admin_try_get(&self, path: &str) -> Option<Value> {
        let r = self
            .app
            .http
            .get(format!("{}{path}", self.admin))
            .bearer_auth(&self.app.tenant.admin_token)
            .send()
            .await
            .unwrap();
        if r.status() == 200 { Some(r.json().await.unwrap()) } else { None }
    }

    /// A GET on the admin API with the tenant's admin token, which must answer 200.
    pub async fn admin_get(&self, path: &str) -> Value {
        match self.admin_try_get(path).await {
            Some(body) => body,
            None => panic!("GET {path} did not answer 200"),
        }
    }

    /// (status, skip_reason, profile) of a member.
    pub async fn member(&self, id: &str) -> Option<(String, Option<String>, Value)> {
        sqlx::query_as("select status, skip_reason, profile from members.members where scim_user_id::text = $1")
            .bind(id)
            .fetch_optional(&self.app.db.pool)
            .await
            .unwrap()
    }

    /// A write on the admin API with the tenant's admin token: (status, body).
    pub async fn admin_send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .app
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.app.tenant.admin_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    pub async fn until_status(&self, id: &str, status: &str) -> (String, Option<String>, Value) {
        eventually(WAIT, &format!("member {id} {status}"), || async { self.member(id).await.filter(|m| m.0 == status) })
            .await
    }

    /// The next `member.*` event the normalizer emitted (the hierarchy's and the assignments
    /// worker's, which interleave with them, are passed over).
    pub async fn next_event(&mut self) -> String {
        loop {
            let key = self.probe.next(WAIT).await.expect("a member event").routing_key;
            if !["member.placed", "member.assignment_applied"].contains(&key.as_str()) {
                return key;
            }
        }
    }

    /// The bodies of the `key` events received from here on, read until `enough` holds for
    /// those collected (other events are passed over). The outbox keeps no published row, so
    /// this is where a test sees what was published.
    pub async fn collect(&mut self, key: &str, enough: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        while !enough(&seen) {
            let received = self.probe.next(WAIT).await.unwrap_or_else(|| panic!("{key} events: got {seen:?}"));
            if received.routing_key == key {
                seen.push(received.body);
            }
        }
        seen
    }

    pub async fn stop(self) {
        self.app.shutdown_token().cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        teardown_on(&self.probe.channel, &self.names, &fast_settings().retry_delays_ms).await;
        self.probe.teardown(&self.names).await;
    }
}

fn notifier_settings(workers: &muster_normalizer::Settings, smtp_port: u16) -> muster_notifier::Settings {
    muster_notifier::Settings {
        service: muster_infra::worker::WorkerServiceSettings {
            telemetry: test_telemetry(),
            worker: fast_settings(),
            ..workers.clone()
        },
        smtp: muster_notifier::SmtpSettings {
            host: "127.0.0.1".into(),
            port: smtp_port,
            tls: muster_notifier::TlsMode::None,
            username: None,
            password: None,
            from: "Muster <muster@contoso.com>".into(),
            timeout_ms: 5_000,
        },
        notifier: muster_notifier::NotifierOptions {
            base_url: "https://muster.example/members".into(),
            digest_window_secs: 600,
            import_window_hours: 72,
            poll_interval_ms: 20,
            claim_batch: 20,
            max_attempts: 2,
            retry_delays_ms: vec![60_000],
            sending_lease_secs: 300,
        },
    }
}

fn spawn_notifier(settings: &muster_notifier::Settings, app: &TestApp, clock: &Arc<Mutex<DateTime<Utc>>>) {
    let clock = clock.clone();
    let clock = muster_notifier::Clock::from_fn(move || *clock.lock().unwrap());
    let trigger = muster_notifier::worker(settings, app.db.pool.clone(), clock.clone());
    tokio::spawn(trigger.run(app.shutdown_token()));
    let dispatcher = muster_notifier::dispatcher(settings, app.db.pool.clone(), clock).unwrap();
    tokio::spawn(dispatcher.run(app.shutdown_token()));
}
