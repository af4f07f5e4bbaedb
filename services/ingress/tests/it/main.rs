//! The ingress's integration tests: the SCIM API over HTTP against a real PostgreSQL, one
//! fresh database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod concurrency;
mod errors;
mod fixtures;
mod groups;
mod isolation;
mod users;
