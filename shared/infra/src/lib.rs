//! Platform glue shared by every Muster service: layered configuration, telemetry, the
//! PostgreSQL pool and the one migration set, AMQP connection and topology, graceful
//! shutdown, health/readiness/metrics routes, and the tenant/token store.

pub mod amqp;
pub mod config;
pub mod db;
pub mod http;
pub mod outbox;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy;
pub mod token_cache;
pub mod worker;
pub mod write_batch;

pub use db::MIGRATOR;
