//! The IVR: a menu tree from configuration, and the sans-IO session that
//! walks a caller through it.
//!
//! [`IvrConfig`] is what `[ivr]` in the configuration says (serde, unknown
//! keys refused); [`IvrConfig::validate`] turns it into an [`Ivr`] or says
//! what is wrong: a choice that leads to a menu that does not exist, a
//! queue or language the server does not know, a key that is not a DTMF
//! key or appears twice in one menu, a choice that says two things, a menu
//! without prompts, or menus whose default actions lead back to each other
//! (a caller who presses nothing would loop forever).
//!
//! A menu plays its prompts and waits for one key, `timeout_seconds` after
//! the prompts end. No key, or a key that is not a choice, repeats the menu
//! after the `no_input` or `invalid` prompt, at most `max_no_input` /
//! `max_invalid` times; then the menu's `default` is taken. A choice leads
//! to another menu, to a queue (with a skill and language hint for
//! routing), to another language (the menu again, in that language), or to
//! hanging up; it may play prompts first ("please hold", "goodbye"). Keys
//! pressed while prompts play act at once (barge-in).
//!
//! [`IvrSession`] follows STYLE.md: [`IvrSession::handle`] takes
//! [`IvrEvent`]s (a digit from RFC 4733 or SIP INFO, the end of the prompts
//! last asked for, the caller hanging up), [`IvrSession::poll`] gives
//! [`IvrAction`]s and [`IvrSession::next_deadline`] says when the input
//! timeout falls. Outside opening hours the server starts the session
//! [`Opening::Closed`]: the closed message, then hang-up. The path of
//! choices ([`PathStep`]) comes with the route and the hang-up, for the
//! conversation's events.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use ccu_channels::ivr::{IvrAction, IvrConfig, IvrEvent, IvrSession, Opening};
//!
//! let config: IvrConfig = serde_json::from_str(r#"{
//!     "start": "main", "language": "it", "greeting": ["welcome"],
//!     "menus": { "main": {
//!         "prompts": ["menu_anagrafe", "menu_urp"],
//!         "choices": { "1": { "queue": "anagrafe" }, "0": { "queue": "urp" } },
//!         "default": { "queue": "urp" } } }
//! }"#).unwrap();
//! let ivr = Arc::new(config.validate(|_| true, |_| true).unwrap());
//! let t0 = Instant::now();
//! let mut session = IvrSession::new(t0, ivr, Opening::Open);
//! assert!(matches!(session.poll(t0), Some(IvrAction::Play { .. })));
//! session.handle(t0, IvrEvent::Digit('1'));
//! let Some(IvrAction::Route { queue, path, .. }) = session.poll(t0) else { panic!() };
//! assert_eq!(queue, "anagrafe");
//! assert_eq!(path[0].to_string(), "main:1");
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The `[ivr]` configuration as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IvrConfig {
    /// The first menu.
    pub start: String,
    /// The language callers start in.
    pub language: String,
    /// Played once, before the first menu.
    #[serde(default)]
    pub greeting: Vec<String>,
    /// Played outside opening hours, before hanging up.
    #[serde(default = "default_closed")]
    pub closed_prompts: Vec<String>,
    /// Played before a menu is repeated for lack of input.
    #[serde(default = "default_no_input")]
    pub no_input_prompts: Vec<String>,
    /// Played before a menu is repeated after a key that is not a choice.
    #[serde(default = "default_invalid")]
    pub invalid_prompts: Vec<String>,
    /// Defaults for the menus.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    #[serde(default = "default_repeats")]
    pub max_no_input: u32,
    #[serde(default = "default_repeats")]
    pub max_invalid: u32,
    pub menus: BTreeMap<String, MenuConfig>,
}

fn default_closed() -> Vec<String> {
    vec!["closed".to_owned(), "goodbye".to_owned()]
}

fn default_no_input() -> Vec<String> {
    vec!["no_input".to_owned()]
}

fn default_invalid() -> Vec<String> {
    vec!["invalid".to_owned()]
}

fn default_timeout() -> u64 {
    6
}

fn default_repeats() -> u32 {
    2
}

/// One menu as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MenuConfig {
    pub prompts: Vec<String>,
    /// Key (`0`–`9`, `*`, `#`, `A`–`D`) → what it does.
    #[serde(default)]
    pub choices: BTreeMap<String, ChoiceConfig>,
    /// What happens after too many repeats.
    pub default: ChoiceConfig,
    pub timeout_seconds: Option<u64>,
    pub max_no_input: Option<u32>,
    pub max_invalid: Option<u32>,
}

/// A choice as written: exactly one of `menu`, `queue`, `hangup`, or
/// `language` alone; `language` with `menu` or `queue` switches or hints
/// the language; `skill` only with `queue`; `prompts` are played first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceConfig {
    pub menu: Option<String>,
    pub queue: Option<String>,
    pub skill: Option<String>,
    pub language: Option<String>,
    #[serde(default)]
    pub hangup: bool,
    #[serde(default)]
    pub prompts: Vec<String>,
}

/// What a choice does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Menu {
        menu: String,
        language: Option<String>,
    },
    Queue {
        queue: String,
        skill: Option<String>,
        language: Option<String>,
    },
    /// The current menu again, in this language.
    Language(String),
    Hangup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// Played before the target is taken.
    pub prompts: Vec<String>,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    pub name: String,
    pub prompts: Vec<String>,
    pub choices: BTreeMap<char, Choice>,
    pub default: Choice,
    pub timeout: Duration,
    pub max_no_input: u32,
    pub max_invalid: u32,
}

/// A validated menu tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ivr {
    pub start: String,
    pub language: String,
    pub greeting: Vec<String>,
    pub closed_prompts: Vec<String>,
    pub no_input_prompts: Vec<String>,
    pub invalid_prompts: Vec<String>,
    pub menus: BTreeMap<String, Menu>,
}

/// What is wrong with an IVR configuration. `choice` is the key, or
/// `default`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IvrConfigError {
    #[error("ivr.start: no menu {0:?}")]
    UnknownStart(String),
    #[error("ivr.language: unknown language {0:?}")]
    UnknownDefaultLanguage(String),
    #[error("ivr.menus.{menu}: no prompts")]
    NoPrompts { menu: String },
    #[error("ivr.menus.{menu}: the timeout must be at least one second")]
    ZeroTimeout { menu: String },
    #[error("ivr.menus.{menu}.choices: {key:?} is not a DTMF key (0-9, *, #, A-D)")]
    BadKey { menu: String, key: String },
    #[error("ivr.menus.{menu}.choices: key {key} appears twice")]
    DuplicateKey { menu: String, key: char },
    #[error("ivr.menus.{menu} {choice}: set exactly one of menu, queue, hangup, or language alone")]
    Ambiguous { menu: String, choice: String },
    #[error("ivr.menus.{menu} {choice}: skill without a queue")]
    SkillWithoutQueue { menu: String, choice: String },
    #[error("ivr.menus.{menu} {choice}: no menu {target:?}")]
    UnknownMenu {
        menu: String,
        choice: String,
        target: String,
    },
    #[error("ivr.menus.{menu} {choice}: unknown queue {queue:?}")]
    UnknownQueue {
        menu: String,
        choice: String,
        queue: String,
    },
    #[error("ivr.menus.{menu} {choice}: unknown language {language:?}")]
    UnknownLanguage {
        menu: String,
        choice: String,
        language: String,
    },
    #[error(
        "ivr.menus: the defaults of {0:?} lead back to each other: a caller who presses nothing would never leave"
    )]
    Cycle(Vec<String>),
    #[error("ivr: prompt {name:?} missing in language {language:?}")]
    MissingPrompt { language: String, name: String },
}

fn key(text: &str) -> Option<char> {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c @ ('0'..='9' | '*' | '#' | 'A'..='D')), None) => Some(c),
        (Some(c @ 'a'..='d'), None) => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

impl IvrConfig {
    /// Checks the tree against the queues and languages the server knows.
    pub fn validate(
        &self,
        queue_exists: impl Fn(&str) -> bool,
        language_exists: impl Fn(&str) -> bool,
    ) -> Result<Ivr, IvrConfigError> {
        if !self.menus.contains_key(&self.start) {
            return Err(IvrConfigError::UnknownStart(self.start.clone()));
        }
        if !language_exists(&self.language) {
            return Err(IvrConfigError::UnknownDefaultLanguage(
                self.language.clone(),
            ));
        }
        let mut menus = BTreeMap::new();
        for (name, config) in &self.menus {
            if config.prompts.is_empty() {
                return Err(IvrConfigError::NoPrompts { menu: name.clone() });
            }
            let timeout = config.timeout_seconds.unwrap_or(self.timeout_seconds);
            if timeout == 0 {
                return Err(IvrConfigError::ZeroTimeout { menu: name.clone() });
            }
            let check = |choice: &str, c: &ChoiceConfig| {
                self.choice(name, choice, c, &queue_exists, &language_exists)
            };
            let mut choices = BTreeMap::new();
            for (text, c) in &config.choices {
                let k = key(text).ok_or_else(|| IvrConfigError::BadKey {
                    menu: name.clone(),
                    key: text.clone(),
                })?;
                let choice = check(text, c)?;
                if choices.insert(k, choice).is_some() {
                    return Err(IvrConfigError::DuplicateKey {
                        menu: name.clone(),
                        key: k,
                    });
                }
            }
            let default = check("default", &config.default)?;
            menus.insert(
                name.clone(),
                Menu {
                    name: name.clone(),
                    prompts: config.prompts.clone(),
                    choices,
                    default,
                    timeout: Duration::from_secs(timeout),
                    max_no_input: config.max_no_input.unwrap_or(self.max_no_input),
                    max_invalid: config.max_invalid.unwrap_or(self.max_invalid),
                },
            );
        }
        // Defaults are taken without input: following them from any menu
        // must reach a queue or a hang-up. Each menu has one default, so a
        // walk either ends or revisits a menu.
        for start in menus.keys() {
            let mut seen: Vec<String> = Vec::new();
            let mut at = start.clone();
            loop {
                if seen.contains(&at) {
                    let from = seen.iter().position(|m| *m == at).unwrap_or(0);
                    return Err(IvrConfigError::Cycle(seen[from..].to_vec()));
                }
                seen.push(at.clone());
                match menus.get(&at).map(|m| &m.default.target) {
                    Some(Target::Menu { menu, .. }) => at = menu.clone(),
                    // The same menu again, in another language.
                    Some(Target::Language(_)) => {}
                    _ => break,
                }
            }
        }
        Ok(Ivr {
            start: self.start.clone(),
            language: self.language.clone(),
            greeting: self.greeting.clone(),
            closed_prompts: self.closed_prompts.clone(),
            no_input_prompts: self.no_input_prompts.clone(),
            invalid_prompts: self.invalid_prompts.clone(),
            menus,
        })
    }

    fn choice(
        &self,
        menu: &str,
        choice: &str,
        c: &ChoiceConfig,
        queue_exists: &impl Fn(&str) -> bool,
        language_exists: &impl Fn(&str) -> bool,
    ) -> Result<Choice, IvrConfigError> {
        let here = || (menu.to_owned(), choice.to_owned());
        let targets =
            usize::from(c.menu.is_some()) + usize::from(c.queue.is_some()) + usize::from(c.hangup);
        let language_alone = targets == 0 && c.language.is_some();
        if (targets != 1 && !language_alone) || (c.hangup && c.language.is_some()) {
            let (menu, choice) = here();
            return Err(IvrConfigError::Ambiguous { menu, choice });
        }
        if c.skill.is_some() && c.queue.is_none() {
            let (menu, choice) = here();
            return Err(IvrConfigError::SkillWithoutQueue { menu, choice });
        }
        if let Some(language) = &c.language
            && !language_exists(language)
        {
            let (menu, choice) = here();
            return Err(IvrConfigError::UnknownLanguage {
                menu,
                choice,
                language: language.clone(),
            });
        }
        let target = if let Some(target) = &c.menu {
            if !self.menus.contains_key(target) {
                let (menu, choice) = here();
                return Err(IvrConfigError::UnknownMenu {
                    menu,
                    choice,
                    target: target.clone(),
                });
            }
            Target::Menu {
                menu: target.clone(),
                language: c.language.clone(),
            }
        } else if let Some(queue) = &c.queue {
            if !queue_exists(queue) {
                let (menu, choice) = here();
                return Err(IvrConfigError::UnknownQueue {
                    menu,
                    choice,
                    queue: queue.clone(),
                });
            }
            Target::Queue {
                queue: queue.clone(),
                skill: c.skill.clone(),
                language: c.language.clone(),
            }
        } else if c.hangup {
            Target::Hangup
        } else {
            Target::Language(c.language.clone().unwrap_or_default())
        };
        Ok(Choice {
            prompts: c.prompts.clone(),
            target,
        })
    }
}

impl Ivr {
    /// Every prompt the tree can play, with the languages it can be played
    /// in (the start language and every language a choice switches or
    /// hints to), for checking against the prompt library at start.
    pub fn prompts_needed(&self) -> BTreeSet<(String, String)> {
        let mut languages = BTreeSet::from([self.language.clone()]);
        let mut names: BTreeSet<String> = BTreeSet::new();
        names.extend(self.greeting.iter().cloned());
        names.extend(self.closed_prompts.iter().cloned());
        names.extend(self.no_input_prompts.iter().cloned());
        names.extend(self.invalid_prompts.iter().cloned());
        for menu in self.menus.values() {
            names.extend(menu.prompts.iter().cloned());
            for choice in menu.choices.values().chain([&menu.default]) {
                names.extend(choice.prompts.iter().cloned());
                match &choice.target {
                    Target::Menu {
                        language: Some(l), ..
                    }
                    | Target::Queue {
                        language: Some(l), ..
                    }
                    | Target::Language(l) => {
                        languages.insert(l.clone());
                    }
                    _ => {}
                }
            }
        }
        languages
            .iter()
            .flat_map(|l| names.iter().map(move |n| (l.clone(), n.clone())))
            .collect()
    }

    /// Checks that every prompt exists (`exists(language, name)`).
    pub fn check_prompts(&self, exists: impl Fn(&str, &str) -> bool) -> Result<(), IvrConfigError> {
        for (language, name) in self.prompts_needed() {
            if !exists(&language, &name) {
                return Err(IvrConfigError::MissingPrompt { language, name });
            }
        }
        Ok(())
    }
}

/// Whether the service is open when the call arrives (the server decides,
/// from the schedule and holidays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvrEvent {
    /// A key (RFC 4733 or SIP INFO).
    Digit(char),
    /// The prompts of the last [`IvrAction::Play`] have been played.
    PromptFinished,
    /// The caller hung up.
    Hangup,
}

/// How a menu was left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "key")]
pub enum Input {
    Digit(char),
    /// The default, after too many timeouts.
    NoInput,
    /// The default, after too many invalid keys.
    Invalid,
}

/// One step of the caller's path through the menus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathStep {
    pub menu: String,
    pub input: Input,
}

impl fmt::Display for PathStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.input {
            Input::Digit(d) => write!(f, "{}:{d}", self.menu),
            Input::NoInput => write!(f, "{}:no-input", self.menu),
            Input::Invalid => write!(f, "{}:invalid", self.menu),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HangupReason {
    /// Outside opening hours.
    Closed,
    /// A menu choice (or default) said so.
    Menu,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IvrAction {
    /// Play these prompts in `language`, replacing whatever plays.
    Play {
        language: String,
        prompts: Vec<String>,
    },
    /// Queue the call. The IVR is done.
    Route {
        queue: String,
        skill: Option<String>,
        language: String,
        path: Vec<PathStep>,
    },
    /// Hang up. The IVR is done.
    Hangup {
        reason: HangupReason,
        path: Vec<PathStep>,
    },
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// A menu's prompts play; keys act at once.
    Playing {
        menu: String,
    },
    /// The prompts ended; waiting for a key until `deadline`.
    Waiting {
        menu: String,
        deadline: Instant,
    },
    /// A choice's prompts play; then `then`.
    Finishing {
        then: Final,
    },
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Final {
    Route {
        queue: String,
        skill: Option<String>,
        language: String,
    },
    Hangup(HangupReason),
}

/// One caller in the IVR. See the module documentation.
#[derive(Debug, Clone)]
pub struct IvrSession {
    ivr: Arc<Ivr>,
    language: String,
    state: State,
    path: Vec<PathStep>,
    no_input: u32,
    invalid: u32,
    actions: VecDeque<IvrAction>,
}

impl IvrSession {
    /// Starts a session: the greeting and the first menu, or the closed
    /// message.
    pub fn new(_now: Instant, ivr: Arc<Ivr>, opening: Opening) -> IvrSession {
        let mut session = IvrSession {
            language: ivr.language.clone(),
            state: State::Done,
            path: Vec::new(),
            no_input: 0,
            invalid: 0,
            actions: VecDeque::new(),
            ivr,
        };
        match opening {
            Opening::Closed => {
                let prompts = session.ivr.closed_prompts.clone();
                session.finish(prompts, Final::Hangup(HangupReason::Closed));
            }
            Opening::Open => {
                let mut prompts = session.ivr.greeting.clone();
                let start = session.ivr.start.clone();
                if let Some(menu) = session.ivr.menus.get(&start) {
                    prompts.extend(menu.prompts.iter().cloned());
                }
                session.play(prompts);
                session.state = State::Playing { menu: start };
            }
        }
        session
    }

    /// The caller's language now (it may have switched).
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The path so far.
    pub fn path(&self) -> &[PathStep] {
        &self.path
    }

    /// Whether the IVR has nothing more to do.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.actions.is_empty()
    }

    pub fn handle(&mut self, now: Instant, event: IvrEvent) {
        match event {
            IvrEvent::Hangup => {
                self.state = State::Done;
                self.actions.clear();
            }
            IvrEvent::PromptFinished => match std::mem::replace(&mut self.state, State::Done) {
                State::Playing { menu } => {
                    let timeout = self
                        .ivr
                        .menus
                        .get(&menu)
                        .map_or(Duration::ZERO, |m| m.timeout);
                    self.state = State::Waiting {
                        menu,
                        deadline: now + timeout,
                    };
                }
                State::Finishing { then } => self.act(then),
                other => self.state = other,
            },
            IvrEvent::Digit(digit) => {
                let menu = match &self.state {
                    State::Playing { menu } | State::Waiting { menu, .. } => menu.clone(),
                    State::Finishing { .. } | State::Done => return,
                };
                let Some(m) = self.ivr.menus.get(&menu) else {
                    return;
                };
                let digit = digit.to_ascii_uppercase();
                match m.choices.get(&digit).cloned() {
                    Some(choice) => {
                        self.path.push(PathStep {
                            menu: menu.clone(),
                            input: Input::Digit(digit),
                        });
                        self.take(&menu, choice);
                    }
                    None => {
                        self.invalid += 1;
                        if self.invalid > m.max_invalid {
                            let default = m.default.clone();
                            self.path.push(PathStep {
                                menu: menu.clone(),
                                input: Input::Invalid,
                            });
                            self.take(&menu, default);
                        } else {
                            let mut prompts = self.ivr.invalid_prompts.clone();
                            prompts.extend(m.prompts.iter().cloned());
                            self.play(prompts);
                            self.state = State::Playing { menu };
                        }
                    }
                }
            }
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<IvrAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if let State::Waiting { menu, deadline } = &self.state
            && now >= *deadline
        {
            let menu = menu.clone();
            let m = self.ivr.menus.get(&menu)?;
            self.no_input += 1;
            if self.no_input > m.max_no_input {
                let default = m.default.clone();
                self.path.push(PathStep {
                    menu: menu.clone(),
                    input: Input::NoInput,
                });
                self.take(&menu, default);
            } else {
                let mut prompts = self.ivr.no_input_prompts.clone();
                prompts.extend(m.prompts.iter().cloned());
                self.play(prompts);
                self.state = State::Playing { menu };
            }
            return self.actions.pop_front();
        }
        None
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Waiting { deadline, .. } if self.actions.is_empty() => Some(*deadline),
            _ => None,
        }
    }

    fn play(&mut self, prompts: Vec<String>) {
        self.actions.push_back(IvrAction::Play {
            language: self.language.clone(),
            prompts,
        });
    }

    /// Plays `prompts` then acts; at once when there are none.
    fn finish(&mut self, prompts: Vec<String>, then: Final) {
        if prompts.is_empty() {
            self.act(then);
        } else {
            self.play(prompts);
            self.state = State::Finishing { then };
        }
    }

    fn act(&mut self, then: Final) {
        self.state = State::Done;
        self.actions.push_back(match then {
            Final::Route {
                queue,
                skill,
                language,
            } => IvrAction::Route {
                queue,
                skill,
                language,
                path: self.path.clone(),
            },
            Final::Hangup(reason) => IvrAction::Hangup {
                reason,
                path: self.path.clone(),
            },
        });
    }

    fn take(&mut self, current: &str, choice: Choice) {
        let enter = |session: &mut IvrSession, menu: &str, mut prompts: Vec<String>| {
            session.no_input = 0;
            session.invalid = 0;
            if let Some(m) = session.ivr.menus.get(menu) {
                prompts.extend(m.prompts.iter().cloned());
            }
            session.play(prompts);
            session.state = State::Playing {
                menu: menu.to_owned(),
            };
        };
        match choice.target {
            Target::Menu { menu, language } => {
                if let Some(language) = language {
                    self.language = language;
                }
                enter(self, &menu, choice.prompts);
            }
            Target::Language(language) => {
                self.language = language;
                enter(self, current, choice.prompts);
            }
            Target::Queue {
                queue,
                skill,
                language,
            } => {
                let language = language.unwrap_or_else(|| self.language.clone());
                self.finish(
                    choice.prompts,
                    Final::Route {
                        queue,
                        skill,
                        language,
                    },
                );
            }
            Target::Hangup => self.finish(choice.prompts, Final::Hangup(HangupReason::Menu)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo city's menu (the same as in docs/media.md).
    const EXAMPLE: &str = r##"
start = "main"
language = "it"
greeting = ["welcome"]
timeout_seconds = 6
max_no_input = 2
max_invalid = 2

[menus.main]
prompts = ["menu_anagrafe", "menu_tributi", "menu_mobilita", "menu_sociale",
           "menu_edilizia", "menu_polizia_locale", "menu_scuola", "menu_aziende",
           "menu_urp", "menu_language"]
default = { queue = "urp", prompts = ["please_hold"] }

[menus.main.choices]
"1" = { queue = "anagrafe", skill = "anagrafe" }
"2" = { queue = "tributi", skill = "tributi" }
"3" = { queue = "mobilita" }
"4" = { queue = "sociale" }
"5" = { queue = "edilizia" }
"6" = { queue = "polizia_locale" }
"7" = { queue = "scuola" }
"8" = { menu = "aziende" }
"0" = { queue = "urp", prompts = ["please_hold"] }
"9" = { language = "en" }

[menus.aziende]
prompts = ["aziende_acqua", "aziende_trasporti", "menu_back"]
default = { menu = "main" }
max_no_input = 1

[menus.aziende.choices]
"1" = { queue = "acqua_rifiuti", skill = "acqua" }
"2" = { queue = "trasporti" }
"*" = { menu = "main" }
"#" = { hangup = true, prompts = ["goodbye"] }
"##;

    const QUEUES: &[&str] = &[
        "urp",
        "anagrafe",
        "tributi",
        "mobilita",
        "sociale",
        "edilizia",
        "polizia_locale",
        "scuola",
        "acqua_rifiuti",
        "trasporti",
    ];

    fn config() -> IvrConfig {
        toml::from_str(EXAMPLE).unwrap()
    }

    fn ivr() -> Arc<Ivr> {
        Arc::new(
            config()
                .validate(|q| QUEUES.contains(&q), |l| ["it", "en"].contains(&l))
                .unwrap(),
        )
    }

    fn validate(config: &IvrConfig) -> Result<Ivr, IvrConfigError> {
        config.validate(|q| QUEUES.contains(&q), |l| ["it", "en"].contains(&l))
    }

    fn drain(s: &mut IvrSession, now: Instant) -> Vec<IvrAction> {
        std::iter::from_fn(|| s.poll(now)).collect()
    }

    fn play(language: &str, prompts: &[&str]) -> IvrAction {
        IvrAction::Play {
            language: language.to_owned(),
            prompts: prompts.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn step(menu: &str, input: Input) -> PathStep {
        PathStep {
            menu: menu.to_owned(),
            input,
        }
    }

    fn main_prompts() -> Vec<String> {
        ivr().menus["main"].prompts.clone()
    }

    #[test]
    fn the_example_menu_is_valid() {
        let ivr = ivr();
        assert_eq!(ivr.menus.len(), 2);
        assert_eq!(ivr.menus["main"].choices.len(), 10);
        assert_eq!(ivr.menus["aziende"].max_no_input, 1);
        assert_eq!(ivr.menus["aziende"].max_invalid, 2);
        assert_eq!(ivr.menus["main"].timeout, Duration::from_secs(6));
        assert_eq!(ivr.closed_prompts, vec!["closed", "goodbye"]);
        let needed = ivr.prompts_needed();
        assert!(needed.contains(&("en".to_owned(), "menu_urp".to_owned())));
        assert!(needed.contains(&("it".to_owned(), "goodbye".to_owned())));
    }

    #[test]
    fn a_choice_routes_to_its_queue_with_the_path() {
        let t0 = Instant::now();
        let mut s = IvrSession::new(t0, ivr(), Opening::Open);
        let mut expected = vec!["welcome".to_owned()];
        expected.extend(main_prompts());
        assert_eq!(
            drain(&mut s, t0),
            vec![IvrAction::Play {
                language: "it".into(),
                prompts: expected
            }]
        );
        // No deadline while the prompts play; a key acts at once (barge-in).
        assert_eq!(s.next_deadline(), None);
        s.handle(t0, IvrEvent::Digit('8'));
        assert_eq!(
            drain(&mut s, t0),
            vec![play(
                "it",
                &["aziende_acqua", "aziende_trasporti", "menu_back"]
            )]
        );
        s.handle(t0, IvrEvent::PromptFinished);
        s.handle(t0, IvrEvent::Digit('1'));
        assert_eq!(
            drain(&mut s, t0),
            vec![IvrAction::Route {
                queue: "acqua_rifiuti".into(),
                skill: Some("acqua".into()),
                language: "it".into(),
                path: vec![
                    step("main", Input::Digit('8')),
                    step("aziende", Input::Digit('1'))
                ],
            }]
        );
        assert!(s.is_done());
        s.handle(t0, IvrEvent::Digit('2'));
        assert_eq!(drain(&mut s, t0), vec![]);
    }

    #[test]
    fn no_input_repeats_the_menu_then_takes_the_default() {
        let t0 = Instant::now();
        let mut s = IvrSession::new(t0, ivr(), Opening::Open);
        drain(&mut s, t0);
        let mut now = t0;
        for _ in 0..2 {
            now += Duration::from_secs(10);
            s.handle(now, IvrEvent::PromptFinished);
            assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(6)));
            assert_eq!(drain(&mut s, now + Duration::from_secs(5)), vec![]);
            now += Duration::from_secs(6);
            let mut prompts = vec!["no_input".to_owned()];
            prompts.extend(main_prompts());
            assert_eq!(
                drain(&mut s, now),
                vec![IvrAction::Play {
                    language: "it".into(),
                    prompts
                }]
            );
        }
        now += Duration::from_secs(10);
        s.handle(now, IvrEvent::PromptFinished);
        now += Duration::from_secs(6);
        // The third timeout: the default, which plays "please hold" first.
        assert_eq!(drain(&mut s, now), vec![play("it", &["please_hold"])]);
        assert_eq!(s.next_deadline(), None);
        s.handle(now, IvrEvent::Digit('1'));
        assert_eq!(
            drain(&mut s, now),
            vec![],
            "keys are ignored while the choice's prompts play"
        );
        s.handle(now, IvrEvent::PromptFinished);
        assert_eq!(
            drain(&mut s, now),
            vec![IvrAction::Route {
                queue: "urp".into(),
                skill: None,
                language: "it".into(),
                path: vec![step("main", Input::NoInput)],
            }]
        );
    }

    #[test]
    fn invalid_keys_repeat_the_menu_then_take_the_default() {
        let t0 = Instant::now();
        let mut s = IvrSession::new(t0, ivr(), Opening::Open);
        drain(&mut s, t0);
        s.handle(t0, IvrEvent::Digit('8'));
        drain(&mut s, t0);
        for _ in 0..2 {
            s.handle(t0, IvrEvent::Digit('7'));
            assert_eq!(
                drain(&mut s, t0),
                vec![play(
                    "it",
                    &["invalid", "aziende_acqua", "aziende_trasporti", "menu_back"]
                )]
            );
        }
        // The third invalid key: the default is the main menu, counters reset.
        s.handle(t0, IvrEvent::Digit('7'));
        assert_eq!(
            drain(&mut s, t0),
            vec![IvrAction::Play {
                language: "it".into(),
                prompts: main_prompts()
            }]
        );
        s.handle(t0, IvrEvent::Digit('5'));
        let Some(IvrAction::Route { queue, path, .. }) = s.poll(t0) else {
            panic!("no route")
        };
        assert_eq!(queue, "edilizia");
        let path: Vec<String> = path.iter().map(ToString::to_string).collect();
        assert_eq!(path, vec!["main:8", "aziende:invalid", "main:5"]);
    }

    #[test]
    fn the_language_switch_replays_the_menu_and_routes_with_the_language() {
        let t0 = Instant::now();
        let mut s = IvrSession::new(t0, ivr(), Opening::Open);
        drain(&mut s, t0);
        s.handle(t0, IvrEvent::PromptFinished);
        s.handle(t0, IvrEvent::Digit('9'));
        assert_eq!(
            drain(&mut s, t0),
            vec![IvrAction::Play {
                language: "en".into(),
                prompts: main_prompts()
            }]
        );
        assert_eq!(s.language(), "en");
        s.handle(t0, IvrEvent::Digit('1'));
        assert_eq!(
            drain(&mut s, t0),
            vec![IvrAction::Route {
                queue: "anagrafe".into(),
                skill: Some("anagrafe".into()),
                language: "en".into(),
                path: vec![
                    step("main", Input::Digit('9')),
                    step("main", Input::Digit('1'))
                ],
            }]
        );
    }

    #[test]
    fn closed_plays_the_message_then_hangs_up() {
        let t0 = Instant::now();
        let mut s = IvrSession::new(t0, ivr(), Opening::Closed);
        assert_eq!(drain(&mut s, t0), vec![play("it", &["closed", "goodbye"])]);
        s.handle(t0, IvrEvent::Digit('1'));
        assert_eq!(drain(&mut s, t0), vec![]);
        s.handle(t0, IvrEvent::PromptFinished);
        assert_eq!(
            drain(&mut s, t0),
            vec![IvrAction::Hangup {
                reason: HangupReason::Closed,
                path: vec![]
            }]
        );
        assert!(s.is_done());
    }

    #[test]
    fn a_hangup_choice_says_goodbye_and_the_caller_may_hang_up_first() {
        let t0 = Instant::now();
        let mut s = IvrSession::new(t0, ivr(), Opening::Open);
        s.handle(t0, IvrEvent::Digit('8'));
        s.handle(t0, IvrEvent::Digit('#'));
        let actions = drain(&mut s, t0);
        assert_eq!(actions.last(), Some(&play("it", &["goodbye"])));
        s.handle(t0, IvrEvent::PromptFinished);
        assert_eq!(
            drain(&mut s, t0),
            vec![IvrAction::Hangup {
                reason: HangupReason::Menu,
                path: vec![
                    step("main", Input::Digit('8')),
                    step("aziende", Input::Digit('#'))
                ],
            }]
        );
        // Hanging up while waiting: nothing more, no timer.
        let mut s = IvrSession::new(t0, ivr(), Opening::Open);
        s.handle(t0, IvrEvent::PromptFinished);
        s.handle(t0, IvrEvent::Hangup);
        assert_eq!(s.next_deadline(), None);
        assert_eq!(drain(&mut s, t0 + Duration::from_secs(100)), vec![]);
        assert!(s.is_done());
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut c = config();
        c.start = "nope".into();
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::UnknownStart("nope".into()))
        );

        let mut c = config();
        c.language = "xx".into();
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::UnknownDefaultLanguage("xx".into()))
        );

        let mut c = config();
        c.menus
            .get_mut("main")
            .unwrap()
            .choices
            .get_mut("8")
            .unwrap()
            .menu = Some("missing".into());
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::UnknownMenu {
                menu: "main".into(),
                choice: "8".into(),
                target: "missing".into()
            })
        );

        let mut c = config();
        c.menus
            .get_mut("main")
            .unwrap()
            .choices
            .get_mut("1")
            .unwrap()
            .queue = Some("pizza".into());
        let err = validate(&c).unwrap_err();
        assert_eq!(err.to_string(), "ivr.menus.main 1: unknown queue \"pizza\"");

        let mut c = config();
        c.menus
            .get_mut("main")
            .unwrap()
            .choices
            .get_mut("1")
            .unwrap()
            .menu = Some("aziende".into());
        assert!(matches!(
            validate(&c),
            Err(IvrConfigError::Ambiguous { .. })
        ));

        let mut c = config();
        let main = c.menus.get_mut("main").unwrap();
        main.choices.insert(
            "E".into(),
            ChoiceConfig {
                hangup: true,
                ..ChoiceConfig::default()
            },
        );
        assert!(matches!(validate(&c), Err(IvrConfigError::BadKey { ref key, .. }) if key == "E"));

        let mut c = config();
        let aziende = c.menus.get_mut("aziende").unwrap();
        aziende.choices.insert(
            "a".into(),
            ChoiceConfig {
                hangup: true,
                ..ChoiceConfig::default()
            },
        );
        aziende.choices.insert(
            "A".into(),
            ChoiceConfig {
                hangup: true,
                ..ChoiceConfig::default()
            },
        );
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::DuplicateKey {
                menu: "aziende".into(),
                key: 'A'
            })
        );

        let mut c = config();
        c.menus
            .get_mut("main")
            .unwrap()
            .choices
            .get_mut("8")
            .unwrap()
            .skill = Some("acqua".into());
        assert!(matches!(
            validate(&c),
            Err(IvrConfigError::SkillWithoutQueue { .. })
        ));

        let mut c = config();
        c.menus
            .get_mut("main")
            .unwrap()
            .choices
            .get_mut("9")
            .unwrap()
            .language = Some("de".into());
        assert!(
            matches!(validate(&c), Err(IvrConfigError::UnknownLanguage { ref language, .. }) if language == "de")
        );

        let mut c = config();
        c.menus.get_mut("aziende").unwrap().prompts.clear();
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::NoPrompts {
                menu: "aziende".into()
            })
        );

        let mut c = config();
        c.menus.get_mut("aziende").unwrap().timeout_seconds = Some(0);
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::ZeroTimeout {
                menu: "aziende".into()
            })
        );

        let mut c = config();
        let empty = ChoiceConfig::default();
        c.menus.get_mut("main").unwrap().default = empty;
        assert!(
            matches!(validate(&c), Err(IvrConfigError::Ambiguous { ref choice, .. }) if choice == "default")
        );
    }

    #[test]
    fn defaults_that_lead_back_to_each_other_are_refused() {
        let mut c = config();
        c.menus.get_mut("main").unwrap().default = ChoiceConfig {
            menu: Some("aziende".into()),
            ..ChoiceConfig::default()
        };
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::Cycle(vec!["aziende".into(), "main".into()]))
        );
        // A default that only switches language replays the same menu forever.
        let mut c = config();
        c.menus.get_mut("main").unwrap().default = ChoiceConfig {
            language: Some("en".into()),
            ..ChoiceConfig::default()
        };
        assert_eq!(
            validate(&c),
            Err(IvrConfigError::Cycle(vec!["main".into()]))
        );
        // A cycle through key presses is fine: "*" in aziende goes back to main.
        assert!(validate(&config()).is_ok());
    }

    #[test]
    fn unknown_keys_in_the_configuration_are_refused() {
        let bad = EXAMPLE.replace("max_no_input = 1", "max_no_inputs = 1");
        let err = toml::from_str::<IvrConfig>(&bad).unwrap_err();
        assert!(err.to_string().contains("max_no_inputs"), "{err}");
        let bad = EXAMPLE.replace(
            "\"3\" = { queue = \"mobilita\" }",
            "\"3\" = { queue = \"mobilita\", skil = \"x\" }",
        );
        assert!(toml::from_str::<IvrConfig>(&bad).is_err());
    }

    #[test]
    fn missing_prompts_are_found_at_start() {
        let ivr = ivr();
        assert_eq!(ivr.check_prompts(|_, _| true), Ok(()));
        assert_eq!(
            ivr.check_prompts(|l, n| !(l == "en" && n == "menu_back")),
            Err(IvrConfigError::MissingPrompt {
                language: "en".into(),
                name: "menu_back".into()
            })
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn event() -> impl Strategy<Value = (u64, Option<char>)> {
            (
                0u64..20,
                proptest::option::of(proptest::sample::select(vec![
                    '0', '1', '2', '5', '7', '8', '9', '*', '#', 'D',
                ])),
            )
        }

        #[derive(Debug, Clone)]
        enum T {
            Menu(usize),
            Queue,
            Hangup,
            Language,
        }

        fn target() -> impl Strategy<Value = T> {
            prop_oneof![
                (0usize..5).prop_map(T::Menu),
                Just(T::Queue),
                Just(T::Hangup),
                Just(T::Language),
            ]
        }

        fn choice(t: &T, menus: usize) -> ChoiceConfig {
            match t {
                T::Menu(i) => ChoiceConfig {
                    menu: Some(format!("m{}", i % menus)),
                    ..ChoiceConfig::default()
                },
                T::Queue => ChoiceConfig {
                    queue: Some("q".into()),
                    ..ChoiceConfig::default()
                },
                T::Hangup => ChoiceConfig {
                    hangup: true,
                    ..ChoiceConfig::default()
                },
                T::Language => ChoiceConfig {
                    language: Some("en".into()),
                    ..ChoiceConfig::default()
                },
            }
        }

        fn random_config() -> impl Strategy<Value = IvrConfig> {
            (1usize..5)
                .prop_flat_map(|n| {
                    proptest::collection::vec(
                        (
                            target(),
                            proptest::collection::vec(target(), 0..3),
                            0u32..3,
                            1u64..10,
                        ),
                        n,
                    )
                })
                .prop_map(|menus| {
                    let n = menus.len();
                    IvrConfig {
                        start: "m0".into(),
                        language: "it".into(),
                        greeting: vec![],
                        closed_prompts: default_closed(),
                        no_input_prompts: default_no_input(),
                        invalid_prompts: default_invalid(),
                        timeout_seconds: 5,
                        max_no_input: 1,
                        max_invalid: 1,
                        menus: menus
                            .iter()
                            .enumerate()
                            .map(|(i, (default, choices, repeats, timeout))| {
                                (
                                    format!("m{i}"),
                                    MenuConfig {
                                        prompts: vec!["p".into()],
                                        choices: choices
                                            .iter()
                                            .enumerate()
                                            .map(|(k, t)| ((k + 1).to_string(), choice(t, n)))
                                            .collect(),
                                        default: choice(default, n),
                                        timeout_seconds: Some(*timeout),
                                        max_no_input: Some(*repeats),
                                        max_invalid: None,
                                    },
                                )
                            })
                            .collect(),
                    }
                })
        }

        /// Whether a caller who never presses a key gets out of the IVR
        /// (from `menu`), by running a session.
        fn silent_caller_gets_out(ivr: &Arc<Ivr>, menu: &str) -> bool {
            let mut ivr = (**ivr).clone();
            ivr.start = menu.to_owned();
            let ivr = Arc::new(ivr);
            let mut now = Instant::now();
            let mut s = IvrSession::new(now, ivr, Opening::Open);
            for _ in 0..500 {
                while let Some(action) = s.poll(now) {
                    if !matches!(action, IvrAction::Play { .. }) {
                        return true;
                    }
                }
                s.handle(now, IvrEvent::PromptFinished);
                now += Duration::from_secs(10);
            }
            false
        }

        proptest! {
            /// Validation refuses a tree exactly when some menu traps a
            /// silent caller forever, and accepts it otherwise.
            #[test]
            fn cycle_detection_matches_what_a_silent_caller_lives_through(config in random_config()) {
                match config.validate(|q| q == "q", |l| l == "it" || l == "en") {
                    Ok(ivr) => {
                        let ivr = Arc::new(ivr);
                        for menu in ivr.menus.keys() {
                            prop_assert!(silent_caller_gets_out(&ivr, menu), "trapped in {}", menu);
                        }
                    }
                    Err(IvrConfigError::Cycle(menus)) => {
                        // Build the tree without the check to run it.
                        let mut acyclic = config.clone();
                        for m in acyclic.menus.values_mut() {
                            m.default = ChoiceConfig { hangup: true, ..ChoiceConfig::default() };
                        }
                        let mut ivr = acyclic.validate(|q| q == "q", |l| l == "it" || l == "en").unwrap();
                        for (name, m) in &config.menus {
                            let default = config.choice(name, "default", &m.default, &|q: &str| q == "q", &|_: &str| true).unwrap();
                            ivr.menus.get_mut(name).unwrap().default = default;
                        }
                        let ivr = Arc::new(ivr);
                        prop_assert!(!silent_caller_gets_out(&ivr, &menus[0]), "{:?} is not a trap", menus);
                    }
                    Err(other) => prop_assert!(false, "unexpected {}", other),
                }
            }

            /// Whatever the caller does, the session ends with exactly one
            /// route or hang-up (or is still in a menu), every route goes
            /// to a configured queue, and the path only names menus that
            /// exist.
            #[test]
            fn any_caller_gets_one_outcome(events in proptest::collection::vec(event(), 0..80)) {
                let ivr = ivr();
                let t0 = Instant::now();
                let mut now = t0;
                let mut s = IvrSession::new(now, ivr.clone(), Opening::Open);
                let mut outcomes = Vec::new();
                let collect = |s: &mut IvrSession, now: Instant, outcomes: &mut Vec<IvrAction>| {
                    while let Some(a) = s.poll(now) {
                        if !matches!(a, IvrAction::Play { .. }) {
                            outcomes.push(a);
                        }
                    }
                };
                for (seconds, key) in events {
                    now += Duration::from_secs(seconds);
                    collect(&mut s, now, &mut outcomes);
                    match key {
                        Some(k) => s.handle(now, IvrEvent::Digit(k)),
                        None => s.handle(now, IvrEvent::PromptFinished),
                    }
                    collect(&mut s, now, &mut outcomes);
                }
                // Then the caller stays silent: the defaults end the IVR.
                for _ in 0..20 {
                    s.handle(now, IvrEvent::PromptFinished);
                    now += Duration::from_secs(7);
                    collect(&mut s, now, &mut outcomes);
                }
                prop_assert_eq!(outcomes.len(), 1);
                prop_assert!(s.is_done());
                match &outcomes[0] {
                    IvrAction::Route { queue, path, .. } => {
                        prop_assert!(QUEUES.contains(&queue.as_str()));
                        prop_assert!(path.iter().all(|p| ivr.menus.contains_key(&p.menu)));
                    }
                    IvrAction::Hangup { reason, .. } => prop_assert_eq!(*reason, HangupReason::Menu),
                    IvrAction::Play { .. } => prop_assert!(false),
                }
            }
        }
    }
}
