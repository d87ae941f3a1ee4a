//! Queues, read-only: they are defined in the configuration.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{TimeZone, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::json::ApiPath;
use crate::app::AppState;
use crate::auth::Auth;
use crate::config::Queue;
use crate::store::Scope;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(get_queue))
}

#[derive(Serialize, ToSchema)]
pub struct QueueView {
    pub id: String,
    pub name: String,
    pub organization_id: String,
    pub shared_with: Vec<String>,
    /// voice, chat, email, webform.
    pub channels: Vec<String>,
    /// Skill id -> minimum level.
    pub skills: BTreeMap<String, u8>,
    pub languages: Vec<String>,
    pub priority: i32,
    /// longest-idle, best-skill, least-busy, round-robin or ring-all.
    pub strategy: String,
    pub service_level_target_seconds: u32,
    pub service_level_target_percent: u32,
    pub wrap_up_codes: Vec<String>,
    /// Whether the queue is open right now (opening hours and holidays).
    pub open_now: bool,
    /// When it next opens or closes (RFC 3339), if within two weeks.
    pub next_change: Option<String>,
}

/// Whether `scope` may see a queue: its own organization's, or one shared with it.
pub fn queue_visible(scope: &Scope, queue: &Queue) -> bool {
    match scope {
        Scope::All => true,
        Scope::Organizations { organizations, .. } => organizations
            .iter()
            .any(|org| *org == queue.organization || queue.shared_with.contains(org)),
    }
}

fn view(state: &AppState, id: &str, queue: &Queue) -> Result<QueueView, ApiError> {
    let hours = state
        .settings
        .opening_hours(id)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let now = Utc::now();
    Ok(QueueView {
        id: id.to_owned(),
        name: queue.name.clone(),
        organization_id: queue.organization.clone(),
        shared_with: queue.shared_with.clone(),
        channels: queue
            .channels
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect(),
        skills: queue.skills.clone(),
        languages: queue.languages.clone(),
        priority: queue.priority,
        strategy: serde_name(&queue.strategy),
        service_level_target_seconds: queue.service_level.target_seconds,
        service_level_target_percent: queue.service_level.target_percent,
        wrap_up_codes: queue.wrap_up_codes.clone(),
        open_now: hours.is_open(now),
        next_change: hours
            .next_change(now)
            .map(|t| Utc.from_utc_datetime(&t.naive_utc()).to_rfc3339()),
    })
}

/// The serde name of a unit enum value (e.g. `best-skill`).
fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The queues the user's organizations own or share.
#[utoipa::path(
    get, path = "/api/v1/queues", tag = "queues",
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses((status = 200, body = Vec<QueueView>), (status = 401, body = ErrorBody))
)]
async fn list_queues(
    auth: Auth,
    State(state): State<AppState>,
) -> Result<Json<Vec<QueueView>>, ApiError> {
    let queues = state
        .settings
        .queues
        .iter()
        .filter(|(_, q)| queue_visible(&auth.scope, q))
        .map(|(id, q)| view(&state, id, q))
        .collect::<Result<_, _>>()?;
    Ok(Json(queues))
}

#[utoipa::path(
    get, path = "/api/v1/queues/{id}", tag = "queues",
    params(("id" = String, Path, description = "Queue id, e.g. anagrafe")),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses((status = 200, body = QueueView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_queue(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<QueueView>, ApiError> {
    match state.settings.queues.get(&id) {
        Some(queue) if queue_visible(&auth.scope, queue) => Ok(Json(view(&state, &id, queue)?)),
        _ => Err(ApiError::NotFound("queue")),
    }
}
