//! What this box can do without Muster, measured in the same run: PostgreSQL's commit rate
//! for a transaction shaped like the ingress's (a resource row and an outbox row), and
//! RabbitMQ's confirmed publish rate (batches of 500 awaited together, as the relay does).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

/// PostgreSQL commits per second over `connections` connections for `seconds`.
pub async fn postgres(pool: &PgPool, connections: usize, seconds: u64) -> anyhow::Result<f64> {
    sqlx::raw_sql(
        "create schema if not exists baseline;
         create table if not exists baseline.resources (tenant_id uuid not null, id uuid not null,
             user_name text not null, resource jsonb not null, version bigint not null default 1,
             created_at timestamptz not null default now(), updated_at timestamptz not null default now(),
             primary key (tenant_id, id));
         create unique index if not exists resources_user_name on baseline.resources (tenant_id, lower(user_name));
         create table if not exists baseline.outbox (id bigserial primary key, event_id uuid not null unique,
             tenant_id uuid not null, routing_key text not null, entity_id text not null, version bigint not null,
             envelope jsonb not null, traceparent text, attempts integer not null default 0,
             next_attempt_at timestamptz, last_error text, created_at timestamptz not null default now(),
             updated_at timestamptz not null default now());",
    )
    .execute(pool)
    .await?;
    let commits = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let tenant = Uuid::now_v7();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (pool, commits) = (pool.clone(), commits.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let id = Uuid::now_v7();
                    let doc = json!({"userName": format!("{id}@contoso.example"), "active": true,
                                     "name": {"givenName": "Ann", "familyName": "Lee"}});
                    let mut tx = pool.begin().await?;
                    sqlx::query(
                        "insert into baseline.resources (tenant_id, id, user_name, resource) values ($1, $2, $3, $4)",
                    )
                    .bind(tenant)
                    .bind(id)
                    .bind(format!("{id}@contoso.example"))
                    .bind(&doc)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "insert into baseline.outbox (event_id, tenant_id, routing_key, entity_id, version, envelope)
                         values ($1, $2, 'scim.user.upserted', $3, 1, $4)",
                    )
                    .bind(Uuid::now_v7())
                    .bind(tenant)
                    .bind(id.to_string())
                    .bind(&doc)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), sqlx::Error>(())
            })
        })
        .collect();
    let started = Instant::now();
    for task in join_all(tasks).await {
        task??;
    }
    let rate = commits.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    sqlx::raw_sql("drop schema baseline cascade").execute(pool).await?;
    Ok(rate)
}

/// RabbitMQ confirmed publishes per second (persistent messages into a durable quorum queue,
/// like the events) for `seconds`.
pub async fn rabbitmq(amqp: &muster_infra::config::AmqpSettings, seconds: u64) -> anyhow::Result<f64> {
    let connection = muster_infra::amqp::connect(amqp).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let exchange = format!("{}baseline", amqp.prefix);
    let queue = format!("{}baseline.q", amqp.prefix);
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    channel.exchange_declare(exchange.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), lapin::types::AMQPValue::LongString("quorum".into()));
    let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.as_str().into(), options, arguments).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let payload = json!({"event_id": Uuid::now_v7(), "kind": "scim.user.upserted", "entity_id": Uuid::now_v7(),
                         "version": 1, "occurred_at": "2026-11-26T00:00:00Z"})
    .to_string();
    let until = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut confirmed = 0u64;
    while Instant::now() < until {
        let mut confirms = Vec::with_capacity(500);
        for _ in 0..500 {
            let properties = BasicProperties::default().with_delivery_mode(2);
            confirms.push(
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "scim.user.upserted".into(),
                        BasicPublishOptions::default(),
                        payload.as_bytes(),
                        properties,
                    )
                    .await?,
            );
        }
        for confirmation in join_all(confirms).await {
            if confirmation?.is_ack() {
                confirmed += 1;
            }
        }
    }
    let rate = confirmed as f64 / started.elapsed().as_secs_f64();
    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await?;
    let _ = connection.close(200, "baseline measured".into()).await;
    Ok(rate)
}
