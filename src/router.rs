//! The router actor: the single writer of routing state.
//!
//! One task owns the [`ccu_routing::Engine`]. Everything that changes
//! routing (a conversation queued, an operator's presence, an accept, a
//! decline, an end) arrives as a message on its channel; the actor feeds it
//! to the engine with the current time and executes the commands that come
//! out: each is **written to the store first** (offers, state changes,
//! events), then announced on the bus for consoles and channel adapters.
//! Between messages it sleeps until the engine's next deadline (offer
//! timeouts, overflow steps, wrap-up ends, openings) and sends it a `Tick`.
//!
//! On start it rebuilds the engine from the store: every active user becomes
//! an operator profile with their last declared presence, and every open
//! conversation comes back with its original enqueue time, so waiting
//! conversations keep their place; offers that were in flight when the
//! process stopped are withdrawn in the store and made again by the engine.
//!
//! Assignment is also a compare-and-set in the store
//! ([`Store::assign_conversation`]), so a conversation is never assigned
//! twice even if two routers ever ran against one database. Running several
//! nodes with one router (a Redis lease) is future work: today run the
//! router on one node (see docs/operations.md).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ccu_routing::calendar::OpeningHours;
use ccu_routing::{
    Capacity, ClosedAction as EngineClosedAction, Command, ConversationId, EndReason, Engine,
    EngineConfig, Event, Language, MaxWaitAction as EngineMaxWait, OfferId, OperatorId,
    OperatorProfile, OperatorView, OrgId, OverflowAction, OverflowStep as EngineOverflowStep,
    Presence, QueueConfig, QueueId, QueueStats, RequeueReason, RestoredConversation, RoutingError,
    SkillId, SkillLevel, SkillRequirement, Timestamp, TransferTarget, WithdrawReason,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusEvent};
use crate::config::{Channel, ClosedAction, MaxWaitAction, Settings};
use crate::store::{
    ConversationState, Role, RoutingOutcome, RoutingWrite, Store, StoreError, User,
};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("routing: {0}")]
    Routing(#[from] RoutingError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    #[error("that offer is not yours or no longer open")]
    NotYourOffer,
    #[error("the router has stopped")]
    Stopped,
}

/// Config ids (strings) to the engine's numbers, and back.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    queues: Vec<String>,
    queue_ids: HashMap<String, QueueId>,
    orgs: HashMap<String, OrgId>,
    skills: HashMap<String, SkillId>,
}

impl IdMap {
    pub fn new(settings: &Settings) -> Self {
        let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        let queues: Vec<String> = settings.queues.keys().cloned().collect();
        Self {
            queue_ids: queues
                .iter()
                .enumerate()
                .map(|(i, q)| (q.clone(), QueueId(index(i))))
                .collect(),
            queues,
            orgs: settings
                .organizations
                .keys()
                .enumerate()
                .map(|(i, o)| (o.clone(), OrgId(index(i))))
                .collect(),
            skills: settings
                .skills
                .keys()
                .enumerate()
                .map(|(i, s)| (s.clone(), SkillId(index(i))))
                .collect(),
        }
    }

    pub fn queue(&self, name: &str) -> Option<QueueId> {
        self.queue_ids.get(name).copied()
    }

    pub fn queue_name(&self, id: QueueId) -> &str {
        self.queues
            .get(id.0 as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }

    fn org(&self, name: &str) -> OrgId {
        self.orgs.get(name).copied().unwrap_or(OrgId(u32::MAX))
    }

    fn requirements(&self, skills: &BTreeMap<String, u8>) -> Vec<SkillRequirement> {
        skills
            .iter()
            .filter_map(|(name, level)| {
                self.skills.get(name).map(|&skill| SkillRequirement {
                    skill,
                    min_level: *level,
                })
            })
            .collect()
    }
}

pub fn engine_channel(channel: Channel) -> ccu_routing::Channel {
    match channel {
        Channel::Voice => ccu_routing::Channel::Voice,
        Channel::Chat => ccu_routing::Channel::Chat,
        Channel::Email => ccu_routing::Channel::Email,
        Channel::Webform => ccu_routing::Channel::Webform,
    }
}

pub fn engine_config(settings: &Settings) -> EngineConfig {
    let r = &settings.routing;
    EngineConfig {
        aging_secs_per_priority: r.aging_seconds_per_priority,
        autopause_after_misses: r.autopause_after_misses,
        reoffer_delay_secs: r.reoffer_delay_seconds,
        short_abandon_secs: r.short_abandon_seconds,
        service_level_formula: r.service_level_formula,
        stats_window_secs: r.stats_window_seconds,
        timezone: settings.zone(),
        ..EngineConfig::default()
    }
}

/// A configured queue as the engine sees it.
pub fn queue_config(
    settings: &Settings,
    ids: &IdMap,
    name: &str,
) -> Result<QueueConfig, RouterError> {
    let queue = settings
        .queues
        .get(name)
        .ok_or_else(|| RouterError::UnknownQueue(name.to_owned()))?;
    let id = ids
        .queue(name)
        .ok_or_else(|| RouterError::UnknownQueue(name.to_owned()))?;
    let hours: OpeningHours = settings
        .opening_hours(name)
        .map_err(|_| RouterError::UnknownQueue(name.to_owned()))?;
    let requirements = ids.requirements(&queue.skills);
    let mut overflow = Vec::new();
    for step in &queue.overflow {
        if let Some(level) = step.relax_min_level {
            for req in &requirements {
                overflow.push(EngineOverflowStep {
                    after_secs: step.after_seconds,
                    action: OverflowAction::RelaxLevel {
                        skill: req.skill,
                        min_level: level.min(req.min_level),
                    },
                });
            }
        }
        if !step.add_skills.is_empty() {
            overflow.push(EngineOverflowStep {
                after_secs: step.after_seconds,
                action: OverflowAction::AddSkillGroup(ids.requirements(&step.add_skills)),
            });
        }
        if let Some(target) = step.to_queue.as_deref().and_then(|q| ids.queue(q)) {
            overflow.push(EngineOverflowStep {
                after_secs: step.after_seconds,
                action: OverflowAction::MoveToQueue(target),
            });
        }
    }
    let max_wait = match queue.max_wait_action {
        MaxWaitAction::Callback => EngineMaxWait::Callback,
        MaxWaitAction::Voicemail => EngineMaxWait::Voicemail,
        MaxWaitAction::Close => EngineMaxWait::Close {
            message: settings.messages.max_wait_close.clone(),
        },
    };
    let closed_action = match queue.closed_action {
        ClosedAction::Message => EngineClosedAction::Message(settings.messages.closed.clone()),
        ClosedAction::SuggestWebform => EngineClosedAction::SuggestWebform,
        ClosedAction::Voicemail => EngineClosedAction::Voicemail,
        ClosedAction::Queue => EngineClosedAction::Queue,
    };
    let mut config = QueueConfig::new(id, ids.org(&queue.organization), requirements);
    config.shared_with = queue.shared_with.iter().map(|o| ids.org(o)).collect();
    config.priority = queue.priority;
    config.strategy = queue.strategy;
    config.offer_timeout_secs = queue.offer_timeout_seconds;
    config.wrap_up_secs = queue.wrap_up_seconds;
    config.target_secs = queue.service_level.target_seconds;
    config.overflow = overflow;
    config.max_wait = Some((queue.max_wait_seconds, max_wait));
    config.hours = Some(hours);
    config.closed_action = closed_action;
    config.closing_policy = queue.closing_policy;
    config.announce_every_secs = Some(settings.routing.announce_every_seconds).filter(|s| *s > 0);
    Ok(config)
}

/// A user as the engine sees an operator.
pub fn operator_profile(settings: &Settings, ids: &IdMap, user: &User) -> OperatorProfile {
    let defaults = &settings.capacity;
    let cap = |channel: &str, default: u32| {
        let n = user.capacity.get(channel).copied().unwrap_or(default);
        u8::try_from(n).unwrap_or(u8::MAX)
    };
    let skills = user
        .skills
        .iter()
        .filter_map(|(name, level)| {
            ids.skills.get(name).map(|&skill| SkillLevel {
                skill,
                level: *level,
            })
        })
        .collect();
    let mut profile = OperatorProfile::new(
        OperatorId(user_key(user.id)),
        ids.org(&user.organization_id),
        skills,
    );
    profile.languages = user
        .languages
        .iter()
        .filter_map(|l| Language::parse(l).ok())
        .collect();
    profile.capacity = Capacity {
        voice: cap("voice", defaults.voice),
        chat: cap("chat", defaults.chat),
        email: cap("email", defaults.email),
        webform: cap("webform", defaults.webform),
        call_with_chats: defaults.call_while_chatting,
    };
    profile
}

fn user_key(id: i64) -> u64 {
    u64::try_from(id).unwrap_or(0)
}

fn user_id(op: OperatorId) -> i64 {
    i64::try_from(op.0).unwrap_or(i64::MAX)
}

fn conversation_key(id: i64) -> ConversationId {
    ConversationId(u64::try_from(id).unwrap_or(0))
}

fn conversation_id(c: ConversationId) -> i64 {
    i64::try_from(c.0).unwrap_or(i64::MAX)
}

/// What the dashboard shows: per-queue statistics and every operator.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub queues: Vec<(String, QueueStats)>,
    pub operators: Vec<OperatorView>,
}

enum Message {
    Event {
        event: Event,
        /// For offer answers: the operator who must own the offer.
        operator: Option<OperatorId>,
        reply: Option<oneshot::Sender<Result<(), RouterError>>>,
    },
    UpsertOperator(Box<OperatorProfile>),
    Snapshot(oneshot::Sender<Snapshot>),
}

/// The way in: cheap to clone, used by the hub, the consoles and the API.
#[derive(Clone)]
pub struct RouterHandle {
    tx: mpsc::Sender<Message>,
    ids: std::sync::Arc<IdMap>,
}

impl RouterHandle {
    pub fn ids(&self) -> &IdMap {
        &self.ids
    }

    async fn request(&self, event: Event, operator: Option<OperatorId>) -> Result<(), RouterError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Event {
                event,
                operator,
                reply: Some(reply),
            })
            .await
            .map_err(|_| RouterError::Stopped)?;
        answer.await.map_err(|_| RouterError::Stopped)?
    }

    /// A stored conversation enters its queue.
    pub async fn queued(
        &self,
        conversation: i64,
        queue: &str,
        channel: Channel,
        language: &str,
        enqueued_at: i64,
    ) -> Result<(), RouterError> {
        let queue = self
            .ids
            .queue(queue)
            .ok_or_else(|| RouterError::UnknownQueue(queue.to_owned()))?;
        self.request(
            Event::ConversationQueued {
                conversation: conversation_key(conversation),
                queue,
                channel: engine_channel(channel),
                language: Language::parse(language).ok(),
                enqueued_at: Some(Timestamp::from_millis(enqueued_at)),
            },
            None,
        )
        .await
    }

    pub async fn presence(&self, user: i64, presence: Presence) -> Result<(), RouterError> {
        self.request(
            Event::OperatorPresence {
                operator: OperatorId(user_key(user)),
                presence,
            },
            None,
        )
        .await
    }

    /// The operator accepts an offer made to them (and only to them).
    pub async fn accept(&self, user: i64, offer: u64) -> Result<(), RouterError> {
        self.request(
            Event::OfferAccepted {
                offer: OfferId(offer),
            },
            Some(OperatorId(user_key(user))),
        )
        .await
    }

    pub async fn decline(&self, user: i64, offer: u64) -> Result<(), RouterError> {
        self.request(
            Event::OfferRejected {
                offer: OfferId(offer),
            },
            Some(OperatorId(user_key(user))),
        )
        .await
    }

    /// The operator's phone rang out (or they have none): a missed offer.
    pub async fn missed(&self, user: i64, offer: u64) -> Result<(), RouterError> {
        self.request(
            Event::OfferTimedOut {
                offer: OfferId(offer),
            },
            Some(OperatorId(user_key(user))),
        )
        .await
    }

    /// The conversation ended: completed by the operator or abandoned by the citizen.
    pub async fn ended(&self, conversation: i64, abandoned: bool) -> Result<(), RouterError> {
        let reason = if abandoned {
            EndReason::Abandoned
        } else {
            EndReason::Completed
        };
        self.request(
            Event::ConversationEnded {
                conversation: conversation_key(conversation),
                reason,
            },
            None,
        )
        .await
    }

    /// The citizen of a waiting conversation asked to be called back: it
    /// keeps its place and its offers say `callback`. The caller stores the
    /// `callback_requested` event first (the flag survives a restart).
    pub async fn callback(&self, conversation: i64) -> Result<(), RouterError> {
        self.request(
            Event::CallbackRequested {
                conversation: conversation_key(conversation),
            },
            None,
        )
        .await
    }

    /// The caller of a callback kept while they were on the line hung up:
    /// it is offered from its place now.
    pub async fn caller_left(&self, conversation: i64) -> Result<(), RouterError> {
        self.request(
            Event::CallerLeft {
                conversation: conversation_key(conversation),
            },
            None,
        )
        .await
    }

    /// A callback did not reach the citizen: the conversation leaves `user`
    /// (if it is still theirs), waits again in its place and is offered
    /// from `not_before` (Unix ms) on.
    pub async fn callback_retry(
        &self,
        conversation: i64,
        user: i64,
        not_before: i64,
    ) -> Result<(), RouterError> {
        self.request(
            Event::CallbackRetry {
                conversation: conversation_key(conversation),
                operator: OperatorId(user_key(user)),
                not_before: Timestamp::from_millis(not_before),
            },
            None,
        )
        .await
    }

    pub async fn transfer_to_queue(
        &self,
        conversation: i64,
        queue: &str,
    ) -> Result<(), RouterError> {
        let queue = self
            .ids
            .queue(queue)
            .ok_or_else(|| RouterError::UnknownQueue(queue.to_owned()))?;
        self.request(
            Event::Transfer {
                conversation: conversation_key(conversation),
                target: TransferTarget::Queue(queue),
            },
            None,
        )
        .await
    }

    pub async fn transfer_to_operator(
        &self,
        conversation: i64,
        user: i64,
    ) -> Result<(), RouterError> {
        self.request(
            Event::Transfer {
                conversation: conversation_key(conversation),
                target: TransferTarget::Operator(OperatorId(user_key(user))),
            },
            None,
        )
        .await
    }

    pub async fn wrap_up_done(
        &self,
        user: i64,
        conversation: Option<i64>,
        disposition: Option<String>,
    ) -> Result<(), RouterError> {
        self.request(
            Event::WrapUpDone {
                operator: OperatorId(user_key(user)),
                conversation: conversation.map(conversation_key),
                disposition,
            },
            None,
        )
        .await
    }

    /// A user was created or changed: refresh their operator profile.
    pub async fn upsert_operator(&self, profile: OperatorProfile) -> Result<(), RouterError> {
        self.tx
            .send(Message::UpsertOperator(Box::new(profile)))
            .await
            .map_err(|_| RouterError::Stopped)
    }

    pub async fn snapshot(&self) -> Result<Snapshot, RouterError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Snapshot(reply))
            .await
            .map_err(|_| RouterError::Stopped)?;
        answer.await.map_err(|_| RouterError::Stopped)
    }
}

/// The actor's state besides the engine.
struct Actor {
    engine: Engine,
    settings: Settings,
    ids: std::sync::Arc<IdMap>,
    store: Store,
    bus: Bus,
    /// Conversation -> its accepted/open offer, to settle on assign or requeue.
    open_offer: HashMap<ConversationId, OfferId>,
}

fn now() -> Timestamp {
    Timestamp::from_millis(crate::now_ms())
}

/// Builds the engine from config and store and starts the actor.
pub async fn start(
    settings: &Settings,
    store: Store,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<RouterHandle, RouterError> {
    let ids = std::sync::Arc::new(IdMap::new(settings));
    let mut engine = Engine::new(engine_config(settings));
    // Two passes: overflow may move conversations to a queue added later.
    for name in settings.queues.keys() {
        let mut config = queue_config(settings, &ids, name)?;
        config.overflow.clear();
        engine.add_queue(config)?;
    }
    for name in settings.queues.keys() {
        engine.update_queue(queue_config(settings, &ids, name)?)?;
    }
    let users = store.list_users(&crate::store::Scope::All).await?;
    for user in users.iter().filter(|u| u.active) {
        engine.upsert_operator(operator_profile(settings, &ids, user))?;
    }
    let stored_presence: HashMap<i64, (String, i64)> = store
        .presences()
        .await?
        .into_iter()
        .map(|(user, presence, at)| (user, (presence, at)))
        .collect();
    let mut presence_since = Vec::new();
    let presences = users
        .iter()
        .filter(|u| u.active && u.role >= Role::Operator)
        .filter_map(|u| {
            let (json, at) = stored_presence.get(&u.id)?;
            let presence: Presence = serde_json::from_str(json).ok()?;
            presence_since.push((OperatorId(user_key(u.id)), Timestamp::from_millis(*at)));
            Some((OperatorId(user_key(u.id)), presence))
        })
        .collect();
    let now_ms = crate::now_ms();
    store.withdraw_open_offers(now_ms).await?;
    let callbacks: std::collections::HashSet<i64> =
        store.callback_conversations().await?.into_iter().collect();
    let mut restored = Vec::new();
    for c in store.active_conversations().await? {
        let Some(queue) = ids.queue(&c.queue_id) else {
            tracing::warn!(conversation = c.id, queue = %c.queue_id, "queue no longer configured; left as it is");
            continue;
        };
        if c.state == ConversationState::WrapUp {
            // After-contact work does not survive a restart: close it.
            store
                .transition(
                    c.id,
                    &[ConversationState::WrapUp],
                    ConversationState::Closed,
                    "wrap_up_ended",
                    c.operator_id,
                    &serde_json::json!({ "timed_out": true, "reason": "restart" }),
                    now_ms,
                )
                .await?;
            continue;
        }
        let mut assigned = match (c.state, c.operator_id) {
            (ConversationState::Assigned, Some(op)) => Some((
                OperatorId(user_key(op)),
                Timestamp::from_millis(c.assigned_at.unwrap_or(c.enqueued_at)),
            )),
            _ => None,
        };
        // The offer was withdrawn above; the conversation waits again. So
        // does a callback the server was placing when it stopped: the
        // citizen was never reached, and no operator would be connected to
        // them.
        let cut = assigned.is_some()
            && c.channel == Channel::Voice
            && callbacks_cut(&store, c.id).await?;
        if cut {
            assigned = None;
        }
        if cut || c.state == ConversationState::Offered {
            store
                .transition(
                    c.id,
                    &[c.state],
                    ConversationState::Queued,
                    "requeued",
                    None,
                    &serde_json::json!({ "reason": "restart" }),
                    now_ms,
                )
                .await?;
        }
        let mut callback = callbacks.contains(&c.id);
        if assigned.is_none() && c.channel == Channel::Voice && !callback {
            // A waiting call did not survive the restart (its dialog and
            // media were in the process that stopped), but the citizen's
            // place did: they are called back on the number the call came
            // from, instead of losing a call that was taken. An anonymous
            // caller cannot be: closed.
            let number = store
                .get_conversation(&crate::store::Scope::All, c.id)
                .await?
                .and_then(|detail| detail.caller_number());
            let Some(number) = number else {
                store
                    .transition(
                        c.id,
                        &[ConversationState::Queued],
                        ConversationState::Closed,
                        "closed",
                        None,
                        &serde_json::json!({ "reason": "restart", "anonymous": true }),
                        now_ms,
                    )
                    .await?;
                continue;
            };
            store
                .append_event(
                    c.id,
                    now_ms,
                    crate::store::CALLBACK_REQUESTED,
                    Some(&c.queue_id),
                    None,
                    &serde_json::json!({ "reason": "restart", "number": number }),
                )
                .await?;
            callback = true;
        }
        restored.push(RestoredConversation {
            id: conversation_key(c.id),
            queue,
            channel: engine_channel(c.channel),
            language: Language::parse(&c.language).ok(),
            enqueued_at: Timestamp::from_millis(c.enqueued_at),
            queue_entered_at: None,
            callback,
            assigned,
        });
    }
    let waiting = restored.len();
    engine.restore(Timestamp::from_millis(now_ms), presences, restored)?;
    for (operator, since) in presence_since {
        engine.restore_presence_since(operator, since)?;
    }
    tracing::info!(
        conversations = waiting,
        "router restored its state from the store"
    );

    let (tx, rx) = mpsc::channel(1024);
    let actor = Actor {
        engine,
        settings: settings.clone(),
        ids: ids.clone(),
        store,
        bus,
        open_offer: HashMap::new(),
    };
    tokio::spawn(actor.run(rx, shutdown));
    Ok(RouterHandle { tx, ids })
}

/// Whether a conversation's last callback call (`callback_started`) ended
/// without reaching the citizen (no `callback_attempt` answered after it):
/// cut by the stop, or not reached and not yet put back in line.
async fn callbacks_cut(store: &Store, id: i64) -> Result<bool, RouterError> {
    let Some(detail) = store
        .get_conversation(&crate::store::Scope::All, id)
        .await?
    else {
        return Ok(false);
    };
    let last_start = detail
        .events
        .iter()
        .rposition(|e| e.kind == "callback_started");
    Ok(last_start.is_some_and(|start| {
        !detail.events[start..]
            .iter()
            .any(|e| e.kind == crate::store::CALLBACK_ATTEMPT && e.data.contains("\"answered\""))
    }))
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>, shutdown: CancellationToken) {
        // Commands the restore produced (offers made again).
        self.execute_pending().await;
        loop {
            let deadline = self.engine.next_deadline().map(|t| {
                let wait = t.as_millis().saturating_sub(crate::now_ms()).max(0);
                tokio::time::Instant::now()
                    + Duration::from_millis(u64::try_from(wait).unwrap_or(0))
            });
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep => {
                    if let Err(err) = self.engine.handle(now(), Event::Tick) {
                        tracing::warn!(%err, "tick refused");
                    }
                }
                message = rx.recv() => {
                    let Some(message) = message else { return };
                    self.receive(message).await;
                    // Take what else is waiting, so that one run (one
                    // commit) carries the whole burst's commands.
                    for _ in 0..255 {
                        match rx.try_recv() {
                            Ok(message) => self.receive(message).await,
                            Err(_) => break,
                        }
                    }
                }
            }
            self.execute_pending().await;
        }
    }

    async fn receive(&mut self, message: Message) {
        match message {
            Message::Event {
                event,
                operator,
                reply,
            } => {
                let mut result = self.check_owner(&event, operator);
                if result.is_ok()
                    && let Event::OperatorPresence { operator, presence } = &event
                {
                    // Stored first, so a restart puts the operator back.
                    result = self.remember_presence(*operator, presence).await;
                }
                // A declined offer (the console, the phone): whoever shows
                // or rings it is told, by its id, so that a phone still
                // ringing stops and nothing else does.
                let declined = match (&event, operator) {
                    (Event::OfferRejected { offer }, Some(operator)) => self
                        .open_offer
                        .iter()
                        .find(|(_, open)| *open == offer)
                        .map(|(conversation, _)| (*offer, *conversation, operator)),
                    _ => None,
                };
                if result.is_ok() {
                    result = self.engine.handle(now(), event).map_err(RouterError::from);
                }
                let accepted = result.is_ok();
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
                if accepted && let Some((offer, conversation, operator)) = declined {
                    self.publish(BusEvent::OfferWithdrawn {
                        offer_id: offer.0,
                        conversation_id: conversation_id(conversation),
                        operator_id: user_id(operator),
                        reason: "declined".into(),
                    })
                    .await;
                }
            }
            Message::UpsertOperator(profile) => {
                if let Err(err) = self.engine.upsert_operator(*profile) {
                    tracing::warn!(%err, "operator profile refused");
                }
            }
            Message::Snapshot(reply) => {
                let at = now();
                let queues = self
                    .settings
                    .queues
                    .keys()
                    .filter_map(|name| {
                        let id = self.ids.queue(name)?;
                        self.engine
                            .queue_stats(id, at)
                            .ok()
                            .map(|s| (name.clone(), s))
                    })
                    .collect();
                let operators = self.engine.operators();
                let _ = reply.send(Snapshot { queues, operators });
            }
        }
    }

    /// An answer to an offer is accepted only from the operator it was made to.
    fn check_owner(&self, event: &Event, operator: Option<OperatorId>) -> Result<(), RouterError> {
        let offer = match event {
            Event::OfferAccepted { offer }
            | Event::OfferRejected { offer }
            | Event::OfferTimedOut { offer } => *offer,
            _ => return Ok(()),
        };
        let Some(operator) = operator else {
            return Ok(());
        };
        match self.engine.operator(operator) {
            Some(view) if view.offers.contains(&offer) => Ok(()),
            _ => Err(RouterError::NotYourOffer),
        }
    }

    async fn remember_presence(
        &self,
        operator: OperatorId,
        presence: &Presence,
    ) -> Result<(), RouterError> {
        let json = serde_json::to_string(presence).unwrap_or_default();
        self.store
            .set_presence(user_id(operator), &json, crate::now_ms())
            .await?;
        Ok(())
    }

    /// Executes what the engine decided. Offers, their outcomes,
    /// assignments, requeues and wrap-up starts (the commands of every
    /// routing turn) are written in runs, one transaction per run
    /// ([`Store::routing_batch`]); the rest one by one. Order is kept: a run
    /// is committed before the next other command, and every command's bus
    /// events go out after its writes are durable.
    async fn execute_pending(&mut self) {
        let now_ms = crate::now_ms();
        let mut run: Vec<(Command, Vec<RoutingWrite>)> = Vec::new();
        while let Some(command) = self.engine.poll() {
            if let Some(writes) = self.plan(&command, now_ms) {
                run.push((command, writes));
                continue;
            }
            self.execute_run(std::mem::take(&mut run)).await;
            if let Err(err) = self.execute(command.clone()).await {
                tracing::error!(%err, ?command, "executing a routing command failed");
            }
        }
        self.execute_run(run).await;
    }

    /// The writes of a command that goes in a run; `None` for the others.
    fn plan(&mut self, command: &Command, now_ms: i64) -> Option<Vec<RoutingWrite>> {
        let writes = match command {
            Command::Offer {
                offer,
                conversation,
                operator,
                queue,
                expires_at,
                ..
            } => {
                self.open_offer.insert(*conversation, *offer);
                vec![RoutingWrite::Offer {
                    conversation_id: conversation_id(*conversation),
                    operator_id: user_id(*operator),
                    queue_id: self.ids.queue_name(*queue).to_owned(),
                    offered_at: now_ms,
                    expires_at: expires_at.as_millis(),
                    router_offer_id: offer_number(*offer),
                }]
            }
            Command::Withdraw {
                offer,
                conversation,
                ..
            } => vec![self.settle(*offer, *conversation, "withdrawn", now_ms)],
            Command::Assign {
                conversation,
                operator,
                ..
            } => {
                let mut writes = Vec::with_capacity(2);
                if let Some(offer) = self.open_offer.get(conversation).copied() {
                    writes.push(self.settle(offer, *conversation, "accepted", now_ms));
                }
                writes.push(RoutingWrite::Assign {
                    conversation_id: conversation_id(*conversation),
                    operator_id: user_id(*operator),
                    now: now_ms,
                });
                writes
            }
            Command::Requeued {
                conversation,
                reason,
                ..
            } => {
                let outcome = requeue_outcome(*reason);
                let mut writes = Vec::with_capacity(2);
                if let Some(offer) = self.open_offer.get(conversation).copied() {
                    writes.push(self.settle(offer, *conversation, outcome, now_ms));
                }
                writes.push(RoutingWrite::Transition {
                    conversation_id: conversation_id(*conversation),
                    from: vec![ConversationState::Offered, ConversationState::Assigned],
                    to: ConversationState::Queued,
                    kind: "requeued".into(),
                    operator_id: None,
                    data: serde_json::json!({ "reason": outcome }),
                    now: now_ms,
                });
                writes
            }
            Command::WrapUpStarted {
                operator,
                conversation,
                until,
            } => vec![RoutingWrite::Transition {
                conversation_id: conversation_id(*conversation),
                from: vec![ConversationState::Assigned],
                to: ConversationState::WrapUp,
                kind: "wrap_up_started".into(),
                operator_id: Some(user_id(*operator)),
                data: serde_json::json!({ "until": until.as_millis() }),
                now: now_ms,
            }],
            // No write; in the run so that its event keeps its place.
            Command::Announce { .. } => Vec::new(),
            _ => return None,
        };
        Some(writes)
    }

    /// Commits a run in one transaction, then announces each command. If
    /// the run fails as a whole, each command is tried on its own, so one
    /// bad write does not take the others with it.
    async fn execute_run(&mut self, run: Vec<(Command, Vec<RoutingWrite>)>) {
        if run.is_empty() {
            return;
        }
        let mut commands = Vec::with_capacity(run.len());
        let mut counts = Vec::with_capacity(run.len());
        let mut writes = Vec::new();
        for (command, mine) in run {
            commands.push(command);
            counts.push(mine.len());
            writes.extend(mine);
        }
        let batch = if writes.is_empty() {
            Ok(Vec::new())
        } else {
            self.store.routing_batch(&writes).await
        };
        let failed = batch.is_err();
        if let Err(err) = &batch {
            tracing::warn!(%err, commands = commands.len(), "a routing run failed; writing its commands one by one");
        }
        let outcomes = batch.unwrap_or_default();
        let (mut start, mut outcomes_left) = (0, outcomes.as_slice());
        for (command, count) in commands.into_iter().zip(counts) {
            let mine = &writes[start..start + count];
            start += count;
            if !failed {
                let (done, rest) = outcomes_left.split_at(count.min(outcomes_left.len()));
                outcomes_left = rest;
                self.announce(command, done).await;
                continue;
            }
            let retried = if mine.is_empty() {
                Ok(Vec::new())
            } else {
                self.store.routing_batch(mine).await
            };
            match retried {
                Ok(done) => self.announce(command, &done).await,
                Err(err) => {
                    tracing::error!(%err, ?command, "executing a routing command failed");
                }
            }
        }
    }

    /// After a run's commit: metrics and bus events of one of its commands.
    async fn announce(&self, command: Command, outcomes: &[RoutingOutcome]) {
        let moved = outcomes.iter().rev().find_map(|o| match o {
            RoutingOutcome::Moved(org) => Some(org.clone()),
            _ => None,
        });
        match command {
            Command::Offer {
                offer,
                conversation,
                operator,
                queue,
                channel,
                expires_at,
                callback,
            } => {
                let queue_name = self.ids.queue_name(queue).to_owned();
                metrics::counter!("ccu_offers_total", "queue" => queue_name.clone()).increment(1);
                self.publish(BusEvent::OfferMade {
                    offer_id: offer.0,
                    conversation_id: conversation_id(conversation),
                    operator_id: user_id(operator),
                    queue_id: queue_name,
                    channel: format!("{channel:?}").to_lowercase(),
                    expires_at: expires_at.as_millis(),
                    callback,
                })
                .await;
            }
            Command::Withdraw {
                offer,
                conversation,
                operator,
                reason,
            } => {
                self.publish(BusEvent::OfferWithdrawn {
                    offer_id: offer.0,
                    conversation_id: conversation_id(conversation),
                    operator_id: user_id(operator),
                    reason: withdraw_reason(reason).to_owned(),
                })
                .await;
            }
            Command::Assign {
                conversation,
                operator,
                queue,
                waited_ms,
            } => {
                let id = conversation_id(conversation);
                let Some(Some(organization_id)) = moved else {
                    // The store's compare-and-set refused: it was assigned already.
                    tracing::error!(conversation = id, "refused a second assignment");
                    return;
                };
                metrics::histogram!("ccu_wait_seconds", "queue" => self.ids.queue_name(queue).to_owned())
                    .record(waited_ms as f64 / 1000.0);
                self.publish_changed(id, organization_id, "assigned", Some(user_id(operator)))
                    .await;
            }
            Command::Requeued { conversation, .. } => {
                let id = conversation_id(conversation);
                self.changed_with(id, moved.flatten(), "queued", None).await;
            }
            Command::WrapUpStarted {
                operator,
                conversation,
                ..
            } => {
                let id = conversation_id(conversation);
                self.changed_with(id, moved.flatten(), "wrap_up", Some(user_id(operator)))
                    .await;
            }
            Command::Announce {
                conversation,
                queue,
                position,
                estimated_wait_secs,
            } => {
                let channel = self
                    .engine
                    .conversation(conversation)
                    .map(|v| format!("{:?}", v.channel).to_lowercase())
                    .unwrap_or_default();
                self.publish(BusEvent::Position {
                    channel,
                    conversation_id: conversation_id(conversation),
                    queue_id: self.ids.queue_name(queue).to_owned(),
                    position,
                    estimated_wait_seconds: estimated_wait_secs,
                })
                .await;
            }
            _ => {}
        }
    }

    /// The commands [`Actor::plan`] leaves out, one by one.
    async fn execute(&mut self, command: Command) -> Result<(), RouterError> {
        let now_ms = crate::now_ms();
        match command {
            Command::Overflow {
                conversation,
                from,
                to,
            } => {
                let (from, to) = (
                    self.ids.queue_name(from).to_owned(),
                    self.ids.queue_name(to).to_owned(),
                );
                let org = self
                    .settings
                    .queues
                    .get(&to)
                    .map(|q| q.organization.clone())
                    .unwrap_or_default();
                let id = conversation_id(conversation);
                self.store
                    .move_to_queue(
                        id,
                        &to,
                        &org,
                        "overflow",
                        &serde_json::json!({ "from": from }),
                        now_ms,
                    )
                    .await?;
                self.changed(id, "queued", None).await?;
            }
            Command::MaxWaitReached {
                conversation,
                queue,
                action,
            } => {
                let id = conversation_id(conversation);
                let detail = serde_json::to_value(&action).unwrap_or_default();
                let channel = self.store.conversation_channel(id).await?;
                let voice = channel == Some(Channel::Voice);
                match action {
                    // The engine keeps the place (a caller who leaves a
                    // voice message is called back too); the flag must
                    // survive a restart like the place does.
                    EngineMaxWait::Callback | EngineMaxWait::Voicemail
                        if voice || action == EngineMaxWait::Callback =>
                    {
                        let reason = match action {
                            EngineMaxWait::Voicemail => "voicemail",
                            _ => "max_wait",
                        };
                        self.store
                            .append_event(
                                id,
                                now_ms,
                                crate::store::CALLBACK_REQUESTED,
                                Some(self.ids.queue_name(queue)),
                                None,
                                &serde_json::json!({ "reason": reason }),
                            )
                            .await?;
                        self.notice(conversation, queue, "max_wait", detail, now_ms)
                            .await?;
                    }
                    // The engine took it out of line: the channel hears the
                    // notice first (the caller the message, then a hang-up;
                    // the chat's citizen the message and the web form, not
                    // "ended by the operator"), then it is closed. Written
                    // requests never reach a maximum wait.
                    EngineMaxWait::Callback
                    | EngineMaxWait::Voicemail
                    | EngineMaxWait::Close { .. } => {
                        self.notice(conversation, queue, "max_wait", detail, now_ms)
                            .await?;
                        if matches!(channel, Some(Channel::Voice | Channel::Chat)) {
                            self.close_waiting(id, "max_wait", now_ms).await?;
                        }
                    }
                }
            }
            Command::QueueClosed {
                conversation,
                queue,
                action,
            } => {
                let leaves = action != ccu_routing::ClosedAction::Queue;
                let detail = serde_json::to_value(&action).unwrap_or_default();
                self.notice(conversation, queue, "queue_closed", detail, now_ms)
                    .await?;
                // A chat that the closing queue dropped is closed here, after
                // the widget heard why; a call closes its own after the
                // closed message (the voice channel).
                if leaves
                    && self
                        .store
                        .conversation_channel(conversation_id(conversation))
                        .await?
                        == Some(Channel::Chat)
                {
                    self.close_waiting(conversation_id(conversation), "queue_closed", now_ms)
                        .await?;
                }
            }
            Command::OperatorAutoPaused { operator, missed } => {
                let user = user_id(operator);
                let presence =
                    Presence::NotReady(ccu_routing::NotReadyReason::MissedOffers { count: missed });
                self.remember_presence(operator, &presence).await?;
                self.store
                    .audit(
                        &crate::store::AuditEntry {
                            actor_user_id: None,
                            address: None,
                            action: "operator_auto_paused",
                            target: Some(user.to_string()),
                            detail: serde_json::json!({ "missed_offers": missed }),
                        },
                        now_ms,
                    )
                    .await?;
                self.publish(BusEvent::OperatorChanged { user_id: user })
                    .await;
            }
            Command::WrapUpEnded {
                operator,
                conversation,
                disposition,
                timed_out,
            } => {
                let id = conversation_id(conversation);
                if let Some(code) = &disposition {
                    self.store
                        .record_wrap_up(id, user_id(operator), code, None, now_ms)
                        .await?;
                }
                self.store
                    .transition(
                        id,
                        &[ConversationState::WrapUp, ConversationState::Assigned],
                        ConversationState::Closed,
                        "wrap_up_ended",
                        Some(user_id(operator)),
                        &serde_json::json!({ "disposition": disposition, "timed_out": timed_out }),
                        now_ms,
                    )
                    .await?;
                self.changed(id, "closed", Some(user_id(operator))).await?;
            }
            batched => {
                // Planned commands never come here; if one does, it runs alone.
                let writes = self.plan(&batched, now_ms).unwrap_or_default();
                self.execute_run(vec![(batched, writes)]).await;
            }
        }
        Ok(())
    }

    /// Settles an offer in the actor's books; the returned write settles
    /// its row.
    fn settle(
        &mut self,
        offer: OfferId,
        conversation: ConversationId,
        outcome: &str,
        now_ms: i64,
    ) -> RoutingWrite {
        if self.open_offer.get(&conversation) == Some(&offer) {
            self.open_offer.remove(&conversation);
        }
        RoutingWrite::CloseOffer {
            conversation_id: conversation_id(conversation),
            router_offer_id: offer_number(offer),
            outcome: outcome.to_owned(),
            now: now_ms,
        }
    }

    /// Closes a conversation the engine let go while it waited (the
    /// maximum wait, a closing queue), if it still waits.
    async fn close_waiting(&self, id: i64, reason: &str, now_ms: i64) -> Result<(), RouterError> {
        let closed = self
            .store
            .transition(
                id,
                &[ConversationState::Queued, ConversationState::Offered],
                ConversationState::Closed,
                "closed",
                None,
                &serde_json::json!({ "reason": reason }),
                now_ms,
            )
            .await?;
        if closed {
            self.changed(id, "closed", None).await?;
        }
        Ok(())
    }

    /// A rule fired that the channel must render (maximum wait, queue
    /// closed): stored as an event, then announced.
    async fn notice(
        &self,
        conversation: ConversationId,
        queue: QueueId,
        kind: &str,
        detail: serde_json::Value,
        now_ms: i64,
    ) -> Result<(), RouterError> {
        let id = conversation_id(conversation);
        self.store
            .append_event(
                id,
                now_ms,
                kind,
                Some(self.ids.queue_name(queue)),
                None,
                &detail,
            )
            .await?;
        self.publish(BusEvent::RoutingNotice {
            conversation_id: id,
            kind: kind.to_owned(),
            detail,
        })
        .await;
        Ok(())
    }

    async fn changed(
        &self,
        id: i64,
        state: &str,
        operator: Option<i64>,
    ) -> Result<(), RouterError> {
        let organization_id = self
            .store
            .conversation_organization(id)
            .await?
            .unwrap_or_default();
        self.publish_changed(id, organization_id, state, operator)
            .await;
        Ok(())
    }

    /// [`Actor::changed`] with the organization when a write returned it.
    async fn changed_with(
        &self,
        id: i64,
        organization_id: Option<String>,
        state: &str,
        operator: Option<i64>,
    ) {
        let result = match organization_id {
            Some(org) => {
                self.publish_changed(id, org, state, operator).await;
                Ok(())
            }
            None => self.changed(id, state, operator).await,
        };
        if let Err(err) = result {
            tracing::warn!(%err, conversation = id, "announcing a change failed");
        }
    }

    async fn publish_changed(
        &self,
        id: i64,
        organization_id: String,
        state: &str,
        operator: Option<i64>,
    ) {
        self.publish(BusEvent::ConversationChanged {
            conversation_id: id,
            organization_id,
            state: state.to_owned(),
            operator_id: operator,
        })
        .await;
    }

    async fn publish(&self, event: BusEvent) {
        if let Err(err) = self.bus.publish(event).await {
            // The store has it; consoles resynchronise from there.
            tracing::warn!(%err, "publishing a routing event failed");
        }
    }
}

fn offer_number(offer: OfferId) -> i64 {
    i64::try_from(offer.0).unwrap_or(i64::MAX)
}

fn requeue_outcome(reason: RequeueReason) -> &'static str {
    match reason {
        RequeueReason::Rejected => "declined",
        RequeueReason::Missed => "missed",
        RequeueReason::OperatorUnavailable => "withdrawn",
        RequeueReason::CallbackRetry => "callback_retry",
    }
}

fn withdraw_reason(reason: WithdrawReason) -> &'static str {
    match reason {
        WithdrawReason::AnsweredElsewhere => "answered_elsewhere",
        WithdrawReason::Abandoned => "abandoned",
        WithdrawReason::OperatorUnavailable => "operator_unavailable",
        WithdrawReason::TimedOut => "timed_out",
        WithdrawReason::Transferred => "transferred",
    }
}
