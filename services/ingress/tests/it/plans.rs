//! The ingress keeps one generic plan per statement and connection, made at its first use —
//! often while the company's tables are still empty. Statements that read memberships must
//! go by their keys even when planned so, or each read walks a whole group or company.

use muster_testkit::TestApp;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// The generic plan (as JSON text) of the statement prepared on `conn` whose text holds `needle`.
async fn plan_of(conn: &mut PgConnection, needle: &str) -> String {
    let prepared: Vec<(String, i32)> = sqlx::query_as(
        "select name, cardinality(parameter_types) from pg_prepared_statements where statement like '%' || $1 || '%'",
    )
    .bind(needle)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(prepared.len(), 1, "one statement holds {needle:?}: {prepared:?}");
    let (name, params) = &prepared[0];
    let nulls = vec!["null"; usize::try_from(*params).unwrap()].join(", ");
    let explain = format!("explain (format json) execute {name}({nulls})");
    let plan: Value = sqlx::query_scalar(&explain).fetch_one(&mut *conn).await.unwrap();
    plan.to_string()
}

#[tokio::test]
async fn membership_reads_and_removals_planned_on_empty_tables_still_go_by_their_keys() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant.id;
    let (user, group) = (Uuid::now_v7(), Uuid::now_v7());
    let mut conn = app.pool.acquire().await.unwrap();
    assert!(muster_ingress::store::find_user_with_groups(&mut *conn, tenant, user, false).await.unwrap().is_none());
    assert!(muster_ingress::store::groups_of(&mut *conn, tenant, &[user]).await.unwrap().is_empty());
    assert!(muster_ingress::store::remove_members(&mut conn, tenant, group, Some(&[user])).await.unwrap().is_empty());

    for needle in ["from scim.users r where r.tenant_id = $1 and r.id = $2", "gm.member_id = any($2)"] {
        let plan = plan_of(&mut conn, needle).await;
        assert!(plan.contains("group_members_by_member"), "{needle}: {plan}");
        assert!(plan.contains("groups_pkey"), "{needle}: {plan}");
        for walk in ["group_members_pkey", "Seq Scan", "Bitmap", "Join Filter"] {
            assert!(!plan.contains(walk), "{needle} plans a {walk}: {plan}");
        }
    }
    let removal = plan_of(&mut conn, "delete from scim.group_members gm").await;
    assert!(removal.contains("Tid Scan"), "{removal}");
    for walk in ["Seq Scan", "Hash", "\"Filter\""] {
        assert!(!removal.contains(walk), "the removal plans a {walk}: {removal}");
    }
}

#[tokio::test]
async fn the_shared_reads_of_users_planned_on_empty_tables_probe_their_index() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant.id;
    let mut conn = app.pool.acquire().await.unwrap();
    let names = [(tenant, "ann@contoso.com"), (tenant, "bob@contoso.com")];
    let found = muster_ingress::store::find_users_by_name(&mut conn, &names).await.unwrap();
    assert!(found.iter().all(Option::is_none));
    let ids = [(tenant, Uuid::now_v7()), (tenant, Uuid::now_v7())];
    let found = muster_ingress::store::find_users_by_id(&mut conn, &ids).await.unwrap();
    assert!(found.iter().all(Option::is_none));

    for (needle, index) in
        [("lower(u.user_name) = lower(k.key)", "users_user_name_key"), ("u.id = k.key", "users_pkey")]
    {
        let plan = plan_of(&mut conn, needle).await;
        assert!(plan.contains(index), "{needle}: {plan}");
        assert!(plan.contains("group_members_by_member"), "{needle}: {plan}");
        for walk in ["Seq Scan", "Bitmap", "Hash"] {
            assert!(!plan.contains(walk), "{needle} plans a {walk}: {plan}");
        }
    }
}
