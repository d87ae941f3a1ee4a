//! Announcements to waiting callers: numbers and waits spoken from
//! prompts, and the sans-IO [`QueueAnnouncer`] that alternates hold music
//! with "you are number 3 in the queue, the estimated wait is 4 minutes"
//! and listens for the callback key.
//!
//! Numbers are composed from the prompt set's `number_1` … `number_20` and
//! the tens `number_30` … `number_90` (23 is "venti" "tre"); anything
//! above 99 is said as 99, which a caller hears as "a long wait" rather than
//! a precise figure nobody can promise anyway.
//!
//! ```
//! use std::time::Duration;
//! use ccu_channels::media::announce::position_and_wait;
//!
//! assert_eq!(
//!     position_and_wait(Some(3), Some(Duration::from_secs(220))),
//!     ["you_are_number", "number_3", "in_queue", "wait_is", "number_4", "minutes"],
//! );
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The largest number the prompt sets can say.
pub const MAX_NUMBER: u32 = 99;

/// The prompt names that say `n` (1–99; larger numbers say 99, 0 says
/// nothing).
pub fn number(n: u32) -> Vec<String> {
    let n = n.min(MAX_NUMBER);
    match n {
        0 => Vec::new(),
        1..=20 => vec![format!("number_{n}")],
        _ => {
            let mut out = vec![format!("number_{}", n / 10 * 10)];
            if !n.is_multiple_of(10) {
                out.push(format!("number_{}", n % 10));
            }
            out
        }
    }
}

/// "you are number N in the queue" and "the estimated wait is M minutes"
/// (rounded up; "less than a minute" under 60 s), each part left out when
/// unknown.
pub fn position_and_wait(position: Option<u32>, wait: Option<Duration>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(position) = position.filter(|&p| p > 0) {
        out.push("you_are_number".to_owned());
        out.extend(number(position));
        out.push("in_queue".to_owned());
    }
    if let Some(wait) = wait {
        out.push("wait_is".to_owned());
        let minutes = wait.as_secs().div_ceil(60);
        if wait < Duration::from_secs(60) {
            out.push("less_than_a_minute".to_owned());
        } else {
            let minutes = u32::try_from(minutes).unwrap_or(u32::MAX);
            out.extend(number(minutes));
            out.push(if minutes == 1 { "minute" } else { "minutes" }.to_owned());
        }
    }
    out
}

/// How the announcer behaves; serde for the queue's voice settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnouncerConfig {
    /// Seconds of music between announcements (`[routing]
    /// announce_every_seconds`).
    pub every_seconds: u64,
    /// The key that asks for a callback; `None`: no callback offered.
    pub callback_key: Option<char>,
    /// The music prompt (under `config/prompts/music/`).
    pub music: String,
}

impl Default for AnnouncerConfig {
    fn default() -> AnnouncerConfig {
        AnnouncerConfig {
            every_seconds: 60,
            callback_key: Some('9'),
            music: "hold".to_owned(),
        }
    }
}

/// What the routing engine says about the waiting call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStatus {
    pub position: Option<u32>,
    pub estimated_wait: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnouncerEvent {
    /// New position or estimate (used at the next announcement).
    Status(QueueStatus),
    Digit(char),
    /// The prompts of the last [`AnnouncerAction::Play`] have been played.
    PromptFinished,
    /// The call left the queue (answered, abandoned, transferred).
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnnouncerAction {
    /// Play these prompts (in the caller's language), instead of the music.
    Play(Vec<String>),
    /// Loop this music prompt until the next action.
    Music(String),
    /// The caller pressed the callback key: keep the place, ring back.
    CallbackRequested,
    /// The confirmation has been played: hang up the call.
    Hangup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Announcing,
    Music { next: Instant },
    Confirming,
    Done,
}

/// Music and announcements for one waiting call, sans-IO.
#[derive(Debug, Clone)]
pub struct QueueAnnouncer {
    config: AnnouncerConfig,
    status: QueueStatus,
    state: State,
    actions: VecDeque<AnnouncerAction>,
}

impl QueueAnnouncer {
    /// Starts with "please hold", the position and wait when known, and the
    /// callback offer.
    pub fn new(config: AnnouncerConfig, status: QueueStatus) -> QueueAnnouncer {
        let mut announcer = QueueAnnouncer {
            config,
            status,
            state: State::Announcing,
            actions: VecDeque::new(),
        };
        let mut prompts = vec!["please_hold".to_owned()];
        prompts.extend(announcer.announcement());
        announcer.actions.push_back(AnnouncerAction::Play(prompts));
        announcer
    }

    fn announcement(&self) -> Vec<String> {
        let mut prompts = position_and_wait(self.status.position, self.status.estimated_wait);
        if self.config.callback_key.is_some() {
            prompts.push("callback_offer".to_owned());
        }
        prompts
    }

    pub fn handle(&mut self, now: Instant, event: AnnouncerEvent) {
        match event {
            AnnouncerEvent::Status(status) => self.status = status,
            AnnouncerEvent::Stop => {
                self.state = State::Done;
                self.actions.clear();
            }
            AnnouncerEvent::Digit(key) => {
                let wanted = self
                    .config
                    .callback_key
                    .is_some_and(|k| k.eq_ignore_ascii_case(&key));
                if wanted && matches!(self.state, State::Announcing | State::Music { .. }) {
                    self.state = State::Confirming;
                    self.actions.clear();
                    self.actions.push_back(AnnouncerAction::CallbackRequested);
                    self.actions.push_back(AnnouncerAction::Play(vec![
                        "callback_confirmed".to_owned(),
                        "goodbye".to_owned(),
                    ]));
                }
            }
            AnnouncerEvent::PromptFinished => match self.state {
                State::Announcing => {
                    self.state = State::Music {
                        next: now + Duration::from_secs(self.config.every_seconds.max(1)),
                    };
                    self.actions
                        .push_back(AnnouncerAction::Music(self.config.music.clone()));
                }
                State::Confirming => {
                    self.state = State::Done;
                    self.actions.push_back(AnnouncerAction::Hangup);
                }
                State::Music { .. } | State::Done => {}
            },
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<AnnouncerAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if let State::Music { next } = self.state
            && now >= next
        {
            self.state = State::Announcing;
            return Some(AnnouncerAction::Play(self.announcement()));
        }
        None
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Music { next } if self.actions.is_empty() => Some(next),
            _ => None,
        }
    }

    /// Whether the announcer is finished (stopped or hung up).
    pub fn is_done(&self) -> bool {
        self.state == State::Done && self.actions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn numbers_are_composed_from_units_teens_and_tens() {
        assert_eq!(number(0), Vec::<String>::new());
        assert_eq!(number(1), names(&["number_1"]));
        assert_eq!(number(17), names(&["number_17"]));
        assert_eq!(number(20), names(&["number_20"]));
        assert_eq!(number(23), names(&["number_20", "number_3"]));
        assert_eq!(number(40), names(&["number_40"]));
        assert_eq!(number(99), names(&["number_90", "number_9"]));
        assert_eq!(number(1000), number(99));
    }

    #[test]
    fn waits_round_up_to_minutes() {
        assert_eq!(position_and_wait(None, None), Vec::<String>::new());
        assert_eq!(
            position_and_wait(None, Some(Duration::from_secs(30))),
            names(&["wait_is", "less_than_a_minute"])
        );
        assert_eq!(
            position_and_wait(None, Some(Duration::from_secs(60))),
            names(&["wait_is", "number_1", "minute"])
        );
        assert_eq!(
            position_and_wait(Some(1), Some(Duration::from_secs(61))),
            names(&[
                "you_are_number",
                "number_1",
                "in_queue",
                "wait_is",
                "number_2",
                "minutes"
            ])
        );
        assert_eq!(position_and_wait(Some(0), None), Vec::<String>::new());
    }

    fn drain(a: &mut QueueAnnouncer, now: Instant) -> Vec<AnnouncerAction> {
        std::iter::from_fn(|| a.poll(now)).collect()
    }

    #[test]
    fn alternates_announcements_and_music_with_the_latest_status() {
        let t0 = Instant::now();
        let status = QueueStatus {
            position: Some(3),
            estimated_wait: Some(Duration::from_secs(240)),
        };
        let mut a = QueueAnnouncer::new(AnnouncerConfig::default(), status);
        assert_eq!(
            drain(&mut a, t0),
            vec![AnnouncerAction::Play(names(&[
                "please_hold",
                "you_are_number",
                "number_3",
                "in_queue",
                "wait_is",
                "number_4",
                "minutes",
                "callback_offer"
            ]))]
        );
        assert_eq!(
            a.next_deadline(),
            None,
            "nothing due while the prompts play"
        );
        let t1 = t0 + Duration::from_secs(8);
        a.handle(t1, AnnouncerEvent::PromptFinished);
        assert_eq!(
            drain(&mut a, t1),
            vec![AnnouncerAction::Music("hold".into())]
        );
        assert_eq!(a.next_deadline(), Some(t1 + Duration::from_secs(60)));
        a.handle(
            t1,
            AnnouncerEvent::Status(QueueStatus {
                position: Some(2),
                estimated_wait: None,
            }),
        );
        assert_eq!(drain(&mut a, t1 + Duration::from_secs(59)), vec![]);
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!(
            drain(&mut a, t2),
            vec![AnnouncerAction::Play(names(&[
                "you_are_number",
                "number_2",
                "in_queue",
                "callback_offer"
            ]))]
        );
        // A key other than the callback key does nothing.
        a.handle(t2, AnnouncerEvent::Digit('5'));
        assert_eq!(drain(&mut a, t2), vec![]);
        a.handle(t2, AnnouncerEvent::Stop);
        assert!(a.is_done());
        a.handle(t2, AnnouncerEvent::PromptFinished);
        assert_eq!(drain(&mut a, t2 + Duration::from_secs(600)), vec![]);
    }

    #[test]
    fn the_callback_key_requests_a_callback_then_hangs_up() {
        let t0 = Instant::now();
        let mut a = QueueAnnouncer::new(AnnouncerConfig::default(), QueueStatus::default());
        assert_eq!(
            drain(&mut a, t0),
            vec![AnnouncerAction::Play(names(&[
                "please_hold",
                "callback_offer"
            ]))]
        );
        a.handle(t0, AnnouncerEvent::PromptFinished);
        drain(&mut a, t0);
        a.handle(t0, AnnouncerEvent::Digit('9'));
        assert_eq!(
            drain(&mut a, t0),
            vec![
                AnnouncerAction::CallbackRequested,
                AnnouncerAction::Play(names(&["callback_confirmed", "goodbye"]))
            ]
        );
        // Pressing again while the confirmation plays: one request only.
        a.handle(t0, AnnouncerEvent::Digit('9'));
        assert_eq!(drain(&mut a, t0), vec![]);
        assert_eq!(a.next_deadline(), None);
        a.handle(t0, AnnouncerEvent::PromptFinished);
        assert_eq!(drain(&mut a, t0), vec![AnnouncerAction::Hangup]);
        assert!(a.is_done());
    }

    #[test]
    fn without_a_callback_key_there_is_no_offer() {
        let config = AnnouncerConfig {
            callback_key: None,
            ..AnnouncerConfig::default()
        };
        let t0 = Instant::now();
        let mut a = QueueAnnouncer::new(config, QueueStatus::default());
        assert_eq!(
            drain(&mut a, t0),
            vec![AnnouncerAction::Play(names(&["please_hold"]))]
        );
        a.handle(t0, AnnouncerEvent::Digit('9'));
        assert_eq!(drain(&mut a, t0), vec![]);
    }
}
