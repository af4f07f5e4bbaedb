//! RabbitMQ for tests: settings under a unique prefix, a probe queue bound to the events
//! exchange, and removal of what the test declared.

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use muster_contracts::Names;
use muster_infra::config::AmqpSettings;
use secrecy::SecretString;

/// The broker URL tests use: `AMQP_URL`, else the local default.
pub fn broker_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// AMQP settings with a prefix of this test's own.
pub fn test_amqp(url: &str) -> AmqpSettings {
    AmqpSettings { url: SecretString::from(url.to_string()), prefix: format!("test-{}.", crate::unique_suffix()) }
}

/// A consumer on a queue of the test's own, bound to the events exchange.
pub struct Probe {
    pub connection: Connection,
    pub channel: Channel,
    pub queue: String,
    consumer: lapin::Consumer,
}

/// A delivered message.
#[derive(Debug)]
pub struct Received {
    pub routing_key: String,
    pub body: serde_json::Value,
    pub traceparent: Option<String>,
    pub message_id: Option<String>,
}

impl Probe {
    /// Declares the topology under `names` and binds a fresh exclusive queue with `pattern`.
    pub async fn bind(names: &Names, pattern: &str) -> anyhow::Result<Probe> {
        let connection = Connection::connect(&broker_url(), lapin::ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        muster_infra::amqp::declare_topology(&channel, names).await?;
        let queue = format!("{}probe", names.prefix());
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                names.events_exchange().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(queue.as_str().into(), "probe".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        Ok(Probe { connection, channel, queue, consumer })
    }

    /// The next message, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: std::time::Duration) -> Option<Received> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next()).await.ok()??.ok()?;
        let _ = delivery.ack(BasicAckOptions::default()).await;
        Some(Received {
            routing_key: delivery.routing_key.as_str().to_string(),
            body: serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null),
            traceparent: muster_infra::amqp::header_str(&delivery.properties, muster_contracts::TRACEPARENT_HEADER),
            message_id: delivery.properties.message_id().as_ref().map(|m| m.as_str().to_string()),
        })
    }

    /// Deletes every queue and exchange declared under `names`.
    pub async fn teardown(self, names: &Names) {
        teardown_on(&self.channel, names, &[]).await;
        let _ = self.connection.close(200, "test done".into()).await;
    }

    /// Publishes an event to the events exchange, confirmed.
    pub async fn publish(&self, names: &Names, event: &muster_contracts::EventEnvelope) {
        publish_event(&self.channel, names, event).await;
    }
}

/// Publishes `event` with its routing key and waits for the confirm (on a confirm channel).
pub async fn publish_event(channel: &Channel, names: &Names, event: &muster_contracts::EventEnvelope) {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let properties = muster_infra::amqp::event_properties(&event.event_id.to_string(), None);
    let published = channel
        .basic_publish(
            names.events_exchange().into(),
            event.kind.routing_key().into(),
            lapin::options::BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await;
    match published {
        Ok(confirm) => {
            let _ = confirm.await;
        }
        Err(e) => panic!("publishing a test event: {e}"),
    }
}

/// Deletes the worker queues, DLQs, delay queues (for `retry_delays_ms`) and exchanges under
/// `names`.
pub async fn teardown_on(channel: &Channel, names: &Names, retry_delays_ms: &[u64]) {
    muster_infra::amqp::delete_topology(channel, names, retry_delays_ms).await;
}

impl Probe {
    /// A confirm-mode channel on the probe's connection, for publishing test events.
    pub async fn publisher(&self) -> Channel {
        let channel = match self.connection.create_channel().await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let _ = channel.confirm_select(lapin::options::ConfirmSelectOptions::default()).await;
        channel
    }
}

/// Puts a message into `worker`'s DLQ as the runtime would have left it (headers included),
/// for tests of the DLQ tools. Returns its event id.
pub async fn publish_dead_letter(
    channel: &Channel,
    names: &Names,
    worker: &muster_contracts::WorkerQueue,
    tenant: uuid::Uuid,
    entity: &str,
) -> String {
    use muster_contracts::headers as h;
    use muster_infra::amqp::{HeaderValue, with_headers};
    let event = muster_contracts::EventEnvelope::new(
        tenant,
        muster_contracts::EventKind::ScimUserUpserted,
        entity,
        1,
        chrono::Utc::now(),
    );
    let properties = with_headers(
        &muster_infra::amqp::event_properties(&event.event_id.to_string(), None),
        &[
            (h::ATTEMPTS, HeaderValue::Int(5)),
            (h::REASON, HeaderValue::Str("gave up after 5 attempts: database unavailable".into())),
            (h::FAILURE_KIND, HeaderValue::Str("transient".into())),
            (h::ORIGINAL_EXCHANGE, HeaderValue::Str(names.events_exchange())),
            (h::ORIGINAL_ROUTING_KEY, HeaderValue::Str("scim.user.upserted".into())),
            (h::EVENT_ID, HeaderValue::Str(event.event_id.to_string())),
            (h::TENANT_ID, HeaderValue::Str(tenant.to_string())),
            (h::FIRST_FAILURE, HeaderValue::Str(chrono::Utc::now().to_rfc3339())),
            (h::LAST_FAILURE, HeaderValue::Str(chrono::Utc::now().to_rfc3339())),
        ],
    );
    let body = serde_json::to_vec(&event).unwrap_or_default();
    let dlq = names.dead_letter_queue(worker);
    let published = channel
        .basic_publish(
            "".into(),
            dlq.as_str().into(),
            lapin::options::BasicPublishOptions::default(),
            &body,
            properties,
        )
        .await;
    match published {
        Ok(confirm) => {
            let _ = confirm.await;
        }
        Err(e) => panic!("publishing a dead letter: {e}"),
    }
    event.event_id.to_string()
}

/// Ready messages in `queue`.
pub async fn depth(channel: &Channel, queue: &str) -> u32 {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    match channel.queue_declare(queue.into(), passive, FieldTable::default()).await {
        Ok(q) => q.message_count(),
        Err(e) => panic!("{queue}: {e}"),
    }
}
