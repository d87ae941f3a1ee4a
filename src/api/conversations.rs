//! Conversations on every channel: a filtered, paged list and one
//! conversation with its events and messages. Both are scoped in the store
//! query: another organization's conversation is simply not found (404),
//! which also does not reveal that it exists.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::json::ApiPath;
use crate::app::AppState;
use crate::auth::Auth;
use crate::config::Channel;
use crate::store::{Conversation, ConversationDetail, ConversationFilter, ConversationState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_conversations))
        .routes(routes!(get_conversation))
        .routes(routes!(voice_message))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// queued, offered, assigned, wrap_up, closed, abandoned.
    pub state: Option<String>,
    pub queue: Option<String>,
    /// voice, chat, email, webform.
    pub channel: Option<String>,
    pub organization: Option<String>,
    pub operator: Option<i64>,
    pub contact: Option<i64>,
    /// Created at or after (Unix ms).
    pub from: Option<i64>,
    /// Created before (Unix ms).
    pub to: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<i64>,
    /// 1-200, default 50.
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationPage {
    pub items: Vec<Conversation>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<i64>,
}

/// Conversations the user may see, newest first.
#[utoipa::path(
    get, path = "/api/v1/conversations", tag = "conversations",
    params(ListParams),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses((status = 200, body = ConversationPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody))
)]
async fn list_conversations(
    auth: Auth,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ConversationPage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "between 1 and 200"));
    }
    let filter = ConversationFilter {
        state: params
            .state
            .map(|s| {
                ConversationState::parse(&s)
                    .ok_or_else(|| ApiError::validation("state", "unknown state"))
            })
            .transpose()?,
        queue_id: params.queue,
        channel: params
            .channel
            .map(|c| {
                Channel::parse(&c).ok_or_else(|| ApiError::validation("channel", "unknown channel"))
            })
            .transpose()?,
        organization_id: params.organization,
        operator_id: params.operator,
        contact_id: params.contact,
        created_from: params.from,
        created_to: params.to,
        before_id: params.cursor,
        limit,
    };
    let items = state.store.list_conversations(&auth.scope, &filter).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|c| c.id))
        .flatten();
    Ok(Json(ConversationPage { items, next_cursor }))
}

/// One conversation with every event and message.
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = i64, Path, description = "Conversation id")),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses((status = 200, body = ConversationDetail), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody))
)]
async fn get_conversation(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<ConversationDetail>, ApiError> {
    state
        .store
        .get_conversation(&auth.scope, id)
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("conversation"))
}

/// A voice message the caller left (the `voicemail` event gives its id),
/// as a WAV download (16-bit PCM, 8 kHz mono).
#[utoipa::path(
    get, path = "/api/v1/conversations/{id}/voicemail/{message}", tag = "conversations",
    params(
        ("id" = i64, Path, description = "Conversation id"),
        ("message" = i64, Path, description = "The voice message's id"),
    ),
    security(("bearer" = ["operator"]), ("cookie" = ["operator"])),
    responses(
        (status = 200, description = "The message, `Content-Disposition: attachment`", content_type = "audio/wav", body = Vec<u8>),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)
    )
)]
async fn voice_message(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath((id, message)): ApiPath<(i64, i64)>,
) -> Result<axum::response::Response, ApiError> {
    if !state.store.conversation_visible(&auth.scope, id).await? {
        return Err(ApiError::NotFound("conversation"));
    }
    let message = state
        .store
        .voice_message(id, message)
        .await?
        .ok_or(ApiError::NotFound("voice message"))?;
    Ok(super::mail::download(
        axum::http::HeaderValue::from_static("audio/wav"),
        &format!("voicemail-{id}-{}.wav", message.id),
        message.wav,
    ))
}
