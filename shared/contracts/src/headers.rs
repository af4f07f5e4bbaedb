//! AMQP headers the worker runtime puts on retried and dead-lettered messages, so that a
//! message in a DLQ says why it is there and where it came from.

/// Handling attempts so far (integer).
pub const ATTEMPTS: &str = "x-muster-attempts";
/// Why the last attempt failed.
pub const REASON: &str = "x-muster-reason";
/// `transient` or `permanent`.
pub const FAILURE_KIND: &str = "x-muster-failure-kind";
/// RFC 3339 time of the first failure.
pub const FIRST_FAILURE: &str = "x-muster-first-failure";
/// RFC 3339 time of the last failure.
pub const LAST_FAILURE: &str = "x-muster-last-failure";
/// The exchange the message was first published to.
pub const ORIGINAL_EXCHANGE: &str = "x-muster-original-exchange";
/// The routing key the message was first published with (replay publishes to it again).
pub const ORIGINAL_ROUTING_KEY: &str = "x-muster-original-routing-key";
/// The service whose handler failed.
pub const SERVICE: &str = "x-muster-service";
/// The envelope's tenant, when it could be read.
pub const TENANT_ID: &str = "x-muster-tenant-id";
/// The envelope's event id, when it could be read.
pub const EVENT_ID: &str = "x-muster-event-id";
