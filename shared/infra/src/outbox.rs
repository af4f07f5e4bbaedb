//! The transactional outbox: a service records the events of a change in the same
//! transaction as the change itself; the relay publishes them later. So a committed change
//! always gets its events, and RabbitMQ is never on the request path.

use muster_contracts::EventEnvelope;
use sqlx::postgres::PgArguments;
use sqlx::query::{Query, QueryAs};
use sqlx::{PgConnection, Postgres};

/// Appends `events` to the outbox inside the caller's transaction.
pub async fn append(conn: &mut PgConnection, events: &[EventEnvelope], traceparent: &str) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let columns = Columns::of(events, traceparent)?;
    columns.bind(sqlx::query(&insert_statement(1, "true"))).execute(conn).await?;
    Ok(())
}

/// `write` — one data-modifying statement with a `returning` clause, its parameters `$1` to
/// `$params` — followed by the appending of events, as a single statement: atomic without a
/// transaction, and one round trip where `begin`, write, append and `commit` take four. The
/// events are appended only if `write` returned a row (an update that found nothing to change
/// has no events). Bind `write`'s parameters, then the events' with [`Columns::bind`]; the
/// statement returns what `write` returns.
pub fn with_events(write: &str, params: usize) -> String {
    with_events_where(write, params, "exists (select from written)")
}

/// [`with_events`] for a write of several entities (`write` returns their `id`s): the events
/// of the entities written are appended, those of the others (say, refused by an
/// `on conflict do nothing`) are not.
pub fn with_events_of_written(write: &str, params: usize) -> String {
    with_events_where(write, params, "e.entity_id in (select id::text from written)")
}

fn with_events_where(write: &str, params: usize, condition: &str) -> String {
    format!(
        "with written as ({write}), appended as ({}) select * from written",
        insert_statement(params + 1, condition)
    )
}

/// The outbox insert, its seven parameters numbered from `$first`, of the events for which
/// `condition` holds. One round trip whatever the number of events; `with ordinality` keeps
/// their order in ids. The transaction holds an xid before its first row takes an id (a
/// filter evaluated before any row): the relay's floor relies on it (`muster_relay::floor`).
fn insert_statement(first: usize, condition: &str) -> String {
    let p = |n: usize| format!("${}", first + n);
    format!(
        "insert into scim.outbox (event_id, tenant_id, routing_key, entity_id, version, envelope, traceparent)
         select e.event_id, e.tenant_id, e.routing_key, e.entity_id, e.version, e.envelope, e.traceparent
         from unnest({}::uuid[], {}::uuid[], {}::text[], {}::text[], {}::bigint[], {}::jsonb[], {}::text[])
              with ordinality as e(event_id, tenant_id, routing_key, entity_id, version, envelope, traceparent, n)
         where pg_current_xact_id() is not null and ({condition}) order by e.n",
        p(0),
        p(1),
        p(2),
        p(3),
        p(4),
        p(5),
        p(6)
    )
}

/// Events as the outbox insert's parameters.
#[derive(Default)]
pub struct Columns {
    event_ids: Vec<uuid::Uuid>,
    tenant_ids: Vec<uuid::Uuid>,
    routing_keys: Vec<&'static str>,
    entity_ids: Vec<String>,
    versions: Vec<i64>,
    envelopes: Vec<serde_json::Value>,
    /// The trace each event continues: a batch's events come from several requests.
    traceparents: Vec<String>,
}

impl Columns {
    /// The parameters of `events`, all of them continuing the trace `traceparent`.
    pub fn of(events: &[EventEnvelope], traceparent: &str) -> sqlx::Result<Columns> {
        let mut c = Columns::default();
        c.push(events, traceparent)?;
        Ok(c)
    }

    /// Adds `events`, continuing the trace `traceparent`.
    pub fn push(&mut self, events: &[EventEnvelope], traceparent: &str) -> sqlx::Result<()> {
        for e in events {
            self.event_ids.push(e.event_id);
            self.tenant_ids.push(e.tenant_id);
            self.routing_keys.push(e.kind.routing_key());
            self.entity_ids.push(e.entity_id.clone());
            self.versions.push(e.version);
            self.envelopes.push(serde_json::to_value(e).map_err(|err| sqlx::Error::Encode(Box::new(err)))?);
            self.traceparents.push(traceparent.to_string());
        }
        Ok(())
    }

    /// Binds the events' parameters after those `query` has.
    pub fn bind<'q, Q: Bind<'q>>(self, query: Q) -> Q {
        query
            .bind_value(self.event_ids)
            .bind_value(self.tenant_ids)
            .bind_value(self.routing_keys)
            .bind_value(self.entity_ids)
            .bind_value(self.versions)
            .bind_value(self.envelopes)
            .bind_value(self.traceparents)
    }
}

/// The query types [`Columns::bind`] binds to.
pub trait Bind<'q>: Sized {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send;
}

impl<'q> Bind<'q> for Query<'q, Postgres, PgArguments> {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        self.bind(value)
    }
}

impl<'q, O> Bind<'q> for QueryAs<'q, Postgres, O, PgArguments> {
    fn bind_value<T>(self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        self.bind(value)
    }
}
