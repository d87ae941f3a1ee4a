//! The event bus: how the parts of ccu (and the nodes of a cluster) tell
//! each other that something changed.
//!
//! In-process by default (a tokio broadcast channel); Redis pub/sub when
//! `redis_url` is set, so consoles and channels connected to any node hear
//! about a conversation created on another. With Redis, a node's own events
//! also come back through Redis rather than being delivered locally first:
//! every node then sees the same order.
//!
//! The bus carries notifications, not data: everything on it is already in
//! the store (the hub persists first). A subscriber that lags behind and
//! misses events (`RecvError::Lagged`) reloads what it shows from the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What travels on the bus. Each variant names what changed; receivers load
/// details from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BusEvent {
    ConversationCreated {
        conversation_id: i64,
        organization_id: String,
        queue_id: String,
    },
    ConversationChanged {
        conversation_id: i64,
        organization_id: String,
        state: String,
        operator_id: Option<i64>,
    },
    /// The router offers a conversation to an operator.
    OfferMade {
        offer_id: u64,
        conversation_id: i64,
        operator_id: i64,
        queue_id: String,
        channel: String,
        /// Unix ms.
        expires_at: i64,
        /// The citizen asked to be called back.
        callback: bool,
    },
    OfferWithdrawn {
        offer_id: u64,
        conversation_id: i64,
        operator_id: i64,
        reason: String,
    },
    /// Position in line and estimated wait, for announcements and the widget.
    Position {
        conversation_id: i64,
        queue_id: String,
        position: u32,
        estimated_wait_seconds: Option<u32>,
        /// `voice`, `chat`...; empty from a node that did not say.
        #[serde(default)]
        channel: String,
    },
    /// Maximum wait reached or queue closed: the channel renders the action.
    RoutingNotice {
        conversation_id: i64,
        kind: String,
        detail: serde_json::Value,
    },
    OperatorChanged {
        user_id: i64,
    },
    /// Someone is typing in a conversation: `from` is citizen or operator.
    Typing {
        conversation_id: i64,
        from: String,
        active: bool,
    },
    /// The citizen or the operator ended the conversation.
    ConversationEnded {
        conversation_id: i64,
        by: String,
    },
    MessageAdded {
        conversation_id: i64,
        message_id: i64,
    },
    /// The operator's console put a call on hold (or resumed it); the
    /// request is stored as the conversation's `call_hold_requested` event
    /// first. The call's task carries it out (src/voice.rs).
    CallHold {
        conversation_id: i64,
        hold: bool,
    },
    UserChanged {
        user_id: i64,
    },
    /// Local only, never published: this node's bus may have missed events
    /// (its Redis subscription was lost and is back). Every socket reloads
    /// what it shows from the store.
    Resync,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("event could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

#[derive(Clone)]
pub struct Bus {
    local: broadcast::Sender<Arc<BusEvent>>,
    redis: Option<RedisBus>,
    /// Keyed delivery for the sockets, started by the first [`Bus::keyed`].
    fanout: Arc<std::sync::OnceLock<crate::fanout::Fanout>>,
}

#[derive(Clone)]
struct RedisBus {
    publisher: redis::aio::ConnectionManager,
    channel: String,
    /// True while the subscriber connection is up (for /readyz).
    subscribed: Arc<AtomicBool>,
}

/// Events a slow subscriber may fall behind by before it is told it lagged.
/// Large, because one announcement tick sends an event per waiting citizen.
const BUFFER: usize = 65_536;

impl Bus {
    pub fn in_process() -> Self {
        Self {
            local: broadcast::channel(BUFFER).0,
            redis: None,
            fanout: Arc::default(),
        }
    }

    /// Connects to Redis and starts the subscriber task, which reconnects
    /// with backoff until `shutdown` is cancelled. Returns once subscribed,
    /// so no event published after this returns is missed.
    pub async fn redis(
        url: &str,
        prefix: &str,
        shutdown: CancellationToken,
    ) -> Result<Self, BusError> {
        let client = redis::Client::open(url)?;
        let publisher = client.get_connection_manager().await?;
        let channel = format!("{prefix}:events");
        let local = broadcast::channel(BUFFER).0;
        let subscribed = Arc::new(AtomicBool::new(false));
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        subscribed.store(true, Ordering::SeqCst);
        tokio::spawn(subscriber(
            client,
            pubsub,
            channel.clone(),
            local.clone(),
            subscribed.clone(),
            shutdown,
        ));
        Ok(Self {
            local,
            redis: Some(RedisBus {
                publisher,
                channel,
                subscribed,
            }),
            fanout: Arc::default(),
        })
    }

    pub fn kind(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "in-process"
        }
    }

    pub async fn publish(&self, event: BusEvent) -> Result<(), BusError> {
        match &self.redis {
            None => {
                // No receivers is fine: nobody is watching yet.
                let _ = self.local.send(Arc::new(event));
            }
            Some(redis) => {
                let payload = serde_json::to_string(&event)?;
                let mut conn = redis.publisher.clone();
                let _: i64 = conn.publish(&redis.channel, payload).await?;
            }
        }
        metrics::counter!("ccu_bus_events_published_total").increment(1);
        Ok(())
    }

    /// Every event: for the few receivers that want them all (the
    /// dashboards, the channels' workers).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<BusEvent>> {
        self.local.subscribe()
    }

    /// Only the events of the keys the subscription watches: for the many
    /// sockets (see [`crate::fanout`]). Call inside the tokio runtime.
    pub fn keyed(&self) -> crate::fanout::Subscription {
        self.fanout
            .get_or_init(|| crate::fanout::Fanout::start(self.local.subscribe()))
            .subscribe()
    }

    /// Whether the bus can deliver events right now.
    pub async fn healthy(&self) -> bool {
        match &self.redis {
            None => true,
            Some(redis) => {
                let mut conn = redis.publisher.clone();
                let pong: Result<String, _> = redis::cmd("PING").query_async(&mut conn).await;
                pong.is_ok() && redis.subscribed.load(Ordering::SeqCst)
            }
        }
    }
}

async fn subscriber(
    client: redis::Client,
    first: redis::aio::PubSub,
    channel: String,
    local: broadcast::Sender<Arc<BusEvent>>,
    subscribed: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut pubsub = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connection = match pubsub.take() {
            Some(p) => Ok(p),
            None => connect(&client, &channel).await,
        };
        match connection {
            Ok(p) => {
                // Events published while we were away are lost to this node.
                if !subscribed.swap(true, Ordering::SeqCst) {
                    let _ = local.send(Arc::new(BusEvent::Resync));
                }
                backoff = Duration::from_millis(100);
                let mut messages = p.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => {
                            let Some(message) = message else { break };
                            let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                            match serde_json::from_slice::<BusEvent>(&payload) {
                                Ok(event) => {
                                    let _ = local.send(Arc::new(event));
                                }
                                // Another version of ccu, or garbage: never fatal.
                                Err(err) => tracing::warn!(%err, "ignoring an undecodable bus event"),
                            }
                        }
                    }
                }
                tracing::warn!("redis subscription lost; reconnecting");
            }
            Err(err) => tracing::warn!(%err, "redis subscription failed; retrying"),
        }
        subscribed.store(false, Ordering::SeqCst);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn connect(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
