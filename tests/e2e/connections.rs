//! What every service's database connection carries, whichever service opens it, and how
//! its pool keeps them alive.

use std::net::SocketAddr;

use muster_infra::config::DatabaseSettings;
use muster_infra::db::PING_AFTER_IDLE;
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

#[tokio::test]
async fn a_connection_the_database_dropped_while_idle_is_replaced_before_use() {
    let proxy = TcpProxy::start("127.0.0.1:5432".parse::<SocketAddr>().unwrap()).await.unwrap();
    let settings = DatabaseSettings {
        url: format!("postgres://postgres@{}/postgres?sslmode=disable", proxy.addr).into(),
        max_connections: 1,
        acquire_timeout_ms: 5_000,
    };
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
