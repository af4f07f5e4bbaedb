//! What every service's database connection carries, whichever service opens it.

use muster_testkit::TestApp;

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
