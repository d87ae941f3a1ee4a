//! `/ws/supervisor`: the live dashboard (docs/websocket.md).
//!
//! A `snapshot` goes out when anything on the bus changes (coalesced over
//! 250 ms, so a burst of events costs one snapshot, always within a second
//! of the change) and every 5 seconds for the clocks. It is scoped like
//! everything else: a company's supervisor sees the company's queues and
//! operators; the city's see all.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ccu_routing::Presence;
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};

use super::{
    MAX_FRAME_BYTES, READ_BUFFER_BYTES, check_origin, decode, error_frame, optional_text, send,
    text_field,
};
use crate::api::error::ApiError;
use crate::api::queues::queue_visible;
use crate::app::AppState;
use crate::auth::{Session, SupervisorAuth};
use crate::store::{AuditEntry, ConversationState, Scope};

/// How long changes are gathered before one snapshot goes out.
const COALESCE: Duration = Duration::from_millis(250);
/// Snapshots also go out this often, for the waiting-time clocks.
const HEARTBEAT: Duration = Duration::from_secs(5);

pub async fn supervisor_socket(
    auth: SupervisorAuth,
    State(state): State<AppState>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Err(err) = check_origin(&headers) {
        return err.into_response();
    }
    let session = auth.session;
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| run(state, session, socket))
}

async fn run(state: AppState, session: Session, mut socket: WebSocket) {
    let mut bus = state.bus.subscribe();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut dirty = true;
    loop {
        if dirty {
            // Gather whatever else arrives in the next moment, then send once.
            let gather = tokio::time::sleep(COALESCE);
            tokio::pin!(gather);
            loop {
                tokio::select! {
                    _ = &mut gather => break,
                    event = bus.recv() => if let Err(tokio::sync::broadcast::error::RecvError::Closed) = event { return },
                }
            }
            match snapshot(&state, &session.scope).await {
                Ok(frame) => {
                    if !send(&mut socket, &frame).await {
                        return;
                    }
                }
                Err(err) => tracing::warn!(%err, "dashboard snapshot failed"),
            }
            dirty = false;
        }
        tokio::select! {
            frame = socket.recv() => {
                let text = match frame {
                    Some(Ok(Frame::Text(text))) => text,
                    Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => continue,
                };
                let result = match decode(&text) {
                    Ok((kind, value)) => act(&state, &session, &kind, &value).await,
                    Err((code, message)) => Err(ApiError::BadRequest(format!("{code}: {message}"))),
                };
                match result {
                    Ok(()) => dirty = true,
                    Err(err) => if !send(&mut socket, &error_frame(&err)).await { return },
                }
            }
            event = bus.recv() => match event {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dirty = true,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
            _ = heartbeat.tick() => dirty = true,
        }
    }
}

/// The dashboard's picture, from the router's live statistics.
pub async fn snapshot(state: &AppState, scope: &Scope) -> Result<Value, ApiError> {
    let router = state
        .hub
        .router()
        .snapshot()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let settings = &state.settings;
    let users: HashMap<i64, crate::store::User> = state
        .store
        .list_users(scope)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    let zone = settings.zone();
    let today = zone
        .from_local_datetime(
            &Utc::now()
                .with_timezone(&zone)
                .date_naive()
                .and_time(chrono::NaiveTime::MIN),
        )
        .earliest()
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    let handled: HashMap<i64, i64> = state
        .store
        .handled_since(today)
        .await?
        .into_iter()
        .collect();
    let queues: Vec<Value> = router
        .queues
        .iter()
        .filter_map(|(id, stats)| {
            let queue = settings.queues.get(id)?;
            queue_visible(scope, queue).then(|| {
                let today = &stats.today;
                let abandon_rate =
                    (today.offered > 0).then(|| today.abandoned as f64 / today.offered as f64);
                json!({
                    "id": id,
                    "name": queue.name,
                    "organization_id": queue.organization,
                    "waiting": stats.waiting,
                    "longest_wait_seconds": stats.longest_wait_secs,
                    "service_level": today.service_level,
                    "target": {
                        "percent": queue.service_level.target_percent,
                        "seconds": queue.service_level.target_seconds,
                    },
                    "asa_seconds": today.asa_secs,
                    "aht_seconds": today.aht_secs,
                    "abandon_rate": abandon_rate,
                    "offered": today.offered,
                    "answered": today.answered,
                    "abandoned": today.abandoned,
                    "operators": stats.operators,
                    "window": stats.window,
                })
            })
        })
        .collect();
    let operators: Vec<Value> = router
        .operators
        .iter()
        .filter_map(|view| {
            let id = i64::try_from(view.id.0).ok()?;
            let user = users.get(&id)?;
            Some(json!({
                "id": id,
                "name": user.display_name,
                "organization_id": user.organization_id,
                "presence": view.presence,
                "status": view.status,
                "since": view.presence_since.as_millis(),
                "idle_since": view.idle_since.as_millis(),
                "active": view.conversations.len() + view.offers.len(),
                "handled_today": handled.get(&id).copied().unwrap_or(0),
            }))
        })
        .collect();
    Ok(
        json!({ "type": "snapshot", "at": crate::now_ms(), "queues": queues, "operators": operators }),
    )
}

async fn act(
    state: &AppState,
    session: &Session,
    kind: &str,
    value: &Value,
) -> Result<(), ApiError> {
    let router = state.hub.router();
    match kind {
        "force_presence" => {
            let operator = value
                .get("operator")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::validation("operator", "required"))?;
            let user = state
                .store
                .get_user(operator)
                .await?
                .filter(|u| session.scope.allows_organization(&u.organization_id))
                .ok_or(ApiError::NotFound("operator"))?;
            let presence = match value.get("presence").and_then(Value::as_str) {
                Some("available") => Presence::Available,
                Some("offline") => Presence::Offline,
                Some("break") => Presence::Break {
                    reason: optional_text(value, "reason", 60)?
                        .unwrap_or_else(|| "supervisore".into()),
                },
                _ => {
                    return Err(ApiError::validation(
                        "presence",
                        "available, break or offline",
                    ));
                }
            };
            router
                .presence(user.id, presence.clone())
                .await
                .map_err(|e| ApiError::Conflict(e.to_string()))?;
            state
                .store
                .audit(
                    &AuditEntry {
                        actor_user_id: Some(session.user.id),
                        address: None,
                        action: "presence_forced",
                        target: Some(user.username),
                        detail: json!({ "presence": presence }),
                    },
                    crate::now_ms(),
                )
                .await?;
            state
                .bus
                .publish(crate::bus::BusEvent::OperatorChanged { user_id: user.id })
                .await
                .ok();
            Ok(())
        }
        "move" => {
            let conversation = value
                .get("conversation_id")
                .and_then(Value::as_i64)
                .ok_or_else(|| ApiError::validation("conversation_id", "required"))?;
            let queue = text_field(value, "queue", 40)?;
            if !state.settings.queues.contains_key(&queue) {
                return Err(ApiError::validation("queue", "unknown queue"));
            }
            let detail = state
                .store
                .get_conversation(&session.scope, conversation)
                .await?
                .ok_or(ApiError::NotFound("conversation"))?;
            if detail.conversation.state != ConversationState::Queued {
                return Err(ApiError::Conflict(
                    "only a waiting conversation can be moved".into(),
                ));
            }
            state
                .hub
                .transfer(conversation, Some(&queue), None, Some(session.user.id))
                .await
                .map_err(|e| ApiError::Internal(e.into()))
        }
        other => Err(ApiError::BadRequest(format!(
            "unknown frame type {other:?}"
        ))),
    }
}
