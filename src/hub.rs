//! The conversation hub: what channel adapters call. It **persists first,
//! then routes**: a conversation or message is committed to the store before
//! the router or anyone on the bus hears of it, so whatever was acknowledged
//! to a citizen survives a crash; the router rebuilds from the store.

use crate::bus::{Bus, BusEvent};
use crate::config::Settings;
use crate::router::{RouterError, RouterHandle};
use crate::store::{
    Conversation, ConversationState, Direction, Message, NewConversation, NewMessage, Store,
    StoreError,
};
use crate::writer::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("router: {0}")]
    Router(#[from] RouterError),
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    #[error("conversation {0} not found")]
    NotFound(i64),
    #[error("the message writer has stopped")]
    Stopped,
}

#[derive(Clone)]
pub struct Hub {
    store: Store,
    bus: Bus,
    router: RouterHandle,
    settings: std::sync::Arc<Settings>,
    /// Group commit for messages (see [`crate::writer`]).
    writer: crate::writer::LazyWriter,
}

/// What a channel knows about a new contact.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub queue_id: String,
    pub channel: crate::config::Channel,
    pub language: String,
    pub subject: Option<String>,
    pub contact_id: Option<i64>,
}

impl Hub {
    pub fn new(
        store: Store,
        bus: Bus,
        router: RouterHandle,
        settings: std::sync::Arc<Settings>,
    ) -> Self {
        Self {
            store,
            bus,
            router,
            settings,
            writer: crate::writer::LazyWriter::default(),
        }
    }

    pub fn router(&self) -> &RouterHandle {
        &self.router
    }

    /// Stores a new conversation (durable when this returns), then queues it.
    pub async fn open_conversation(&self, arrival: Arrival) -> Result<Conversation, HubError> {
        let queue = self
            .settings
            .queues
            .get(&arrival.queue_id)
            .ok_or_else(|| HubError::UnknownQueue(arrival.queue_id.clone()))?;
        let now = crate::now_ms();
        let year = chrono::DateTime::from_timestamp_millis(now)
            .map(|t| chrono::Datelike::year(&t.with_timezone(&self.settings.zone())))
            .unwrap_or(1970);
        let conversation = self
            .store
            .create_conversation(
                &NewConversation {
                    reference_prefix: "URP".into(),
                    organization_id: queue.organization.clone(),
                    queue_id: arrival.queue_id.clone(),
                    channel: arrival.channel,
                    contact_id: arrival.contact_id,
                    language: arrival.language.clone(),
                    subject: arrival.subject,
                },
                now,
                year,
            )
            .await?;
        // Stored: from here a failure to route is recovered by the router's
        // rebuild, never by losing the conversation.
        self.router
            .queued(
                conversation.id,
                &conversation.queue_id,
                conversation.channel,
                &conversation.language,
                conversation.enqueued_at,
            )
            .await?;
        self.publish(BusEvent::ConversationCreated {
            conversation_id: conversation.id,
            organization_id: conversation.organization_id.clone(),
            queue_id: conversation.queue_id.clone(),
        })
        .await;
        Ok(conversation)
    }

    /// Routes a conversation a channel stored itself, inside a larger
    /// transaction (the e-mail intake writes raw mail, conversation,
    /// message and acknowledgement in one commit): the router queues it
    /// and the bus hears of it. `reopened`: an existing conversation that
    /// was closed and is queued again.
    pub async fn conversation_stored(
        &self,
        conversation: &Conversation,
        reopened: bool,
    ) -> Result<(), HubError> {
        self.router
            .queued(
                conversation.id,
                &conversation.queue_id,
                conversation.channel,
                &conversation.language,
                conversation.enqueued_at,
            )
            .await?;
        let event = if reopened {
            BusEvent::ConversationChanged {
                conversation_id: conversation.id,
                organization_id: conversation.organization_id.clone(),
                state: conversation.state.as_str().to_owned(),
                operator_id: None,
            }
        } else {
            BusEvent::ConversationCreated {
                conversation_id: conversation.id,
                organization_id: conversation.organization_id.clone(),
                queue_id: conversation.queue_id.clone(),
            }
        };
        self.publish(event).await;
        Ok(())
    }

    /// Tells the bus of a message a channel stored itself (see
    /// [`Hub::conversation_stored`]).
    pub async fn message_stored(&self, conversation_id: i64, message_id: i64) {
        self.publish(BusEvent::MessageAdded {
            conversation_id,
            message_id,
        })
        .await;
    }

    /// Stores a message of a conversation, then tells the bus.
    pub async fn add_message(
        &self,
        conversation_id: i64,
        direction: Direction,
        author_user_id: Option<i64>,
        body: &str,
        client_id: Option<&str>,
    ) -> Result<Message, HubError> {
        let message = self
            .writer
            .get(&self.store)
            .add(NewMessage {
                conversation_id,
                at: crate::now_ms(),
                direction,
                author_user_id,
                body: body.to_owned(),
                client_id: client_id.map(str::to_owned),
            })
            .await
            .map_err(|err| match err {
                WriteError::Store(err) => HubError::Store(err),
                WriteError::Stopped => HubError::Stopped,
            })?;
        self.publish(BusEvent::MessageAdded {
            conversation_id,
            message_id: message.id,
        })
        .await;
        Ok(message)
    }

    /// The citizen left before an operator answered.
    pub async fn abandon(&self, conversation_id: i64) -> Result<bool, HubError> {
        let moved = self
            .store
            .transition(
                conversation_id,
                &[ConversationState::Queued, ConversationState::Offered],
                ConversationState::Abandoned,
                "abandoned",
                None,
                &serde_json::json!({}),
                crate::now_ms(),
            )
            .await?;
        if moved {
            self.router.ended(conversation_id, true).await?;
        }
        Ok(moved)
    }

    /// The operator finished the conversation; wrap-up follows when the
    /// queue has one, otherwise it is closed now.
    pub async fn complete(&self, conversation_id: i64, operator_id: i64) -> Result<bool, HubError> {
        let detail = self
            .store
            .get_conversation(&crate::store::Scope::All, conversation_id)
            .await?
            .ok_or(HubError::NotFound(conversation_id))?;
        let conversation = detail.conversation;
        if conversation.state != ConversationState::Assigned
            || conversation.operator_id != Some(operator_id)
        {
            return Ok(false);
        }
        let wrap_up = self
            .settings
            .queues
            .get(&conversation.queue_id)
            .map(|q| q.wrap_up_seconds)
            .unwrap_or(0);
        let now = crate::now_ms();
        if wrap_up == 0 {
            self.store
                .transition(
                    conversation_id,
                    &[ConversationState::Assigned],
                    ConversationState::Closed,
                    "completed",
                    Some(operator_id),
                    &serde_json::json!({}),
                    now,
                )
                .await?;
        } else {
            self.store
                .append_event(
                    conversation_id,
                    now,
                    "completed",
                    Some(&conversation.queue_id),
                    Some(operator_id),
                    &serde_json::json!({}),
                )
                .await?;
        }
        self.router.ended(conversation_id, false).await?;
        Ok(true)
    }

    /// Moves a conversation to another queue (or pins it to an operator in
    /// its own queue); it keeps its enqueue time. Stored, then routed.
    pub async fn transfer(
        &self,
        conversation_id: i64,
        to_queue: Option<&str>,
        to_operator: Option<i64>,
        by: Option<i64>,
    ) -> Result<(), HubError> {
        let detail = self
            .store
            .get_conversation(&crate::store::Scope::All, conversation_id)
            .await?
            .ok_or(HubError::NotFound(conversation_id))?;
        let from = detail.conversation.queue_id.clone();
        let queue_id = to_queue.unwrap_or(&from).to_owned();
        let queue = self
            .settings
            .queues
            .get(&queue_id)
            .ok_or_else(|| HubError::UnknownQueue(queue_id.clone()))?;
        self.store
            .move_to_queue(
                conversation_id,
                &queue_id,
                &queue.organization,
                "transferred",
                &serde_json::json!({ "from": from, "to_operator": to_operator, "by": by }),
                crate::now_ms(),
            )
            .await?;
        match to_operator {
            Some(user) => {
                self.router
                    .transfer_to_operator(conversation_id, user)
                    .await?
            }
            None => {
                self.router
                    .transfer_to_queue(conversation_id, &queue_id)
                    .await?
            }
        }
        self.publish(BusEvent::ConversationChanged {
            conversation_id,
            organization_id: queue.organization.clone(),
            state: "queued".into(),
            operator_id: None,
        })
        .await;
        Ok(())
    }

    /// Tells everyone who ended a conversation (citizen or operator).
    pub async fn announce_end(&self, conversation_id: i64, by: &str) {
        self.publish(BusEvent::ConversationEnded {
            conversation_id,
            by: by.to_owned(),
        })
        .await;
    }

    pub async fn typing(&self, conversation_id: i64, from: &str, active: bool) {
        self.publish(BusEvent::Typing {
            conversation_id,
            from: from.to_owned(),
            active,
        })
        .await;
    }

    async fn publish(&self, event: BusEvent) {
        if let Err(err) = self.bus.publish(event).await {
            tracing::warn!(%err, "publishing failed; the store has the data");
        }
    }
}
