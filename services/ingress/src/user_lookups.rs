//! Entra looks every user up by `userName` before it creates it (`GET /Users?filter=userName
//! eq "…"`), half of the requests of an initial sync: concurrent lookups share one statement,
//! as the users' writes do ([`muster_infra::write_batch`]). A lone lookup goes at once.

use muster_infra::db::WarmPool;
use muster_infra::write_batch::WriteBatcher;
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::{self, ResourceRow};

/// How many names one statement looks up at most, and how many such statements run at once.
const LOOKUP_BATCH_MAX: usize = 64;
const LOOKUP_BATCHES_IN_FLIGHT: usize = 2;

/// What a batch found for one name.
#[derive(Debug)]
enum Found {
    User(Option<ResourceRow>),
    /// The batch failed as a whole: the name is looked up again alone, for its own answer.
    Failed,
}

/// The finder of users by `userName`.
#[derive(Clone)]
pub struct UserLookups {
    db: WarmPool,
    finder: WriteBatcher<(Uuid, String), Found>,
}

impl UserLookups {
    /// Starts the finders on the current runtime.
    pub fn spawn(db: WarmPool) -> UserLookups {
        let pool = db.clone();
        let finder = WriteBatcher::spawn(
            "user_lookups",
            LOOKUP_BATCH_MAX,
            LOOKUP_BATCHES_IN_FLIGHT,
            move |names: Vec<(Uuid, String)>| {
                let db = pool.clone();
                async move { find_batch(&db, names).await }
            },
        );
        UserLookups { db, finder }
    }

    /// Company `tenant`'s user named `user_name` (without case), with its groups.
    pub async fn find(&self, tenant: Uuid, user_name: &str) -> Result<Option<ResourceRow>, ApiError> {
        if let Some(Found::User(user)) = self.finder.submit((tenant, user_name.to_string())).await {
            return Ok(user);
        }
        let mut conn = self.db.acquire().await?;
        let mut found = store::find_users_by_name(&mut conn, &[(tenant, user_name)]).await?;
        conn.release();
        Ok(found.pop().flatten())
    }
}

#[tracing::instrument(skip_all, fields(users = names.len()))]
async fn find_batch(db: &WarmPool, names: Vec<(Uuid, String)>) -> Vec<Found> {
    let asked: Vec<(Uuid, &str)> = names.iter().map(|(tenant, name)| (*tenant, name.as_str())).collect();
    let found = async {
        let mut conn = db.acquire().await?;
        let found = store::find_users_by_name(&mut conn, &asked).await?;
        conn.release();
        Ok::<_, sqlx::Error>(found)
    }
    .await;
    match found {
        Ok(found) => found.into_iter().map(Found::User).collect(),
        Err(error) => {
            tracing::warn!(%error, users = names.len(), "a batch of user lookups failed; each is tried alone");
            names.iter().map(|_| Found::Failed).collect()
        }
    }
}
