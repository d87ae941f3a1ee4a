//! The routing engine: a deterministic state machine from [`Event`]s to
//! [`Command`]s.
//!
//! # How a decision stays cheap
//!
//! Conversations wait in *routing classes*: one class per (queue, overflow
//! tier, channel, language). Everyone in a class needs exactly the same
//! operators, so within a class the line is a single ordered map keyed by
//! `(enqueue time - priority * aging, arrival sequence)`. That key is the
//! aging score turned around: a score `priority * aging + (now - enqueued)`
//! orders conversations exactly like `enqueued - priority * aging` does, and
//! the latter does not change with `now`, so the map never needs re-sorting
//! as time passes. Low priorities age into service; equal keys stay FIFO.
//!
//! Each class also keeps the operators *ready* for it (eligible and with
//! room on the class's channel) ordered by the queue's strategy key. Every
//! change to an operator re-indexes it in its own classes only.
//!
//! The engine keeps one invariant after every event: no ready operator and
//! waiting conversation of the same class are left unmatched (unless the
//! operator just declined that conversation). So a new conversation only
//! looks at its class's ready set, and a freed operator only peeks at the
//! head of each of its classes: O(classes of the operator * log n), not a
//! scan of the waiting conversations.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use chrono::{Days, TimeZone};
use serde::Serialize;

use crate::event::{Command, Event, RequeueReason, TransferTarget, WithdrawReason};
use crate::model::{
    Channel, ClosedAction, ClosingPolicy, ConversationId, EngineConfig, Language, MaxWaitAction,
    NotReadyReason, OfferId, OperatorId, OperatorProfile, OperatorStatus, OverflowAction, Presence,
    QueueConfig, QueueId, SkillRequirement, Strategy, Timestamp,
};
use crate::stats::{OperatorsByStatus, QueueCounters, QueueStats, Sample};

/// What the engine refuses. An erroneous event changes nothing (due timers
/// up to `now` have still fired).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("unknown queue {0}")]
    UnknownQueue(QueueId),
    #[error("queue {0} is already configured")]
    DuplicateQueue(QueueId),
    #[error("unknown operator {0}: configure it with upsert_operator first")]
    UnknownOperator(OperatorId),
    #[error("unknown conversation {0}")]
    UnknownConversation(ConversationId),
    #[error("conversation {0} is already in the engine")]
    DuplicateConversation(ConversationId),
    #[error("unknown or finished offer {0}")]
    UnknownOffer(OfferId),
    #[error("operator {operator} has no pending wrap-up{}", conversation.map(|c| format!(" for conversation {c}")).unwrap_or_default())]
    NoWrapUp {
        operator: OperatorId,
        conversation: Option<ConversationId>,
    },
    #[error("invalid skill level {level} for skill {skill} (levels are 1 to 10)")]
    InvalidSkillLevel { skill: u32, level: u8 },
    #[error("queue {queue}: overflow moves to unknown queue {target}")]
    UnknownOverflowTarget { queue: QueueId, target: QueueId },
    #[error("restored conversation {conversation} is assigned to unknown operator {operator}")]
    RestoreUnknownOperator {
        conversation: ConversationId,
        operator: OperatorId,
    },
    #[error("conversation {conversation} is not assigned to operator {operator}")]
    NotAssigned {
        conversation: ConversationId,
        operator: OperatorId,
    },
}

/// A broken internal invariant, reported by [`Engine::check_invariants`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routing invariant violated: {0}")]
pub struct InvariantViolation(pub String);

/// A small fast hasher for integer keys. The engine never iterates its hash
/// maps (iteration order is no part of any decision), so a fixed,
/// non-randomised hasher is safe and keeps lookups a few nanoseconds.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The latest instant the engine handles: the end of year 9999 UTC. Later
/// (or negative) times are clamped, so arithmetic on them never overflows.
const MAX_TIME: i64 = 253_402_300_799_999;

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Position in a line: (time-invariant aging key, arrival sequence).
type LineKey = (i64, u64);
/// Position in a ready set: (strategy key, tie-break, operator index).
type ReadyKey = (i64, i64, u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ClassKey {
    queue: u32,
    tier: u16,
    channel: Channel,
    language: Option<Language>,
}

#[derive(Debug)]
struct Class {
    key: ClassKey,
    strategy: Strategy,
    waiting: BTreeMap<LineKey, u32>,
    ready: BTreeSet<ReadyKey>,
    /// Round-robin: the operator index served last.
    rr_cursor: u32,
}

/// The requirements in force during one overflow tier.
#[derive(Debug, Clone)]
struct Tier {
    from_ms: i64,
    /// Alternative skill groups: an operator qualifies with any one group.
    groups: Vec<Vec<SkillRequirement>>,
    move_to: Option<u32>,
}

#[derive(Debug)]
struct QueueState {
    config: QueueConfig,
    tiers: Vec<Tier>,
    counters: QueueCounters,
    /// Every waiting conversation of the queue in line order (all classes
    /// and personal lines), for positions, longest wait and counts.
    waiting: BTreeMap<LineKey, u32>,
    open: bool,
    /// Bumped by `update_queue`: periodic timers of an older configuration
    /// are ignored when they fire.
    timer_epoch: u32,
}

#[derive(Debug, Clone, Copy)]
struct OpClass {
    class: u32,
    /// Sum of the operator's levels in the best matching skill group.
    score: i64,
    indexed: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
struct WrapUp {
    conversation: ConversationId,
    queue: u32,
    started: i64,
    until: i64,
}

#[derive(Debug)]
struct Op {
    profile: OperatorProfile,
    presence: Presence,
    /// Offers plus assigned conversations, per channel.
    active: [u8; 4],
    offers: Vec<OfferId>,
    assigned: Vec<u32>,
    wrap_ups: Vec<WrapUp>,
    idle_since: i64,
    /// When the presence last changed (the dashboard's "time in it").
    presence_since: i64,
    misses: u32,
    classes: Vec<OpClass>,
    /// Queues whose base requirements the operator meets (for staffing).
    base_queues: Vec<u32>,
    /// Conversations transferred to this operator by name.
    personal: BTreeMap<LineKey, u32>,
}

impl Op {
    fn logged_in(&self) -> bool {
        self.presence != Presence::Offline
    }

    fn total_active(&self) -> i64 {
        self.active.iter().map(|&a| i64::from(a)).sum()
    }

    fn ready_for(&self, channel: Channel) -> bool {
        if self.presence != Presence::Available || !self.wrap_ups.is_empty() {
            return false;
        }
        let cap = &self.profile.capacity;
        if self.active[channel.index()] >= cap.of(channel) {
            return false;
        }
        match channel {
            // On a call (or being rung): no chats.
            Channel::Chat => self.active[Channel::Voice.index()] == 0,
            Channel::Voice => self.active[Channel::Chat.index()] == 0 || cap.call_with_chats,
            Channel::Email | Channel::Webform => true,
        }
    }

    fn status(&self) -> OperatorStatus {
        match self.presence {
            Presence::Offline => OperatorStatus::Offline,
            Presence::Break { .. } => OperatorStatus::Break,
            Presence::NotReady(_) => OperatorStatus::NotReady,
            Presence::Available if !self.wrap_ups.is_empty() => OperatorStatus::WrapUp,
            Presence::Available if self.total_active() > 0 => OperatorStatus::Busy,
            Presence::Available => OperatorStatus::Idle,
        }
    }

    fn strategy_key(&self, strategy: Strategy, score: i64) -> (i64, i64) {
        strategy_key(strategy, score, self.idle_since, self.total_active())
    }
}

/// Where an operator ranks in a class's ready set (lower first): the
/// queue's strategy, then longest idle; the operator index breaks ties.
fn strategy_key(strategy: Strategy, score: i64, idle_since: i64, busy: i64) -> (i64, i64) {
    match strategy {
        Strategy::LongestIdle | Strategy::RingAll => (0, idle_since),
        Strategy::BestSkill => (-score, idle_since),
        Strategy::LeastBusy => (busy, idle_since),
        Strategy::RoundRobin => (0, 0),
    }
}

/// The longest a caller can stay on the line once their callback is kept:
/// the longest voice message (10 minutes) and its prompts.
pub const CALLER_ON_LINE_MAX_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum ConvState {
    Waiting,
    Offered(Vec<OfferId>),
    Assigned {
        op: u32,
        at: i64,
    },
    /// A callback waiting for its retry: out of the line until `until`.
    Parked {
        until: i64,
    },
}

#[derive(Debug)]
struct Conv {
    /// False once ended: the slot waits in `free_convs` for reuse.
    live: bool,
    id: ConversationId,
    queue: u32,
    channel: Channel,
    language: Option<Language>,
    enqueued_at: i64,
    queue_entered_at: i64,
    seq: u64,
    key: i64,
    tier: u16,
    class: u32,
    state: ConvState,
    callback: bool,
    max_wait_done: bool,
    /// A kept callback whose caller is still on the line (hearing the
    /// confirmation, leaving a voice message): parked until they leave.
    on_line: bool,
    /// Operators who declined or missed it, and until when they are skipped.
    excluded: Vec<(u32, i64)>,
    pinned: Option<u32>,
    moves: u8,
}

impl Conv {
    fn line_key(&self) -> LineKey {
        (self.key, self.seq)
    }

    fn excludes(&self, op: u32, now: i64) -> bool {
        self.excluded
            .iter()
            .any(|&(o, until)| o == op && until > now)
    }
}

#[derive(Debug, Clone, Copy)]
struct OfferState {
    conv: u32,
    op: u32,
    expires_at: i64,
    /// Its expiry timer, removed when the offer ends so that
    /// `next_deadline` does not report a dead timeout.
    timer: (i64, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    OfferExpiry(OfferId),
    Tier(ConversationId),
    MaxWait(ConversationId),
    Exclusion(ConversationId),
    WrapUp(u32, ConversationId),
    Announce(u32, u32),
    Hours(u32, u32),
    /// A parked callback's retry is due.
    Retry(ConversationId),
}

/// Where a conversation is, as the server or a test sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConversationStatus {
    Waiting,
    Offered {
        operators: Vec<OperatorId>,
    },
    Assigned {
        operator: OperatorId,
    },
    /// A callback that waits for its retry, offered from `until` on.
    Parked {
        until: Timestamp,
    },
}

/// A read-only view of one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversationView {
    pub id: ConversationId,
    pub queue: QueueId,
    pub channel: Channel,
    pub language: Option<Language>,
    pub enqueued_at: Timestamp,
    /// When it entered its current queue (overflow tiers count from here).
    pub queue_entered_at: Timestamp,
    /// The overflow tier in force (0: the queue's base requirements).
    pub tier: usize,
    pub callback: bool,
    /// Transferred to this operator by name.
    pub pinned_to: Option<OperatorId>,
    pub status: ConversationStatus,
}

/// A read-only view of one operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorView {
    pub id: OperatorId,
    pub presence: Presence,
    pub status: OperatorStatus,
    /// Offers plus conversations in hand, per channel (voice, chat, email,
    /// webform).
    pub active: [u8; 4],
    pub offers: Vec<OfferId>,
    pub conversations: Vec<ConversationId>,
    pub wrap_ups: Vec<ConversationId>,
    /// When each wrap-up of `wrap_ups` ends by itself, in the same order.
    pub wrap_up_until: Vec<Timestamp>,
    pub consecutive_misses: u32,
    pub idle_since: Timestamp,
    /// Since when the operator has had this presence.
    pub presence_since: Timestamp,
}

/// A conversation the server found in its store on start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredConversation {
    pub id: ConversationId,
    pub queue: QueueId,
    pub channel: Channel,
    pub language: Option<Language>,
    /// The original enqueue time: it keeps the conversation's place.
    pub enqueued_at: Timestamp,
    /// When it entered its current queue; `None`: the enqueue time.
    pub queue_entered_at: Option<Timestamp>,
    pub callback: bool,
    /// `None` while waiting or offered (offers in flight are re-offered);
    /// the operator and answer time once assigned.
    pub assigned: Option<(OperatorId, Timestamp)>,
}

/// The routing engine. See the [crate docs](crate) for the flow.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    now: i64,
    queues: Vec<QueueState>,
    queue_index: FxMap<QueueId, u32>,
    ops: Vec<Op>,
    op_index: FxMap<OperatorId, u32>,
    convs: Vec<Conv>,
    free_convs: Vec<u32>,
    conv_index: FxMap<ConversationId, u32>,
    classes: Vec<Class>,
    class_index: FxMap<ClassKey, u32>,
    offers: FxMap<OfferId, OfferState>,
    next_offer: u64,
    timers: BTreeMap<(i64, u64), Timer>,
    timer_seq: u64,
    next_seq: u64,
    out: VecDeque<Command>,
    dirty_convs: Vec<u32>,
    dirty_ops: Vec<u32>,
    arrivals: Vec<u32>,
    /// Local midnight after which daily statistics restart.
    next_midnight: i64,
    /// The `now` of the call being handled, while earlier timers fire.
    /// Periodic timers (announcements, opening hours) reschedule from it so
    /// a long quiet spell does not replay every missed period.
    target_now: i64,
}

impl Engine {
    /// An empty engine. Add queues with [`add_queue`](Self::add_queue) and
    /// operators with [`upsert_operator`](Self::upsert_operator).
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            now: i64::MIN,
            queues: Vec::new(),
            queue_index: FxMap::default(),
            ops: Vec::new(),
            op_index: FxMap::default(),
            convs: Vec::new(),
            free_convs: Vec::new(),
            conv_index: FxMap::default(),
            classes: Vec::new(),
            class_index: FxMap::default(),
            offers: FxMap::default(),
            next_offer: 1,
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_seq: 0,
            out: VecDeque::new(),
            dirty_convs: Vec::new(),
            dirty_ops: Vec::new(),
            arrivals: Vec::new(),
            next_midnight: i64::MIN,
            target_now: i64::MIN,
        }
    }

    /// The engine-wide settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Adds a queue. Overflow targets must be added before the queues that
    /// move to them (or the move is refused with an error).
    pub fn add_queue(&mut self, config: QueueConfig) -> Result<(), RoutingError> {
        if self.queue_index.contains_key(&config.id) {
            return Err(RoutingError::DuplicateQueue(config.id));
        }
        self.validate_queue(&config)?;
        let tiers = self.build_tiers(&config);
        let qi = self.queues.len() as u32;
        self.queue_index.insert(config.id, qi);
        let announce = config.announce_every_secs;
        let has_hours = config.hours.is_some();
        self.queues.push(QueueState {
            config,
            tiers,
            counters: QueueCounters::default(),
            waiting: BTreeMap::new(),
            open: true,
            timer_epoch: 0,
        });
        let now = self.now.max(0);
        let window = self.window_ms();
        for oi in 0..self.ops.len() as u32 {
            if self.statically_eligible(oi, qi, 0).is_some() {
                self.ops[oi as usize].base_queues.push(qi);
                if self.ops[oi as usize].logged_in() {
                    self.queues[qi as usize]
                        .counters
                        .staffed_change(now, window, 1);
                }
            }
        }
        if let Some(every) = announce {
            self.schedule(now + i64::from(every.max(1)) * 1000, Timer::Announce(qi, 0));
        }
        if has_hours {
            self.schedule(now, Timer::Hours(qi, 0));
        }
        Ok(())
    }

    fn validate_queue(&self, config: &QueueConfig) -> Result<(), RoutingError> {
        let mut requirements: Vec<SkillRequirement> = config.skills.clone();
        for step in &config.overflow {
            match &step.action {
                OverflowAction::RelaxLevel { skill, min_level } => {
                    requirements.push(SkillRequirement {
                        skill: *skill,
                        min_level: *min_level,
                    })
                }
                OverflowAction::AddSkillGroup(g) => requirements.extend(g.iter().copied()),
                OverflowAction::MoveToQueue(target) => {
                    if *target != config.id && !self.queue_index.contains_key(target) {
                        return Err(RoutingError::UnknownOverflowTarget {
                            queue: config.id,
                            target: *target,
                        });
                    }
                }
            }
        }
        if let Some(bad) = requirements
            .iter()
            .find(|r| !(1..=10).contains(&r.min_level))
        {
            return Err(RoutingError::InvalidSkillLevel {
                skill: bad.skill.0,
                level: bad.min_level,
            });
        }
        Ok(())
    }

    /// Replaces a queue's configuration at run time (a configuration
    /// reload), or adds the queue if it is new. Conversations waiting in it
    /// keep their enqueue time and order and are placed again under the new
    /// rules (skills, priority, overflow, strategy); offers in flight and
    /// conversations in hand are left alone. Statistics carry on.
    pub fn update_queue(&mut self, config: QueueConfig) -> Result<(), RoutingError> {
        let Some(&qi) = self.queue_index.get(&config.id) else {
            return self.add_queue(config);
        };
        self.validate_queue(&config)?;
        let waiting: Vec<u32> = self.queues[qi as usize].waiting.values().copied().collect();
        for &ci in &waiting {
            self.remove_waiting(ci);
        }
        // Retire the queue's classes: emptied here, unreachable afterwards
        // (their slots stay, a few bytes per reload).
        let mut retired = Vec::new();
        for (c, class) in self.classes.iter_mut().enumerate() {
            if class.key.queue == qi && self.class_index.get(&class.key) == Some(&(c as u32)) {
                self.class_index.remove(&class.key);
                class.ready.clear();
                retired.push(c as u32);
            }
        }
        for op in &mut self.ops {
            op.classes.retain(|oc| !retired.contains(&oc.class));
        }
        let tiers = self.build_tiers(&config);
        let announce = config.announce_every_secs;
        let has_hours = config.hours.is_some();
        let q = &mut self.queues[qi as usize];
        q.config = config;
        q.tiers = tiers;
        q.timer_epoch += 1;
        let epoch = q.timer_epoch;
        let now = self.now.max(0);
        let window = self.window_ms();
        for oi in 0..self.ops.len() as u32 {
            let was = self.ops[oi as usize].base_queues.contains(&qi);
            let is = self.statically_eligible(oi, qi, 0).is_some();
            if was == is {
                continue;
            }
            let op = &mut self.ops[oi as usize];
            if is {
                op.base_queues.push(qi);
            } else {
                op.base_queues.retain(|&q| q != qi);
            }
            if op.logged_in() {
                self.queues[qi as usize].counters.staffed_change(
                    now,
                    window,
                    if is { 1 } else { -1 },
                );
            }
        }
        for ci in waiting {
            self.place_waiting(ci);
        }
        if let Some(every) = announce {
            self.schedule(
                now + i64::from(every.max(1)) * 1000,
                Timer::Announce(qi, epoch),
            );
        }
        if has_hours {
            self.schedule(now, Timer::Hours(qi, epoch));
        }
        self.run_dispatch();
        Ok(())
    }

    fn build_tiers(&self, config: &QueueConfig) -> Vec<Tier> {
        let mut tiers = vec![Tier {
            from_ms: 0,
            groups: vec![config.skills.clone()],
            move_to: None,
        }];
        let mut steps = config.overflow.clone();
        // Stable sort: steps at the same second apply in configured order.
        steps.sort_by_key(|s| s.after_secs);
        for step in steps {
            let Some(mut tier) = tiers.last().cloned() else {
                break;
            };
            tier.from_ms = i64::from(step.after_secs) * 1000;
            match step.action {
                OverflowAction::RelaxLevel { skill, min_level } => {
                    for group in &mut tier.groups {
                        for req in group.iter_mut().filter(|r| r.skill == skill) {
                            req.min_level = req.min_level.min(min_level);
                        }
                    }
                }
                OverflowAction::AddSkillGroup(group) => tier.groups.push(group),
                OverflowAction::MoveToQueue(target) => {
                    if target == config.id {
                        continue;
                    }
                    tier.move_to = self.queue_index.get(&target).copied();
                    tiers.push(tier);
                    // Nothing after a move applies: the conversation left.
                    break;
                }
            }
            tiers.push(tier);
        }
        tiers
    }

    /// Adds an operator (offline) or updates their profile (skills,
    /// languages, capacity, organization) keeping presence and work in hand.
    pub fn upsert_operator(&mut self, profile: OperatorProfile) -> Result<(), RoutingError> {
        if let Some(bad) = profile.skills.iter().find(|s| !(1..=10).contains(&s.level)) {
            return Err(RoutingError::InvalidSkillLevel {
                skill: bad.skill.0,
                level: bad.level,
            });
        }
        let now = self.now.max(0);
        let oi = match self.op_index.get(&profile.id) {
            Some(&oi) => {
                // Leave every index first; they are rebuilt from the new
                // profile below.
                let op = &mut self.ops[oi as usize];
                for oc in std::mem::take(&mut op.classes) {
                    if let Some((a, b)) = oc.indexed {
                        self.classes[oc.class as usize].ready.remove(&(a, b, oi));
                    }
                }
                if op.logged_in() {
                    for &qi in &op.base_queues {
                        self.queues[qi as usize].counters.staffed_change(
                            now,
                            self.config.stats_window_secs as i64 * 1000,
                            -1,
                        );
                    }
                }
                op.base_queues.clear();
                op.profile = profile;
                oi
            }
            None => {
                let oi = self.ops.len() as u32;
                self.op_index.insert(profile.id, oi);
                self.ops.push(Op {
                    profile,
                    presence: Presence::Offline,
                    active: [0; 4],
                    offers: Vec::new(),
                    assigned: Vec::new(),
                    wrap_ups: Vec::new(),
                    idle_since: now,
                    presence_since: now,
                    misses: 0,
                    classes: Vec::new(),
                    base_queues: Vec::new(),
                    personal: BTreeMap::new(),
                });
                oi
            }
        };
        let mut base = Vec::new();
        for qi in 0..self.queues.len() as u32 {
            if self.statically_eligible(oi, qi, 0).is_some() {
                base.push(qi);
            }
        }
        let mut classes = Vec::new();
        for ci in 0..self.classes.len() as u32 {
            if let Some(score) = self.class_eligible(oi, ci) {
                classes.push(OpClass {
                    class: ci,
                    score,
                    indexed: None,
                });
            }
        }
        let window = self.window_ms();
        let op = &mut self.ops[oi as usize];
        op.classes = classes;
        if op.logged_in() {
            for &qi in &base {
                self.queues[qi as usize]
                    .counters
                    .staffed_change(now, window, 1);
            }
        }
        op.base_queues = base;
        self.reindex(oi);
        self.dirty_ops.push(oi);
        self.run_dispatch();
        Ok(())
    }

    /// Rebuilds state from the store on start: operators' presences, then
    /// conversations. Waiting ones keep their original enqueue time and
    /// their order (ties broken by conversation id, which the store assigns
    /// in arrival order); assigned ones occupy their operator's capacity;
    /// offers that were in flight are made again (fresh [`Command::Offer`]s
    /// come out of [`poll`](Self::poll)).
    ///
    /// Call it once, on a fresh engine with queues and operators added. It
    /// stops at the first bad entry (unknown queue or operator, duplicate);
    /// entries before it stay restored.
    pub fn restore(
        &mut self,
        now: Timestamp,
        presences: Vec<(OperatorId, Presence)>,
        mut conversations: Vec<RestoredConversation>,
    ) -> Result<(), RoutingError> {
        self.advance(now.0);
        for (id, presence) in presences {
            let oi = self.op(id)?;
            self.set_presence(oi, presence);
        }
        conversations.sort_by_key(|c| (c.enqueued_at, c.id));
        for c in conversations {
            if self.conv_index.contains_key(&c.id) {
                return Err(RoutingError::DuplicateConversation(c.id));
            }
            let qi = self.queue(c.queue)?;
            let assigned = match c.assigned {
                Some((op, at)) => Some((
                    self.op_index.get(&op).copied().ok_or(
                        RoutingError::RestoreUnknownOperator {
                            conversation: c.id,
                            operator: op,
                        },
                    )?,
                    at.0.clamp(0, self.now),
                )),
                None => None,
            };
            let ci = self.alloc_conv(Conv {
                live: true,
                id: c.id,
                queue: qi,
                channel: c.channel,
                language: c.language,
                enqueued_at: c.enqueued_at.0.clamp(0, self.now),
                queue_entered_at: c
                    .queue_entered_at
                    .unwrap_or(c.enqueued_at)
                    .0
                    .clamp(0, self.now),
                seq: 0,
                key: 0,
                tier: 0,
                class: 0,
                state: ConvState::Waiting,
                callback: c.callback,
                max_wait_done: c.callback,
                on_line: false,
                excluded: Vec::new(),
                pinned: None,
                moves: 0,
            });
            match assigned {
                Some((oi, at)) => {
                    let conv = self.conv_mut(ci);
                    conv.state = ConvState::Assigned { op: oi, at };
                    let ch = conv.channel;
                    let op = &mut self.ops[oi as usize];
                    op.active[ch.index()] = op.active[ch.index()].saturating_add(1);
                    op.assigned.push(ci);
                    self.reindex(oi);
                }
                None => self.place_waiting(ci),
            }
        }
        self.run_dispatch();
        Ok(())
    }

    /// Feeds one event at `now`. Timers due at or before `now` fire first,
    /// in time order. `now` earlier than a previous call is treated as the
    /// previous `now` (time never runs backwards inside the engine).
    ///
    /// Commands are queued; read them with [`poll`](Self::poll) or
    /// [`drain`](Self::drain).
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Result<(), RoutingError> {
        self.advance(now.0);
        let result = self.apply(event);
        self.run_dispatch();
        self.announce_arrivals();
        result
    }

    /// The next command to execute, if any.
    pub fn poll(&mut self) -> Option<Command> {
        self.out.pop_front()
    }

    /// Every pending command, in order.
    pub fn drain(&mut self) -> impl Iterator<Item = Command> + '_ {
        self.out.drain(..)
    }

    /// When the engine next needs a [`Event::Tick`] (an offer times out, an
    /// overflow step, a wrap-up ends, an announcement, opening hours).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.timers.keys().next().map(|&(t, _)| Timestamp(t))
    }

    /// The latest `now` the engine has seen.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.now.max(0))
    }

    fn advance(&mut self, now: i64) {
        // Keep every instant in a range where adding any configured number
        // of seconds cannot overflow and chrono can convert it.
        let now = now.clamp(0, MAX_TIME);
        self.target_now = self.target_now.max(now);
        if now > self.now {
            // Roll the day before anything at `now` is counted.
            if now >= self.next_midnight {
                self.roll_day(now);
            }
        }
        while let Some((&(due, seq), _)) = self.timers.first_key_value() {
            if due > now {
                break;
            }
            let Some(timer) = self.timers.remove(&(due, seq)) else {
                break;
            };
            self.now = self.now.max(due);
            self.fire(timer);
            self.run_dispatch();
        }
        self.now = self.now.max(now);
    }

    fn roll_day(&mut self, now: i64) {
        let first = self.next_midnight == i64::MIN;
        let tz = self.config.timezone;
        let local = Timestamp(now).to_utc().with_timezone(&tz);
        let next = local
            .date_naive()
            .checked_add_days(Days::new(1))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|midnight| tz.from_local_datetime(&midnight).earliest())
            .map(|t| t.timestamp_millis())
            // A zone without a midnight that day: try again in an hour.
            .unwrap_or(now + 3_600_000);
        self.next_midnight = next;
        if !first {
            let window = self.window_ms();
            for q in &mut self.queues {
                q.counters.new_day(now, window);
            }
        }
    }

    fn window_ms(&self) -> i64 {
        i64::from(self.config.stats_window_secs) * 1000
    }

    fn schedule(&mut self, at: i64, timer: Timer) -> (i64, u64) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), timer);
        (at, self.timer_seq)
    }

    fn queue(&self, id: QueueId) -> Result<u32, RoutingError> {
        self.queue_index
            .get(&id)
            .copied()
            .ok_or(RoutingError::UnknownQueue(id))
    }

    fn op(&self, id: OperatorId) -> Result<u32, RoutingError> {
        self.op_index
            .get(&id)
            .copied()
            .ok_or(RoutingError::UnknownOperator(id))
    }

    fn conv_idx(&self, id: ConversationId) -> Result<u32, RoutingError> {
        self.conv_index
            .get(&id)
            .copied()
            .ok_or(RoutingError::UnknownConversation(id))
    }

    // Slots of ended conversations stay in the slab (marked not `live`)
    // until reused; every index structure holds live slots only, so plain
    // indexing is safe by construction.
    fn conv(&self, ci: u32) -> &Conv {
        &self.convs[ci as usize]
    }

    fn conv_mut(&mut self, ci: u32) -> &mut Conv {
        &mut self.convs[ci as usize]
    }

    fn alloc_conv(&mut self, mut conv: Conv) -> u32 {
        conv.seq = self.next_seq;
        self.next_seq += 1;
        let id = conv.id;
        let ci = match self.free_convs.pop() {
            Some(ci) => {
                self.convs[ci as usize] = conv;
                ci
            }
            None => {
                self.convs.push(conv);
                (self.convs.len() - 1) as u32
            }
        };
        self.conv_index.insert(id, ci);
        ci
    }

    fn free_conv(&mut self, ci: u32) {
        let conv = &mut self.convs[ci as usize];
        if conv.live {
            conv.live = false;
            conv.excluded = Vec::new();
            let id = conv.id;
            self.conv_index.remove(&id);
            self.free_convs.push(ci);
        }
    }

    fn priority_key(&self, qi: u32, enqueued_at: i64) -> i64 {
        let prio = i64::from(self.queues[qi as usize].config.priority);
        let worth = prio.saturating_mul(i64::from(self.config.aging_secs_per_priority) * 1000);
        enqueued_at.saturating_sub(worth)
    }

    /// The best group's level sum if the operator meets `tier` of queue `qi`
    /// (organization and skills), `None` otherwise.
    fn statically_eligible(&self, oi: u32, qi: u32, tier: u16) -> Option<i64> {
        let op = &self.ops[oi as usize].profile;
        let q = &self.queues[qi as usize];
        if op.org != q.config.org && !q.config.shared_with.contains(&op.org) {
            return None;
        }
        let tier = q.tiers.get(tier as usize)?;
        tier.groups
            .iter()
            .filter(|g| g.iter().all(|r| op.level(r.skill) >= r.min_level))
            .map(|g| g.iter().map(|r| i64::from(op.level(r.skill))).sum::<i64>())
            .max()
    }

    fn class_eligible(&self, oi: u32, ci: u32) -> Option<i64> {
        let key = self.classes[ci as usize].key;
        let op = &self.ops[oi as usize].profile;
        if op.capacity.of(key.channel) == 0 {
            return None;
        }
        if let Some(lang) = key.language
            && !op.languages.is_empty()
            && !op.languages.contains(&lang)
        {
            return None;
        }
        self.statically_eligible(oi, key.queue, key.tier)
    }

    fn class_for(&mut self, key: ClassKey) -> u32 {
        if let Some(&ci) = self.class_index.get(&key) {
            return ci;
        }
        let ci = self.classes.len() as u32;
        self.classes.push(Class {
            key,
            strategy: self.queues[key.queue as usize].config.strategy,
            waiting: BTreeMap::new(),
            ready: BTreeSet::new(),
            rr_cursor: u32::MAX,
        });
        self.class_index.insert(key, ci);
        // A new class: find its operators once (rare: classes are few).
        for oi in 0..self.ops.len() as u32 {
            if let Some(score) = self.class_eligible(oi, ci) {
                self.ops[oi as usize].classes.push(OpClass {
                    class: ci,
                    score,
                    indexed: None,
                });
                self.reindex(oi);
            }
        }
        ci
    }

    /// Puts the operator in or out of each of its classes' ready sets, with
    /// the current strategy key. Called after every change to an operator.
    fn reindex(&mut self, oi: u32) {
        let op = &mut self.ops[oi as usize];
        let ready = Channel::ALL.map(|ch| op.ready_for(ch));
        // The strategy key only depends on these; taken once so the loop can
        // borrow the classes mutably without allocating.
        let (idle_since, busy) = (op.idle_since, op.total_active());
        for oc in op.classes.iter_mut() {
            let class = &mut self.classes[oc.class as usize];
            let want = ready[class.key.channel.index()]
                .then(|| strategy_key(class.strategy, oc.score, idle_since, busy));
            if oc.indexed == want {
                continue;
            }
            if let Some((a, b)) = oc.indexed {
                class.ready.remove(&(a, b, oi));
            }
            if let Some((a, b)) = want {
                class.ready.insert((a, b, oi));
            }
            oc.indexed = want;
        }
    }

    fn tier_at(&self, qi: u32, elapsed_ms: i64) -> usize {
        let tiers = &self.queues[qi as usize].tiers;
        tiers
            .iter()
            .rposition(|t| t.from_ms <= elapsed_ms)
            .unwrap_or(0)
    }

    /// Puts a conversation in line (new, requeued, overflowed, transferred):
    /// applies queue moves due by now, then inserts it in its class at its
    /// time-invariant key, and schedules its next overflow and max wait.
    fn place_waiting(&mut self, ci: u32) {
        let now = self.now;
        loop {
            let conv = self.conv(ci);
            let qi = conv.queue;
            let tier = self.tier_at(qi, now - conv.queue_entered_at);
            let move_to = self.queues[qi as usize].tiers[tier].move_to;
            match move_to {
                Some(target)
                    if conv.pinned.is_none() && conv.moves < self.config.max_queue_moves =>
                {
                    let window = self.window_ms();
                    self.queues[qi as usize]
                        .counters
                        .record(now, window, Sample::OverflowedOut);
                    let from = self.queues[qi as usize].config.id;
                    let to = self.queues[target as usize].config.id;
                    let conv = self.conv_mut(ci);
                    conv.queue = target;
                    conv.queue_entered_at = now;
                    conv.moves += 1;
                    let id = conv.id;
                    self.out.push_back(Command::Overflow {
                        conversation: id,
                        from,
                        to,
                    });
                }
                _ => break,
            }
        }
        let conv = self.conv(ci);
        let qi = conv.queue;
        let q = &self.queues[qi as usize];
        let mut tier = self.tier_at(qi, now - conv.queue_entered_at);
        if q.tiers[tier].move_to.is_some() {
            // A move that was refused (cycle guard, pinned): stay in the
            // last real tier.
            tier = tier.saturating_sub(1);
        }
        let next_tier_at = q
            .tiers
            .get(tier + 1)
            .map(|t| conv.queue_entered_at + t.from_ms);
        let max_wait_at = match &q.config.max_wait {
            Some((secs, _)) if !conv.max_wait_done && conv.channel.is_live() => {
                Some(conv.enqueued_at + i64::from(*secs) * 1000)
            }
            _ => None,
        };
        let class_key = ClassKey {
            queue: qi,
            tier: tier as u16,
            channel: conv.channel,
            language: conv.language,
        };
        let key = self.priority_key(qi, conv.enqueued_at);
        let pinned = conv.pinned;
        let id = conv.id;
        let class = self.class_for(class_key);
        let conv = self.conv_mut(ci);
        conv.state = ConvState::Waiting;
        conv.tier = tier as u16;
        conv.key = key;
        conv.class = class;
        let line = conv.line_key();
        self.queues[qi as usize].waiting.insert(line, ci);
        match pinned {
            Some(oi) => {
                self.ops[oi as usize].personal.insert(line, ci);
                self.dirty_ops.push(oi);
            }
            None => {
                self.classes[class as usize].waiting.insert(line, ci);
                self.dirty_convs.push(ci);
            }
        }
        if let Some(at) = next_tier_at {
            self.schedule(at.max(now), Timer::Tier(id));
        }
        if let Some(at) = max_wait_at {
            self.schedule(at.max(now), Timer::MaxWait(id));
        }
    }

    fn remove_waiting(&mut self, ci: u32) {
        let conv = self.conv(ci);
        if conv.state != ConvState::Waiting {
            return;
        }
        let line = conv.line_key();
        let (qi, class, pinned) = (conv.queue, conv.class, conv.pinned);
        self.queues[qi as usize].waiting.remove(&line);
        match pinned {
            Some(oi) => {
                self.ops[oi as usize].personal.remove(&line);
            }
            None => {
                self.classes[class as usize].waiting.remove(&line);
            }
        }
    }

    fn make_offer(&mut self, ci: u32, oi: u32) {
        let now = self.now;
        let offer = OfferId(self.next_offer);
        self.next_offer += 1;
        let conv = self.conv(ci);
        let q = &self.queues[conv.queue as usize];
        let expires_at = now + i64::from(q.config.offer_timeout_secs) * 1000;
        let cmd = Command::Offer {
            offer,
            conversation: conv.id,
            operator: self.ops[oi as usize].profile.id,
            queue: q.config.id,
            channel: conv.channel,
            expires_at: Timestamp(expires_at),
            callback: conv.callback,
        };
        let ch = conv.channel;
        let conv = self.conv_mut(ci);
        match &mut conv.state {
            ConvState::Offered(offers) => offers.push(offer),
            state => *state = ConvState::Offered(vec![offer]),
        }
        let op = &mut self.ops[oi as usize];
        op.active[ch.index()] = op.active[ch.index()].saturating_add(1);
        op.offers.push(offer);
        let timer = self.schedule(expires_at, Timer::OfferExpiry(offer));
        self.offers.insert(
            offer,
            OfferState {
                conv: ci,
                op: oi,
                expires_at,
                timer,
            },
        );
        self.out.push_back(cmd);
        self.reindex(oi);
    }

    /// Drops an offer from both sides; returns it.
    fn drop_offer(&mut self, offer: OfferId) -> Option<OfferState> {
        let st = self.offers.remove(&offer)?;
        self.timers.remove(&st.timer);
        let ch = self.conv(st.conv).channel;
        if let ConvState::Offered(offers) = &mut self.conv_mut(st.conv).state {
            offers.retain(|&o| o != offer);
        }
        let op = &mut self.ops[st.op as usize];
        op.active[ch.index()] = op.active[ch.index()].saturating_sub(1);
        op.offers.retain(|&o| o != offer);
        if op.total_active() == 0 {
            // Being rung is not work done: the operator stays as idle as
            // before for longest-idle.
        }
        self.reindex(st.op);
        self.dirty_ops.push(st.op);
        Some(st)
    }

    fn run_dispatch(&mut self) {
        // Conversations first (arrivals, requeues, overflow), then operators
        // with room; each step may dirty the other side, so loop.
        while !self.dirty_convs.is_empty() || !self.dirty_ops.is_empty() {
            let convs = std::mem::take(&mut self.dirty_convs);
            for ci in convs {
                self.match_conversation(ci);
            }
            let ops = std::mem::take(&mut self.dirty_ops);
            for oi in ops {
                self.fill_operator(oi);
            }
        }
    }

    fn match_conversation(&mut self, ci: u32) {
        let conv = self.conv(ci);
        if !conv.live || conv.state != ConvState::Waiting || conv.pinned.is_some() {
            return;
        }
        let now = self.now;
        let class = &self.classes[conv.class as usize];
        if class.ready.is_empty() {
            return;
        }
        if class.strategy == Strategy::RingAll && conv.channel == Channel::Voice {
            let chosen: Vec<u32> = class
                .ready
                .iter()
                .map(|&(_, _, oi)| oi)
                .filter(|&oi| !conv.excludes(oi, now))
                .collect();
            if chosen.is_empty() {
                return;
            }
            self.remove_waiting(ci);
            for oi in chosen {
                self.make_offer(ci, oi);
            }
            return;
        }
        let pick = if class.strategy == Strategy::RoundRobin {
            let after = class.rr_cursor;
            class
                .ready
                .iter()
                .filter(|&&(_, _, oi)| oi > after || after == u32::MAX)
                .chain(class.ready.iter())
                .map(|&(_, _, oi)| oi)
                .find(|&oi| !conv.excludes(oi, now))
        } else {
            class
                .ready
                .iter()
                .map(|&(_, _, oi)| oi)
                .find(|&oi| !conv.excludes(oi, now))
        };
        if let Some(oi) = pick {
            let class = conv.class;
            self.classes[class as usize].rr_cursor = oi;
            self.remove_waiting(ci);
            self.make_offer(ci, oi);
        }
    }

    /// Offers the operator the best conversations they can take until they
    /// are full or nothing eligible waits.
    fn fill_operator(&mut self, oi: u32) {
        let now = self.now;
        loop {
            let op = &self.ops[oi as usize];
            let ready = Channel::ALL.map(|ch| op.ready_for(ch));
            if !ready.iter().any(|&r| r) {
                return;
            }
            // Conversations transferred to this operator by name come first.
            let personal = op.personal.values().copied().find(|&ci| {
                ready[self.conv(ci).channel.index()] && !self.conv(ci).excludes(oi, now)
            });
            let best = personal.or_else(|| {
                let mut best: Option<(LineKey, u32)> = None;
                for oc in &op.classes {
                    let class = &self.classes[oc.class as usize];
                    if !ready[class.key.channel.index()] {
                        continue;
                    }
                    let head = class
                        .waiting
                        .iter()
                        .find(|&(_, &ci)| !self.conv(ci).excludes(oi, now));
                    if let Some((&line, &ci)) = head
                        && best.is_none_or(|(b, _)| line < b)
                    {
                        best = Some((line, ci));
                    }
                }
                best.map(|(_, ci)| ci)
            });
            let Some(ci) = best else {
                return;
            };
            let class = self.conv(ci).class;
            self.classes[class as usize].rr_cursor = oi;
            self.remove_waiting(ci);
            self.make_offer(ci, oi);
        }
    }

    fn requeue(&mut self, ci: u32, reason: RequeueReason) {
        let conv = self.conv(ci);
        if !matches!(&conv.state, ConvState::Offered(o) if o.is_empty()) {
            return;
        }
        let (id, qi) = (conv.id, conv.queue);
        self.place_waiting(ci);
        let queue = self.queues[self.conv(ci).queue as usize].config.id;
        let _ = qi;
        self.out.push_back(Command::Requeued {
            conversation: id,
            queue,
            reason,
        });
    }

    /// A voice callback kept while its caller is still on the line is not
    /// offered until they hang up ([`Event::CallerLeft`]), at the latest
    /// after [`CALLER_ON_LINE_MAX_MS`]: an operator offered it meanwhile
    /// would ring a line that is busy with us.
    fn park_while_on_line(&mut self, ci: u32) {
        let conv = self.conv(ci);
        if conv.channel != Channel::Voice || conv.state != ConvState::Waiting {
            return;
        }
        let until = self.now + CALLER_ON_LINE_MAX_MS;
        self.remove_waiting(ci);
        let conv = self.conv_mut(ci);
        conv.on_line = true;
        conv.state = ConvState::Parked { until };
        let id = conv.id;
        self.schedule(until, Timer::Retry(id));
    }

    /// An offer ended without an answer (declined, missed or withdrawn
    /// because the operator left): back in line at the same key.
    fn offer_failed(&mut self, offer: OfferId, reason: RequeueReason) -> Result<(), RoutingError> {
        let st = self
            .drop_offer(offer)
            .ok_or(RoutingError::UnknownOffer(offer))?;
        let now = self.now;
        if reason != RequeueReason::OperatorUnavailable {
            let until = now + i64::from(self.config.reoffer_delay_secs) * 1000;
            let conv = self.conv_mut(st.conv);
            conv.excluded.retain(|&(_, u)| u > now);
            conv.excluded.push((st.op, until));
            let id = conv.id;
            self.schedule(until, Timer::Exclusion(id));
        }
        self.requeue(st.conv, reason);
        if reason == RequeueReason::Missed {
            let op = &mut self.ops[st.op as usize];
            op.misses += 1;
            let n = self.config.autopause_after_misses;
            if n > 0 && op.misses >= n && op.presence == Presence::Available {
                let missed = op.misses;
                let id = op.profile.id;
                self.set_presence(
                    st.op,
                    Presence::NotReady(NotReadyReason::MissedOffers { count: missed }),
                );
                self.out.push_back(Command::OperatorAutoPaused {
                    operator: id,
                    missed,
                });
            }
        }
        Ok(())
    }

    /// Changes presence and its consequences, without dispatching.
    fn set_presence(&mut self, oi: u32, presence: Presence) {
        let now = self.now;
        let window = self.window_ms();
        let op = &mut self.ops[oi as usize];
        let was_in = op.logged_in();
        let was_available = op.presence == Presence::Available;
        if op.presence != presence {
            op.presence_since = now;
        }
        op.presence = presence;
        let is_in = op.logged_in();
        if was_in != is_in {
            let delta = if is_in { 1 } else { -1 };
            for &qi in &op.base_queues {
                self.queues[qi as usize]
                    .counters
                    .staffed_change(now, window, delta);
            }
        }
        let op = &mut self.ops[oi as usize];
        if op.presence == Presence::Available {
            if !was_available {
                op.idle_since = now;
                op.misses = 0;
            }
        } else {
            // Not available any more: offers go back to the line.
            let offers = op.offers.clone();
            let id = op.profile.id;
            for offer in offers {
                if let Some(st) = self.offers.get(&offer).copied() {
                    let conversation = self.conv(st.conv).id;
                    self.out.push_back(Command::Withdraw {
                        offer,
                        conversation,
                        operator: id,
                        reason: WithdrawReason::OperatorUnavailable,
                    });
                    let _ = self.offer_failed(offer, RequeueReason::OperatorUnavailable);
                }
            }
        }
        self.reindex(oi);
        self.dirty_ops.push(oi);
    }

    fn apply(&mut self, event: Event) -> Result<(), RoutingError> {
        let now = self.now;
        match event {
            Event::Tick => Ok(()),
            Event::ConversationQueued {
                conversation,
                queue,
                channel,
                language,
                enqueued_at,
            } => {
                if self.conv_index.contains_key(&conversation) {
                    return Err(RoutingError::DuplicateConversation(conversation));
                }
                let qi = self.queue(queue)?;
                let window = self.window_ms();
                let q = &mut self.queues[qi as usize];
                q.counters.record(now, window, Sample::Offered);
                let open = match &q.config.hours {
                    Some(hours) => hours.is_open(Timestamp(now).to_utc()),
                    None => true,
                };
                // E-mail and web forms wait for the opening whatever the
                // closed action says: that action is an answer to someone
                // on the line or in the chat now (a message, the web form,
                // voicemail), while an asynchronous request dropped here
                // would stay unanswered in the store.
                if !open && q.config.closed_action != ClosedAction::Queue && channel.is_live() {
                    q.counters.record(now, window, Sample::Closed);
                    self.out.push_back(Command::QueueClosed {
                        conversation,
                        queue,
                        action: q.config.closed_action.clone(),
                    });
                    return Ok(());
                }
                let enqueued_at = enqueued_at.map_or(now, |t| t.0.clamp(0, now));
                let ci = self.alloc_conv(Conv {
                    live: true,
                    id: conversation,
                    queue: qi,
                    channel,
                    language,
                    enqueued_at,
                    queue_entered_at: now,
                    seq: 0,
                    key: 0,
                    tier: 0,
                    class: 0,
                    state: ConvState::Waiting,
                    callback: false,
                    max_wait_done: false,
                    on_line: false,
                    excluded: Vec::new(),
                    pinned: None,
                    moves: 0,
                });
                self.place_waiting(ci);
                self.arrivals.push(ci);
                Ok(())
            }
            Event::OperatorLogin { operator } => {
                let oi = self.op(operator)?;
                if self.ops[oi as usize].presence != Presence::Available {
                    self.set_presence(oi, Presence::Available);
                }
                Ok(())
            }
            Event::OperatorLogout { operator } => {
                let oi = self.op(operator)?;
                self.set_presence(oi, Presence::Offline);
                Ok(())
            }
            Event::OperatorPresence { operator, presence } => {
                let oi = self.op(operator)?;
                self.set_presence(oi, presence);
                Ok(())
            }
            Event::OfferAccepted { offer } => {
                let st = *self
                    .offers
                    .get(&offer)
                    .ok_or(RoutingError::UnknownOffer(offer))?;
                self.offers.remove(&offer);
                self.timers.remove(&st.timer);
                let op = &mut self.ops[st.op as usize];
                op.offers.retain(|&o| o != offer);
                op.assigned.push(st.conv);
                op.misses = 0;
                let operator = op.profile.id;
                // Ring-all: everyone else stops ringing.
                let others = match &self.conv(st.conv).state {
                    ConvState::Offered(o) => o.clone(),
                    _ => Vec::new(),
                };
                let conversation = self.conv(st.conv).id;
                for other in others.into_iter().filter(|&o| o != offer) {
                    if let Some(os) = self.drop_offer(other) {
                        self.out.push_back(Command::Withdraw {
                            offer: other,
                            conversation,
                            operator: self.ops[os.op as usize].profile.id,
                            reason: WithdrawReason::AnsweredElsewhere,
                        });
                    }
                }
                let conv = self.conv_mut(st.conv);
                conv.state = ConvState::Assigned { op: st.op, at: now };
                let waited_ms = now - conv.enqueued_at;
                let qi = conv.queue;
                let q = &mut self.queues[qi as usize];
                let in_target = waited_ms <= i64::from(q.config.target_secs) * 1000;
                let queue = q.config.id;
                let window = i64::from(self.config.stats_window_secs) * 1000;
                q.counters.record(
                    now,
                    window,
                    Sample::Answered {
                        wait_ms: waited_ms,
                        in_target,
                    },
                );
                self.out.push_back(Command::Assign {
                    conversation,
                    operator,
                    queue,
                    waited_ms,
                });
                self.reindex(st.op);
                Ok(())
            }
            Event::OfferRejected { offer } => self.offer_failed(offer, RequeueReason::Rejected),
            Event::OfferTimedOut { offer } => self.offer_failed(offer, RequeueReason::Missed),
            Event::ConversationEnded {
                conversation,
                reason: _,
            } => {
                let ci = self.conv_idx(conversation)?;
                self.end_conversation(ci);
                Ok(())
            }
            Event::Transfer {
                conversation,
                target,
            } => {
                let ci = self.conv_idx(conversation)?;
                let (qi, pinned) = match target {
                    TransferTarget::Queue(q) => (self.queue(q)?, None),
                    TransferTarget::Operator(o) => (self.conv(ci).queue, Some(self.op(o)?)),
                };
                self.detach(ci, WithdrawReason::Transferred);
                if pinned.is_none() {
                    let window = self.window_ms();
                    self.queues[qi as usize]
                        .counters
                        .record(now, window, Sample::Offered);
                }
                let conv = self.conv_mut(ci);
                conv.queue = qi;
                conv.queue_entered_at = now;
                conv.pinned = pinned;
                conv.excluded.clear();
                conv.state = ConvState::Offered(Vec::new());
                self.place_waiting(ci);
                Ok(())
            }
            Event::CallbackRequested { conversation } => {
                let ci = self.conv_idx(conversation)?;
                let conv = self.conv_mut(ci);
                conv.callback = true;
                conv.max_wait_done = true;
                self.park_while_on_line(ci);
                Ok(())
            }
            Event::CallerLeft { conversation } => {
                let ci = self.conv_idx(conversation)?;
                let conv = self.conv_mut(ci);
                if std::mem::take(&mut conv.on_line)
                    && matches!(conv.state, ConvState::Parked { .. })
                {
                    self.place_waiting(ci);
                }
                Ok(())
            }
            Event::CallbackRetry {
                conversation,
                operator,
                not_before,
            } => {
                let ci = self.conv_idx(conversation)?;
                let oi = self.op(operator)?;
                if !matches!(self.conv(ci).state, ConvState::Assigned { op, .. } if op == oi) {
                    // Moved on meanwhile (transferred, taken by another):
                    // not this callback's to put back.
                    return Err(RoutingError::NotAssigned {
                        conversation,
                        operator,
                    });
                }
                self.detach(ci, WithdrawReason::Transferred);
                let until = not_before.0.max(now);
                // The operator who just tried is not offered it again at once.
                let excluded_until = now + i64::from(self.config.reoffer_delay_secs) * 1000;
                let conv = self.conv_mut(ci);
                conv.callback = true;
                conv.max_wait_done = true;
                conv.excluded.retain(|&(_, u)| u > now);
                conv.excluded.push((oi, excluded_until));
                conv.pinned = None;
                conv.state = ConvState::Parked { until };
                let (id, qi) = (conv.id, conv.queue);
                self.out.push_back(Command::Requeued {
                    conversation: id,
                    queue: self.queues[qi as usize].config.id,
                    reason: RequeueReason::CallbackRetry,
                });
                self.schedule(excluded_until, Timer::Exclusion(id));
                if until <= now {
                    self.place_waiting(ci);
                } else {
                    self.schedule(until, Timer::Retry(id));
                }
                Ok(())
            }
            Event::WrapUpDone {
                operator,
                conversation,
                disposition,
            } => {
                let oi = self.op(operator)?;
                let op = &mut self.ops[oi as usize];
                let (done, keep): (Vec<WrapUp>, Vec<WrapUp>) = std::mem::take(&mut op.wrap_ups)
                    .into_iter()
                    .partition(|w| conversation.is_none_or(|c| c == w.conversation));
                op.wrap_ups = keep;
                if done.is_empty() {
                    return Err(RoutingError::NoWrapUp {
                        operator,
                        conversation,
                    });
                }
                for w in done {
                    self.finish_wrap_up(oi, w, disposition.clone(), false);
                }
                Ok(())
            }
        }
    }

    /// Takes a conversation out of wherever it is (line, offers, operator),
    /// leaving it in the slab for the caller to re-place or free.
    fn detach(&mut self, ci: u32, reason: WithdrawReason) {
        let conv = self.conv(ci);
        match conv.state.clone() {
            ConvState::Waiting => self.remove_waiting(ci),
            ConvState::Parked { .. } => {}
            ConvState::Offered(offers) => {
                let id = conv.id;
                for offer in offers {
                    if let Some(st) = self.drop_offer(offer) {
                        self.out.push_back(Command::Withdraw {
                            offer,
                            conversation: id,
                            operator: self.ops[st.op as usize].profile.id,
                            reason,
                        });
                    }
                }
            }
            ConvState::Assigned { op, at: _ } => {
                let ch = conv.channel;
                let o = &mut self.ops[op as usize];
                o.active[ch.index()] = o.active[ch.index()].saturating_sub(1);
                o.assigned.retain(|&c| c != ci);
                if o.total_active() == 0 && o.wrap_ups.is_empty() {
                    o.idle_since = self.now;
                }
                self.reindex(op);
                self.dirty_ops.push(op);
            }
        }
    }

    fn end_conversation(&mut self, ci: u32) {
        let now = self.now;
        let window = self.window_ms();
        let conv = self.conv(ci);
        let qi = conv.queue;
        let id = conv.id;
        match conv.state.clone() {
            ConvState::Waiting | ConvState::Offered(_) | ConvState::Parked { .. } => {
                let wait_ms = now - conv.enqueued_at;
                let q = &mut self.queues[qi as usize];
                let short = wait_ms < i64::from(self.config.short_abandon_secs) * 1000;
                let in_target = wait_ms <= i64::from(q.config.target_secs) * 1000;
                q.counters.record(
                    now,
                    window,
                    Sample::Abandoned {
                        wait_ms,
                        short,
                        in_target,
                    },
                );
                self.detach(ci, WithdrawReason::Abandoned);
            }
            ConvState::Assigned { op, at } => {
                self.queues[qi as usize].counters.record(
                    now,
                    window,
                    Sample::Handled { ms: now - at },
                );
                let wrap = self.queues[qi as usize].config.wrap_up_secs;
                if wrap > 0 {
                    let until = now + i64::from(wrap) * 1000;
                    self.ops[op as usize].wrap_ups.push(WrapUp {
                        conversation: id,
                        queue: qi,
                        started: now,
                        until,
                    });
                    self.schedule(until, Timer::WrapUp(op, id));
                    self.out.push_back(Command::WrapUpStarted {
                        operator: self.ops[op as usize].profile.id,
                        conversation: id,
                        until: Timestamp(until),
                    });
                }
                self.detach(ci, WithdrawReason::Abandoned);
            }
        }
        self.free_conv(ci);
    }

    fn finish_wrap_up(&mut self, oi: u32, w: WrapUp, disposition: Option<String>, timed_out: bool) {
        let now = self.now;
        let window = self.window_ms();
        self.queues[w.queue as usize].counters.record(
            now,
            window,
            Sample::ExtraHandle {
                ms: now - w.started,
            },
        );
        let op = &mut self.ops[oi as usize];
        if op.total_active() == 0 && op.wrap_ups.is_empty() {
            op.idle_since = now;
        }
        self.out.push_back(Command::WrapUpEnded {
            operator: op.profile.id,
            conversation: w.conversation,
            disposition,
            timed_out,
        });
        self.reindex(oi);
        self.dirty_ops.push(oi);
    }

    fn fire(&mut self, timer: Timer) {
        let now = self.now;
        match timer {
            Timer::OfferExpiry(offer) => {
                if let Some(st) = self.offers.get(&offer).copied()
                    && st.expires_at <= now
                {
                    self.out.push_back(Command::Withdraw {
                        offer,
                        conversation: self.conv(st.conv).id,
                        operator: self.ops[st.op as usize].profile.id,
                        reason: WithdrawReason::TimedOut,
                    });
                    let _ = self.offer_failed(offer, RequeueReason::Missed);
                }
            }
            Timer::Tier(id) => {
                let Some(&ci) = self.conv_index.get(&id) else {
                    return;
                };
                let conv = self.conv(ci);
                if conv.state != ConvState::Waiting || conv.pinned.is_some() {
                    // Offered ones re-evaluate their tier when requeued.
                    return;
                }
                let tier = self.tier_at(conv.queue, now - conv.queue_entered_at);
                if tier != usize::from(conv.tier) {
                    self.remove_waiting(ci);
                    self.place_waiting(ci);
                }
            }
            Timer::MaxWait(id) => {
                let Some(&ci) = self.conv_index.get(&id) else {
                    return;
                };
                let conv = self.conv(ci);
                let q = &self.queues[conv.queue as usize];
                let Some((secs, action)) = q.config.max_wait.clone() else {
                    return;
                };
                // A written request (mail, form) waits as long as it takes:
                // the maximum wait is for callers and chats on the line.
                if conv.state != ConvState::Waiting
                    || conv.max_wait_done
                    || !conv.channel.is_live()
                    || now - conv.enqueued_at < i64::from(secs) * 1000
                {
                    return;
                }
                let queue = q.config.id;
                let qi = conv.queue;
                let voice = conv.channel == Channel::Voice;
                self.out.push_back(Command::MaxWaitReached {
                    conversation: id,
                    queue,
                    action: action.clone(),
                });
                // A caller who leaves a message is called back: the place
                // is kept as for a callback (a chat has no voice message
                // to leave: it leaves as for `close`).
                let keeps_place = match action {
                    MaxWaitAction::Callback => true,
                    MaxWaitAction::Voicemail => voice,
                    MaxWaitAction::Close { .. } => false,
                };
                if keeps_place {
                    let conv = self.conv_mut(ci);
                    conv.callback = true;
                    conv.max_wait_done = true;
                    self.park_while_on_line(ci);
                } else {
                    let window = self.window_ms();
                    self.queues[qi as usize]
                        .counters
                        .record(now, window, Sample::MaxWaitExit);
                    self.remove_waiting(ci);
                    self.free_conv(ci);
                }
            }
            Timer::Retry(id) => {
                if let Some(&ci) = self.conv_index.get(&id)
                    && matches!(self.conv(ci).state, ConvState::Parked { until } if until <= now)
                {
                    self.conv_mut(ci).on_line = false;
                    self.place_waiting(ci);
                }
            }
            Timer::Exclusion(id) => {
                if let Some(&ci) = self.conv_index.get(&id) {
                    let conv = self.conv_mut(ci);
                    conv.excluded.retain(|&(_, u)| u > now);
                    if conv.state == ConvState::Waiting {
                        match conv.pinned {
                            Some(oi) => self.dirty_ops.push(oi),
                            None => self.dirty_convs.push(ci),
                        }
                    }
                }
            }
            Timer::WrapUp(oi, id) => {
                let Some(op) = self.ops.get_mut(oi as usize) else {
                    return;
                };
                if let Some(pos) = op
                    .wrap_ups
                    .iter()
                    .position(|w| w.conversation == id && w.until <= now)
                {
                    let w = op.wrap_ups.remove(pos);
                    self.finish_wrap_up(oi, w, None, true);
                }
            }
            Timer::Announce(qi, epoch) => {
                let now = self.target_now.max(now);
                let q = &self.queues[qi as usize];
                if q.timer_epoch != epoch {
                    return;
                }
                let Some(every) = q.config.announce_every_secs else {
                    return;
                };
                let lines: Vec<u32> = q.waiting.values().copied().collect();
                for (i, ci) in lines.into_iter().enumerate() {
                    let position = (i + 1) as u32;
                    let cmd = Command::Announce {
                        conversation: self.conv(ci).id,
                        queue: q.config.id,
                        position,
                        estimated_wait_secs: self.estimate(qi, position),
                    };
                    self.out.push_back(cmd);
                }
                self.schedule(
                    now + i64::from(every.max(1)) * 1000,
                    Timer::Announce(qi, epoch),
                );
            }
            Timer::Hours(qi, epoch) => {
                let now = self.target_now.max(now);
                let q = &self.queues[qi as usize];
                if q.timer_epoch != epoch {
                    return;
                }
                let Some(hours) = &q.config.hours else {
                    return;
                };
                let at = Timestamp(now).to_utc();
                let open = hours.is_open(at);
                let next = hours
                    .next_change(at)
                    .map(|t| Timestamp::from_utc(t).0)
                    .filter(|&t| t > now)
                    // Never changes within the search span: look again daily.
                    .unwrap_or(now + 86_400_000);
                let closing = q.open && !open;
                let policy = q.config.closing_policy;
                let action = q.config.closed_action.clone();
                let queue = q.config.id;
                self.queues[qi as usize].open = open;
                self.schedule(next, Timer::Hours(qi, epoch));
                if closing && policy == ClosingPolicy::CloseWaiting && action != ClosedAction::Queue
                {
                    let lines: Vec<u32> =
                        self.queues[qi as usize].waiting.values().copied().collect();
                    let window = self.window_ms();
                    for ci in lines {
                        let conversation = self.conv(ci).id;
                        if !self.conv(ci).channel.is_live() || self.conv(ci).callback {
                            // Asynchronous, or a callback kept (nobody on
                            // the line): waits for the next opening.
                            continue;
                        }
                        self.out.push_back(Command::QueueClosed {
                            conversation,
                            queue,
                            action: action.clone(),
                        });
                        self.queues[qi as usize]
                            .counters
                            .record(now, window, Sample::Closed);
                        self.remove_waiting(ci);
                        self.free_conv(ci);
                    }
                }
            }
        }
    }

    fn announce_arrivals(&mut self) {
        let arrivals = std::mem::take(&mut self.arrivals);
        for ci in arrivals {
            let conv = self.conv(ci);
            if !conv.live || conv.state != ConvState::Waiting {
                continue;
            }
            let q = &self.queues[conv.queue as usize];
            let line = conv.line_key();
            // New arrivals are normally last in line: O(1). An earlier
            // enqueue time (IVR time, restore) needs a count.
            let position = match q.waiting.last_key_value() {
                Some((&last, _)) if last == line => q.waiting.len(),
                _ => q.waiting.range(..=line).count(),
            } as u32;
            let cmd = Command::Announce {
                conversation: conv.id,
                queue: q.config.id,
                position,
                estimated_wait_secs: self.estimate(conv.queue, position),
            };
            self.out.push_back(cmd);
        }
    }

    /// Estimated wait for the `position`-th in line: each staffed operator
    /// frees up once per average handle time, so the line moves about
    /// `staffed / AHT` places per second.
    fn estimate(&self, qi: u32, position: u32) -> Option<u32> {
        let q = &self.queues[qi as usize];
        let staffed = q.counters.staffed();
        if staffed <= 0 {
            return None;
        }
        let aht = q
            .counters
            .recent_aht_secs()
            .unwrap_or(f64::from(q.config.default_aht_secs));
        let secs = f64::from(position) * aht / staffed as f64;
        Some(secs.round().clamp(0.0, f64::from(u32::MAX)) as u32)
    }

    // ----- read-only queries -----

    /// Estimated wait in seconds for a conversation arriving now in `queue`
    /// (for the chat widget before it joins); `None` when nobody is staffed.
    pub fn estimated_wait(&self, queue: QueueId) -> Result<Option<u32>, RoutingError> {
        let qi = self.queue(queue)?;
        let waiting = self.queues[qi as usize].waiting.len() as u32;
        Ok(self.estimate(qi, waiting + 1))
    }

    /// Position (1-based) and estimated wait of a waiting conversation;
    /// `None` if it is not waiting. O(position).
    pub fn position(
        &self,
        conversation: ConversationId,
    ) -> Result<Option<(u32, Option<u32>)>, RoutingError> {
        let ci = self.conv_idx(conversation)?;
        let conv = self.conv(ci);
        if conv.state != ConvState::Waiting {
            return Ok(None);
        }
        let q = &self.queues[conv.queue as usize];
        let position = q.waiting.range(..=conv.line_key()).count() as u32;
        Ok(Some((position, self.estimate(conv.queue, position))))
    }

    /// A conversation's view, if it is in the engine.
    pub fn conversation(&self, id: ConversationId) -> Option<ConversationView> {
        let ci = *self.conv_index.get(&id)?;
        let conv = self.conv(ci);
        let status = match &conv.state {
            ConvState::Waiting => ConversationStatus::Waiting,
            ConvState::Offered(offers) => ConversationStatus::Offered {
                operators: offers
                    .iter()
                    .filter_map(|o| self.offers.get(o))
                    .map(|st| self.ops[st.op as usize].profile.id)
                    .collect(),
            },
            ConvState::Assigned { op, .. } => ConversationStatus::Assigned {
                operator: self.ops[*op as usize].profile.id,
            },
            ConvState::Parked { until } => ConversationStatus::Parked {
                until: Timestamp(*until),
            },
        };
        Some(ConversationView {
            id,
            queue: self.queues[conv.queue as usize].config.id,
            channel: conv.channel,
            language: conv.language,
            enqueued_at: Timestamp(conv.enqueued_at),
            queue_entered_at: Timestamp(conv.queue_entered_at),
            tier: usize::from(conv.tier),
            callback: conv.callback,
            pinned_to: conv.pinned.map(|oi| self.ops[oi as usize].profile.id),
            status,
        })
    }

    /// Every conversation in the engine, in arrival order.
    pub fn conversations(&self) -> Vec<ConversationView> {
        let mut all: Vec<&Conv> = self.convs.iter().filter(|c| c.live).collect();
        all.sort_by_key(|c| c.seq);
        all.iter().filter_map(|c| self.conversation(c.id)).collect()
    }

    /// After [`Engine::restore`]: since when a restored operator has been in
    /// their presence (the store's last change of it), so the dashboard's
    /// time in presence survives a restart. A time in the future is taken
    /// as now.
    pub fn restore_presence_since(
        &mut self,
        id: OperatorId,
        since: Timestamp,
    ) -> Result<(), RoutingError> {
        let oi = self.op(id)?;
        let now = self.now;
        self.ops[oi as usize].presence_since = since.0.min(now);
        Ok(())
    }

    /// An operator's view.
    pub fn operator(&self, id: OperatorId) -> Option<OperatorView> {
        let op = &self.ops[*self.op_index.get(&id)? as usize];
        Some(OperatorView {
            id,
            presence: op.presence.clone(),
            status: op.status(),
            active: op.active,
            offers: op.offers.clone(),
            conversations: op.assigned.iter().map(|&ci| self.conv(ci).id).collect(),
            wrap_ups: op.wrap_ups.iter().map(|w| w.conversation).collect(),
            wrap_up_until: op.wrap_ups.iter().map(|w| Timestamp(w.until)).collect(),
            consecutive_misses: op.misses,
            idle_since: Timestamp(op.idle_since),
            presence_since: Timestamp(op.presence_since),
        })
    }

    /// Every operator's view, in the order they were added.
    pub fn operators(&self) -> Vec<OperatorView> {
        self.ops
            .iter()
            .filter_map(|op| self.operator(op.profile.id))
            .collect()
    }

    /// The operator's profile, if configured.
    pub fn operator_profile(&self, id: OperatorId) -> Option<&OperatorProfile> {
        Some(&self.ops[*self.op_index.get(&id)? as usize].profile)
    }

    /// A queue's configuration.
    pub fn queue_config(&self, id: QueueId) -> Option<&QueueConfig> {
        Some(&self.queues[*self.queue_index.get(&id)? as usize].config)
    }

    /// Number of conversations waiting in the queue.
    pub fn waiting(&self, queue: QueueId) -> Result<usize, RoutingError> {
        Ok(self.queues[self.queue(queue)? as usize].waiting.len())
    }

    /// Live statistics of a queue at `now` (which also advances the window;
    /// it fires no timers).
    pub fn queue_stats(
        &mut self,
        queue: QueueId,
        now: Timestamp,
    ) -> Result<QueueStats, RoutingError> {
        let qi = self.queue(queue)?;
        let now = now.0.max(self.now);
        let window = self.window_ms();
        let formula = self.config.service_level_formula;
        let mut operators = OperatorsByStatus::default();
        for op in &self.ops {
            if !op.base_queues.contains(&qi) {
                continue;
            }
            let slot = match op.status() {
                OperatorStatus::Offline => &mut operators.offline,
                OperatorStatus::Idle => &mut operators.idle,
                OperatorStatus::Busy => &mut operators.busy,
                OperatorStatus::WrapUp => &mut operators.wrap_up,
                OperatorStatus::Break => &mut operators.on_break,
                OperatorStatus::NotReady => &mut operators.not_ready,
            };
            *slot += 1;
        }
        let q = &mut self.queues[qi as usize];
        let longest = q
            .waiting
            .values()
            .map(|&ci| self.convs[ci as usize].enqueued_at)
            .min()
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        let (today, window_stats) = q.counters.snapshot(now, window, formula);
        Ok(QueueStats {
            queue,
            waiting: q.waiting.len() as u32,
            longest_wait_secs: longest,
            today,
            window: window_stats,
            window_secs: self.config.stats_window_secs,
            operators,
        })
    }

    /// Checks the engine's internal invariants (for tests and debugging; it
    /// is O(everything)). See the property tests.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let fail = |s: String| Err(InvariantViolation(s));
        let now = self.now;
        // Offers point both ways.
        for (offer, st) in &self.offers {
            let conv = self.conv(st.conv);
            match &conv.state {
                ConvState::Offered(o) if o.contains(offer) => {}
                _ => {
                    return fail(format!(
                        "offer {offer} not held by conversation {}",
                        conv.id
                    ));
                }
            }
            if !self.ops[st.op as usize].offers.contains(offer) {
                return fail(format!("offer {offer} not held by its operator"));
            }
        }
        let mut waiting = 0usize;
        for (ci, conv) in self.convs.iter().enumerate() {
            if !conv.live {
                continue;
            }
            let ci = ci as u32;
            if self.conv_index.get(&conv.id) != Some(&ci) {
                return fail(format!("conversation {} not indexed", conv.id));
            }
            let in_queue = self.queues[conv.queue as usize]
                .waiting
                .get(&conv.line_key())
                == Some(&ci);
            let in_class = self.classes[conv.class as usize]
                .waiting
                .get(&conv.line_key())
                == Some(&ci);
            let in_personal = conv.pinned.is_some_and(|oi| {
                self.ops[oi as usize].personal.get(&conv.line_key()) == Some(&ci)
            });
            let held = self.ops.iter().filter(|o| o.assigned.contains(&ci)).count();
            match &conv.state {
                ConvState::Waiting => {
                    waiting += 1;
                    if !in_queue || in_class == in_personal || held > 0 {
                        return fail(format!("waiting conversation {} misplaced", conv.id));
                    }
                }
                ConvState::Offered(offers) => {
                    if offers.is_empty() || in_queue || in_class || in_personal || held > 0 {
                        return fail(format!("offered conversation {} misplaced", conv.id));
                    }
                    if offers
                        .iter()
                        .any(|o| self.offers.get(o).map(|s| s.conv) != Some(ci))
                    {
                        return fail(format!("conversation {} has a dangling offer", conv.id));
                    }
                }
                ConvState::Assigned { op, .. } => {
                    if in_queue
                        || in_class
                        || in_personal
                        || held != 1
                        || !self.ops[*op as usize].assigned.contains(&ci)
                    {
                        return fail(format!("assigned conversation {} misplaced", conv.id));
                    }
                }
                ConvState::Parked { .. } => {
                    if in_queue || in_class || in_personal || held > 0 {
                        return fail(format!("parked conversation {} misplaced", conv.id));
                    }
                }
            }
        }
        let in_lines: usize = self.queues.iter().map(|q| q.waiting.len()).sum();
        if in_lines != waiting {
            return fail(format!("{in_lines} in lines but {waiting} waiting"));
        }
        for (oi, op) in self.ops.iter().enumerate() {
            let oi = oi as u32;
            let mut count = [0u8; 4];
            for offer in &op.offers {
                match self.offers.get(offer) {
                    Some(st) if st.op == oi => count[self.conv(st.conv).channel.index()] += 1,
                    _ => return fail(format!("operator {} holds a dangling offer", op.profile.id)),
                }
            }
            for &ci in &op.assigned {
                count[self.conv(ci).channel.index()] += 1;
            }
            if count != op.active {
                return fail(format!(
                    "operator {} active {:?} != {:?}",
                    op.profile.id, op.active, count
                ));
            }
            for ch in Channel::ALL {
                if op.active[ch.index()] > op.profile.capacity.of(ch) {
                    return fail(format!(
                        "operator {} over capacity on {ch:?}",
                        op.profile.id
                    ));
                }
            }
            for oc in &op.classes {
                let class = &self.classes[oc.class as usize];
                let ready = op.ready_for(class.key.channel);
                let key = op.strategy_key(class.strategy, oc.score);
                let indexed = class.ready.contains(&(key.0, key.1, oi));
                if ready != indexed || (oc.indexed == Some(key)) != ready {
                    return fail(format!(
                        "operator {} badly indexed in a class",
                        op.profile.id
                    ));
                }
                if self.class_eligible(oi, oc.class).is_none() {
                    return fail(format!(
                        "operator {} in a class it is not eligible for",
                        op.profile.id
                    ));
                }
                // Nobody ready is left next to a conversation they may take.
                if ready
                    && let Some(&ci) = class
                        .waiting
                        .values()
                        .find(|&&ci| !self.conv(ci).excludes(oi, now))
                {
                    return fail(format!(
                        "operator {} ready while eligible conversation {} waits",
                        op.profile.id,
                        self.conv(ci).id
                    ));
                }
            }
        }
        for (ci, class) in self.classes.iter().enumerate() {
            for &(_, _, oi) in &class.ready {
                if !self.ops[oi as usize]
                    .classes
                    .iter()
                    .any(|oc| oc.class == ci as u32)
                {
                    return fail(format!("class {ci} lists a foreign operator"));
                }
            }
        }
        Ok(())
    }
}
