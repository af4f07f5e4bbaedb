//! Dead-letter queues, for operators: what is in each, why, and putting messages back.
//!
//! Inspection takes messages without acknowledging them and closes its channel, which hands
//! them back to the queue: `show` consumes nothing for good. `replay` publishes a message
//! (with confirms) into its worker's own queue, with the attempt count reset, then acks the
//! DLQ copy; it goes to the worker's queue rather than back through the topic exchange so
//! that the other workers bound to the same routing key do not receive it a second time.

use chrono::{DateTime, Utc};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use muster_contracts::Names;
use muster_contracts::headers as h;
use muster_contracts::topology::WORKER_QUEUES;
use serde::Serialize;
use serde_json::Value;

use crate::amqp::{HeaderValue, header_i64, header_str, with_headers};

/// One DLQ's state.
#[derive(Debug, Clone, Serialize)]
pub struct DlqSummary {
    pub queue: String,
    pub depth: u32,
    /// When the oldest message was dead-lettered.
    pub oldest_failure: Option<String>,
    pub oldest_age_seconds: Option<i64>,
}

/// A dead-lettered message, as the runtime recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub event_id: Option<String>,
    pub tenant_id: Option<String>,
    pub routing_key: Option<String>,
    pub exchange: Option<String>,
    pub service: Option<String>,
    pub reason: Option<String>,
    pub failure_kind: Option<String>,
    pub attempts: Option<i64>,
    pub first_failure: Option<String>,
    pub last_failure: Option<String>,
    pub payload: Value,
}

impl DeadLetter {
    fn from_message(properties: &BasicProperties, data: &[u8]) -> DeadLetter {
        let payload =
            serde_json::from_slice(data).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
        let from_payload = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_string);
        DeadLetter {
            event_id: header_str(properties, h::EVENT_ID).or_else(|| from_payload("event_id")),
            tenant_id: header_str(properties, h::TENANT_ID).or_else(|| from_payload("tenant_id")),
            routing_key: header_str(properties, h::ORIGINAL_ROUTING_KEY),
            exchange: header_str(properties, h::ORIGINAL_EXCHANGE),
            service: header_str(properties, h::SERVICE),
            reason: header_str(properties, h::REASON),
            failure_kind: header_str(properties, h::FAILURE_KIND),
            attempts: header_i64(properties, h::ATTEMPTS),
            first_failure: header_str(properties, h::FIRST_FAILURE),
            last_failure: header_str(properties, h::LAST_FAILURE),
            payload,
        }
    }
}

/// Which messages an operation applies to.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this tenant's messages (a tenant admin's view); every tenant's when `None`.
    pub tenant: Option<String>,
    /// Only these events; all when `None`.
    pub event_ids: Option<Vec<String>>,
}

impl Selection {
    /// Every message.
    pub fn all() -> Selection {
        Selection::default()
    }

    /// The messages of these events.
    pub fn events(ids: Vec<String>) -> Selection {
        Selection { tenant: None, event_ids: Some(ids) }
    }

    /// The same selection, narrowed to one tenant's messages.
    pub fn for_tenant(self, tenant: impl Into<String>) -> Selection {
        Selection { tenant: Some(tenant.into()), ..self }
    }

    /// Whether `letter` is selected.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.tenant.as_ref().is_none_or(|t| letter.tenant_id.as_ref() == Some(t))
            && self.event_ids.as_ref().is_none_or(|ids| letter.event_id.as_ref().is_some_and(|e| ids.contains(e)))
    }
}

/// The DLQ name for `queue`, which may be a worker name (`normalizer`), its queue or its DLQ.
pub fn resolve(names: &Names, queue: &str) -> Option<String> {
    WORKER_QUEUES.iter().find_map(|w| {
        let dlq = names.dead_letter_queue(w);
        (queue == w.name || queue == names.queue(w) || queue == dlq).then_some(dlq)
    })
}

async fn depth(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    Ok(channel.queue_declare(queue.into(), passive, FieldTable::default()).await?.message_count())
}

/// Every worker's DLQ with its depth and the age of its oldest message.
pub async fn summaries(connection: &Connection, names: &Names) -> lapin::Result<Vec<DlqSummary>> {
    let mut out = Vec::new();
    for worker in WORKER_QUEUES {
        let dlq = names.dead_letter_queue(&worker);
        let channel = connection.create_channel().await?;
        let depth = match depth(&channel, &dlq).await {
            Ok(d) => d,
            Err(_) => continue, // not declared yet: that worker never ran
        };
        let oldest = if depth > 0 { peek_on(&channel, &dlq, 1).await?.into_iter().next() } else { None };
        let _ = channel.close(200, "done".into()).await;
        let oldest_failure = oldest.and_then(|l| l.last_failure);
        let oldest_age_seconds = oldest_failure
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_seconds());
        out.push(DlqSummary { queue: dlq, depth, oldest_failure, oldest_age_seconds });
    }
    Ok(out)
}

/// The next message of `dlq`, unacknowledged. An empty answer is asked again twice, a little
/// later: messages another channel just handed back (a `show` a moment ago) reach a quorum
/// queue asynchronously and would otherwise be missed.
async fn next_message(channel: &Channel, dlq: &str) -> lapin::Result<Option<lapin::message::BasicGetMessage>> {
    for wait_ms in [0, 50, 200] {
        if wait_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
        }
        if let Some(message) = channel.basic_get(dlq.into(), BasicGetOptions { no_ack: false }).await? {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

async fn peek_on(channel: &Channel, dlq: &str, limit: usize) -> lapin::Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    while out.len() < limit {
        match next_message(channel, dlq).await? {
            Some(message) => out.push(DeadLetter::from_message(&message.delivery.properties, &message.delivery.data)),
            None => break,
        }
    }
    Ok(out)
}

/// Up to `limit` messages from the head of `dlq`, left in the queue.
pub async fn peek(connection: &Connection, dlq: &str, limit: usize) -> lapin::Result<Vec<DeadLetter>> {
    peek_selected(connection, dlq, &Selection::all(), limit, limit).await
}

/// Up to `limit` selected messages among the first `scan` of `dlq`, left in the queue.
pub async fn peek_selected(
    connection: &Connection,
    dlq: &str,
    selection: &Selection,
    limit: usize,
    scan: usize,
) -> lapin::Result<Vec<DeadLetter>> {
    let channel = connection.create_channel().await?;
    let letters = peek_on(&channel, dlq, scan).await;
    // Closing the channel returns every unacknowledged message to the queue.
    let _ = channel.close(200, "peek done".into()).await;
    Ok(letters?.into_iter().filter(|l| selection.matches(l)).take(limit).collect())
}

/// Walks `dlq` once; for each selected message runs `act`, then acks it. Unselected
/// messages go back to the queue when the channel closes.
async fn each_selected<F, Fut>(
    connection: &Connection,
    dlq: &str,
    selection: &Selection,
    mut act: F,
) -> anyhow::Result<Vec<DeadLetter>>
where
    F: FnMut(Channel, lapin::message::Delivery) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut done = Vec::new();
    // Messages taken and not selected stay unacknowledged on this channel, so they are not
    // handed out again: the walk ends when the queue has nothing more to give.
    while let Some(message) = next_message(&channel, dlq).await? {
        let letter = DeadLetter::from_message(&message.delivery.properties, &message.delivery.data);
        if !selection.matches(&letter) {
            continue;
        }
        let delivery = message.delivery;
        let acker = delivery.acker.clone();
        act(channel.clone(), delivery).await?;
        acker.ack(BasicAckOptions::default()).await?;
        done.push(letter);
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(done)
}

/// Republishes the selected messages into their worker's queue with a fresh attempt count,
/// each confirmed before its DLQ copy is removed.
pub async fn replay(
    connection: &Connection,
    names: &Names,
    dlq: &str,
    selection: &Selection,
) -> anyhow::Result<Vec<DeadLetter>> {
    let queue = WORKER_QUEUES
        .iter()
        .find(|w| names.dead_letter_queue(w) == dlq)
        .map(|w| names.queue(w))
        .ok_or_else(|| anyhow::anyhow!("'{dlq}' is not a worker's dead-letter queue"))?;
    each_selected(connection, dlq, selection, |channel, delivery| {
        let queue = queue.clone();
        async move {
            let properties = with_headers(&delivery.properties, &[(h::ATTEMPTS, HeaderValue::Int(0))]);
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &delivery.data,
                    properties,
                )
                .await?
                .await?;
            match confirm {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                other => anyhow::bail!("the broker did not take the replayed message: {other:?}"),
            }
        }
    })
    .await
}

/// Removes the selected messages for good.
pub async fn purge(connection: &Connection, dlq: &str, selection: &Selection) -> anyhow::Result<Vec<DeadLetter>> {
    each_selected(connection, dlq, selection, |_, _| async { Ok(()) }).await
}
