//! End to end: SCIM requests through the ingress, the outbox and the relay, out to queues on
//! the real RabbitMQ. Each test has its own database and its own AMQP name prefix.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod assignments;
mod connections;
mod hierarchy;
mod members;
mod notifications;
mod relay;
mod system;
mod worker;
