//! The routing model: identifiers, time, organizations, queues, operators
//! and their configuration. Plain data; the behaviour lives in
//! [`crate::engine`].

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::calendar::OpeningHours;

/// An instant, in milliseconds since the Unix epoch (UTC).
///
/// The engine never reads a clock: every event carries `now`, so tests and
/// the simulator move time by hand. Milliseconds are fine-grained enough for
/// offer timeouts and exact enough for service-level arithmetic, and an
/// `i64` keeps comparisons and subtractions branch-free.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// The instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant plus `secs` seconds (saturating, never panics).
    pub const fn plus_secs(self, secs: u32) -> Self {
        Self(self.0.saturating_add(secs as i64 * 1000))
    }

    /// This instant plus `ms` milliseconds (saturating, never panics).
    pub const fn plus_millis(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub const fn millis_since(self, earlier: Timestamp) -> i64 {
        let d = self.0.saturating_sub(earlier.0);
        if d < 0 { 0 } else { d }
    }

    /// As a chrono UTC date-time; out-of-range values clamp to the epoch.
    pub fn to_utc(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    /// From a chrono UTC date-time.
    pub fn from_utc(at: DateTime<Utc>) -> Self {
        Self(at.timestamp_millis())
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// An organization: the city, or one of the companies it owns.
    OrgId(u32)
);
id_type!(
    /// A queue (coda). The server maps queue names to these numbers.
    QueueId(u32)
);
id_type!(
    /// An operator (operatore), usually the store's row id.
    OperatorId(u64)
);
id_type!(
    /// A conversation: one call, chat, e-mail thread or web form.
    ConversationId(u64)
);
id_type!(
    /// A skill, e.g. "anagrafe" or "tributi"; the server keeps the names.
    SkillId(u32)
);
id_type!(
    /// One offer of one conversation to one operator. Unique per engine.
    OfferId(u64)
);

/// The four ways a citizen reaches the contact center.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Voice,
    Chat,
    Email,
    Webform,
}

impl Channel {
    /// Every channel, in index order.
    pub const ALL: [Channel; 4] = [
        Channel::Voice,
        Channel::Chat,
        Channel::Email,
        Channel::Webform,
    ];

    /// Voice and chat: someone is there now. E-mail and web forms are
    /// asynchronous.
    pub const fn is_live(self) -> bool {
        matches!(self, Channel::Voice | Channel::Chat)
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Channel::Voice => 0,
            Channel::Chat => 1,
            Channel::Email => 2,
            Channel::Webform => 3,
        }
    }
}

/// A language as a short lowercase ISO 639 code ("it", "en", "de", "sl").
///
/// Stored inline (no allocation) so a conversation's routing class is a
/// small `Copy` key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Language([u8; 3]);

/// Why a language code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid language code {0:?}: expected 2 or 3 ASCII letters (ISO 639)")]
pub struct InvalidLanguage(pub String);

impl Language {
    /// Parses "it", "EN", "ita" (case-insensitive, 2 or 3 ASCII letters).
    pub fn parse(code: &str) -> Result<Self, InvalidLanguage> {
        let bytes = code.as_bytes();
        if !(2..=3).contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_alphabetic) {
            return Err(InvalidLanguage(code.to_owned()));
        }
        let mut out = [0u8; 3];
        for (slot, b) in out.iter_mut().zip(bytes) {
            *slot = b.to_ascii_lowercase();
        }
        Ok(Self(out))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        let len = if self.0[2] == 0 { 2 } else { 3 };
        std::str::from_utf8(&self.0[..len]).unwrap_or("??")
    }
}

impl fmt::Debug for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Language({})", self.as_str())
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Language {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Language {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Language::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A skill an operator has, with a level from 1 (novice) to 10 (expert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SkillLevel {
    pub skill: SkillId,
    pub level: u8,
}

/// A skill a queue requires, at `min_level` or above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SkillRequirement {
    pub skill: SkillId,
    pub min_level: u8,
}

/// How a queue picks among the operators eligible for a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The operator idle for the longest time (the fairest default).
    #[default]
    LongestIdle,
    /// The highest skill level for the queue's skills, then longest idle.
    BestSkill,
    /// The fewest active conversations (all channels), then longest idle.
    LeastBusy,
    /// Operators in turn, by their position in the engine.
    RoundRobin,
    /// Voice: ring every eligible operator; the first to accept wins and the
    /// others are withdrawn. On other channels it behaves as longest-idle.
    RingAll,
}

/// What a queue does after a conversation has waited `after_secs` in it.
///
/// Steps only widen who may answer (TaskRouter's "bullseye"), except
/// `MoveToQueue`, which hands the conversation to another queue while it
/// keeps its original enqueue time (and so its place by age).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowStep {
    pub after_secs: u32,
    pub action: OverflowAction,
}

/// One overflow action, see [`OverflowStep`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowAction {
    /// Lower the minimum level required for `skill` (in every skill group).
    RelaxLevel { skill: SkillId, min_level: u8 },
    /// Also accept operators that have all of these skills (an alternative
    /// group: the conversation may go to either group).
    AddSkillGroup(Vec<SkillRequirement>),
    /// Move the conversation to another queue.
    MoveToQueue(QueueId),
}

/// What happens when a conversation has waited the queue's maximum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxWaitAction {
    /// Keep the place in line and call the citizen back when an operator is
    /// offered the conversation (the offer carries `callback: true`).
    Callback,
    /// Leave a voice message / written message; the conversation leaves the
    /// queue.
    Voicemail,
    /// Close the conversation with this message.
    Close { message: String },
}

/// What arriving conversations get while the queue is closed. The channel
/// adapter renders it for its medium (a prompt, a chat line, an auto-reply).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedAction {
    /// Say or write this message and end.
    Message(String),
    /// Offer to leave a voice message.
    Voicemail,
    /// Suggest the web form (chat, voice with SMS link).
    SuggestWebform,
    /// Keep the conversation anyway (e-mail and web forms wait for the next
    /// opening); the engine queues it and routes it when the queue opens.
    Queue,
}

/// What happens to conversations already waiting when a queue closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosingPolicy {
    /// Serve everyone already in line (the usual choice for voice).
    #[default]
    ServeWaiting,
    /// Give waiting conversations the closed action and remove them.
    CloseWaiting,
}

/// A queue's configuration.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub id: QueueId,
    /// The organization the queue belongs to (statistics are counted there).
    pub org: OrgId,
    /// Other organizations whose operators may also take this queue.
    pub shared_with: Vec<OrgId>,
    /// Skills every answering operator needs, with minimum levels.
    pub skills: Vec<SkillRequirement>,
    /// Higher is served first, see [`EngineConfig::aging_secs_per_priority`].
    pub priority: i32,
    pub strategy: Strategy,
    /// Seconds an operator has to accept an offer.
    pub offer_timeout_secs: u32,
    /// After-contact work after each conversation, 0 for none.
    pub wrap_up_secs: u32,
    /// Service-level target: answered within this many seconds.
    pub target_secs: u32,
    pub overflow: Vec<OverflowStep>,
    /// Maximum wait (from the original enqueue time) and what then happens.
    pub max_wait: Option<(u32, MaxWaitAction)>,
    /// `None`: always open.
    pub hours: Option<OpeningHours>,
    pub closed_action: ClosedAction,
    pub closing_policy: ClosingPolicy,
    /// Send position and estimated wait to every waiting conversation this
    /// often; `None`: only on arrival.
    pub announce_every_secs: Option<u32>,
    /// Handle time assumed for estimated waits until the queue has history.
    pub default_aht_secs: u32,
}

impl QueueConfig {
    /// A queue with sensible defaults: priority 0, longest-idle, 20 s offer
    /// timeout, no wrap-up, 20 s target, always open.
    pub fn new(id: QueueId, org: OrgId, skills: Vec<SkillRequirement>) -> Self {
        Self {
            id,
            org,
            shared_with: Vec::new(),
            skills,
            priority: 0,
            strategy: Strategy::LongestIdle,
            offer_timeout_secs: 20,
            wrap_up_secs: 0,
            target_secs: 20,
            overflow: Vec::new(),
            max_wait: None,
            hours: None,
            closed_action: ClosedAction::Message(String::new()),
            closing_policy: ClosingPolicy::ServeWaiting,
            announce_every_secs: None,
            default_aht_secs: 180,
        }
    }
}

/// How many conversations an operator handles at once on each channel, and
/// the cross-channel rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capacity {
    pub voice: u8,
    pub chat: u8,
    pub email: u8,
    pub webform: u8,
    /// Whether an operator with open chats may be offered a call. An operator
    /// on a call (or being rung) is never offered a chat.
    pub call_with_chats: bool,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            voice: 1,
            chat: 3,
            email: 5,
            webform: 5,
            call_with_chats: false,
        }
    }
}

impl Capacity {
    pub(crate) fn of(&self, channel: Channel) -> u8 {
        match channel {
            Channel::Voice => self.voice,
            Channel::Chat => self.chat,
            Channel::Email => self.email,
            Channel::Webform => self.webform,
        }
    }
}

/// An operator's profile: who they are and what they can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorProfile {
    pub id: OperatorId,
    pub org: OrgId,
    pub skills: Vec<SkillLevel>,
    /// Empty: takes conversations in any language.
    pub languages: Vec<Language>,
    pub capacity: Capacity,
}

impl OperatorProfile {
    /// A profile with default capacity and no language restriction.
    pub fn new(id: OperatorId, org: OrgId, skills: Vec<SkillLevel>) -> Self {
        Self {
            id,
            org,
            skills,
            languages: Vec::new(),
            capacity: Capacity::default(),
        }
    }

    pub(crate) fn level(&self, skill: SkillId) -> u8 {
        self.skills
            .iter()
            .filter(|s| s.skill == skill)
            .map(|s| s.level)
            .max()
            .unwrap_or(0)
    }
}

/// Why an operator is not ready although logged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotReadyReason {
    /// Set by the engine after too many consecutive missed offers (like
    /// Asterisk's autopause); the supervisor sees how many.
    MissedOffers { count: u32 },
    /// Set by a supervisor or the console, with a free text.
    Other(String),
}

/// The presence an operator (or the engine) declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Offline,
    Available,
    /// On break with a configured reason ("pausa pranzo", "formazione").
    Break {
        reason: String,
    },
    NotReady(NotReadyReason),
}

/// What an operator is doing, as a supervisor sees it: the declared
/// presence refined by the work in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorStatus {
    Offline,
    /// Available with nothing in hand.
    Idle,
    /// Has at least one conversation or offer.
    Busy,
    WrapUp,
    Break,
    NotReady,
}

/// The formula for service level (contact centers disagree; the issue asks
/// for the variant to be named in config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceLevelFormula {
    /// answered within target / (answered + abandoned after the
    /// short-abandon threshold). The default.
    #[default]
    ExcludeShortAbandons,
    /// answered within target / (answered + all abandoned).
    AllAbandonsCount,
    /// answered within target / answered.
    AnsweredOnly,
    /// (answered within target + abandoned within target) / (answered +
    /// abandoned): abandons before the target do not hurt.
    AbandonsWithinTargetPositive,
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Aging: one priority level is worth this many seconds of waiting. A
    /// conversation's score is `priority * aging + waited`, so a low-priority
    /// queue never starves. Set it very high for strict priority.
    pub aging_secs_per_priority: u32,
    /// After this many consecutive missed offers the operator goes not-ready;
    /// 0 disables autopause.
    pub autopause_after_misses: u32,
    /// An operator who declined or missed a conversation is not offered that
    /// same conversation again for this long (others are, at once).
    pub reoffer_delay_secs: u32,
    /// Abandons within this many seconds are "short" (misdials, IVR escapes).
    pub short_abandon_secs: u32,
    pub service_level_formula: ServiceLevelFormula,
    /// Length of the sliding window for live statistics.
    pub stats_window_secs: u32,
    /// Zone whose midnight resets the daily statistics.
    pub timezone: chrono_tz::Tz,
    /// How many queue moves a conversation may make through overflow before
    /// further moves are ignored (guards against A -> B -> A cycles).
    pub max_queue_moves: u8,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            aging_secs_per_priority: 60,
            autopause_after_misses: 3,
            reoffer_delay_secs: 30,
            short_abandon_secs: 5,
            service_level_formula: ServiceLevelFormula::default(),
            stats_window_secs: 15 * 60,
            timezone: chrono_tz::Europe::Rome,
            max_queue_moves: 4,
        }
    }
}
