//! `/ws/chat`: the citizen's side of the web chat (docs/websocket.md).
//!
//! Public and unauthenticated, so every start and message is rate-limited
//! per client address, every field is bounded, and a message is stored
//! before its `ack` goes out. A resume token (only its hash is stored) lets
//! the citizen come back after a reload and get every missed message, in
//! order, once: the page says the last id it has.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use super::{
    MAX_FRAME_BYTES, READ_BUFFER_BYTES, decode, error_frame, optional_text, send, send_error,
    text_field, valid_email,
};
use crate::api::auth::client_address;
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::auth::{random_token, token_hash};
use crate::bus::BusEvent;
use crate::config::{Channel, ClosedAction};
use crate::fanout::{Delivery, Key, Subscription};
use crate::hub::Arrival;
use crate::ratelimit::Verdict;
use crate::store::{ConversationState, Direction, Message, Scope};

pub async fn chat_socket(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let address = client_address(&state, peer, &headers);
    upgrade
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            ChatSession {
                bus: state.bus.keyed(),
                state,
                address,
                conversation: None,
                last_sent: 0,
                ended: false,
            }
            .run(socket)
        })
}

struct ChatSession {
    state: AppState,
    /// The bus, keyed by this socket's conversation once there is one.
    bus: Subscription,
    address: String,
    conversation: Option<i64>,
    /// The highest message id the page has: replays and pushes go above it.
    last_sent: i64,
    ended: bool,
}

impl ChatSession {
    async fn run(mut self, mut socket: WebSocket) {
        loop {
            tokio::select! {
                frame = socket.recv() => {
                    let text = match frame {
                        Some(Ok(Frame::Text(text))) => text,
                        Some(Ok(Frame::Binary(_))) => {
                            if !send_error(&mut socket, "unsupported", "text frames only").await { return; }
                            continue;
                        }
                        Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => continue,
                    };
                    let reply = match decode(&text) {
                        Ok((kind, value)) => self.handle(&kind, &value, &mut socket).await,
                        Err((code, message)) => Err(ApiError::BadRequest(format!("{code}: {message}"))),
                    };
                    if let Err(err) = reply
                        && !send(&mut socket, &error_frame(&err)).await
                    {
                        return;
                    }
                }
                event = self.bus.recv() => {
                    let ok = match event {
                        Delivery::Event(event) => self.on_bus(&event, &mut socket).await,
                        // Missed notifications: catch up from the store.
                        Delivery::Lagged => self.resync(&mut socket).await,
                        Delivery::Closed => return,
                    };
                    if !ok { return; }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        kind: &str,
        value: &Value,
        socket: &mut WebSocket,
    ) -> Result<(), ApiError> {
        match kind {
            "start" => self.start(value, socket).await,
            "resume" => self.resume(value, socket).await,
            "message" => self.message(value, socket).await,
            "typing" => {
                let id = self.require()?;
                let active = value
                    .get("active")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.state.hub.typing(id, "citizen", active).await;
                Ok(())
            }
            "end" => self.end(socket).await,
            "rating" => self.rating(value, socket).await,
            "transcript" => self.transcript(value, socket).await,
            other => Err(ApiError::BadRequest(format!(
                "unknown frame type {other:?}"
            ))),
        }
    }

    fn require(&self) -> Result<i64, ApiError> {
        self.conversation
            .ok_or_else(|| ApiError::BadRequest("not_started: send start or resume first".into()))
    }

    fn limit(&self, limiter: &crate::ratelimit::RateLimiter) -> Result<(), ApiError> {
        match limiter.check(&self.address, Instant::now()) {
            Verdict::Allowed => Ok(()),
            Verdict::Limited { retry_after } => Err(ApiError::RateLimited { retry_after }),
        }
    }

    async fn start(&mut self, value: &Value, socket: &mut WebSocket) -> Result<(), ApiError> {
        if self.conversation.is_some() {
            return Err(ApiError::BadRequest(
                "this socket already has a conversation".into(),
            ));
        }
        self.limit(&self.state.chat_starts)?;
        let settings = &self.state.settings;
        let topic = text_field(value, "topic", 40)?;
        let queue = settings
            .queues
            .get(&topic)
            .filter(|q| q.channels.contains(&Channel::Chat))
            .ok_or_else(|| ApiError::validation("topic", "no chat for this topic"))?;
        let language = optional_text(value, "language", 2)?.unwrap_or_else(|| "it".into());
        if !settings.languages.contains(&language) {
            return Err(ApiError::validation("language", "unsupported language"));
        }
        let name = optional_text(value, "name", 100)?;
        let email = optional_text(value, "email", 254)?;
        if email.as_deref().is_some_and(|e| !valid_email(e)) {
            return Err(ApiError::validation("email", "not an e-mail address"));
        }
        // The honeypot: people never see this field, bots fill it in.
        if optional_text(value, "website", 200)?.is_some() {
            return Err(ApiError::validation("website", "leave this field empty"));
        }
        let hours = settings
            .opening_hours(&topic)
            .map_err(|e| ApiError::Internal(e.into()))?;
        if !hours.is_open(chrono::Utc::now()) && queue.closed_action != ClosedAction::Queue {
            send(
                socket,
                &json!({
                    "type": "closed",
                    "message": settings.messages.closed,
                    "webform": format!("/request?topic={topic}"),
                    "next_opening": hours.next_change(chrono::Utc::now()).map(|t| t.to_rfc3339()),
                }),
            )
            .await;
            return Ok(());
        }
        // Watching the new conversation replays what the router says from here on.
        self.bus.mark();
        let now = crate::now_ms();
        let contact_id = if name.is_some() || email.is_some() {
            Some(
                self.state
                    .store
                    .contact_for(name.as_deref(), email.as_deref(), None, now)
                    .await?,
            )
        } else {
            None
        };
        let conversation = self
            .state
            .hub
            .open_conversation(Arrival {
                queue_id: topic,
                channel: Channel::Chat,
                language,
                subject: None,
                contact_id,
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        let token = random_token(32);
        self.state
            .store
            .create_chat_session(
                &token_hash(&token),
                conversation.id,
                now,
                now + self.ttl_ms(),
            )
            .await?;
        self.conversation = Some(conversation.id);
        // Replays what the router said since the socket opened.
        self.bus.watch(Key::Conversation(conversation.id));
        send(
            socket,
            &json!({
                "type": "started",
                "reference": conversation.reference,
                "conversation_id": conversation.id,
                "token": token,
            }),
        )
        .await;
        Ok(())
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(
            self.state
                .settings
                .public
                .resume_ttl_seconds
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX)
    }

    async fn resume(&mut self, value: &Value, socket: &mut WebSocket) -> Result<(), ApiError> {
        if self.conversation.is_some() {
            return Err(ApiError::BadRequest(
                "this socket already has a conversation".into(),
            ));
        }
        let token = text_field(value, "token", 100)?;
        self.bus.mark();
        let now = crate::now_ms();
        let conversation = self
            .state
            .store
            .resume_chat_session(&token_hash(&token), now, now + self.ttl_ms())
            .await?
            .ok_or_else(|| ApiError::validation("token", "unknown or expired: start a new chat"))?;
        let detail = self
            .state
            .store
            .get_conversation(&Scope::All, conversation)
            .await?
            .ok_or(ApiError::NotFound("conversation"))?;
        self.conversation = Some(conversation);
        self.bus.watch(Key::Conversation(conversation));
        self.last_sent = value
            .get("last_id")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            .max(0);
        self.ended = matches!(
            detail.conversation.state,
            ConversationState::Closed | ConversationState::Abandoned | ConversationState::WrapUp
        );
        send(
            socket,
            &json!({
                "type": "resumed",
                "reference": detail.conversation.reference,
                "conversation_id": conversation,
                "state": detail.conversation.state,
            }),
        )
        .await;
        if self.replay(socket).await {
            Ok(())
        } else {
            Err(ApiError::BadRequest("connection lost".into()))
        }
    }

    /// After missed notifications: the state from the store (an operator
    /// took the chat, or it ended), then every missed message.
    async fn resync(&mut self, socket: &mut WebSocket) -> bool {
        let Some(conversation) = self.conversation else {
            return true;
        };
        let detail = match self
            .state
            .store
            .get_conversation(&Scope::All, conversation)
            .await
        {
            Ok(Some(detail)) => detail,
            Ok(None) => return true,
            Err(err) => {
                tracing::warn!(%err, "chat resync failed");
                return true;
            }
        };
        let c = detail.conversation;
        let told = match c.state {
            ConversationState::Assigned => {
                let name = self.operator_name(c.operator_id).await;
                send(socket, &json!({ "type": "assigned", "operator": name })).await
            }
            ConversationState::WrapUp | ConversationState::Closed if !self.ended => {
                self.ended = true;
                send(socket, &json!({ "type": "ended", "by": "operator" })).await
            }
            _ => true,
        };
        told && self.replay(socket).await
    }

    /// Sends every message above `last_sent`, in order.
    async fn replay(&mut self, socket: &mut WebSocket) -> bool {
        let Some(conversation) = self.conversation else {
            return true;
        };
        let messages = match self
            .state
            .store
            .citizen_messages_after(conversation, self.last_sent)
            .await
        {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(%err, "chat replay failed");
                return true;
            }
        };
        for message in messages {
            if !self.push(&message, socket).await {
                return false;
            }
        }
        true
    }

    async fn push(&mut self, message: &Message, socket: &mut WebSocket) -> bool {
        if message.id <= self.last_sent {
            return true;
        }
        self.last_sent = message.id;
        let (from, name) = match message.direction.as_str() {
            "inbound" => ("citizen", String::new()),
            _ => ("operator", self.operator_name(message.author_user_id).await),
        };
        send(
            socket,
            &json!({
                "type": "message",
                "id": message.id,
                "from": from,
                "name": name,
                "text": message.body,
                "at": message.at,
            }),
        )
        .await
    }

    async fn operator_name(&self, user: Option<i64>) -> String {
        match user {
            Some(id) => match self.state.store.get_user(id).await {
                // Citizens see the first name only.
                Ok(Some(user)) => user
                    .display_name
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            },
            None => String::new(),
        }
    }

    async fn message(&mut self, value: &Value, socket: &mut WebSocket) -> Result<(), ApiError> {
        let conversation = self.require()?;
        if self.ended {
            return Err(ApiError::BadRequest("the conversation has ended".into()));
        }
        self.limit(&self.state.chat_messages)?;
        let client_id = text_field(value, "client_id", 64)?;
        let text = text_field(value, "text", self.state.settings.public.max_text_chars)?;
        let message = self
            .state
            .hub
            .add_message(
                conversation,
                Direction::Inbound,
                None,
                &text,
                Some(&client_id),
            )
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        // An operator line stored just before this one (in the same group
        // commit, say) may still be on its way through the bus; the page
        // takes the ack's id as its `last_id`, so send such lines first or
        // they would be skipped, here and on a resume (regression: a line
        // with a lower id than the citizen's own was never shown). Ids are
        // global, so this is one indexed read per citizen line, usually empty.
        let earlier = self
            .state
            .store
            .citizen_messages_after(conversation, self.last_sent)
            .await?;
        for m in earlier
            .iter()
            .filter(|m| m.id < message.id && m.direction == "outbound")
        {
            if !self.push(m, socket).await {
                return Err(ApiError::BadRequest("connection lost".into()));
            }
        }
        // Acknowledged only now that it is stored.
        self.last_sent = self.last_sent.max(message.id);
        send(
            socket,
            &json!({ "type": "ack", "client_id": client_id, "id": message.id }),
        )
        .await;
        Ok(())
    }

    async fn end(&mut self, socket: &mut WebSocket) -> Result<(), ApiError> {
        let conversation = self.require()?;
        if !self.ended {
            let hub = &self.state.hub;
            let abandoned = hub
                .abandon(conversation)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            if !abandoned {
                // With an operator: it ends and their wrap-up starts.
                let operator = self
                    .state
                    .store
                    .get_conversation(&Scope::All, conversation)
                    .await?
                    .and_then(|d| d.conversation.operator_id);
                if let Some(operator) = operator {
                    hub.complete(conversation, operator)
                        .await
                        .map_err(|e| ApiError::Internal(e.into()))?;
                }
            }
            hub.announce_end(conversation, "citizen").await;
            self.ended = true;
        }
        send(socket, &json!({ "type": "ended", "by": "citizen" })).await;
        Ok(())
    }

    async fn rating(&mut self, value: &Value, socket: &mut WebSocket) -> Result<(), ApiError> {
        let conversation = self.require()?;
        if !self.ended {
            return Err(ApiError::BadRequest(
                "rate the conversation after it ends".into(),
            ));
        }
        let score = value
            .get("score")
            .and_then(Value::as_i64)
            .filter(|s| (1..=5).contains(s))
            .ok_or_else(|| ApiError::validation("score", "a whole number from 1 to 5"))?;
        let comment = optional_text(value, "comment", 1000)?;
        let saved = self
            .state
            .store
            .save_rating(
                conversation,
                i32::try_from(score).unwrap_or(1),
                comment.as_deref(),
                crate::now_ms(),
            )
            .await?;
        if !saved {
            return Err(ApiError::Conflict(
                "this conversation is already rated".into(),
            ));
        }
        send(socket, &json!({ "type": "rated" })).await;
        Ok(())
    }

    async fn transcript(&mut self, value: &Value, socket: &mut WebSocket) -> Result<(), ApiError> {
        let conversation = self.require()?;
        let email = text_field(value, "email", 254)?;
        if !valid_email(&email) {
            return Err(ApiError::validation("email", "not an e-mail address"));
        }
        if !self.ended {
            return Err(ApiError::BadRequest(
                "the transcript comes after the end".into(),
            ));
        }
        // Into the e-mail outbox, which delivers and retries it.
        let outbox = self.state.outbox.get().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("the e-mail outbox is not running"))
        })?;
        outbox
            .send_transcript(conversation, &email)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        send(socket, &json!({ "type": "transcript_queued" })).await;
        Ok(())
    }

    /// A bus notification: forwards what concerns this conversation.
    async fn on_bus(&mut self, event: &Arc<BusEvent>, socket: &mut WebSocket) -> bool {
        let Some(mine) = self.conversation else {
            return true;
        };
        match event.as_ref() {
            BusEvent::MessageAdded {
                conversation_id,
                message_id,
            } if *conversation_id == mine && *message_id > self.last_sent => {
                match self.state.store.message(*message_id).await {
                    Ok(Some(message)) if message.direction == "outbound" => self.push(&message, socket).await,
                    _ => true,
                }
            }
            BusEvent::Position {
                conversation_id,
                position,
                estimated_wait_seconds,
                ..
            } if *conversation_id == mine => {
                send(
                    socket,
                    &json!({ "type": "queue", "position": position, "estimated_wait_seconds": estimated_wait_seconds }),
                )
                .await
            }
            BusEvent::ConversationChanged {
                conversation_id,
                state,
                operator_id,
                ..
            } if *conversation_id == mine => match state.as_str() {
                "assigned" => {
                    let name = self.operator_name(*operator_id).await;
                    send(socket, &json!({ "type": "assigned", "operator": name })).await
                }
                "wrap_up" | "closed" if !self.ended => {
                    self.ended = true;
                    send(socket, &json!({ "type": "ended", "by": "operator" })).await
                }
                _ => true,
            },
            BusEvent::ConversationEnded { conversation_id, by } if *conversation_id == mine && by == "operator" => {
                if self.ended {
                    return true;
                }
                self.ended = true;
                send(socket, &json!({ "type": "ended", "by": "operator" })).await
            }
            // The router let the waiting chat go (the queue's maximum wait,
            // or its closing): the citizen is told why and offered the web
            // form; the router closes the conversation after this.
            BusEvent::RoutingNotice {
                conversation_id,
                kind,
                detail,
            } if *conversation_id == mine
                && !self.ended
                && ((kind == "max_wait" && detail != "callback")
                    || (kind == "queue_closed" && detail != "queue")) =>
            {
                self.ended = true;
                let settings = &self.state.settings;
                let message = match kind.as_str() {
                    "max_wait" => detail["close"]["message"]
                        .as_str()
                        .unwrap_or(&settings.messages.max_wait_close)
                        .to_owned(),
                    _ => settings.messages.closed.clone(),
                };
                let topic = match self.state.store.get_conversation(&crate::store::Scope::All, mine).await {
                    Ok(Some(detail)) => detail.conversation.queue_id,
                    _ => String::new(),
                };
                send(
                    socket,
                    &json!({
                        "type": "closed",
                        "reason": kind,
                        "message": message,
                        "webform": format!("/request?topic={topic}"),
                    }),
                )
                .await
            }
            BusEvent::Typing {
                conversation_id,
                from,
                active,
            } if *conversation_id == mine && from == "operator" => {
                send(socket, &json!({ "type": "typing", "active": active })).await
            }
            _ => true,
        }
    }
}
