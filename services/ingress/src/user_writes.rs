//! The writers of users: concurrent `POST /Users`, and concurrent `PUT`/`PATCH /Users`,
//! share one statement and one commit (see [`muster_infra::write_batch`]).

use std::collections::HashSet;

use chrono::Utc;
use muster_contracts::EventKind;
use muster_infra::db::WarmPool;
use muster_infra::telemetry::current_traceparent;
use muster_infra::write_batch::WriteBatcher;
use muster_scim::ScimError;
use serde_json::Value;
use uuid::Uuid;

use crate::error::ApiError;
use crate::render::event;
use crate::store::{self, UserStatement, UserWrite};

/// A user's version `version`, with its event, made now in the current trace.
pub(crate) fn user_write(tenant: Uuid, id: Uuid, doc: Value, version: i64) -> UserWrite {
    let at = Utc::now();
    let events = vec![event(tenant, EventKind::ScimUserUpserted, id, version, at)];
    UserWrite { tenant, id, doc, version, at, events, traceparent: current_traceparent() }
}

/// Writes `user` through `writes`; `None` beside it if it was left out (see
/// [`UserStatement`]). A batch the database refused as a whole is tried again with this user
/// alone, so that one bad user fails alone, with its own error.
pub(crate) async fn write_user(
    db: &WarmPool,
    writes: &UserWrites,
    user: UserWrite,
) -> Result<(UserWrite, Option<store::Stored>), ApiError> {
    let Some((user, outcome)) = writes.writer.submit(user).await else {
        tracing::error!("no writer answered a user's write");
        return Err(ScimError::unavailable().into());
    };
    match outcome {
        Outcome::Written(stored) => Ok((user, Some(stored))),
        Outcome::LeftOut => Ok((user, None)),
        Outcome::Failed => {
            let mut conn = db.acquire().await?;
            let mut written = store::write_users(&mut *conn, writes.statement, &[&user]).await?;
            conn.release();
            let stored = written.remove(&user.id);
            Ok((user, stored))
        }
    }
}

/// How many users one statement writes at most, and how many such statements run at once.
const WRITE_BATCH_MAX: usize = 64;
const WRITE_BATCHES_IN_FLIGHT: usize = 2;

/// What became of a user handed to [`UserWrites`].
#[derive(Debug)]
enum Outcome {
    Written(store::Stored),
    /// Left out by the statement (see [`UserStatement`]): nothing was written.
    LeftOut,
    /// The batch it was in failed as a whole; nothing of the batch was written.
    Failed,
}

/// The writer of one kind of user write: concurrent writes share a statement and a commit.
#[derive(Clone)]
pub struct UserWrites {
    statement: UserStatement,
    writer: WriteBatcher<UserWrite, (UserWrite, Outcome)>,
}

impl UserWrites {
    /// Starts the writers on the current runtime.
    pub fn spawn(db: WarmPool, statement: UserStatement) -> UserWrites {
        let name = match statement {
            UserStatement::Insert => "user_inserts",
            UserStatement::Update => "user_updates",
        };
        let writer =
            WriteBatcher::spawn(name, WRITE_BATCH_MAX, WRITE_BATCHES_IN_FLIGHT, move |users: Vec<UserWrite>| {
                let db = db.clone();
                async move { write_batch(&db, statement, users).await }
            });
        UserWrites { statement, writer }
    }
}

#[tracing::instrument(skip_all, fields(users = users.len(), statement = ?statement))]
async fn write_batch(db: &WarmPool, statement: UserStatement, users: Vec<UserWrite>) -> Vec<(UserWrite, Outcome)> {
    // One write per user and statement: a second write of a user (two PATCHes of it queued
    // together) is left out, as if the first had come before it — it starts again from the
    // first's result.
    let mut seen = HashSet::new();
    let first: Vec<bool> = users.iter().map(|u| seen.insert(u.id)).collect();
    let once: Vec<&UserWrite> = users.iter().zip(&first).filter(|(_, first)| **first).map(|(u, _)| u).collect();
    let written = async {
        let mut conn = db.acquire().await?;
        let written = store::write_users(&mut *conn, statement, &once).await?;
        conn.release();
        Ok::<_, sqlx::Error>(written)
    }
    .await;
    if let Err(error) = &written {
        tracing::warn!(%error, users = once.len(), "a batch of user writes failed; each is tried alone");
    }
    users
        .into_iter()
        .zip(first)
        .map(|(user, first)| {
            let outcome = match &written {
                _ if !first => Outcome::LeftOut,
                Ok(written) => written.get(&user.id).cloned().map_or(Outcome::LeftOut, Outcome::Written),
                Err(_) => Outcome::Failed,
            };
            (user, outcome)
        })
        .collect()
}
