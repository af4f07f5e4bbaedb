//! The consume loop: connect, declare, consume with prefetch and bounded concurrency, handle,
//! ack / retry / dead-letter, reconnect, drain on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation};
use muster_contracts::headers as h;
use muster_contracts::{EventEnvelope, Names, WorkerQueue};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_retry::strategy::{ExponentialBackoff, jitter};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::acks::AckMsg;
use super::{Handler, ProcessError, WorkerSettings};
use crate::amqp::{HeaderValue, header_i64, header_str, with_headers};
use crate::config::AmqpSettings;
use crate::http::BrokerHealth;

/// How long a handled delivery's ack may wait for a slower one before it goes alone.
const ACK_PATIENCE: Duration = Duration::from_millis(20);

/// One worker: a handler bound to its queue.
pub struct Worker<H: Handler> {
    service: &'static str,
    queue: WorkerQueue,
    names: Names,
    amqp: AmqpSettings,
    settings: WorkerSettings,
    handler: Arc<H>,
    health: BrokerHealth,
}

/// What the per-delivery tasks share.
struct Shared<H: Handler> {
    service: &'static str,
    queue_name: String,
    dlq: String,
    dlx: String,
    retry_queues: Vec<String>,
    settings: WorkerSettings,
    handler: Arc<H>,
    publisher: Channel,
    acks: mpsc::UnboundedSender<AckMsg>,
}

impl<H: Handler> Worker<H> {
    /// A worker named `service` consuming `queue` (names under `amqp.prefix`).
    pub fn new(
        service: &'static str,
        queue: WorkerQueue,
        amqp: AmqpSettings,
        settings: WorkerSettings,
        handler: H,
    ) -> Self {
        let names = Names::new(amqp.prefix.clone());
        Worker { service, queue, names, amqp, settings, handler: Arc::new(handler), health: BrokerHealth::default() }
    }

    /// The broker connection state, for `/readyz`.
    pub fn health(&self) -> BrokerHealth {
        self.health.clone()
    }

    /// Runs the worker and its `/healthz`, `/readyz` (database and broker) and `/metrics` on
    /// `listener` until `shutdown`: what a worker binary's `run` does.
    pub async fn run_with_ops(
        self,
        pool: sqlx::PgPool,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let ops = crate::http::ops_routes(crate::http::Readiness { pool, broker: Some(self.health()) });
        let (served, consumed) = tokio::join!(crate::http::serve(listener, ops, shutdown.clone()), self.run(shutdown));
        served.and(consumed)
    }

    /// Consumes until `shutdown`; reconnects with capped, jittered backoff whenever the broker
    /// connection is lost. Unacked deliveries of a lost connection are redelivered by the
    /// broker, so nothing in flight is dropped.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = reconnect_backoff();
        while !shutdown.is_cancelled() {
            match self.session(&shutdown).await {
                Ok(()) => break,
                Err(err) => {
                    self.health.set_connected(false);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(
                        worker = self.service,
                        error = format!("{err:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "worker lost the broker; reconnecting"
                    );
                    metrics::counter!("worker_reconnects_total", "queue" => self.queue.name).increment(1);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
            if self.health.is_connected() {
                backoff = reconnect_backoff();
            }
        }
        self.health.set_connected(false);
        Ok(())
    }

    /// One connection's life; `Ok` only after a requested shutdown has drained.
    async fn session(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let connection =
            crate::amqp::connect_named(&self.amqp, &format!("muster-{}", self.service)).await.context("connecting")?;
        let consume = connection.create_channel().await.context("opening the consume channel")?;
        let publisher = connection.create_channel().await.context("opening the publish channel")?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await.context("enabling publisher confirms")?;
        consume
            .exchange_declare(
                self.names.events_exchange().into(),
                lapin::ExchangeKind::Topic,
                lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        consume
            .exchange_declare(
                self.names.dead_letter_exchange().into(),
                lapin::ExchangeKind::Direct,
                lapin::options::ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        crate::amqp::declare_worker_queue(&consume, &self.names, &self.queue).await.context("declaring the queue")?;
        crate::amqp::declare_retry_queues(&consume, &self.names, &self.queue, &self.settings.retry_delays_ms)
            .await
            .context("declaring the retry queues")?;
        consume.basic_qos(self.settings.prefetch, BasicQosOptions::default()).await?;
        let queue_name = self.names.queue(&self.queue);
        let tag = format!("{}-{}", self.service, uuid::Uuid::new_v4().simple());
        let mut consumer = consume
            .basic_consume(
                queue_name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("starting to consume")?;
        self.health.set_connected(true);
        tracing::info!(worker = self.service, queue = %queue_name, "worker consuming");
        let (acks, acking) = super::acks::spawn(consume.clone(), ACK_PATIENCE);

        let shared = Arc::new(Shared {
            service: self.service,
            queue_name: queue_name.clone(),
            dlq: self.names.dead_letter_queue(&self.queue),
            dlx: self.names.dead_letter_exchange(),
            retry_queues: self
                .settings
                .retry_delays_ms
                .iter()
                .map(|d| self.names.retry_queue(&self.queue, *d))
                .collect(),
            settings: self.settings.clone(),
            handler: self.handler.clone(),
            publisher: publisher.clone(),
            acks,
        });
        let slots = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut in_flight = JoinSet::new();
        let mut depth_tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Stop taking deliveries, finish those in hand, then close.
                    let _ = consume.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    let grace = Duration::from_millis(self.settings.shutdown_grace_ms);
                    let drained = tokio::time::timeout(grace, async { while in_flight.join_next().await.is_some() {} }).await;
                    if drained.is_err() {
                        tracing::warn!(worker = self.service, left = in_flight.len(), "shutdown grace over; unfinished deliveries will be redelivered");
                    }
                    in_flight.abort_all();
                    // The ack task sends what it holds once the last sender is gone.
                    drop(shared);
                    let _ = tokio::time::timeout(Duration::from_secs(5), acking).await;
                    let _ = connection.close(200, "worker shutting down".into()).await;
                    return Ok(());
                }
                _ = depth_tick.tick() => report_depths(&publisher, &queue_name, &shared.dlq).await,
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                next = consumer.next() => {
                    let delivery = match next {
                        Some(Ok(d)) => d,
                        Some(Err(err)) => return Err(err).context("consuming"),
                        None => anyhow::bail!("the broker ended the consumer"),
                    };
                    let permit = slots.clone().acquire_owned().await.context("concurrency limiter closed")?;
                    let shared = shared.clone();
                    let tag = delivery.delivery_tag;
                    let _ = shared.acks.send(AckMsg::Received(tag));
                    in_flight.spawn(async move {
                        let finish = process(&shared, delivery).await;
                        let _ = shared.acks.send(match finish {
                            Finish::Ack => AckMsg::Done(tag),
                            Finish::Settled => AckMsg::Settled(tag),
                        });
                        drop(permit);
                    });
                }
            }
        }
    }
}

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBackoff::from_millis(2).factor(100).max_delay(Duration::from_secs(10)).map(jitter)
}

async fn report_depths(channel: &Channel, queue: &str, dlq: &str) {
    for (name, gauge) in [(queue, "worker_queue_depth"), (dlq, "worker_dlq_depth")] {
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        if let Ok(q) = channel.queue_declare(name.into(), passive, FieldTable::default()).await {
            metrics::gauge!(gauge, "queue" => name.to_string()).set(f64::from(q.message_count()));
        }
    }
}

/// How a delivery ended.
enum Finish {
    /// Handled: the ack task acks it.
    Ack,
    /// Retried, dead-lettered or requeued: acked or nacked already.
    Settled,
}

/// Handles one delivery to its end: ack, retry or dead-letter. Never panics the loop.
async fn process<H: Handler>(shared: &Shared<H>, delivery: Delivery) -> Finish {
    let queue = shared.queue_name.clone();
    metrics::counter!("worker_consumed_total", "queue" => queue.clone()).increment(1);
    let attempts = header_i64(&delivery.properties, h::ATTEMPTS).unwrap_or(0);
    let envelope: EventEnvelope = match serde_json::from_slice(&delivery.data) {
        Ok(e) => e,
        Err(err) => {
            let failure = ProcessError::Permanent(format!("malformed envelope: {err}"));
            dead_letter(shared, &delivery, None, &failure, attempts + 1).await;
            return Finish::Settled;
        }
    };
    let span = tracing::info_span!(
        "handle",
        worker = shared.service,
        event_id = %envelope.event_id,
        tenant_id = %envelope.tenant_id,
        entity_id = %envelope.entity_id,
        version = envelope.version,
        kind = envelope.kind.routing_key(),
        attempt = attempts + 1,
    );
    if let Some(tp) = header_str(&delivery.properties, muster_contracts::TRACEPARENT_HEADER) {
        crate::telemetry::continue_trace(&span, &tp);
    }
    let started = Instant::now();
    let result = shared.handler.handle(&envelope).instrument(span.clone()).await;
    metrics::histogram!("worker_handler_seconds", "queue" => queue.clone()).record(started.elapsed().as_secs_f64());
    let _entered = span.enter();
    match result {
        Ok(()) => {
            // The effect is committed; should the ack be lost, the redelivery is skipped by version.
            metrics::counter!("worker_acked_total", "queue" => queue).increment(1);
            return Finish::Ack;
        }
        Err(failure @ ProcessError::Permanent(_)) => {
            dead_letter(shared, &delivery, Some(&envelope), &failure, attempts + 1).await
        }
        Err(failure @ ProcessError::Transient(_)) => {
            let attempt = attempts + 1;
            if attempt >= i64::from(shared.settings.max_attempts) {
                let failure =
                    ProcessError::Transient(format!("gave up after {attempt} attempts: {}", failure.reason()));
                dead_letter(shared, &delivery, Some(&envelope), &failure, attempt).await;
            } else {
                retry(shared, &delivery, &envelope, &failure, attempt).await;
            }
        }
    }
    Finish::Settled
}

/// The headers that say where a failed message came from and why it failed.
fn failure_headers(
    shared_service: &str,
    delivery: &Delivery,
    envelope: Option<&EventEnvelope>,
    failure: &ProcessError,
    attempt: i64,
) -> Vec<(&'static str, HeaderValue)> {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let first = header_str(&delivery.properties, h::FIRST_FAILURE).unwrap_or_else(|| now.clone());
    // A retried message comes back through the default exchange: keep the first origin.
    let exchange = header_str(&delivery.properties, h::ORIGINAL_EXCHANGE)
        .unwrap_or_else(|| delivery.exchange.as_str().to_string());
    let routing_key = header_str(&delivery.properties, h::ORIGINAL_ROUTING_KEY)
        .unwrap_or_else(|| delivery.routing_key.as_str().to_string());
    let mut out = vec![
        (h::ATTEMPTS, HeaderValue::Int(attempt)),
        (h::REASON, HeaderValue::Str(failure.reason().chars().take(2000).collect())),
        (h::FAILURE_KIND, HeaderValue::Str(failure.kind().into())),
        (h::FIRST_FAILURE, HeaderValue::Str(first)),
        (h::LAST_FAILURE, HeaderValue::Str(now)),
        (h::ORIGINAL_EXCHANGE, HeaderValue::Str(exchange)),
        (h::ORIGINAL_ROUTING_KEY, HeaderValue::Str(routing_key)),
        (h::SERVICE, HeaderValue::Str(shared_service.to_string())),
    ];
    if let Some(e) = envelope {
        out.push((h::TENANT_ID, HeaderValue::Str(e.tenant_id.to_string())));
        out.push((h::EVENT_ID, HeaderValue::Str(e.event_id.to_string())));
    }
    out
}

/// Publishes `delivery` (with `headers`) and waits for the broker's confirm.
async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    delivery: &Delivery,
    properties: lapin::BasicProperties,
) -> anyhow::Result<()> {
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm =
        channel.basic_publish(exchange.into(), routing_key.into(), options, &delivery.data, properties).await?;
    match confirm.await? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!("'{routing_key}' is unroutable"),
        Confirmation::Nack(_) => anyhow::bail!("the broker refused the message"),
    }
}

/// Moves the message to the DLQ with its reason; the original is acked only after the DLQ
/// copy is confirmed. If that fails, the original is requeued rather than lost.
async fn dead_letter<H: Handler>(
    shared: &Shared<H>,
    delivery: &Delivery,
    envelope: Option<&EventEnvelope>,
    failure: &ProcessError,
    attempt: i64,
) {
    let headers = failure_headers(shared.service, delivery, envelope, failure, attempt);
    let properties = with_headers(&delivery.properties, &headers);
    match publish_confirmed(&shared.publisher, &shared.dlx, &shared.dlq, delivery, properties).await {
        Ok(()) => {
            tracing::warn!(reason = failure.reason(), kind = failure.kind(), attempts = attempt, dlq = %shared.dlq, "message dead-lettered");
            metrics::counter!("worker_dead_lettered_total", "queue" => shared.queue_name.clone(), "kind" => failure.kind()).increment(1);
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), reason = failure.reason(), "could not dead-letter; requeueing");
            let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
        }
    }
}

/// Sends the message to the delay queue of this attempt; it returns to the worker's queue
/// when the delay is over. Other messages keep flowing meanwhile.
async fn retry<H: Handler>(
    shared: &Shared<H>,
    delivery: &Delivery,
    envelope: &EventEnvelope,
    failure: &ProcessError,
    attempt: i64,
) {
    let index = usize::try_from(attempt - 1).unwrap_or(0).min(shared.retry_queues.len().saturating_sub(1));
    let Some(retry_queue) = shared.retry_queues.get(index) else {
        // No delays configured: the broker's redelivery is the retry.
        let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
        return;
    };
    let headers = failure_headers(shared.service, delivery, Some(envelope), failure, attempt);
    // Jitter: the delay queue's TTL is the cap; each message expires somewhere in its upper
    // half, so retries of a burst of failures do not all return at once. A message behind a
    // later-expiring one waits at most half a delay longer.
    let cap = shared.settings.retry_delays_ms.get(index).copied().unwrap_or(1000);
    let jittered = cap / 2 + rand::random_range(0..=cap / 2);
    let properties = with_headers(&delivery.properties, &headers).with_expiration(jittered.to_string().into());
    match publish_confirmed(&shared.publisher, "", retry_queue, delivery, properties).await {
        Ok(()) => {
            tracing::info!(reason = failure.reason(), attempt, retry_queue = %retry_queue, "transient failure; retrying later");
            metrics::counter!("worker_retried_total", "queue" => shared.queue_name.clone()).increment(1);
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "could not schedule the retry; requeueing");
            let _ = delivery.nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() }).await;
        }
    }
}
