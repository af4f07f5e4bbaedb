//! The ingress's integration tests: the SCIM API over HTTP against a real PostgreSQL, one
//! fresh database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod concurrency;
mod errors;
mod fixtures;
mod groups;
mod isolation;
mod plans;
mod users;

/// The versions of the events `entity` has in the outbox, in order.
async fn event_versions(app: &muster_testkit::TestApp, entity: &str) -> Vec<i64> {
    sqlx::query_scalar("select version from scim.outbox where entity_id = $1 order by id")
        .bind(entity)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}
