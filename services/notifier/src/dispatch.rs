//! Due digests → e-mails. Every replica runs a dispatcher; a digest is claimed by one of them
//! (`for update skip locked`) and marked `sending` with the claim time, which fences the
//! outcome: only the claim that sent may record it.
//!
//! Delivery guarantees: an event or a digest is never turned into a second e-mail by
//! redelivery or by another replica (the items' primary key, the claim). What remains is the
//! instant between the relay accepting the message and the `sent` row committing: a sender
//! that dies there leaves the digest `sending`; after `sending_lease_secs` it becomes `failed`
//! ("may have been delivered") rather than being sent again — at most once, with the doubt
//! shown to an operator, who may retry it. Retrying an SMTP failure is at least once toward
//! the relay only when the relay accepted the message but the reply was lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use muster_domain::delivery::{Weekend, deliver_at};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::mail::{Digest, Mailer, NewMember};
use crate::{Clock, NotifierOptions};

/// Claims and sends due digests.
pub struct Dispatcher {
    pool: PgPool,
    mailer: Mailer,
    options: NotifierOptions,
    clock: Clock,
}

#[derive(sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    due_at: DateTime<Utc>,
    tenant_id: Uuid,
    recipient_id: Uuid,
    attempts: i32,
    claimed_at: DateTime<Utc>,
}

/// How long after it was due an e-mail waits for its new members' assignments (the assignments
/// worker lagging behind the hierarchy, e.g. in an initial sync) before the team is judged on
/// what is known.
const WAIT_FOR_ASSIGNMENTS: chrono::Duration = chrono::Duration::hours(1);

#[derive(sqlx::FromRow)]
struct Recipient {
    notify: bool,
    status: Option<String>,
    name: Option<String>,
    email: Option<String>,
    timezone: Option<String>,
    locale: Option<String>,
    recorded: bool,
    /// New members of the digest whose assignment was not applied yet.
    unassigned: i64,
}

/// How a claimed digest ends this time.
enum Outcome {
    Sent { email: String },
    Skipped(String),
    Retry { at: DateTime<Utc>, reason: String },
    Failed(String),
}

impl Dispatcher {
    pub fn new(pool: PgPool, mailer: Mailer, options: NotifierOptions, clock: Clock) -> Dispatcher {
        Dispatcher { pool, mailer, options, clock }
    }

    /// Looks for due digests every `poll_interval_ms` until `shutdown`; a look that found some
    /// is followed by another at once.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let poll = Duration::from_millis(self.options.poll_interval_ms);
        loop {
            let handled = match self.tick().await {
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!(error = %err, "dispatching failed; trying again");
                    0
                }
            };
            let pause = if handled > 0 { Duration::ZERO } else { poll };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One look: abandoned sends marked failed, due digests claimed and sent. Returns how many
    /// digests were claimed.
    pub async fn tick(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let lease = chrono::Duration::seconds(i64::try_from(self.options.sending_lease_secs).unwrap_or(300));
        let abandoned: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "update notifications.notifications set state = 'failed', updated_at = now(),
                    reason = 'interrupted while sending: it may have been delivered; retry only if the recipient did not get it'
             where state = 'sending' and claimed_at < $1 returning id, tenant_id",
        )
        .bind(now - lease)
        .fetch_all(&self.pool)
        .await?;
        for (id, tenant) in abandoned {
            metrics::counter!("notifier_notifications_total", "outcome" => "abandoned").increment(1);
            tracing::warn!(tenant_id = %tenant, notification_id = %id, "send abandoned by a dead sender; marked failed");
        }
        let claimed: Vec<Claimed> = sqlx::query_as(
            "with due as (
                 select id from notifications.notifications
                 where state = 'scheduled' and scheduled_for <= $1
                 order by scheduled_for, id limit $2 for update skip locked)
             update notifications.notifications n
             set state = 'sending', claimed_at = $1, attempts = n.attempts + 1, updated_at = now()
             from due where n.id = due.id
             returning n.id, n.due_at, n.tenant_id, n.recipient_id, n.attempts, n.claimed_at",
        )
        .bind(now)
        .bind(self.options.claim_batch)
        .fetch_all(&self.pool)
        .await?;
        let count = claimed.len();
        for digest in claimed {
            let span = tracing::info_span!("notification", tenant_id = %digest.tenant_id,
                notification_id = %digest.id, recipient_id = %digest.recipient_id);
            let _entered = span.enter();
            let outcome = self.deliver(&digest).await?;
            self.record(&digest, outcome).await?;
        }
        Ok(count)
    }

    async fn deliver(&self, digest: &Claimed) -> anyhow::Result<Outcome> {
        let recipient: Recipient = sqlx::query_as(
            "select coalesce((select notify_managers_on_import from tenancy.tenant_settings where tenant_id = $1), false)
                        as notify,
                    m.status, m.profile->>'display_name' as name, m.primary_email as email,
                    m.profile->>'timezone' as timezone, m.profile->>'locale' as locale,
                    exists(select 1 from hierarchy.links n
                           join assignments.member_state s on s.tenant_id = n.tenant_id and s.scim_user_id = n.scim_user_id
                           where n.tenant_id = $1 and n.manager_id = $2 and s.records) as recorded,
                    (select count(*) from notifications.items i
                     left join assignments.member_state s on s.tenant_id = i.tenant_id and s.scim_user_id = i.member_id
                     where i.notification_id = $3 and s.scim_user_id is null) as unassigned
             from (select 1) one
             left join members.members m on m.tenant_id = $1 and m.scim_user_id = $2",
        )
        .bind(digest.tenant_id)
        .bind(digest.recipient_id)
        .bind(digest.id)
        .fetch_one(&self.pool)
        .await?;
        if !recipient.notify {
            return Ok(Outcome::Skipped("the company no longer notifies managers of new team members".into()));
        }
        if recipient.status.as_deref() != Some("active") {
            return Ok(Outcome::Skipped("the manager is not an active member".into()));
        }
        let Some(email) = recipient.email.clone() else {
            return Ok(Outcome::Skipped("the manager has no e-mail address".into()));
        };
        let now = self.clock.now();
        if !recipient.recorded && recipient.unassigned > 0 && now - digest.due_at < WAIT_FOR_ASSIGNMENTS {
            let reason = format!("waiting for the assignments of {} new member(s)", recipient.unassigned);
            return Ok(Outcome::Retry { at: now + chrono::Duration::minutes(1), reason });
        }
        if !recipient.recorded {
            return Ok(Outcome::Skipped("no direct report has data capture on: the team is not recorded".into()));
        }
        let members: Vec<NewMember> = sqlx::query_as(
            "select i.member_id, coalesce(m.profile->>'display_name',
                        nullif(concat_ws(' ', m.profile->>'given_name', m.profile->>'family_name'), '')) as name,
                    m.profile->>'title' as title, m.primary_email as email
             from notifications.items i
             left join members.members m on m.tenant_id = i.tenant_id and m.scim_user_id = i.member_id
             where i.notification_id = $1 order by i.created_at, i.member_id",
        )
        .bind(digest.id)
        .fetch_all(&self.pool)
        .await?;
        if members.is_empty() {
            return Ok(Outcome::Skipped("no new member to announce".into()));
        }
        let mail =
            Digest { id: digest.id, recipient_name: recipient.name.clone(), recipient_email: email.clone(), members };
        match self.mailer.send(&mail).await {
            Ok(()) => Ok(Outcome::Sent { email }),
            Err(err) if err.permanent || digest.attempts >= self.options.max_attempts => {
                Ok(Outcome::Failed(format!("after {} attempt(s): {}", digest.attempts, err.reason)))
            }
            Err(err) => {
                let zone: Tz = recipient.timezone.as_deref().and_then(|z| z.parse().ok()).unwrap_or(Tz::UTC);
                let weekend = Weekend::for_locale(recipient.locale.as_deref().unwrap_or("en-US"));
                let at = deliver_at(self.clock.now() + self.options.retry_delay(digest.attempts), zone, weekend);
                Ok(Outcome::Retry { at, reason: err.reason })
            }
        }
    }

    /// Records the outcome, fenced by the claim: a claim abandoned and taken over records nothing.
    async fn record(&self, digest: &Claimed, outcome: Outcome) -> anyhow::Result<()> {
        let (state, reason, email, at, sent_at, label) = match &outcome {
            Outcome::Sent { email } => ("sent", None, Some(email.as_str()), None, Some(self.clock.now()), "sent"),
            Outcome::Skipped(reason) => ("skipped", Some(reason.as_str()), None, None, None, "skipped"),
            Outcome::Retry { at, reason } => ("scheduled", Some(reason.as_str()), None, Some(*at), None, "retry"),
            Outcome::Failed(reason) => ("failed", Some(reason.as_str()), None, None, None, "failed"),
        };
        let recorded = sqlx::query(
            "update notifications.notifications
             set state = $3, reason = $4, recipient_email = coalesce($5, recipient_email),
                 scheduled_for = coalesce($6, scheduled_for), sent_at = $7,
                 message_id = case when $3 = 'sent' then '<' || id || '@muster>' end, updated_at = now()
             where id = $1 and claimed_at = $2 and state in ('sending', 'failed')",
        )
        .bind(digest.id)
        .bind(digest.claimed_at)
        .bind(state)
        .bind(reason)
        .bind(email)
        .bind(at)
        .bind(sent_at)
        .execute(&self.pool)
        .await?;
        metrics::counter!("notifier_notifications_total", "outcome" => label).increment(1);
        if recorded.rows_affected() == 0 {
            tracing::warn!(outcome = label, "the claim was taken over meanwhile; outcome not recorded");
        } else if let Some(reason) = reason {
            tracing::warn!(outcome = label, reason, "notification not sent");
        } else {
            tracing::info!(outcome = label, "notification sent");
        }
        Ok(())
    }
}
