//! RabbitMQ: connecting, and declaring the system's topology idempotently.
//!
//! One topic exchange carries every event; each worker has a durable quorum queue with a
//! delivery limit that dead-letters, through a direct exchange, to its own `<queue>.dlq`.
//! Everything here works on RabbitMQ 3.10 without plugins.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use muster_contracts::topology::WORKER_QUEUES;
use muster_contracts::{Names, WorkerQueue};
use secrecy::ExposeSecret;

use crate::config::AmqpSettings;

/// Deliveries of one message before the broker dead-letters it (quorum queue
/// `x-delivery-limit`): a poison message cannot loop forever.
pub const DELIVERY_LIMIT: i64 = 10;

/// Opens a connection.
pub async fn connect(settings: &AmqpSettings) -> lapin::Result<Connection> {
    Connection::connect(settings.url.expose_secret(), ConnectionProperties::default()).await
}

/// Opens a connection that operators see under `name` (`rabbitmqctl list_connections
/// client_properties`, the management UI).
pub async fn connect_named(settings: &AmqpSettings, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name.as_bytes().to_vec()));
    Connection::connect(settings.url.expose_secret(), properties).await
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// Declares the events exchange, the dead-letter exchange, and every worker's queue and DLQ.
/// Safe to run any number of times, from any service.
pub async fn declare_topology(channel: &Channel, names: &Names) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel
        .exchange_declare(names.events_exchange().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await?;
    channel
        .exchange_declare(names.dead_letter_exchange().into(), ExchangeKind::Direct, durable, FieldTable::default())
        .await?;
    for worker in WORKER_QUEUES {
        declare_worker_queue(channel, names, &worker).await?;
    }
    Ok(())
}

/// Declares one worker's quorum queue, its bindings and its dead-letter queue.
pub async fn declare_worker_queue(channel: &Channel, names: &Names, worker: &WorkerQueue) -> lapin::Result<()> {
    let queue = names.queue(worker);
    let dlq = names.dead_letter_queue(worker);
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };

    let mut dlq_args = FieldTable::default();
    dlq_args.insert(ShortString::from("x-queue-type"), long_string("quorum"));
    channel.queue_declare(dlq.as_str().into(), durable, dlq_args).await?;
    channel
        .queue_bind(
            dlq.as_str().into(),
            names.dead_letter_exchange().into(),
            dlq.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    // Quorum queues: replicated, and they count deliveries, which classic queues cannot.
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-queue-type"), long_string("quorum"));
    args.insert(ShortString::from("x-delivery-limit"), AMQPValue::LongLongInt(DELIVERY_LIMIT));
    args.insert(ShortString::from("x-dead-letter-exchange"), long_string(&names.dead_letter_exchange()));
    args.insert(ShortString::from("x-dead-letter-routing-key"), long_string(&dlq));
    channel.queue_declare(queue.as_str().into(), durable, args).await?;
    for pattern in worker.bindings {
        channel
            .queue_bind(
                queue.as_str().into(),
                names.events_exchange().into(),
                (*pattern).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Declares a worker's delay queues, one per retry delay: a message published there waits
/// for the queue's TTL, then dead-letters through the default exchange back into the
/// worker's queue.
pub async fn declare_retry_queues(
    channel: &Channel,
    names: &Names,
    worker: &WorkerQueue,
    delays_ms: &[u64],
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    for delay in delays_ms {
        let mut args = FieldTable::default();
        // Classic queues: a fixed per-queue TTL expires messages in order, so none waits
        // behind a longer one.
        args.insert(ShortString::from("x-message-ttl"), AMQPValue::LongLongInt(*delay as i64));
        args.insert(ShortString::from("x-dead-letter-exchange"), long_string(""));
        args.insert(ShortString::from("x-dead-letter-routing-key"), long_string(&names.queue(worker)));
        channel.queue_declare(names.retry_queue(worker, *delay).as_str().into(), durable, args).await?;
    }
    Ok(())
}

/// Message properties for an event: persistent JSON with its id and trace context.
pub fn event_properties(event_id: &str, traceparent: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tp) = traceparent {
        headers.insert(ShortString::from(muster_contracts::TRACEPARENT_HEADER), long_string(tp));
    }
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(event_id.into())
        .with_headers(headers)
}

/// An integer header of a delivered message.
pub fn header_i64(properties: &BasicProperties, name: &str) -> Option<i64> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// `properties` with the string headers `set` added (replacing same-named ones).
pub fn with_headers(properties: &BasicProperties, set: &[(&str, HeaderValue)]) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    for (name, value) in set {
        let v = match value {
            HeaderValue::Str(s) => long_string(s),
            HeaderValue::Int(n) => AMQPValue::LongLongInt(*n),
        };
        headers.insert(ShortString::from(*name), v);
    }
    properties.clone().with_headers(headers)
}

/// A header value to set.
#[derive(Debug, Clone)]
pub enum HeaderValue {
    Str(String),
    Int(i64),
}

/// A string header of a delivered message.
pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Deletes everything [`declare_topology`] declared under `names` (and the workers' delay
/// queues for `retry_delays_ms`): for tests and benchmarks that made their own prefix.
/// Best effort: what is already gone is skipped.
pub async fn delete_topology(channel: &Channel, names: &Names, retry_delays_ms: &[u64]) {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    for worker in WORKER_QUEUES {
        let mut queues = vec![names.queue(&worker), names.dead_letter_queue(&worker)];
        queues.extend(retry_delays_ms.iter().map(|d| names.retry_queue(&worker, *d)));
        for q in queues {
            let _ = channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
        }
    }
    for ex in [names.events_exchange(), names.dead_letter_exchange()] {
        let _ = channel.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()).await;
    }
}
