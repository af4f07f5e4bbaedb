//! The chains above members, read from `hierarchy.links` in a real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::HashMap;

use muster_members::org::{links_above, managers_above};
use muster_testkit::db::TestDb;
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

#[tokio::test]
async fn chains_sharing_managers_and_a_corrupted_loop_are_read_once_and_walked_in_order() {
    let db = TestDb::create().await;
    let tenant = db.create_tenant("Contoso", "contoso.com").await.id;
    // 1 → 2 → 3 (the top), 4 → 2, and 5 ⇄ 6, a loop no worker would store; 7 has no manager.
    let links = [(1, Some(2)), (2, Some(3)), (3, None), (4, Some(2)), (5, Some(6)), (6, Some(5)), (7, None)];
    for (member, manager) in links {
        sqlx::query(
            "insert into hierarchy.links (tenant_id, scim_user_id, manager_id, resolution)
             values ($1, $2, $3, case when $3 is null then 'none' else 'resolved' end)",
        )
        .bind(tenant)
        .bind(id(member))
        .bind(manager.map(id))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let read = links_above(&db.pool, tenant, &[id(1), id(4), id(5), id(7)]).await.unwrap();
    let expected: HashMap<Uuid, Uuid> =
        [(1, 2), (2, 3), (4, 2), (5, 6), (6, 5)].into_iter().map(|(m, n)| (id(m), id(n))).collect();
    assert_eq!(read, expected);

    assert_eq!(managers_above(&db.pool, tenant, id(1)).await.unwrap(), vec![id(2), id(3)]);
    assert_eq!(managers_above(&db.pool, tenant, id(3)).await.unwrap(), Vec::<Uuid>::new());
    let looping = managers_above(&db.pool, tenant, id(5)).await.unwrap();
    assert_eq!(looping.len(), 10_000, "a loop is walked no further than the bound");
    assert_eq!(&looping[..3], &[id(6), id(5), id(6)]);
}
