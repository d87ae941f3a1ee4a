//! Typed settings in layers: `config/default.toml` (or the file named by
//! `--config`), then `CCU_...` environment variables.
//!
//! Every key can be overridden from the environment. Top-level keys map
//! directly (`CCU_HTTP_ADDR` sets `http_addr`); nested keys use a double
//! underscore (`CCU_AUTH__SESSION_TTL_SECONDS`, `CCU_QUEUES__ANAGRAFE__PRIORITY`).
//! Unknown keys are refused, so a typo never silently falls back to a default.
//! After parsing, [`Settings::validate`] checks the cross-references (a
//! queue's organization, skills, schedule, overflow target...) and names the
//! offending key in its error, so the server refuses to start with a message
//! an administrator can act on.

use ccu_channels::media::call::MAX_VOICEMAIL_SECONDS;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ccu_routing::calendar::{HolidayCalendar, OpeningHours, WeeklyHours};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};

/// The default configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

/// Environment variables with the `CCU_` prefix that are not settings: test
/// harness knobs and the config path itself.
const NOT_SETTINGS: &[&str] = &[
    "config",
    "test_database_url",
    "test_redis_url",
    "shared_dir",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The dotted path of the offending key, e.g. `queues.anagrafe.skills.foo`.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub sip_addr: SocketAddr,
    pub smtp_addr: SocketAddr,
    /// `sqlite://PATH` (the embedded default) or `postgres://...`.
    pub database_url: String,
    /// Unset: the in-process event bus. Set: Redis pub/sub.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Channel prefix on Redis, so several deployments (or tests) can share one server.
    #[serde(default = "default_redis_prefix")]
    pub redis_prefix: String,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub log_format: LogFormat,
    pub time_zone: String,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    /// The voice channel's calls: media ports, prompts, ringing (issue 5;
    /// `src/voice.rs`).
    #[serde(default)]
    pub voice: VoiceSettings,
    /// The IVR menu tree of the unified number (`docs/media.md`).
    #[serde(default)]
    pub ivr: Option<ccu_channels::ivr::IvrConfig>,
    pub capacity: CapacitySettings,
    pub routing: RoutingSettings,
    pub public: PublicSettings,
    pub messages: Messages,
    pub holidays: HolidaySettings,
    pub languages: Vec<String>,
    pub organizations: BTreeMap<String, Organization>,
    pub skills: BTreeMap<String, Skill>,
    pub wrap_up_codes: BTreeMap<String, String>,
    pub schedules: BTreeMap<String, Schedule>,
    pub queues: BTreeMap<String, Queue>,
    /// The e-mail channel (issue 6; `src/email.rs`).
    pub email: EmailSettings,
    /// The voice channel's SIP endpoint, registrar, trunks and unified
    /// numbers (issue 5; `src/sip.rs`, `docs/sip.md`).
    #[serde(default)]
    pub sip: SipSettings,
}

/// `[sip]`: the settings of `ccu_channels::sip` (every key has a default).
pub type SipSettings = ccu_channels::sip::endpoint::SipConfig;

fn default_redis_prefix() -> String {
    "ccu".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Largest request body accepted; bigger ones get 413.
    pub body_limit_bytes: usize,
    /// A request still running after this long gets 408.
    pub request_timeout_seconds: u64,
    /// How long a shutdown waits for in-flight requests.
    pub shutdown_grace_seconds: u64,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Serve `/metrics` to any address; when false, only to loopback peers.
    pub metrics_public: bool,
    /// When set, `/metrics` also needs `Authorization: Bearer <token>` (behind
    /// a reverse proxy every peer looks like loopback).
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// A client must send its request headers within this time (slowloris).
    pub header_read_timeout_seconds: u64,
    /// Open HTTP connections (and WebSockets) at most; more are refused.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Session lifetime; 12 hours covers one shift.
    pub session_ttl_seconds: u64,
    /// Mark the session cookie `Secure` (set when served over HTTPS).
    pub cookie_secure: bool,
    /// Failed logins allowed per username before it is throttled.
    pub login_failures_per_user: u32,
    /// Login attempts allowed per client address.
    pub login_attempts_per_address: u32,
    /// The window both login limits refill over.
    pub login_window_seconds: u64,
    pub min_password_length: usize,
}

/// Default simultaneous conversations per channel for an operator.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CapacitySettings {
    pub voice: u32,
    pub chat: u32,
    pub email: u32,
    pub webform: u32,
    /// Whether an operator with open chats may still be offered a call.
    pub call_while_chatting: bool,
}

/// Engine-wide routing rules (per-queue ones live in each queue).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSettings {
    pub aging_seconds_per_priority: u32,
    pub autopause_after_misses: u32,
    pub reoffer_delay_seconds: u32,
    pub short_abandon_seconds: u32,
    pub service_level_formula: ccu_routing::ServiceLevelFormula,
    pub stats_window_seconds: u32,
    /// 0: announce position and wait only on arrival.
    pub announce_every_seconds: u32,
}

/// Limits of the public (citizen) endpoints: chat and web form.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicSettings {
    /// Chats a client address may start per window.
    pub chat_starts_per_address: u32,
    /// Chat messages a client address may send per window.
    pub chat_messages_per_address: u32,
    /// Web forms a client address may send per window.
    pub forms_per_address: u32,
    pub window_seconds: u64,
    /// How long after the last activity a citizen may resume a chat.
    pub resume_ttl_seconds: u64,
    /// Longest chat message or form text, in characters.
    pub max_text_chars: usize,
}

/// Texts given to citizens by the routing rules (Italian by default).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    pub closed: String,
    pub max_wait_close: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HolidaySettings {
    /// `it` for the Italian national holidays, `none` for no built-in ones.
    pub national: String,
    /// Local closures: `MM-DD` every year (the patron saint) or `YYYY-MM-DD` once.
    #[serde(default)]
    pub local: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    pub name: String,
    /// The city itself: its supervisors and admins see every organization.
    #[serde(default)]
    pub city: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Skill {
    pub name: String,
}

/// Opening ranges per weekday, e.g. `mon = "08:30-12:30,14:30-16:30"`.
/// A day left out is closed.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub mon: Option<String>,
    pub tue: Option<String>,
    pub wed: Option<String>,
    pub thu: Option<String>,
    pub fri: Option<String>,
    pub sat: Option<String>,
    pub sun: Option<String>,
}

impl Schedule {
    fn days(&self) -> Vec<(&'static str, &str)> {
        [
            ("mon", &self.mon),
            ("tue", &self.tue),
            ("wed", &self.wed),
            ("thu", &self.thu),
            ("fri", &self.fri),
            ("sat", &self.sat),
            ("sun", &self.sun),
        ]
        .into_iter()
        .filter_map(|(day, ranges)| ranges.as_deref().map(|r| (day, r)))
        .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Voice,
    Chat,
    Email,
    Webform,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Voice,
        Channel::Chat,
        Channel::Email,
        Channel::Webform,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
            Channel::Webform => "webform",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// How a queue picks among eligible operators (the routing engine's own type).
pub use ccu_routing::Strategy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaxWaitAction {
    /// Keep the place in line and ring the citizen back.
    Callback,
    /// Take a voice message / leave the written request for later.
    Voicemail,
    /// Close with a message.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClosedAction {
    /// Play / show the closed message and end.
    Message,
    /// Suggest the web form (chat, and voice by a message).
    SuggestWebform,
    /// Offer to leave a voice message.
    Voicemail,
    /// Accept and keep it queued for the next opening (mail, forms).
    Queue,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLevel {
    /// Answered within this many seconds counts as in service level.
    pub target_seconds: u32,
    /// The goal, e.g. 80 (%).
    pub target_percent: u32,
}

/// One step of overflow over time; the conversation keeps its enqueue time.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowStep {
    pub after_seconds: u32,
    /// Lower every required skill's minimum level to this.
    #[serde(default)]
    pub relax_min_level: Option<u8>,
    /// Also accept operators with these skills (skill -> minimum level).
    #[serde(default)]
    pub add_skills: BTreeMap<String, u8>,
    /// Move the conversation to another queue.
    #[serde(default)]
    pub to_queue: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub name: String,
    pub organization: String,
    /// Other organizations whose operators may take this queue's conversations.
    #[serde(default)]
    pub shared_with: Vec<String>,
    pub channels: Vec<Channel>,
    /// Required skills with minimum levels (1-10).
    pub skills: BTreeMap<String, u8>,
    pub languages: Vec<String>,
    /// Higher is served first.
    pub priority: i32,
    pub strategy: Strategy,
    pub schedule: String,
    /// Whether public holidays close this queue.
    pub holidays: bool,
    pub offer_timeout_seconds: u32,
    pub wrap_up_seconds: u32,
    pub wrap_up_codes: Vec<String>,
    pub service_level: ServiceLevel,
    pub max_wait_seconds: u32,
    pub max_wait_action: MaxWaitAction,
    pub closed_action: ClosedAction,
    #[serde(default)]
    pub overflow: Vec<OverflowStep>,
    /// What conversations already waiting get when the queue closes.
    #[serde(default)]
    pub closing_policy: ccu_routing::ClosingPolicy,
}

impl Settings {
    /// Loads `path` (the default file when `None`) and the `CCU_` environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let path = path.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
        if !path.exists() {
            return Err(ConfigError::new(
                "--config",
                format!("file {} not found", path.display()),
            ));
        }
        let env = Env::prefixed("CCU_").split("__").filter(|key| {
            !NOT_SETTINGS
                .iter()
                .any(|n| key.as_str().eq_ignore_ascii_case(n))
        });
        Self::from_figment(Figment::new().merge(Toml::file(path)).merge(env))
    }

    /// Parses and validates settings from any provider stack (tests use this
    /// to start from the default file and change a few keys).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(|err| {
            let key = err.path.join(".");
            let key = if key.is_empty() {
                "(top level)".to_owned()
            } else {
                key
            };
            ConfigError::new(key, err.kind.to_string())
        })?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn zone(&self) -> chrono_tz::Tz {
        // validate() has checked it parses.
        self.time_zone.parse().unwrap_or(chrono_tz::Europe::Rome)
    }

    pub fn holiday_calendar(&self) -> Result<HolidayCalendar, ConfigError> {
        let base = match self.holidays.national.as_str() {
            "it" => HolidayCalendar::italy(),
            "none" => HolidayCalendar::none(),
            other => {
                return Err(ConfigError::new(
                    "holidays.national",
                    format!("unknown calendar {other:?}: use \"it\" or \"none\""),
                ));
            }
        };
        base.with_dates(&self.holidays.local)
            .map_err(|e| ConfigError::new("holidays.local", e.to_string()))
    }

    /// The opening hours of a queue, holidays included when it observes them.
    pub fn opening_hours(&self, queue_id: &str) -> Result<OpeningHours, ConfigError> {
        let key = format!("queues.{queue_id}");
        let queue = self
            .queues
            .get(queue_id)
            .ok_or_else(|| ConfigError::new(&key, "no such queue"))?;
        let schedule = self.schedules.get(&queue.schedule).ok_or_else(|| {
            ConfigError::new(
                format!("{key}.schedule"),
                format!("unknown schedule {:?}", queue.schedule),
            )
        })?;
        let weekly = WeeklyHours::parse_days(&schedule.days()).map_err(|e| {
            ConfigError::new(format!("schedules.{}", queue.schedule), e.to_string())
        })?;
        let holidays = if queue.holidays {
            self.holiday_calendar()?
        } else {
            HolidayCalendar::none()
        };
        Ok(OpeningHours::new(self.zone(), weekly, holidays))
    }

    /// Checks what the types cannot: cross-references, ranges, formats.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.database_url;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::new(
                "database_url",
                "must start with sqlite: or postgres://",
            ));
        }
        if let Some(redis) = &self.redis_url
            && !(redis.starts_with("redis://") || redis.starts_with("rediss://"))
        {
            return Err(ConfigError::new(
                "redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            return Err(ConfigError::new(
                "time_zone",
                format!("unknown time zone {:?}", self.time_zone),
            ));
        }
        positive("http.body_limit_bytes", self.http.body_limit_bytes as u64)?;
        positive(
            "http.request_timeout_seconds",
            self.http.request_timeout_seconds,
        )?;
        positive("auth.session_ttl_seconds", self.auth.session_ttl_seconds)?;
        positive(
            "routing.stats_window_seconds",
            self.routing.stats_window_seconds.into(),
        )?;
        positive("public.window_seconds", self.public.window_seconds)?;
        positive("public.resume_ttl_seconds", self.public.resume_ttl_seconds)?;
        positive("public.max_text_chars", self.public.max_text_chars as u64)?;
        positive("auth.login_window_seconds", self.auth.login_window_seconds)?;
        positive(
            "auth.login_failures_per_user",
            self.auth.login_failures_per_user.into(),
        )?;
        positive(
            "auth.login_attempts_per_address",
            self.auth.login_attempts_per_address.into(),
        )?;
        if self.auth.min_password_length < 8 {
            return Err(ConfigError::new(
                "auth.min_password_length",
                "must be at least 8",
            ));
        }
        self.holiday_calendar()?;
        self.validate_voice()?;
        for lang in &self.languages {
            if !is_language_code(lang) {
                return Err(ConfigError::new(
                    "languages",
                    format!("{lang:?} is not a two-letter ISO 639-1 code"),
                ));
            }
        }
        let cities = self.organizations.values().filter(|o| o.city).count();
        if cities != 1 {
            return Err(ConfigError::new(
                "organizations",
                format!("exactly one organization must have city = true, found {cities}"),
            ));
        }
        for id in self.organizations.keys() {
            check_id(&format!("organizations.{id}"), id)?;
        }
        for (id, skill) in &self.skills {
            check_id(&format!("skills.{id}"), id)?;
            if skill.name.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("skills.{id}.name"),
                    "must not be empty",
                ));
            }
        }
        for (id, schedule) in &self.schedules {
            WeeklyHours::parse_days(&schedule.days())
                .map_err(|e| ConfigError::new(format!("schedules.{id}"), e.to_string()))?;
        }
        if self.queues.is_empty() {
            return Err(ConfigError::new("queues", "at least one queue is needed"));
        }
        for (id, queue) in &self.queues {
            self.validate_queue(id, queue)?;
        }
        self.validate_email()?;
        self.validate_sip()?;
        Ok(())
    }

    fn validate_queue(&self, id: &str, queue: &Queue) -> Result<(), ConfigError> {
        let key = format!("queues.{id}");
        check_id(&key, id)?;
        if !self.organizations.contains_key(&queue.organization) {
            return Err(ConfigError::new(
                format!("{key}.organization"),
                format!("unknown organization {:?}", queue.organization),
            ));
        }
        for org in &queue.shared_with {
            if !self.organizations.contains_key(org) {
                return Err(ConfigError::new(
                    format!("{key}.shared_with"),
                    format!("unknown organization {org:?}"),
                ));
            }
        }
        if queue.channels.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.channels"),
                "at least one channel",
            ));
        }
        if queue.strategy == Strategy::RingAll && !queue.channels.contains(&Channel::Voice) {
            return Err(ConfigError::new(
                format!("{key}.strategy"),
                "ring-all is a voice strategy and this queue takes no calls",
            ));
        }
        self.check_skills(&format!("{key}.skills"), &queue.skills)?;
        if queue.languages.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.languages"),
                "at least one language",
            ));
        }
        for lang in &queue.languages {
            if !self.languages.contains(lang) {
                return Err(ConfigError::new(
                    format!("{key}.languages"),
                    format!("{lang:?} is not in the top-level languages list"),
                ));
            }
        }
        if !self.schedules.contains_key(&queue.schedule) {
            return Err(ConfigError::new(
                format!("{key}.schedule"),
                format!("unknown schedule {:?}", queue.schedule),
            ));
        }
        positive(
            &format!("{key}.offer_timeout_seconds"),
            queue.offer_timeout_seconds.into(),
        )?;
        positive(
            &format!("{key}.max_wait_seconds"),
            queue.max_wait_seconds.into(),
        )?;
        if queue.service_level.target_percent == 0 || queue.service_level.target_percent > 100 {
            return Err(ConfigError::new(
                format!("{key}.service_level.target_percent"),
                "must be between 1 and 100",
            ));
        }
        for code in &queue.wrap_up_codes {
            if !self.wrap_up_codes.contains_key(code) {
                return Err(ConfigError::new(
                    format!("{key}.wrap_up_codes"),
                    format!("unknown wrap-up code {code:?}"),
                ));
            }
        }
        let mut last = 0;
        for (n, step) in queue.overflow.iter().enumerate() {
            let step_key = format!("{key}.overflow[{n}]");
            if step.after_seconds <= last {
                return Err(ConfigError::new(
                    format!("{step_key}.after_seconds"),
                    "steps must be in increasing time order, after 0",
                ));
            }
            last = step.after_seconds;
            if step.relax_min_level.is_none()
                && step.add_skills.is_empty()
                && step.to_queue.is_none()
            {
                return Err(ConfigError::new(
                    step_key,
                    "a step needs relax_min_level, add_skills or to_queue",
                ));
            }
            if let Some(level) = step.relax_min_level
                && !(1..=10).contains(&level)
            {
                return Err(ConfigError::new(
                    format!("{step_key}.relax_min_level"),
                    "levels go from 1 to 10",
                ));
            }
            self.check_skills(&format!("{step_key}.add_skills"), &step.add_skills)?;
            if let Some(target) = &step.to_queue
                && (!self.queues.contains_key(target) || target == id)
            {
                return Err(ConfigError::new(
                    format!("{step_key}.to_queue"),
                    format!("unknown queue {target:?} (or the queue itself)"),
                ));
            }
        }
        Ok(())
    }

    fn check_skills(&self, key: &str, skills: &BTreeMap<String, u8>) -> Result<(), ConfigError> {
        for (skill, level) in skills {
            if !self.skills.contains_key(skill) {
                return Err(ConfigError::new(format!("{key}.{skill}"), "unknown skill"));
            }
            if !(1..=10).contains(level) {
                return Err(ConfigError::new(
                    format!("{key}.{skill}"),
                    format!("level {level} is out of range 1-10"),
                ));
            }
        }
        Ok(())
    }

    /// The organization whose supervisors see everything.
    pub fn city_organization(&self) -> &str {
        self.organizations
            .iter()
            .find(|(_, o)| o.city)
            .map(|(id, _)| id.as_str())
            .unwrap_or_default()
    }

    /// The SQLite file path when the store is SQLite.
    pub fn sqlite_path(&self) -> Option<&str> {
        self.database_url
            .strip_prefix("sqlite://")
            .or_else(|| self.database_url.strip_prefix("sqlite:"))
    }
}

// ---- e-mail channel (issue 6) ----

/// The SMTP door, the mailboxes it serves and the outbox relay.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Our name in the SMTP greeting, EHLO reply and `Received:` header.
    pub hostname: String,
    /// The right-hand side of our Message-IDs (`ccu.{outbox id}@{domain}`).
    pub domain: String,
    /// The sender of every mail ccu sends; also our `X-Loop:` token.
    pub from: String,
    #[serde(default)]
    pub from_name: Option<String>,
    /// Address → queue id. Mail to any other address is refused with 550.
    pub mailboxes: BTreeMap<String, String>,
    /// Largest message accepted (SMTP SIZE); larger ones get 552.
    pub max_message_bytes: usize,
    /// Attachments kept per mail; extra ones are recorded as dropped.
    pub max_attachments: usize,
    pub max_attachment_bytes: usize,
    /// Messages one envelope sender may deliver per hour; more get a
    /// temporary 451 before anything is stored.
    pub per_sender_per_hour: u32,
    /// The acknowledgement sent for a new conversation; `{reference}` is
    /// replaced by the conversation's reference.
    pub acknowledgement: String,
    /// STARTTLS on the SMTP door (RFC 3207): both or neither.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    pub relay: RelaySettings,
    pub outbox: OutboxSettings,
    /// Poll a mailbox on another server as well (optional).
    #[serde(default)]
    pub imap: Option<ImapSettings>,
    /// The satisfaction survey mailed when an e-mail or web-form
    /// conversation is closed (optional; absent: none is sent).
    #[serde(default)]
    pub survey: Option<SurveySettings>,
}

/// `[email.survey]`: one mail per closed conversation, through the outbox.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SurveySettings {
    /// The reference token is added to it (`[URP-2026-000123]`).
    pub subject: String,
    /// `{reference}` is replaced by the conversation's reference.
    pub body: String,
}

/// `[email.imap]`: poll a mailbox on another server (optional; for cities
/// whose mail is delivered elsewhere). Mail fetched there goes through the
/// same durable path as mail the SMTP door receives.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    /// `none` (loopback or a trusted network only), `implicit` (993) or
    /// `starttls`.
    pub tls: ImapTls,
    pub username: String,
    /// Never logged: the `Debug` impl leaves it out. Set it with
    /// `CCU_EMAIL__IMAP__PASSWORD`.
    #[serde(default)]
    pub password: Option<String>,
    /// The folder to poll.
    #[serde(default = "default_imap_mailbox")]
    pub mailbox: String,
    /// Which of our addresses (a key of `email.mailboxes`) this mailbox
    /// receives: its mail goes to that address's queue.
    pub address: String,
    pub poll_interval_seconds: u64,
    /// After a mail is stored: absent, it is flagged `\Seen`; set, it is
    /// moved to this folder.
    #[serde(default)]
    pub move_to: Option<String>,
    /// Extra trusted roots (PEM) for the server's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_imap_timeout")]
    pub timeout_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImapTls {
    None,
    Implicit,
    Starttls,
}

fn default_imap_mailbox() -> String {
    "INBOX".into()
}

fn default_imap_timeout() -> u64 {
    60
}

impl std::fmt::Debug for ImapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("mailbox", &self.mailbox)
            .field("address", &self.address)
            .field("poll_interval_seconds", &self.poll_interval_seconds)
            .field("move_to", &self.move_to)
            .field("ca_file", &self.ca_file)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// The relay every outgoing mail goes through.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    pub host: String,
    pub port: u16,
    /// Require STARTTLS (RFC 3207); false only for a relay on loopback.
    pub starttls: bool,
    #[serde(default)]
    pub username: Option<String>,
    /// Never logged: the `Debug` impl leaves it out.
    #[serde(default)]
    pub password: Option<String>,
    /// Extra trusted roots (PEM) for the relay's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Per SMTP command.
    pub timeout_seconds: u64,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("starttls", &self.starttls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// A mail still undelivered this long after it was queued is marked failed.
    pub give_up_after_hours: u64,
    /// After a transient failure (relay down, 4xx) the worker waits this
    /// long before trying the next mail: the next one would most likely
    /// fail the same way, and each attempt costs two commits.
    #[serde(default = "default_pause_after_transient")]
    pub pause_after_transient_seconds: u64,
}

fn default_pause_after_transient() -> u64 {
    5
}

impl Settings {
    fn validate_email(&self) -> Result<(), ConfigError> {
        use ccu_email::address::EmailAddress;
        let email = &self.email;
        for (key, value) in [
            ("email.hostname", &email.hostname),
            ("email.domain", &email.domain),
            ("email.relay.host", &email.relay.host),
        ] {
            if value.trim().is_empty() || value.chars().any(|c| c.is_whitespace() || c == '@') {
                return Err(ConfigError::new(key, "must be a host name"));
            }
        }
        EmailAddress::parse(&email.from)
            .map_err(|e| ConfigError::new("email.from", e.to_string()))?;
        if email.mailboxes.is_empty() {
            return Err(ConfigError::new("email.mailboxes", "at least one mailbox"));
        }
        for (address, queue_id) in &email.mailboxes {
            let key = format!("email.mailboxes.{address:?}");
            EmailAddress::parse(address).map_err(|e| ConfigError::new(&key, e.to_string()))?;
            let queue = self
                .queues
                .get(queue_id)
                .ok_or_else(|| ConfigError::new(&key, format!("unknown queue {queue_id:?}")))?;
            if !queue.channels.contains(&Channel::Email) {
                return Err(ConfigError::new(
                    &key,
                    format!("queue {queue_id:?} does not take the email channel"),
                ));
            }
        }
        positive("email.max_message_bytes", email.max_message_bytes as u64)?;
        positive(
            "email.max_attachment_bytes",
            email.max_attachment_bytes as u64,
        )?;
        positive(
            "email.per_sender_per_hour",
            email.per_sender_per_hour.into(),
        )?;
        positive("email.relay.port", email.relay.port.into())?;
        positive("email.relay.timeout_seconds", email.relay.timeout_seconds)?;
        positive(
            "email.outbox.give_up_after_hours",
            email.outbox.give_up_after_hours,
        )?;
        if email.relay.password.is_some() && email.relay.username.is_none() {
            return Err(ConfigError::new(
                "email.relay.username",
                "a password needs a username",
            ));
        }
        if email.tls_cert.is_some() != email.tls_key.is_some() {
            return Err(ConfigError::new(
                "email.tls_key",
                "set both tls_cert and tls_key, or neither",
            ));
        }
        if let Some(imap) = &email.imap {
            if imap.host.trim().is_empty() || imap.host.chars().any(char::is_whitespace) {
                return Err(ConfigError::new("email.imap.host", "must be a host name"));
            }
            positive("email.imap.port", imap.port.into())?;
            positive(
                "email.imap.poll_interval_seconds",
                imap.poll_interval_seconds,
            )?;
            positive("email.imap.timeout_seconds", imap.timeout_seconds)?;
            if imap.username.is_empty() {
                return Err(ConfigError::new("email.imap.username", "must not be empty"));
            }
            if imap.password.as_deref().unwrap_or("").is_empty() {
                return Err(ConfigError::new(
                    "email.imap.password",
                    "set it (CCU_EMAIL__IMAP__PASSWORD)",
                ));
            }
            if !email
                .mailboxes
                .keys()
                .any(|m| m.eq_ignore_ascii_case(&imap.address))
            {
                return Err(ConfigError::new(
                    "email.imap.address",
                    "must be one of email.mailboxes",
                ));
            }
            for (key, folder) in [
                ("email.imap.mailbox", Some(&imap.mailbox)),
                ("email.imap.move_to", imap.move_to.as_ref()),
            ] {
                if let Some(folder) = folder
                    && (folder.is_empty()
                        || !folder.is_ascii()
                        || folder.contains(['\r', '\n', '\0']))
                {
                    return Err(ConfigError::new(key, "a non-empty ASCII folder name"));
                }
            }
        }
        if !email.acknowledgement.contains("{reference}") {
            return Err(ConfigError::new(
                "email.acknowledgement",
                "must contain {reference}",
            ));
        }
        if let Some(survey) = &email.survey {
            if survey.subject.trim().is_empty() || survey.subject.contains(['\r', '\n']) {
                return Err(ConfigError::new(
                    "email.survey.subject",
                    "a non-empty single line",
                ));
            }
            if survey.body.trim().is_empty() {
                return Err(ConfigError::new("email.survey.body", "must not be empty"));
            }
        }
        Ok(())
    }
}

// ---- voice channel: SIP (issue 5) ----

impl Settings {
    fn validate_sip(&self) -> Result<(), ConfigError> {
        let sip = &self.sip;
        for (key, value) in [
            ("sip.t1_ms", sip.t1_ms),
            ("sip.t2_ms", sip.t2_ms),
            ("sip.t4_ms", sip.t4_ms),
            ("sip.max_message_size", sip.max_message_size as u64),
            ("sip.max_tcp_connections", sip.max_tcp_connections as u64),
            ("sip.tcp_idle_timeout_secs", sip.tcp_idle_timeout_secs),
            ("sip.max_transactions", sip.max_transactions as u64),
            ("sip.tu_queue", sip.tu_queue as u64),
            ("sip.registrar.nonce_ttl_secs", sip.registrar.nonce_ttl_secs),
            (
                "sip.registrar.max_bindings_per_operator",
                sip.registrar.max_bindings_per_operator as u64,
            ),
            (
                "sip.registrar.max_auth_failures",
                sip.registrar.max_auth_failures.into(),
            ),
        ] {
            positive(key, value)?;
        }
        if sip.t2_ms < sip.t1_ms {
            return Err(ConfigError::new("sip.t2_ms", "must not be below t1_ms"));
        }
        if sip.max_message_size < 1_500 {
            return Err(ConfigError::new(
                "sip.max_message_size",
                "at least 1500 bytes",
            ));
        }
        let registrar = &sip.registrar;
        if registrar.algorithms.is_empty() {
            return Err(ConfigError::new(
                "sip.registrar.algorithms",
                "at least one of \"SHA-256\", \"MD5\"",
            ));
        }
        let realm = &registrar.realm;
        if realm.is_empty()
            || realm.len() > 128
            || realm
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(ConfigError::new(
                "sip.registrar.realm",
                "1-128 characters, no quotes, backslashes or control characters",
            ));
        }
        if registrar.min_expires > registrar.max_expires
            || !(registrar.min_expires..=registrar.max_expires).contains(&registrar.default_expires)
        {
            return Err(ConfigError::new(
                "sip.registrar.default_expires",
                "min_expires <= default_expires <= max_expires",
            ));
        }
        if sip.server_name.trim().is_empty() || sip.server_name.chars().any(char::is_control) {
            return Err(ConfigError::new("sip.server_name", "must be a plain name"));
        }
        // Trunks and numbers: parsed once here, so the server never
        // starts with one it could not use.
        ccu_channels::sip::trunk::TrunkGate::new(sip, [0; 32])
            .map_err(|e| ConfigError::new(format!("sip.{}", e.key), e.reason))?;
        for (number, target) in &sip.numbers {
            let key = format!("sip.numbers.{number:?}");
            let queue = self.queues.get(&target.queue).ok_or_else(|| {
                ConfigError::new(
                    format!("{key}.queue"),
                    format!("unknown queue {:?}", target.queue),
                )
            })?;
            if !queue.channels.contains(&Channel::Voice) {
                return Err(ConfigError::new(
                    format!("{key}.queue"),
                    format!("queue {:?} does not take the voice channel", target.queue),
                ));
            }
            if let Some(menu) = &target.ivr
                && !self
                    .ivr
                    .as_ref()
                    .is_some_and(|ivr| ivr.menus.contains_key(menu))
            {
                return Err(ConfigError::new(
                    format!("{key}.ivr"),
                    format!("unknown IVR menu {menu:?} (the menus of [ivr])"),
                ));
            }
        }
        Ok(())
    }
}

// ---- voice channel: calls (issue 5) ----

/// `[voice]`: the calls of the unified number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceSettings {
    /// The UDP ports for RTP, `"first-last"`: one per call leg (two per
    /// bridged call). `"0"` lets the system choose (tests).
    pub rtp_ports: String,
    /// The address put in SDP and Contact (what trunks and phones can
    /// reach). Unset: the IP of `sip_addr` (which must then not be
    /// unspecified).
    pub media_address: Option<std::net::IpAddr>,
    /// Directory of the prompt sets (`it/`, `en/`, `music/`).
    pub prompts_dir: PathBuf,
    /// How long an operator's phone rings before the offer is missed.
    pub ring_timeout_seconds: u64,
    /// Calls at once; more INVITEs get `503`.
    pub max_calls: usize,
    /// New calls a second from all trunks together (a second's worth may
    /// come at once); more get `503` with `Retry-After` at once, so that a
    /// carrier's surge is refused rather than left to time out. Set it to
    /// what the machine sustains (docs/performance.md: 300 on two cores).
    pub max_calls_per_second: u32,
    /// Relay (latching, media timeout) and announcer (callback key, music).
    pub media: ccu_channels::media::call::CallMediaConfig,
    /// Callbacks the server places through a trunk's `outbound`.
    pub callback: CallbackSettings,
}

/// `[voice.callback]`: how the server calls citizens back. It places the
/// call only if a trunk has an `outbound` (otherwise the operator who
/// accepts the callback offer dials the number shown in the console).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackSettings {
    /// Calls to the citizen (busy, no answer, failed) before the callback
    /// is given up and the conversation closed.
    pub attempts: u32,
    /// The wait before the next attempt.
    pub retry_seconds: u64,
    /// How long the citizen's phone rings before it counts as no answer.
    pub ring_seconds: u64,
    /// Failures of the trunk itself (5xx, no response, our credentials
    /// refused) for one callback before it is given up: they are not the
    /// citizen's attempts, but a broken trunk must not retry for ever.
    pub trunk_failures: u32,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        Self {
            attempts: 3,
            retry_seconds: 300,
            ring_seconds: 30,
            trunk_failures: 12,
        }
    }
}

impl Default for VoiceSettings {
    fn default() -> Self {
        Self {
            rtp_ports: "20000-20999".to_owned(),
            media_address: None,
            prompts_dir: PathBuf::from("config/prompts"),
            ring_timeout_seconds: 20,
            max_calls: 500,
            max_calls_per_second: 300,
            media: ccu_channels::media::call::CallMediaConfig::default(),
            callback: CallbackSettings::default(),
        }
    }
}

/// An RTP port range from `[voice] rtp_ports`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// `"20000-20999"`, or `"0"` for ports chosen by the system.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(PortRange { first: 0, last: 0 });
        }
        let (first, last) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not \"first-last\" or \"0\""))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p >= 1024)
                .ok_or_else(|| format!("{p:?} is not a port from 1024 to 65535"))
        };
        let (first, last) = (port(first)?, port(last)?);
        if last < first {
            return Err(format!("{last} is below {first}"));
        }
        Ok(PortRange { first, last })
    }

    /// Whether the system picks the ports.
    pub fn is_any(&self) -> bool {
        self.first == 0
    }

    pub fn len(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Settings {
    fn validate_voice(&self) -> Result<(), ConfigError> {
        let voice = &self.voice;
        let range = PortRange::parse(&voice.rtp_ports)
            .map_err(|reason| ConfigError::new("voice.rtp_ports", reason))?;
        if !range.is_any() && range.len() < 2 {
            return Err(ConfigError::new(
                "voice.rtp_ports",
                "at least two ports (a call has two legs)",
            ));
        }
        positive("voice.ring_timeout_seconds", voice.ring_timeout_seconds)?;
        positive("voice.callback.attempts", voice.callback.attempts.into())?;
        positive("voice.callback.ring_seconds", voice.callback.ring_seconds)?;
        positive(
            "voice.callback.trunk_failures",
            voice.callback.trunk_failures.into(),
        )?;
        positive("voice.max_calls", voice.max_calls as u64)?;
        let seconds = voice.media.voicemail_seconds;
        if !(1..=MAX_VOICEMAIL_SECONDS).contains(&seconds) {
            return Err(ConfigError::new(
                "voice.media.voicemail_seconds",
                format!("{seconds} is not between 1 and {MAX_VOICEMAIL_SECONDS}"),
            ));
        }
        positive(
            "voice.max_calls_per_second",
            voice.max_calls_per_second.into(),
        )?;
        if let Some(address) = voice.media_address
            && address.is_unspecified()
        {
            return Err(ConfigError::new(
                "voice.media_address",
                "must be an address peers can reach, not 0.0.0.0 or ::",
            ));
        }
        if voice.media_address.is_none() && self.sip_addr.ip().is_unspecified() {
            return Err(ConfigError::new(
                "voice.media_address",
                "needed when sip_addr listens on every address",
            ));
        }
        if let Some(key) = voice.media.announcer.callback_key
            && !matches!(key, '0'..='9' | '*' | '#')
        {
            return Err(ConfigError::new(
                "voice.media.announcer.callback_key",
                format!("{key:?} is not a telephone key"),
            ));
        }
        if let Some(ivr) = &self.ivr {
            ivr.validate(
                |queue| self.queues.contains_key(queue),
                |language| self.languages.iter().any(|l| l == language),
            )
            .map_err(|e| ConfigError::new("ivr", e.to_string()))?;
        }
        Ok(())
    }
}

fn positive(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn is_language_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase())
}

/// Ids appear in URLs, env variable names and references like `URP-...`:
/// lowercase ASCII letters, digits and `_`, starting with a letter.
fn check_id(key: &str, id: &str) -> Result<(), ConfigError> {
    let ok = id.len() <= 40
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            "ids are lowercase letters, digits and _ (max 40), starting with a letter",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Serialized;

    fn default_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH)
    }

    fn with(key: &str, value: impl Serialize) -> Result<Settings, ConfigError> {
        Settings::from_figment(
            Figment::new()
                .merge(Toml::file(default_file()))
                .merge(Serialized::global(key, value)),
        )
    }

    #[test]
    fn the_default_voice_settings_and_menu_are_valid() {
        let settings = Settings::from_figment(Figment::new().merge(Toml::file(default_file())))
            .expect("default config must be valid");
        assert_eq!(
            PortRange::parse(&settings.voice.rtp_ports),
            Ok(PortRange {
                first: 20_000,
                last: 20_999
            })
        );
        let ivr = settings.ivr.expect("the demo menu");
        assert_eq!(ivr.start, "main");
        assert!(ivr.menus.contains_key("aziende"));
    }

    #[test]
    fn bad_voice_settings_name_the_key() {
        for (ports, reason) in [
            ("20000", "is not \"first-last\""),
            ("30000-20000", "is below"),
            ("80-90", "not a port from 1024"),
            ("20000-20000", "at least two ports"),
        ] {
            let error = with("voice.rtp_ports", ports).expect_err(ports);
            assert_eq!(error.key, "voice.rtp_ports");
            assert!(error.reason.contains(reason), "{ports}: {}", error.reason);
        }
        assert!(with("voice.rtp_ports", "0").is_ok(), "system-chosen ports");
        let error = with("voice.media_address", "0.0.0.0").expect_err("unspecified");
        assert_eq!(error.key, "voice.media_address");
        let error = with("voice.ring_timeout_seconds", 0).expect_err("zero");
        assert_eq!(error.key, "voice.ring_timeout_seconds");
        for seconds in [0, 601, u64::MAX / 2] {
            let error = with("voice.media.voicemail_seconds", seconds).expect_err("bounds");
            assert_eq!(error.key, "voice.media.voicemail_seconds");
        }
        assert!(with("voice.media.voicemail_seconds", 600).is_ok());
        let error = with("ivr.menus.main.choices.1.queue", "nowhere").expect_err("unknown queue");
        assert_eq!(error.key, "ivr");
        assert!(error.reason.contains("nowhere"), "{}", error.reason);
    }

    #[test]
    fn the_default_config_is_a_valid_demo_city() {
        let settings = Settings::from_figment(Figment::new().merge(Toml::file(default_file())))
            .expect("default config must be valid");
        assert!(settings.queues.len() >= 8);
        assert!(settings.organizations.len() >= 3);
        for lang in ["it", "en", "de", "fr"] {
            assert!(settings.languages.iter().any(|l| l == lang));
        }
        for id in settings.queues.keys() {
            settings.opening_hours(id).expect("hours");
        }
    }

    #[test]
    fn an_unknown_skill_is_named_with_its_key() {
        let err = with(
            "queues.anagrafe.skills",
            BTreeMap::from([("astrologia", 3)]),
        )
        .unwrap_err();
        assert_eq!(err.key, "queues.anagrafe.skills.astrologia");
        assert_eq!(err.reason, "unknown skill");
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = with("queues.tributi.priority", "high").unwrap_err();
        assert_eq!(err.key, "queues.tributi.priority");
        assert!(err.reason.contains("invalid type"), "{}", err.reason);
    }

    #[test]
    fn a_typo_in_a_key_is_refused() {
        let err = with("auth.session_ttl_secnds", 10).unwrap_err();
        assert!(err.reason.contains("session_ttl_secnds"), "{err}");
    }

    #[test]
    fn the_sip_section_is_read_checked_and_named_in_errors() {
        let settings = Settings::from_figment(Figment::new().merge(Toml::file(default_file())))
            .expect("default config must be valid");
        assert_eq!(settings.sip.registrar.realm, "comune.monteverde.it");
        assert_eq!(settings.sip.numbers["+390612345678"].queue, "urp");
        assert!(
            settings.sip.trunks.is_empty(),
            "no trunk is trusted by default"
        );
        let err = with("sip.registrar.algorithms", Vec::<String>::new()).unwrap_err();
        assert_eq!(err.key, "sip.registrar.algorithms");
        let err = with("sip.registrar.algorithms", ["SHA-1"]).unwrap_err();
        assert!(err.key.starts_with("sip.registrar.algorithms"), "{err}");
        assert!(err.reason.contains("SHA-1"), "{err}");
        let err = with("sip.t1_msec", 100).unwrap_err();
        assert!(err.reason.contains("t1_msec"), "{err}");
        let err = with(
            "sip.numbers",
            BTreeMap::from([("+390612345678", BTreeMap::from([("queue", "nessuna")]))]),
        )
        .unwrap_err();
        assert_eq!(err.key, "sip.numbers.\"+390612345678\".queue");
        assert_eq!(
            settings.sip.numbers["+390612345678"].ivr.as_deref(),
            Some("main")
        );
        let err = with(
            "sip.numbers",
            BTreeMap::from([(
                "+390612345678",
                BTreeMap::from([("queue", "urp"), ("ivr", "nessun_menu")]),
            )]),
        )
        .unwrap_err();
        assert_eq!(err.key, "sip.numbers.\"+390612345678\".ivr", "{err}");
        let trunk = |sources: &str| serde_json::json!([{ "name": "carrier", "sources": [sources], "numbers": ["+390612345678"] }]);
        let err = with("sip.trunks", trunk("192.0.2.0/99")).unwrap_err();
        assert_eq!(err.key, "sip.trunks[0].sources");
        let settings = with("sip.trunks", trunk("192.0.2.0/24")).unwrap();
        assert_eq!(settings.sip.trunks[0].name, "carrier");
        let err = with("sip.trunks", serde_json::json!([{ "name": "carrier", "sources": ["192.0.2.1"], "numbers": ["+390612345678"], "password": "x" }])).unwrap_err();
        assert_eq!(err.key, "sip.trunks[0].password");
    }

    #[test]
    fn levels_out_of_range_and_bad_hours_are_refused() {
        let err = with("queues.anagrafe.skills", BTreeMap::from([("anagrafe", 11)])).unwrap_err();
        assert_eq!(err.key, "queues.anagrafe.skills.anagrafe");
        let err = with("schedules.uffici.mon", "13:00-09:00").unwrap_err();
        assert_eq!(err.key, "schedules.uffici");
        let err = with("time_zone", "Europe/Roma").unwrap_err();
        assert_eq!(err.key, "time_zone");
    }
}
