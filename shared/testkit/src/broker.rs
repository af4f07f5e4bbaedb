//! RabbitMQ for tests: settings under a unique prefix, a probe queue bound to the events
//! exchange, and removal of what the test declared.

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use muster_contracts::Names;
use muster_contracts::topology::WORKER_QUEUES;
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
        for worker in WORKER_QUEUES {
            for q in [names.queue(&worker), names.dead_letter_queue(&worker)] {
                let _ = self.channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
            }
        }
        for ex in [names.events_exchange(), names.dead_letter_exchange()] {
            let _ = self.channel.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
    }
}
