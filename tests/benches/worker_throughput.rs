//! Consume-and-ack throughput of the worker runtime with an empty handler, next to the
//! broker's raw consume rate (a bare lapin consumer acking each message) on the same machine.
//!
//!   cargo bench -p muster-e2e --bench worker_throughput -- [MESSAGES] [PREFETCH]
//!
//! Needs RabbitMQ (`AMQP_URL`, default local). Everything is declared under a fresh prefix
//! and deleted afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use muster_contracts::topology::NORMALIZER;
use muster_contracts::{EventEnvelope, EventKind, Names};
use muster_infra::worker::{Handler, ProcessError, Worker, WorkerSettings};
use muster_testkit::broker::{broker_url, teardown_on, test_amqp};
use tokio_util::sync::CancellationToken;

struct Empty(Arc<AtomicU64>);

impl Handler for Empty {
    async fn handle(&self, _event: &EventEnvelope) -> Result<(), ProcessError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn fill(channel: &Channel, names: &Names, messages: u64) -> anyhow::Result<()> {
    let tenant = uuid::Uuid::now_v7();
    let mut pending = Vec::with_capacity(1000);
    for n in 0..messages {
        let event = EventEnvelope::new(tenant, EventKind::ScimUserUpserted, format!("u{n}"), 1, chrono::Utc::now());
        let body = serde_json::to_vec(&event)?;
        let properties = muster_infra::amqp::event_properties(&event.event_id.to_string(), None);
        pending.push(
            channel
                .basic_publish(
                    names.events_exchange().into(),
                    "scim.user.upserted".into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .await?,
        );
        if pending.len() == 1000 {
            for c in pending.drain(..) {
                c.await?;
            }
        }
    }
    for c in pending {
        c.await?;
    }
    Ok(())
}

async fn raw_consume(connection: &Connection, queue: &str, messages: u64, prefetch: u16) -> anyhow::Result<Duration> {
    let channel = connection.create_channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(queue.into(), "raw".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    let started = Instant::now();
    let mut seen = 0;
    while seen < messages {
        let delivery = consumer.next().await.ok_or_else(|| anyhow::anyhow!("consumer ended"))??;
        delivery.ack(BasicAckOptions::default()).await?;
        seen += 1;
    }
    let elapsed = started.elapsed();
    channel.close(200, "done".into()).await?;
    Ok(elapsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let messages: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let prefetch: u16 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let amqp = test_amqp(&broker_url());
    let names = Names::new(amqp.prefix.clone());
    let connection = Connection::connect(&broker_url(), lapin::ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    muster_infra::amqp::declare_topology(&channel, &names).await?;
    let queue = names.queue(&NORMALIZER);

    fill(&channel, &names, messages).await?;
    let raw = raw_consume(&connection, &queue, messages, prefetch).await?;

    fill(&channel, &names, messages).await?;
    let handled = Arc::new(AtomicU64::new(0));
    let settings = WorkerSettings {
        prefetch,
        concurrency: 8,
        batch_prefetch: prefetch,
        max_attempts: 5,
        retry_delays_ms: vec![1000],
        shutdown_grace_ms: 5000,
    };
    let worker = Worker::new("bench", NORMALIZER, amqp.clone(), settings.clone(), Empty(handled.clone()));
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    while handled.load(Ordering::Relaxed) < messages {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let runtime = started.elapsed();
    shutdown.cancel();
    let _ = running.await;

    teardown_on(&channel, &names, &settings.retry_delays_ms).await;
    connection.close(200, "bench done".into()).await?;
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!("messages: {messages}, prefetch: {prefetch}, runtime concurrency: {}", settings.concurrency);
    println!("{:<42} {:>12}", "consumer", "messages/s");
    println!("{:<42} {:>12.0}", "raw lapin consumer, ack each", rate(raw));
    println!("{:<42} {:>12.0}", "worker runtime, empty handler, ack each", rate(runtime));
    println!("runtime / raw: {:.2}", raw.as_secs_f64() / runtime.as_secs_f64());
    Ok(())
}
