//! `/api/v1/notifications`: the e-mails to managers about new team members — scheduled, sent,
//! skipped or failed, with the recipient, the members, when and why — and an operator's retry
//! of a failed one.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use muster_infra::tenancy::Principal;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::AppState;
use crate::members::{page, tenant_of};
use crate::problem::Problem;

const STATES: [&str; 5] = ["scheduled", "sending", "sent", "skipped", "failed"];

#[derive(Debug, Deserialize)]
pub struct ListParams {
    state: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

const SELECT: &str = "select json_build_object(
        'id', n.id, 'state', n.state,
        'recipient', json_build_object('scim_user_id', n.recipient_id,
                                       'name', m.profile->>'display_name',
                                       'email', coalesce(n.recipient_email, m.primary_email)),
        'members', (select coalesce(json_agg(json_build_object('scim_user_id', i.member_id,
                                                               'name', mm.profile->>'display_name',
                                                               'email', mm.primary_email)
                                             order by i.created_at, i.member_id), '[]'::json)
                    from notifications.items i
                    left join members.members mm on mm.tenant_id = i.tenant_id and mm.scim_user_id = i.member_id
                    where i.notification_id = n.id),
        'scheduled_for', n.scheduled_for, 'sent_at', n.sent_at, 'attempts', n.attempts, 'reason', n.reason,
        'message_id', n.message_id, 'created_at', n.created_at, 'updated_at', n.updated_at)
    from notifications.notifications n
    left join members.members m on m.tenant_id = n.tenant_id and m.scim_user_id = n.recipient_id";

/// `GET /api/v1/notifications?state=&limit=&offset=`: newest first.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let Query(params) = params.map_err(Problem::bad_query)?;
    if let Some(s) = &params.state
        && !STATES.contains(&s.as_str())
    {
        return Err(Problem::bad_request(format!("state '{s}' is not one of {}", STATES.join(", "))));
    }
    let (limit, offset) = page(params.limit, params.offset);
    let rows: Vec<Value> = sqlx::query_scalar(&format!(
        "{SELECT} where n.tenant_id = $1 and ($2::text is null or n.state = $2)
         order by n.created_at desc, n.id desc limit $3 offset $4"
    ))
    .bind(tenant)
    .bind(&params.state)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "select count(*) from notifications.notifications where tenant_id = $1 and ($2::text is null or state = $2)",
    )
    .bind(tenant)
    .bind(&params.state)
    .fetch_one(&state.pool)
    .await?;
    Ok(Json(json!({"total": total, "limit": limit, "offset": offset, "notifications": rows})).into_response())
}

fn no_notification(id: &str) -> Problem {
    Problem::not_found(format!("no notification with id {id}"))
}

/// `POST /api/v1/notifications/{id}/retry`: a failed notification is scheduled again, now.
pub async fn retry(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = tenant_of(principal)?;
    let wanted = Uuid::parse_str(&id).map_err(|_| no_notification(&id))?;
    let current: Option<String> =
        sqlx::query_scalar("select state from notifications.notifications where tenant_id = $1 and id = $2")
            .bind(tenant)
            .bind(wanted)
            .fetch_optional(&state.pool)
            .await?;
    match current.as_deref() {
        None => return Err(no_notification(&id)),
        Some("failed") => {}
        Some(other) => {
            return Err(Problem::not_retryable(format!("the notification is {other}; only a failed one is retried")));
        }
    }
    // Guarded by the state: two operators retrying at once schedule it once.
    sqlx::query(
        "update notifications.notifications set state = 'scheduled', scheduled_for = now(), claimed_at = null,
                updated_at = now()
         where tenant_id = $1 and id = $2 and state = 'failed'",
    )
    .bind(tenant)
    .bind(wanted)
    .execute(&state.pool)
    .await?;
    tracing::info!(tenant_id = %tenant, notification_id = %wanted, "notification retried by an operator");
    let row: Value = sqlx::query_scalar(&format!("{SELECT} where n.tenant_id = $1 and n.id = $2"))
        .bind(tenant)
        .bind(wanted)
        .fetch_one(&state.pool)
        .await?;
    Ok(Json(row).into_response())
}
