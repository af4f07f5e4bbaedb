//! What every service's database connection carries, whichever service opens it, and how
//! its pool keeps them alive.

use std::net::SocketAddr;

use muster_infra::config::DatabaseSettings;
use muster_infra::db::{PING_AFTER_IDLE, WarmPool};
use muster_testkit::proxy::TcpProxy;
use muster_testkit::{TestApp, eventually};

#[tokio::test]
async fn service_connections_name_their_program_and_never_jit_compile() {
    let app = TestApp::spawn().await;
    let pool = muster_infra::db::pool(&app.db.settings()).unwrap();
    let (jit, name): (String, String) =
        sqlx::query_as("select current_setting('jit'), current_setting('application_name')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(jit, "off");
    let program = std::env::current_exe().unwrap().file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, program, "pg_stat_activity names the service");
}

/// Settings for a pool of `max_connections` that reaches PostgreSQL through a proxy the test
/// can cut, as a network failure or a database restart would.
async fn database_behind_a_proxy(max_connections: u32) -> (TcpProxy, DatabaseSettings) {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse::<SocketAddr>().unwrap()).await.unwrap();
    let settings = DatabaseSettings {
        url: format!("postgres://postgres@{}/postgres?sslmode=disable", proxy.addr).into(),
        max_connections,
        acquire_timeout_ms: 5_000,
    };
    (proxy, settings)
}

#[tokio::test]
async fn a_connection_the_database_dropped_while_idle_is_replaced_before_use() {
    let (proxy, settings) = database_behind_a_proxy(1).await;
    let pool = muster_infra::db::pool(&settings).unwrap();
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&pool).await.unwrap();
    assert_eq!(one, 1);
    // Back in the pool (sqlx returns it from a task of its own)…
    eventually(std::time::Duration::from_secs(5), "the connection idle", || async {
        (pool.num_idle() == 1).then_some(())
    })
    .await;
    // …it dies while idle, as in a database restart.
    proxy.cut();
    proxy.restore();
    tokio::time::sleep(PING_AFTER_IDLE + std::time::Duration::from_millis(200)).await;
    let two: i32 = sqlx::query_scalar("select 2").fetch_one(&pool).await.expect("a fresh connection, not an error");
    assert_eq!(two, 2);
}

/// A test app, a service pool on its database, and a warm pool over it keeping `keep`.
async fn warm_pool_of_a_test_app(keep: usize) -> (TestApp, sqlx::PgPool, WarmPool) {
    let app = TestApp::spawn().await;
    let pool = muster_infra::db::pool(&app.db.settings()).unwrap();
    let warm = WarmPool::new(pool.clone(), keep);
    (app, pool, warm)
}

/// What a connection's backend is, to tell connections apart.
async fn backend(conn: &mut sqlx::PgConnection) -> i32 {
    sqlx::query_scalar("select pg_backend_pid()").fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn a_released_connection_goes_to_the_next_request_without_passing_through_the_pool() {
    let (_app, pool, warm) = warm_pool_of_a_test_app(2).await;
    let mut first = warm.acquire().await.unwrap();
    let pid = backend(&mut first).await;
    first.release();
    assert_eq!(warm.parked(), 1);
    assert_eq!(pool.num_idle(), 0, "still checked out: the pool neither saw nor pinged it");
    let mut next = warm.acquire().await.unwrap();
    assert_eq!(backend(&mut next).await, pid, "the same connection, straight from the last request");
    assert_eq!(warm.parked(), 0);

    // At most `keep` wait; the others go back to the pool.
    let (mut a, mut b) = (warm.acquire().await.unwrap(), warm.acquire().await.unwrap());
    let _ = (backend(&mut a).await, backend(&mut b).await);
    for conn in [next, a, b] {
        conn.release();
    }
    assert_eq!(warm.parked(), 2);
    eventually(std::time::Duration::from_secs(5), "the third back in the pool", || async {
        (pool.num_idle() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_connection_left_in_a_transaction_is_not_handed_on_and_its_locks_are_let_go() {
    let (app, _pool, warm) = warm_pool_of_a_test_app(2).await;
    let mut conn = warm.acquire().await.unwrap();
    {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        sqlx::query("select id from tenancy.tenants where id = $1 for update")
            .bind(app.tenant.id)
            .execute(&mut *tx)
            .await
            .unwrap();
        // A handler failed here: the transaction is dropped, its rollback only queued.
    }
    conn.release();
    assert_eq!(warm.parked(), 0, "a connection with a rollback still to send is not kept warm");
    let mut other = app.db.pool.acquire().await.unwrap();
    sqlx::query("set lock_timeout = '3s'").execute(&mut *other).await.unwrap();
    sqlx::query("select id from tenancy.tenants where id = $1 for update")
        .bind(app.tenant.id)
        .execute(&mut *other)
        .await
        .expect("the dropped transaction's row lock is gone");
}

#[tokio::test]
async fn a_warm_connection_the_database_dropped_while_it_waited_is_not_used() {
    let (proxy, settings) = database_behind_a_proxy(2).await;
    let warm = WarmPool::new(muster_infra::db::pool(&settings).unwrap(), 1);
    let mut conn = warm.acquire().await.unwrap();
    backend(&mut conn).await;
    conn.release();
    assert_eq!(warm.parked(), 1);
    proxy.cut();
    proxy.restore();
    tokio::time::sleep(PING_AFTER_IDLE + std::time::Duration::from_millis(200)).await;
    let mut conn = warm.acquire().await.unwrap();
    let two: i32 = sqlx::query_scalar("select 2").fetch_one(&mut *conn).await.expect("a live connection, not an error");
    assert_eq!(two, 2);
}

#[tokio::test]
async fn a_request_that_finds_room_in_the_pool_opens_a_connection_and_keeps_it() {
    let (proxy, settings) = database_behind_a_proxy(4).await;
    let pool = muster_infra::db::pool(&settings).unwrap();
    let warm = WarmPool::new(pool.clone(), 1);
    let mut held = warm.acquire().await.unwrap();
    let pid = backend(&mut held).await;
    // Opening a connection takes a while; meanwhile the held one is released.
    proxy.delay_connects(std::time::Duration::from_millis(300));
    let waiting = tokio::spawn({
        let warm = warm.clone();
        async move { backend(&mut warm.acquire().await.unwrap()).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    held.release();
    // The request does not give up the connection being opened for the released one (given
    // up half-open, sqlx closes it: under load, a storm of connections opened and closed).
    assert_ne!(waiting.await.unwrap(), pid, "the request got the connection opened for it");
    eventually(std::time::Duration::from_secs(3), "both connections kept", || async {
        (pool.size() == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_quiet_warm_pool_gives_its_connections_back_to_the_pool() {
    let (_app, pool, warm) = warm_pool_of_a_test_app(2).await;
    let mut conn = warm.acquire().await.unwrap();
    backend(&mut conn).await;
    conn.release();
    assert_eq!((warm.parked(), pool.num_idle()), (1, 0));
    // No request comes: within two sweeps the connection is the pool's again, for the other
    // services that share it.
    eventually(PING_AFTER_IDLE * 4, "the connection back in the pool", || async {
        (warm.parked() == 0 && pool.num_idle() == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_released_connection_goes_to_a_waiting_request_before_it_is_parked() {
    let app = TestApp::spawn().await;
    let mut settings = app.db.settings();
    settings.max_connections = 1;
    // Shorter than the sweep would take to give a parked connection back to the pool.
    settings.acquire_timeout_ms = 1_000;
    let warm = WarmPool::new(muster_infra::db::pool(&settings).unwrap(), 1);
    let mut holder = warm.acquire().await.unwrap();
    let pid = backend(&mut holder).await;
    // The pool's only connection is out: the next request waits.
    let waiting = tokio::spawn({
        let warm = warm.clone();
        async move {
            let mut conn = warm.acquire().await?;
            Ok::<i32, sqlx::Error>(backend(&mut conn).await)
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    holder.release();
    let handed = waiting.await.unwrap().expect("handed the released connection, not left waiting on the pool");
    assert_eq!(handed, pid);
    assert_eq!(warm.parked(), 0, "handed on, not parked");
}
