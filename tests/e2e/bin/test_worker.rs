//! A worker process for the crash test: the runtime with the test recorder, configured from
//! the environment (`DATABASE_URL`, `AMQP_URL`, `APP_AMQP__PREFIX`, `BEHAVIOUR`). It prints
//! `consuming` once connected, then runs until killed.

use std::time::Duration;

use muster_contracts::topology::NORMALIZER;
use muster_infra::config::AmqpSettings;
use muster_infra::worker::Worker;
use muster_testkit::worker::{Behaviour, Recorder, fast_settings};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let database = std::env::var("DATABASE_URL")?;
    let amqp = AmqpSettings {
        url: SecretString::from(std::env::var("AMQP_URL")?),
        prefix: std::env::var("APP_AMQP__PREFIX")?,
    };
    let behaviour = Behaviour::parse(&std::env::var("BEHAVIOUR").unwrap_or_else(|_| "normal".into()))
        .ok_or_else(|| anyhow::anyhow!("BEHAVIOUR is not understood"))?;
    let pool = sqlx::PgPool::connect(&database).await?;
    let recorder = Recorder::new(pool).await;
    recorder.set(behaviour);
    let worker = Worker::new("crash-test-worker", NORMALIZER, amqp, fast_settings(), recorder);
    let health = worker.health();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    while !health.is_connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("consuming");
    running.await??;
    Ok(())
}
