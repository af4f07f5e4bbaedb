//! The ingress's integration tests: the SCIM API over HTTP against a real PostgreSQL, one
//! fresh database per test.

mod concurrency;
mod errors;
mod fixtures;
mod groups;
mod isolation;
mod users;
