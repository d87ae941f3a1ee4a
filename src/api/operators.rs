//! Colleagues, for the console's transfer: who can take a conversation now.
//!
//! Any operator may see the names, presence and status of the operators of
//! their own organizations (their own plus grants; the city's supervisors
//! and admins see everyone): enough to pick a colleague, nothing more. The
//! full user records stay with the admins (`/api/v1/users`).

use axum::Json;
use axum::extract::State;
use ccu_routing::{OperatorStatus, Presence};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::Auth;
use crate::store::Role;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_operators))
}

#[derive(Serialize, ToSchema)]
pub struct Colleague {
    pub id: i64,
    pub display_name: String,
    pub organization_id: String,
    /// `offline`, `available`, `break` or `not_ready`, from the router. The
    /// reason of a break is the colleague's own business and is left out.
    pub presence: &'static str,
    /// What they are doing: idle, busy, wrap-up...; null when not logged in.
    #[schema(value_type = Option<String>)]
    pub status: Option<OperatorStatus>,
    /// When the presence last changed (Unix ms), if logged in since the start.
    pub since: Option<i64>,
    /// Conversations in hand.
    pub active: usize,
}

fn presence_kind(presence: &Presence) -> &'static str {
    match presence {
        Presence::Offline => "offline",
        Presence::Available => "available",
        Presence::Break { .. } => "break",
        Presence::NotReady(_) => "not_ready",
    }
}

/// Active operators and supervisors of the caller's organizations, with
/// their live presence: the console's list of transfer targets. The caller
/// is left out.
#[utoipa::path(
    get, path = "/api/v1/operators", tag = "operators",
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses((status = 200, body = Vec<Colleague>), (status = 401, body = ErrorBody))
)]
async fn list_operators(
    auth: Auth,
    State(state): State<AppState>,
) -> Result<Json<Vec<Colleague>>, ApiError> {
    let users = state.store.list_users(&auth.scope).await?;
    let snapshot = state
        .hub
        .router()
        .snapshot()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    let colleagues = users
        .into_iter()
        .filter(|u| u.active && u.role <= Role::Supervisor && u.id != auth.user.id)
        .map(|u| {
            let view = snapshot
                .operators
                .iter()
                .find(|o| i64::try_from(o.id.0).ok() == Some(u.id));
            Colleague {
                id: u.id,
                display_name: u.display_name,
                organization_id: u.organization_id,
                presence: view.map_or("offline", |v| presence_kind(&v.presence)),
                status: view.map(|v| v.status),
                since: view.map(|v| v.presence_since.as_millis()),
                active: view.map_or(0, |v| v.conversations.len()),
            }
        })
        .collect();
    Ok(Json(colleagues))
}
