//! Reading the org hierarchy (`hierarchy.nodes`, written by the hierarchy worker).

use sqlx::PgExecutor;
use uuid::Uuid;

/// How far up a chain anyone walks: deeper org charts are not expected, and links never form
/// a cycle; the bound only guards against a corrupted chain.
const MAX_CHAIN: i32 = 10_000;

/// The managers above `member`, direct manager first, at most `MAX_CHAIN` of them.
pub async fn managers_above(executor: impl PgExecutor<'_>, tenant: Uuid, member: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "with recursive up(id, depth) as (
             select manager_id, 1 from hierarchy.nodes
             where tenant_id = $1 and scim_user_id = $2 and manager_id is not null
           union all
             select n.manager_id, up.depth + 1 from up
             join hierarchy.nodes n on n.tenant_id = $1 and n.scim_user_id = up.id
             where n.manager_id is not null and up.depth < $3)
         select id from up order by depth",
    )
    .bind(tenant)
    .bind(member)
    .bind(MAX_CHAIN)
    .fetch_all(executor)
    .await
}
