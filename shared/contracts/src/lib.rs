//! The contracts between Muster's services: the event envelope, routing keys, AMQP header
//! names, and the names of exchanges and queues (with the configurable prefix). Serde only.

pub mod events;
pub mod headers;
pub mod topology;

pub use events::{EventEnvelope, EventKind, TRACEPARENT_HEADER};
pub use topology::{Names, WorkerQueue};
