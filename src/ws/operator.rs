//! `/ws/operator`: the operator console (docs/websocket.md).
//!
//! On connect the console gets `hello` with everything in hand (presence,
//! offers, conversations with their messages, the citizen and their earlier
//! conversations), all read from the store, so a reload or a lost
//! connection loses nothing. Then offers, messages and state changes are
//! pushed as the bus announces them.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message as Frame, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ccu_routing::Presence;
use serde_json::{Value, json};

use super::{
    MAX_FRAME_BYTES, READ_BUFFER_BYTES, check_origin, decode, error_frame, optional_text, send,
    text_field,
};
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::auth::Auth;
use crate::bus::BusEvent;
use crate::fanout::{Delivery, Key, Subscription};
use crate::router::RouterError;
use crate::store::{
    ConversationDetail, ConversationFilter, ConversationState, Direction, Role, Scope, User,
};

pub async fn operator_socket(
    auth: Auth,
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
        .on_upgrade(move |socket| {
            Console {
                bus: state.bus.keyed(),
                state,
                user: session.user,
                scope: session.scope,
                mine: HashSet::new(),
            }
            .run(socket)
        })
}

struct Console {
    state: AppState,
    /// The bus, keyed by this operator and the conversations in hand.
    bus: Subscription,
    user: User,
    scope: Scope,
    /// Conversations in this operator's hands (assigned or in wrap-up).
    mine: HashSet<i64>,
}

fn router_error(err: RouterError) -> ApiError {
    match err {
        RouterError::NotYourOffer => ApiError::Conflict(err.to_string()),
        RouterError::Routing(e) => ApiError::Conflict(e.to_string()),
        RouterError::UnknownQueue(q) => {
            ApiError::validation("queue", format!("unknown queue {q:?}"))
        }
        other => ApiError::Internal(other.into()),
    }
}

impl Console {
    async fn run(mut self, mut socket: WebSocket) {
        self.bus.watch(Key::Operator(self.user.id));
        match self.hello().await {
            Ok(hello) => {
                if !send(&mut socket, &hello).await {
                    return;
                }
            }
            Err(err) => {
                send(&mut socket, &error_frame(&err)).await;
                return;
            }
        }
        loop {
            tokio::select! {
                frame = socket.recv() => {
                    let text = match frame {
                        Some(Ok(Frame::Text(text))) => text,
                        Some(Ok(Frame::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => continue,
                    };
                    let result = match decode(&text) {
                        Ok((kind, value)) => self.handle(&kind, &value, &mut socket).await,
                        Err((code, message)) => Err(ApiError::BadRequest(format!("{code}: {message}"))),
                    };
                    if let Err(err) = result
                        && !send(&mut socket, &error_frame(&err)).await
                    {
                        return;
                    }
                }
                event = self.bus.recv() => {
                    let ok = match event {
                        Delivery::Event(event) => self.on_bus(&event, &mut socket).await,
                        // Missed notifications: start again from the store.
                        Delivery::Lagged => match self.hello().await {
                            Ok(hello) => send(&mut socket, &hello).await,
                            Err(_) => true,
                        },
                        Delivery::Closed => return,
                    };
                    if !ok { return; }
                }
            }
        }
    }

    /// Everything the console shows, from the store and the router.
    async fn hello(&mut self) -> Result<Value, ApiError> {
        let store = &self.state.store;
        let filter = ConversationFilter {
            operator_id: Some(self.user.id),
            limit: 200,
            ..Default::default()
        };
        // Events from here on are replayed to the conversations watched
        // below; every one is watched before the (slower) reads of the views.
        self.bus.mark();
        let in_hand: HashSet<i64> = store
            .list_conversations(&Scope::All, &filter)
            .await?
            .into_iter()
            .filter(|c| {
                matches!(
                    c.state,
                    ConversationState::Assigned | ConversationState::WrapUp
                )
            })
            .map(|c| c.id)
            .collect();
        for gone in self.mine.difference(&in_hand) {
            self.bus.unwatch(Key::Conversation(*gone));
        }
        for id in &in_hand {
            self.bus.watch(Key::Conversation(*id));
        }
        self.mine = in_hand;
        let mut ids: Vec<i64> = self.mine.iter().copied().collect();
        ids.sort_unstable();
        let mut conversations = Vec::new();
        for id in ids {
            conversations.push(self.conversation_view(id).await?);
        }
        let mut offers = Vec::new();
        for offer in store.open_offers_for(self.user.id).await? {
            offers.push(
                self.offer_view(
                    offer.router_offer_id,
                    offer.conversation_id,
                    offer.expires_at,
                )
                .await?,
            );
        }
        let presence = self.presence().await;
        Ok(json!({
            "type": "hello",
            "user": self.user,
            "presence": presence,
            "conversations": conversations,
            "offers": offers,
            "queues": self.state.settings.queues.iter().map(|(id, q)| json!({"id": id, "name": q.name})).collect::<Vec<_>>(),
        }))
    }

    async fn presence(&self) -> Value {
        match self.state.hub.router().snapshot().await {
            Ok(snapshot) => snapshot
                .operators
                .into_iter()
                .find(|o| o.id.0 == u64::try_from(self.user.id).unwrap_or(0))
                .map(|o| {
                    json!({
                        "presence": o.presence,
                        "status": o.status,
                        "since": o.presence_since.as_millis(),
                        "wrap_ups": o.wrap_ups.iter().zip(&o.wrap_up_until)
                            .map(|(c, until)| json!({"conversation_id": c.0, "until": until.as_millis()}))
                            .collect::<Vec<_>>(),
                    })
                })
                .unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// When the router ends this conversation's wrap-up by itself (Unix ms).
    async fn wrap_up_until(&self, conversation: i64) -> Option<i64> {
        let me = u64::try_from(self.user.id).ok()?;
        let snapshot = self.state.hub.router().snapshot().await.ok()?;
        let view = snapshot.operators.into_iter().find(|o| o.id.0 == me)?;
        let conversation = u64::try_from(conversation).ok()?;
        view.wrap_ups
            .iter()
            .zip(&view.wrap_up_until)
            .find(|(c, _)| c.0 == conversation)
            .map(|(_, until)| until.as_millis())
    }

    /// A conversation with its messages, the citizen, and their history.
    async fn conversation_view(&self, id: i64) -> Result<Value, ApiError> {
        let store = &self.state.store;
        let detail = store
            .get_conversation(&Scope::All, id)
            .await?
            .ok_or(ApiError::NotFound("conversation"))?;
        let (contact, history) = match detail.conversation.contact_id {
            Some(contact_id) => {
                let filter = ConversationFilter {
                    contact_id: Some(contact_id),
                    limit: 20,
                    ..Default::default()
                };
                let history: Vec<_> = store
                    .list_conversations(&self.scope, &filter)
                    .await?
                    .into_iter()
                    .filter(|c| c.id != id)
                    .collect();
                (store.contact(contact_id).await?, history)
            }
            None => (None, Vec::new()),
        };
        let codes: Vec<Value> = self
            .state
            .settings
            .queues
            .get(&detail.conversation.queue_id)
            .map(|q| {
                q.wrap_up_codes
                    .iter()
                    .map(
                        |c| json!({ "code": c, "label": self.state.settings.wrap_up_codes.get(c) }),
                    )
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!({
            "conversation": detail.conversation,
            "messages": detail.messages,
            "events": detail.events,
            "contact": contact,
            "history": history,
            "wrap_up_codes": codes,
        }))
    }

    async fn offer_view(
        &self,
        offer: i64,
        conversation: i64,
        expires_at: i64,
    ) -> Result<Value, ApiError> {
        let detail = self
            .state
            .store
            .get_conversation(&Scope::All, conversation)
            .await?
            .ok_or(ApiError::NotFound("conversation"))?;
        // A callback (the citizen asked, or a restart cut the call): the
        // operator calls back the number the call came from.
        let callback = detail.is_callback();
        let number = detail.caller_number();
        let c = detail.conversation;
        let contact = match c.contact_id {
            Some(id) => self.state.store.contact(id).await?,
            None => None,
        };
        let queue_name = self
            .state
            .settings
            .queues
            .get(&c.queue_id)
            .map(|q| q.name.clone());
        Ok(json!({
            "type": "offer",
            "offer": offer,
            "expires_at": expires_at,
            "conversation": {
                "id": c.id, "reference": c.reference, "queue": c.queue_id, "queue_name": queue_name,
                "channel": c.channel, "subject": c.subject, "language": c.language,
                "waited_ms": crate::now_ms() - c.enqueued_at, "contact": contact,
                "callback": callback, "caller_number": number,
            },
        }))
    }

    async fn handle(
        &mut self,
        kind: &str,
        value: &Value,
        socket: &mut WebSocket,
    ) -> Result<(), ApiError> {
        let router = self.state.hub.router().clone();
        let me = self.user.id;
        match kind {
            "presence" => {
                let presence = match value.get("presence").and_then(Value::as_str) {
                    Some("available") => Presence::Available,
                    Some("offline") => Presence::Offline,
                    Some("break") => Presence::Break {
                        reason: optional_text(value, "reason", 60)?
                            .unwrap_or_else(|| "pausa".into()),
                    },
                    _ => {
                        return Err(ApiError::validation(
                            "presence",
                            "available, break or offline",
                        ));
                    }
                };
                router.presence(me, presence).await.map_err(router_error)?;
                let presence = self.presence().await;
                send(socket, &json!({ "type": "presence", "presence": presence })).await;
                Ok(())
            }
            "accept" | "decline" => {
                let offer = value
                    .get("offer")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| ApiError::validation("offer", "the offer number"))?;
                if kind == "accept" {
                    router.accept(me, offer).await.map_err(router_error)
                } else {
                    router.decline(me, offer).await.map_err(router_error)
                }
            }
            "message" => {
                let conversation = self.owned(value)?;
                let client_id = text_field(value, "client_id", 64)?;
                let text = text_field(value, "text", self.state.settings.public.max_text_chars)?;
                // A conversation that came by e-mail or web form is
                // answered by mail: message and outbox in one transaction.
                let by_mail = match self.state.outbox.get() {
                    Some(outbox) => outbox
                        .operator_reply(conversation, me, &text, &client_id)
                        .await
                        .map_err(|e| match e {
                            crate::email::EmailError::NoAddress(_) => {
                                ApiError::Conflict(e.to_string())
                            }
                            other => ApiError::Internal(other.into()),
                        })?,
                    None => None,
                };
                let message = match by_mail {
                    Some(message) => message,
                    None => self
                        .state
                        .hub
                        .add_message(
                            conversation,
                            Direction::Outbound,
                            Some(me),
                            &text,
                            Some(&client_id),
                        )
                        .await
                        .map_err(|e| ApiError::Internal(e.into()))?,
                };
                send(
                    socket,
                    &json!({ "type": "ack", "client_id": client_id, "id": message.id }),
                )
                .await;
                Ok(())
            }
            "typing" => {
                let conversation = self.owned(value)?;
                let active = value
                    .get("active")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                self.state
                    .hub
                    .typing(conversation, "operator", active)
                    .await;
                Ok(())
            }
            "end" => {
                let conversation = self.owned(value)?;
                let done = self
                    .state
                    .hub
                    .complete(conversation, me)
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                if !done {
                    return Err(ApiError::Conflict(
                        "the conversation is not in progress".into(),
                    ));
                }
                self.state.hub.announce_end(conversation, "operator").await;
                Ok(())
            }
            // Calls only: the call's task (on whichever node holds the
            // call) hears it on the bus and re-INVITEs nobody: the caller
            // gets music, the phone silence (docs/sip.md "Call records").
            "hold" | "resume" => {
                let conversation = self.owned(value)?;
                let detail = self.detail(conversation).await?;
                if detail.conversation.channel != crate::config::Channel::Voice {
                    return Err(ApiError::validation("conversation_id", "not a call"));
                }
                let hold = kind == "hold";
                self.operator_event(conversation, "call_hold_requested", json!({ "hold": hold }))
                    .await?;
                self.state
                    .bus
                    .publish(BusEvent::CallHold {
                        conversation_id: conversation,
                        hold,
                    })
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                Ok(())
            }
            "wrap_up" => {
                let conversation = self.owned(value)?;
                let code = text_field(value, "code", 60)?;
                let detail = self.detail(conversation).await?;
                let allowed = self
                    .state
                    .settings
                    .queues
                    .get(&detail.conversation.queue_id)
                    .is_some_and(|q| q.wrap_up_codes.contains(&code));
                if !allowed {
                    return Err(ApiError::validation(
                        "code",
                        "not a wrap-up code of this queue",
                    ));
                }
                if let Some(note) = optional_text(value, "note", 2000)? {
                    self.operator_event(conversation, "wrap_up_note", json!({ "note": note }))
                        .await?;
                }
                router
                    .wrap_up_done(me, Some(conversation), Some(code))
                    .await
                    .map_err(router_error)
            }
            "transfer" => {
                let conversation = self.owned(value)?;
                let queue = optional_text(value, "queue", 40)?;
                let operator = value.get("operator").and_then(Value::as_i64);
                if queue.is_none() && operator.is_none() {
                    return Err(ApiError::validation("queue", "a queue or an operator"));
                }
                if let Some(q) = &queue
                    && !self.state.settings.queues.contains_key(q)
                {
                    return Err(ApiError::validation("queue", "unknown queue"));
                }
                // Only to a colleague the operator may see (the list of
                // GET /api/v1/operators): active, an operator or supervisor,
                // of one of the operator's organizations. Checked before
                // anything moves.
                if let Some(target) = operator {
                    let colleague = self.state.store.get_user(target).await?;
                    let allowed = colleague.is_some_and(|u| {
                        u.active
                            && u.role <= Role::Supervisor
                            && u.id != me
                            && self.scope.allows_organization(&u.organization_id)
                    });
                    if !allowed {
                        return Err(ApiError::validation(
                            "operator",
                            "not a colleague you can transfer to",
                        ));
                    }
                }
                self.state
                    .hub
                    .transfer(conversation, queue.as_deref(), operator, Some(me))
                    .await
                    .map_err(|e| ApiError::Internal(e.into()))?;
                self.mine.remove(&conversation);
                self.bus.unwatch(Key::Conversation(conversation));
                send(
                    socket,
                    &json!({ "type": "closed", "conversation_id": conversation }),
                )
                .await;
                Ok(())
            }
            other => Err(ApiError::BadRequest(format!(
                "unknown frame type {other:?}"
            ))),
        }
    }

    async fn detail(&self, conversation: i64) -> Result<ConversationDetail, ApiError> {
        self.state
            .store
            .get_conversation(&Scope::All, conversation)
            .await?
            .ok_or(ApiError::NotFound("conversation"))
    }

    /// An event of the conversation by this operator.
    async fn operator_event(
        &self,
        conversation: i64,
        kind: &str,
        data: Value,
    ) -> Result<(), ApiError> {
        self.state
            .store
            .append_event(
                conversation,
                crate::now_ms(),
                kind,
                None,
                Some(self.user.id),
                &data,
            )
            .await?;
        Ok(())
    }

    /// The conversation a frame names, which must be in this operator's hands.
    fn owned(&self, value: &Value) -> Result<i64, ApiError> {
        let id = value
            .get("conversation_id")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::validation("conversation_id", "required"))?;
        if self.mine.contains(&id) {
            Ok(id)
        } else {
            Err(ApiError::NotFound("conversation"))
        }
    }

    async fn on_bus(&mut self, event: &Arc<BusEvent>, socket: &mut WebSocket) -> bool {
        let me = self.user.id;
        let frame = match event.as_ref() {
            BusEvent::OfferMade {
                offer_id,
                conversation_id,
                operator_id,
                expires_at,
                ..
            } if *operator_id == me => {
                let offer = i64::try_from(*offer_id).unwrap_or(i64::MAX);
                self.offer_view(offer, *conversation_id, *expires_at)
                    .await
                    .ok()
            }
            BusEvent::OfferWithdrawn {
                offer_id,
                operator_id,
                reason,
                ..
            } if *operator_id == me => {
                Some(json!({ "type": "offer_withdrawn", "offer": offer_id, "reason": reason }))
            }
            BusEvent::ConversationChanged {
                conversation_id,
                state,
                operator_id,
                ..
            } => match state.as_str() {
                "assigned" if *operator_id == Some(me) => {
                    self.mine.insert(*conversation_id);
                    // The dispatcher watches it already; this is a no-op then.
                    self.bus.watch(Key::Conversation(*conversation_id));
                    self.conversation_view(*conversation_id)
                        .await
                        .ok()
                        .map(|view| json!({ "type": "assigned", "conversation": view }))
                }
                "wrap_up" if self.mine.contains(conversation_id) => {
                    let codes = self
                        .conversation_view(*conversation_id)
                        .await
                        .ok()
                        .map(|v| v["wrap_up_codes"].clone());
                    let until = self.wrap_up_until(*conversation_id).await;
                    Some(
                        json!({ "type": "wrap_up", "conversation_id": conversation_id, "codes": codes, "until": until }),
                    )
                }
                "closed" if self.mine.remove(conversation_id) => {
                    self.bus.unwatch(Key::Conversation(*conversation_id));
                    Some(json!({ "type": "closed", "conversation_id": conversation_id }))
                }
                _ => None,
            },
            BusEvent::MessageAdded {
                conversation_id,
                message_id,
            } if self.mine.contains(conversation_id) => {
                match self.state.store.message(*message_id).await {
                    Ok(Some(m)) if m.direction == "inbound" => Some(json!({
                        "type": "message", "conversation_id": conversation_id, "id": m.id,
                        "from": "citizen", "text": m.body, "at": m.at,
                    })),
                    _ => None,
                }
            }
            BusEvent::Typing {
                conversation_id,
                from,
                active,
            } if from == "citizen" && self.mine.contains(conversation_id) => Some(
                json!({ "type": "typing", "conversation_id": conversation_id, "active": active }),
            ),
            BusEvent::ConversationEnded {
                conversation_id,
                by,
            } if by == "citizen" && self.mine.contains(conversation_id) => {
                Some(json!({ "type": "ended", "conversation_id": conversation_id, "by": by }))
            }
            BusEvent::OperatorChanged { user_id } if *user_id == me => {
                let presence = self.presence().await;
                Some(json!({ "type": "presence", "presence": presence }))
            }
            _ => None,
        };
        match frame {
            Some(frame) => send(socket, &frame).await,
            None => true,
        }
    }
}
