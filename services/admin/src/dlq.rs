//! `/api/v1/dlq…`: dead-lettered messages through the admin API. An operator token sees and
//! acts on every tenant's messages; a tenant admin token only on its own tenant's.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use muster_contracts::Names;
use muster_infra::tenancy::Principal;
use muster_infra::worker::dlq::{self, DlqSummary, Selection};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::problem::Problem;

/// How many messages a tenant-scoped view reads from one DLQ to find the tenant's own.
const TENANT_SCAN: usize = 10_000;

fn scope(principal: Principal, selection: Selection) -> Selection {
    match principal {
        Principal::Operator => selection,
        Principal::TenantAdmin(tenant) => selection.for_tenant(tenant.to_string()),
    }
}

async fn broker(state: &AppState) -> Result<lapin::Connection, Problem> {
    muster_infra::amqp::connect_named(&state.amqp, "muster-admin").await.map_err(|err| {
        tracing::error!(error = %err, "broker unavailable");
        Problem::unavailable("the message broker is unavailable; retry later")
    })
}

fn resolve(names: &Names, queue: &str) -> Result<String, Problem> {
    dlq::resolve(names, queue)
        .ok_or_else(|| Problem::not_found(format!("'{queue}' is not a worker's dead-letter queue")))
}

/// `GET /api/v1/dlq`: each DLQ's depth and oldest message (for a tenant: its own messages).
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, Problem> {
    let names = Names::new(state.amqp.prefix.clone());
    let connection = broker(&state).await?;
    let mut summaries = dlq::summaries(&connection, &names).await.map_err(Problem::broker)?;
    if let Principal::TenantAdmin(tenant) = principal {
        let only_mine = Selection::all().for_tenant(tenant.to_string());
        for summary in &mut summaries {
            let mine = dlq::peek_selected(&connection, &summary.queue, &only_mine, TENANT_SCAN, TENANT_SCAN)
                .await
                .map_err(Problem::broker)?;
            let oldest = mine.iter().filter_map(|l| l.last_failure.clone()).min();
            *summary = DlqSummary {
                queue: summary.queue.clone(),
                depth: u32::try_from(mine.len()).unwrap_or(u32::MAX),
                oldest_age_seconds: oldest
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| (Utc::now() - t.with_timezone(&Utc)).num_seconds()),
                oldest_failure: oldest,
            };
        }
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(Json(json!({"queues": summaries})).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ShowParams {
    limit: Option<usize>,
}

/// `GET /api/v1/dlq/{queue}?limit=N`: the messages, left in the queue.
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(queue): Path<String>,
    params: Result<Query<ShowParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(params) = params.map_err(Problem::bad_query)?;
    let names = Names::new(state.amqp.prefix.clone());
    let dlq_name = resolve(&names, &queue)?;
    let limit = params.limit.unwrap_or(50).clamp(1, 1000);
    let connection = broker(&state).await?;
    let selection = scope(principal, Selection::all());
    let scan = if selection.tenant.is_some() { TENANT_SCAN } else { limit };
    let letters = dlq::peek_selected(&connection, &dlq_name, &selection, limit, scan).await.map_err(Problem::broker)?;
    let _ = connection.close(200, "done".into()).await;
    Ok(Json(json!({"queue": dlq_name, "messages": letters})).into_response())
}

/// Body of replay and purge: `{"all": true}` or `{"event_ids": […]}`; purge also needs
/// `"confirm": true`.
#[derive(Debug, Deserialize)]
pub struct ActBody {
    #[serde(default)]
    all: bool,
    #[serde(default)]
    event_ids: Vec<String>,
    #[serde(default)]
    confirm: bool,
}

fn selection_of(body: &ActBody) -> Result<Selection, Problem> {
    match (body.all, body.event_ids.is_empty()) {
        (true, true) => Ok(Selection::all()),
        (false, false) => Ok(Selection::events(body.event_ids.clone())),
        _ => Err(Problem::bad_request("give either \"all\": true or a non-empty \"event_ids\", not both")),
    }
}

/// What replay and purge act on: the DLQ, the principal-scoped selection, a connection.
struct Action {
    names: Names,
    dlq: String,
    selection: Selection,
    connection: lapin::Connection,
}

async fn action(
    state: &AppState,
    principal: Principal,
    queue: &str,
    body: Result<Json<ActBody>, axum::extract::rejection::JsonRejection>,
    needs_confirm: bool,
) -> Result<Action, Problem> {
    let Json(body) = body.map_err(Problem::bad_body)?;
    if needs_confirm && !body.confirm {
        return Err(Problem::bad_request("purge discards messages for good; send \"confirm\": true"));
    }
    let names = Names::new(state.amqp.prefix.clone());
    let dlq = resolve(&names, queue)?;
    let selection = scope(principal, selection_of(&body)?);
    let connection = broker(state).await?;
    Ok(Action { names, dlq, selection, connection })
}

fn outcome(verb: &str, letters: &[dlq::DeadLetter]) -> Response {
    let ids: Vec<Option<String>> = letters.iter().map(|l| l.event_id.clone()).collect();
    Json(json!({verb: letters.len(), "event_ids": ids})).into_response()
}

/// `POST /api/v1/dlq/{queue}/replay`.
pub async fn replay(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(queue): Path<String>,
    body: Result<Json<ActBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let act = action(&state, principal, &queue, body, false).await?;
    let replayed = dlq::replay(&act.connection, &act.names, &act.dlq, &act.selection)
        .await
        .map_err(|e| Problem::broker(format!("{e:#}")))?;
    for letter in &replayed {
        tracing::info!(event_id = ?letter.event_id, tenant_id = ?letter.tenant_id, queue = %act.dlq, "replayed through the admin API");
    }
    let _ = act.connection.close(200, "done".into()).await;
    Ok(outcome("replayed", &replayed))
}

/// `POST /api/v1/dlq/{queue}/purge`.
pub async fn purge(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(queue): Path<String>,
    body: Result<Json<ActBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Problem> {
    let act = action(&state, principal, &queue, body, true).await?;
    let purged =
        dlq::purge(&act.connection, &act.dlq, &act.selection).await.map_err(|e| Problem::broker(format!("{e:#}")))?;
    for letter in &purged {
        tracing::warn!(event_id = ?letter.event_id, tenant_id = ?letter.tenant_id, reason = ?letter.reason, queue = %act.dlq, "purged through the admin API");
    }
    let _ = act.connection.close(200, "done".into()).await;
    Ok(outcome("purged", &purged))
}
