//! The transactional outbox: a service records the events of a change in the same
//! transaction as the change itself; the relay publishes them later. So a committed change
//! always gets its events, and RabbitMQ is never on the request path.

use muster_contracts::EventEnvelope;
use sqlx::PgConnection;

/// Appends `events` to the outbox inside the caller's transaction.
pub async fn append(conn: &mut PgConnection, events: &[EventEnvelope], traceparent: &str) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut event_ids = Vec::with_capacity(events.len());
    let mut tenant_ids = Vec::with_capacity(events.len());
    let mut routing_keys = Vec::with_capacity(events.len());
    let mut entity_ids = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut envelopes = Vec::with_capacity(events.len());
    for e in events {
        event_ids.push(e.event_id);
        tenant_ids.push(e.tenant_id);
        routing_keys.push(e.kind.routing_key().to_string());
        entity_ids.push(e.entity_id.clone());
        versions.push(e.version);
        envelopes.push(serde_json::to_value(e).map_err(|err| sqlx::Error::Encode(Box::new(err)))?);
    }
    // One round trip whatever the number of events; `with ordinality` keeps their order in ids.
    sqlx::query(
        "insert into scim.outbox (event_id, tenant_id, routing_key, entity_id, version, envelope, traceparent)
         select e.event_id, e.tenant_id, e.routing_key, e.entity_id, e.version, e.envelope, $7
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[])
              with ordinality as e(event_id, tenant_id, routing_key, entity_id, version, envelope, n)
         order by e.n",
    )
    .bind(event_ids)
    .bind(tenant_ids)
    .bind(routing_keys)
    .bind(entity_ids)
    .bind(versions)
    .bind(envelopes)
    .bind(traceparent)
    .execute(conn)
    .await?;
    Ok(())
}
