//! The reads of users that come many at once, sharing one statement as the users' writes do
//! ([`muster_infra::write_batch`]): Entra's lookup by `userName` before every create
//! (`GET /Users?filter=userName eq "…"`, half of an initial sync's requests), and the read of
//! the user before each `PUT`/`PATCH`. A lone read goes at once.

use std::future::Future;

use muster_infra::db::WarmPool;
use muster_infra::write_batch::WriteBatcher;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::{self, ResourceRow};

/// How many users one statement reads at most, and how many such statements run at once.
const READ_BATCH_MAX: usize = 64;
const READ_BATCHES_IN_FLIGHT: usize = 2;

/// What a batch found for one key.
#[derive(Debug)]
enum Found {
    User(Option<ResourceRow>),
    /// The batch failed as a whole: the key is read again alone, for its own answer.
    Failed,
}

/// The readers of users, each with its groups.
#[derive(Clone)]
pub struct UserLookups {
    db: WarmPool,
    by_name: WriteBatcher<(Uuid, String), Found>,
    by_id: WriteBatcher<(Uuid, Uuid), Found>,
}

impl UserLookups {
    /// Starts the readers on the current runtime.
    pub fn spawn(db: WarmPool) -> UserLookups {
        let by_name = spawn_reader("user_lookups", db.clone(), read_by_name);
        let by_id = spawn_reader("user_reads", db.clone(), read_by_id);
        UserLookups { db, by_name, by_id }
    }

    /// Company `tenant`'s user named `user_name` (without case).
    pub async fn by_name(&self, tenant: Uuid, user_name: &str) -> Result<Option<ResourceRow>, ApiError> {
        match self.by_name.submit((tenant, user_name.to_string())).await {
            Some(Found::User(user)) => Ok(user),
            _ => Ok(read_by_name(self.db.clone(), vec![(tenant, user_name.to_string())]).await?.pop().flatten()),
        }
    }

    /// Company `tenant`'s user `id`.
    pub async fn by_id(&self, tenant: Uuid, id: Uuid) -> Result<Option<ResourceRow>, ApiError> {
        match self.by_id.submit((tenant, id)).await {
            Some(Found::User(user)) => Ok(user),
            _ => Ok(read_by_id(self.db.clone(), vec![(tenant, id)]).await?.pop().flatten()),
        }
    }
}

async fn read_by_name(db: WarmPool, names: Vec<(Uuid, String)>) -> sqlx::Result<Vec<Option<ResourceRow>>> {
    let asked: Vec<(Uuid, &str)> = names.iter().map(|(tenant, name)| (*tenant, name.as_str())).collect();
    let mut conn = db.acquire().await?;
    let found = store::find_users_by_name(&mut conn, &asked).await?;
    conn.release();
    Ok(found)
}

async fn read_by_id(db: WarmPool, ids: Vec<(Uuid, Uuid)>) -> sqlx::Result<Vec<Option<ResourceRow>>> {
    let mut conn = db.acquire().await?;
    let found = store::find_users_by_id(&mut conn, &ids).await?;
    conn.release();
    Ok(found)
}

/// A batcher of reads by key `K`: `read` answers every key of its batch, in order. `name`
/// labels the metric `write_batch_size`.
fn spawn_reader<K, R, F>(name: &'static str, db: WarmPool, read: R) -> WriteBatcher<K, Found>
where
    K: Send + 'static,
    R: Fn(WarmPool, Vec<K>) -> F + Send + Sync + 'static,
    F: Future<Output = sqlx::Result<Vec<Option<ResourceRow>>>> + Send + 'static,
{
    WriteBatcher::spawn(name, READ_BATCH_MAX, READ_BATCHES_IN_FLIGHT, move |keys: Vec<K>| {
        let asked = keys.len();
        let reading = read(db.clone(), keys);
        async move {
            match reading.await {
                Ok(found) => found.into_iter().map(Found::User).collect(),
                Err(error) => {
                    tracing::warn!(%error, users = asked, batch = name, "a batch of user reads failed; each is tried alone");
                    (0..asked).map(|_| Found::Failed).collect()
                }
            }
        }
    })
}
