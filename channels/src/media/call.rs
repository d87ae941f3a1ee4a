//! The media of one call from answer to hang-up, sans-IO: the relay, the
//! player and whichever of the IVR or the queue announcer is in charge,
//! joined so that the server's voice task only moves datagrams and SIP
//! events in and carries actions out.
//!
//! Stages: **IVR** (prompts from the menu, digits to the [`IvrSession`])
//! → **queued** (after [`CallAction::Route`] the server tells us the queue
//! status; announcements, music, the callback key) → **bridged** (the
//! operator's phone answered) ⇄ **held** (music to the caller, nothing to
//! the phone) → **ended**. A transfer detaches the phone and either attaches
//! another one or goes back to the queue; the caller hears one stream
//! throughout (see [`super::relay`]).
//!
//! ```text
//!  server                                   CallMedia
//!  datagram on leg A/B  ── Received ──────▶ relay ─▶ Digit ─▶ IVR / announcer
//!  SIP INFO body        ── InfoDigit ─────▶            │ Play/Music
//!  routing: position    ── QueueStatus ───▶            ▼
//!  operator answered    ── OperatorAnswered▶ player ─▶ Local packets ─▶ relay
//!  re-INVITE hold       ── Hold / Unhold ──▶
//!  BYE, CANCEL          ── End ───────────▶
//!                       ◀── Send{leg,to,bytes} · Route · CallbackRequested · Hangup · MediaTimeout
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::announce::{
    AnnouncerAction, AnnouncerConfig, AnnouncerEvent, QueueAnnouncer, QueueStatus,
};
use super::g711::Law;
use super::player::{MUSIC, PlayItem, Player, PlayerOutput, PromptLibrary};
use super::relay::{
    Leg, LegMedia, Relay, RelayAction, RelayConfig, RelayEvent, Source, StreamStart,
};
use crate::ivr::{HangupReason, Ivr, IvrAction, IvrEvent, IvrSession, Opening, PathStep};

/// Configuration of the call's media; serde for the server's `[voice]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallMediaConfig {
    pub relay: RelayConfig,
    pub announcer: AnnouncerConfig,
    /// The longest voice message a caller may leave (the queue's maximum
    /// wait with `voicemail`), in seconds.
    pub voicemail_seconds: u64,
}

impl Default for CallMediaConfig {
    fn default() -> CallMediaConfig {
        CallMediaConfig {
            relay: RelayConfig::default(),
            announcer: AnnouncerConfig::default(),
            voicemail_seconds: 120,
        }
    }
}

/// The prompt before a voice message, and the tone after it (under
/// `music/`: it has no language).
pub const VOICEMAIL_PROMPT: &str = "voicemail";
pub const VOICEMAIL_TONE: &str = "beep";

/// The random numbers RFC 3550 §5.1 wants, drawn by the server: the
/// caller's stream and the player's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallStreams {
    pub caller: StreamStart,
    pub player: StreamStart,
}

/// Input from the server.
#[derive(Debug, Clone, Copy)]
pub enum CallEvent<'a> {
    /// A datagram on a leg's socket.
    Received {
        leg: Leg,
        from: SocketAddr,
        bytes: &'a [u8],
    },
    /// A key from a SIP INFO body ([`super::dtmf::parse_info`]).
    InfoDigit(char),
    /// The routing engine's view of the waiting call (position, estimate).
    QueueStatus(QueueStatus),
    /// The operator's phone answered (or, with a phone already attached, a
    /// transfer's new phone answered: the old one is detached).
    OperatorAnswered {
        media: &'a LegMedia,
        start: StreamStart,
    },
    /// New SDP from the operator's phone (re-INVITE) that is not a hold.
    OperatorMedia(&'a LegMedia),
    /// The operator's phone (or the console) put the caller on hold.
    Hold,
    Unhold,
    /// The operator's leg ended but the caller stays: back to the queue
    /// (a transfer to a queue, or a blind transfer still ringing).
    Requeue(QueueStatus),
    /// The chosen queue is closed (its hours, looked up by the server
    /// when the IVR routed): the closed prompts, then a hang-up.
    QueueClosed,
    /// The queue's maximum wait (the router's notice). With `callback` the
    /// place is kept: the caller hears they will be called back; without,
    /// the maximum-wait message. Then a hang-up.
    MaxWait {
        callback: bool,
    },
    /// The queue's maximum wait with `voicemail`: the caller hears the
    /// voicemail prompt and the tone, and what they say is recorded until
    /// they hang up or `voicemail_seconds` pass (then `goodbye` and a
    /// hang-up). The place is kept (a callback).
    Voicemail,
    /// The call ended (either side hung up, or the console did).
    End,
}

/// What the server must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallAction {
    /// Send from the leg's socket.
    Send {
        leg: Leg,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The IVR chose a queue: hand the call to routing, record the path.
    Route {
        queue: String,
        skill: Option<String>,
        language: String,
        path: Vec<PathStep>,
    },
    /// The caller asked to be called back (the queue's callback key).
    CallbackRequested,
    /// The caller's voice message (8 kHz PCM), once it is over (at the
    /// time limit, or when the call ended during it).
    VoiceMessage { samples: Vec<i16> },
    /// Hang up the caller.
    Hangup {
        reason: CallHangup,
        path: Vec<PathStep>,
    },
    /// A leg sent no media for the configured time (a dead phone, a lost
    /// BYE): the server decides (usually a hang-up).
    MediaTimeout { leg: Leg },
}

/// Why the media layer asks for a hang-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallHangup {
    /// Outside opening hours, after the closed message.
    Closed,
    /// An IVR choice (or default) said so.
    Menu,
    /// The callback was confirmed to the caller.
    CallbackConfirmed,
    /// The maximum wait was reached; the caller heard the message.
    MaxWait,
    /// The caller left a voice message (the time limit ended it).
    Voicemail,
}

/// A voice message as it is recorded: 8 kHz linear samples placed by
/// their RTP timestamps (one timestamp unit per G.711 sample, RFC 3551
/// §4.5.14), so that lost packets and a phone's silence suppression leave
/// silence and duplicates or reordered packets fall in their place. A
/// packet from another stream (SSRC), or whose timestamp jumps more than a
/// second back or five ahead (a source that restarted its clock), carries
/// on from the end instead; one from before the first packet is left out.
/// Nothing is kept past the limit, however fast or large the packets come.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Recording {
    samples: Vec<i16>,
    /// The stream, a timestamp of it and the sample that timestamp is at.
    base: Option<(u32, u32, i64)>,
    max_samples: usize,
}

impl Recording {
    const BACK: i64 = 8_000;
    const AHEAD: i64 = 5 * 8_000;

    /// The longest message, bounded whatever the configuration says.
    fn limit(seconds: u64) -> Duration {
        Duration::from_secs(seconds.clamp(1, MAX_VOICEMAIL_SECONDS))
    }

    fn new(seconds: u64) -> Recording {
        let max = Recording::limit(seconds).as_secs() * 8000;
        Recording {
            samples: Vec::new(),
            base: None,
            max_samples: usize::try_from(max).unwrap_or(usize::MAX),
        }
    }

    fn add(&mut self, ssrc: u32, timestamp: u32, law: Law, payload: &[u8]) {
        let len = i64::try_from(self.samples.len()).unwrap_or(i64::MAX);
        let placed = self.base.and_then(|(stream, base_ts, base_at)| {
            let delta = i64::from(timestamp.wrapping_sub(base_ts) as i32);
            (stream == ssrc).then_some(base_at + delta)
        });
        let at = match placed {
            // Before the recording began (a late packet of before the tone).
            Some(at) if (-Recording::BACK..0).contains(&at) && len < Recording::BACK => return,
            Some(at)
                if at >= 0 && (len - Recording::BACK..=len + Recording::AHEAD).contains(&at) =>
            {
                at
            }
            // A new stream, a clock that jumped, or the first packet.
            _ => {
                self.base = Some((ssrc, timestamp, len));
                len
            }
        };
        let offset = usize::try_from(at).unwrap_or(usize::MAX);
        if offset >= self.max_samples {
            return;
        }
        let end = offset.saturating_add(payload.len()).min(self.max_samples);
        if self.samples.len() < end {
            self.samples.resize(end, 0);
        }
        for (slot, &code) in self.samples[offset..end].iter_mut().zip(payload) {
            *slot = law.decode(code);
        }
    }
}

/// The longest voice message there can be (`voice.media.voicemail_seconds`
/// is checked against it at start-up too).
pub const MAX_VOICEMAIL_SECONDS: u64 = 600;

enum Stage {
    Ivr(IvrSession),
    /// Routed, waiting for the first [`CallEvent::QueueStatus`]: music.
    Routing,
    Queued(QueueAnnouncer),
    Bridged,
    Held,
    /// Playing the closed (or maximum-wait) prompts before the hang-up
    /// for this reason.
    Closing(CallHangup),
    /// The voicemail prompt and tone play (`until` is `None`), then the
    /// caller's audio is recorded until `until`.
    Voicemail {
        recording: Recording,
        until: Option<Instant>,
    },
    Ended,
}

/// One call's media. See the module documentation.
pub struct CallMedia {
    config: CallMediaConfig,
    library: Arc<PromptLibrary>,
    relay: Relay,
    player: Player,
    stage: Stage,
    language: String,
    path: Vec<PathStep>,
    closed_prompts: Vec<String>,
    actions: VecDeque<CallAction>,
}

impl CallMedia {
    /// Answers the call's media: the IVR starts at once (or the closed
    /// message, when `opening` says so).
    pub fn new(
        now: Instant,
        config: CallMediaConfig,
        library: Arc<PromptLibrary>,
        ivr: Arc<Ivr>,
        opening: Opening,
        caller: LegMedia,
        streams: CallStreams,
    ) -> CallMedia {
        let law = caller.law;
        let relay = Relay::new(config.relay, now, caller, streams.caller);
        let player = Player::new(
            law,
            streams.player.ssrc,
            streams.player.sequence,
            streams.player.timestamp,
        );
        let language = ivr.language.clone();
        let closed_prompts = ivr.closed_prompts.clone();
        CallMedia {
            config,
            library,
            relay,
            player,
            stage: Stage::Ivr(IvrSession::new(now, ivr, opening)),
            language,
            path: Vec::new(),
            closed_prompts,
            actions: VecDeque::new(),
        }
    }

    /// The caller's language (after any switch in the IVR).
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The relay, for its counters and latched addresses.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// Whether the call's media has ended.
    pub fn is_ended(&self) -> bool {
        matches!(self.stage, Stage::Ended) && self.actions.is_empty()
    }

    pub fn handle(&mut self, now: Instant, event: CallEvent<'_>) {
        match event {
            CallEvent::Received { leg, from, bytes } => {
                if !matches!(self.stage, Stage::Ended) {
                    self.relay
                        .handle(now, RelayEvent::Received { leg, from, bytes });
                }
            }
            CallEvent::InfoDigit(digit) => self.digit(now, digit),
            CallEvent::QueueStatus(status) => match &mut self.stage {
                Stage::Routing => self.queue(status),
                Stage::Queued(announcer) => announcer.handle(now, AnnouncerEvent::Status(status)),
                _ => {}
            },
            CallEvent::OperatorAnswered { media, start } => {
                if matches!(self.stage, Stage::Ended) {
                    return;
                }
                self.relay.detach(Leg::B);
                self.relay.attach(now, Leg::B, media.clone(), start);
                self.relay.bridge();
                self.player.stop();
                self.stage = Stage::Bridged;
            }
            CallEvent::OperatorMedia(media) => {
                self.relay.update(now, Leg::B, media.clone());
            }
            CallEvent::Hold => {
                if matches!(self.stage, Stage::Bridged) {
                    self.relay.set_source(Leg::A, Source::Local);
                    self.relay.set_source(Leg::B, Source::Silent);
                    self.relay.expect_media(now, Leg::B, false);
                    self.music(now);
                    self.stage = Stage::Held;
                }
            }
            CallEvent::Unhold => {
                if matches!(self.stage, Stage::Held) {
                    self.player.stop();
                    self.relay.bridge();
                    self.relay.expect_media(now, Leg::B, true);
                    self.stage = Stage::Bridged;
                }
            }
            CallEvent::Requeue(status) => {
                if matches!(self.stage, Stage::Ended) {
                    return;
                }
                self.relay.detach(Leg::B);
                self.relay.set_source(Leg::A, Source::Local);
                self.queue(status);
            }
            CallEvent::QueueClosed => {
                if matches!(self.stage, Stage::Routing | Stage::Queued(_)) {
                    self.stage = Stage::Closing(CallHangup::Closed);
                    let prompts = self.closed_prompts.clone();
                    self.play(now, &prompts);
                }
            }
            CallEvent::MaxWait { callback } => {
                if matches!(self.stage, Stage::Routing | Stage::Queued(_)) {
                    let (reason, first) = if callback {
                        (CallHangup::CallbackConfirmed, "callback_confirmed")
                    } else {
                        (CallHangup::MaxWait, "max_wait")
                    };
                    self.stage = Stage::Closing(reason);
                    self.play(now, &[first.to_owned(), "goodbye".to_owned()]);
                }
            }
            CallEvent::Voicemail => {
                if matches!(self.stage, Stage::Routing | Stage::Queued(_)) {
                    self.stage = Stage::Voicemail {
                        recording: Recording::new(self.config.voicemail_seconds),
                        until: None,
                    };
                    let mut items: Vec<PlayItem> = self
                        .library
                        .get(&self.language, VOICEMAIL_PROMPT)
                        .map(PlayItem::Prompt)
                        .into_iter()
                        .collect();
                    items.extend(
                        self.library
                            .get(MUSIC, VOICEMAIL_TONE)
                            .map(PlayItem::Prompt),
                    );
                    self.player.play(now, items);
                }
            }
            CallEvent::End => {
                let message = self.take_message();
                self.player.stop();
                self.relay.detach(Leg::B);
                self.relay.set_source(Leg::A, Source::Silent);
                self.stage = Stage::Ended;
                self.actions.clear();
                if let Some(samples) = message {
                    self.actions.push_back(CallAction::VoiceMessage { samples });
                }
            }
        }
    }

    /// The message being recorded, if any (the recording stops).
    fn take_message(&mut self) -> Option<Vec<i16>> {
        match &mut self.stage {
            Stage::Voicemail {
                recording,
                until: Some(_),
            } => {
                self.relay.listen(Leg::A, false);
                Some(std::mem::take(&mut recording.samples))
            }
            _ => None,
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<CallAction> {
        loop {
            if let Some(action) = self.actions.pop_front() {
                return Some(action);
            }
            if !self.step(now) {
                return None;
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let stage = match &self.stage {
            Stage::Ivr(ivr) => ivr.next_deadline(),
            Stage::Queued(announcer) => announcer.next_deadline(),
            Stage::Voicemail { until, .. } => *until,
            _ => None,
        };
        [
            self.relay.next_deadline(),
            self.player.next_deadline(),
            stage,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn queue(&mut self, status: QueueStatus) {
        self.stage = Stage::Queued(QueueAnnouncer::new(self.config.announcer.clone(), status));
    }

    fn music(&mut self, now: Instant) {
        let name = &self.config.announcer.music;
        match self.library.get(MUSIC, name) {
            Some(music) => self.player.play(now, [PlayItem::Loop(music)]),
            None => self.player.stop(),
        }
    }

    /// Plays the prompts that exist; with none, the engine hears
    /// `PromptFinished` at once (from the player), so no one waits for
    /// prompts that will never play.
    fn play(&mut self, now: Instant, names: &[String]) {
        let items: Vec<PlayItem> = names
            .iter()
            .filter_map(|name| self.library.get(&self.language, name))
            .map(PlayItem::Prompt)
            .collect();
        self.player.play(now, items);
    }

    fn digit(&mut self, now: Instant, digit: char) {
        match &mut self.stage {
            Stage::Ivr(ivr) => ivr.handle(now, IvrEvent::Digit(digit)),
            Stage::Queued(announcer) => announcer.handle(now, AnnouncerEvent::Digit(digit)),
            _ => {}
        }
    }

    /// One round over the engines; whether anything happened.
    fn step(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        while let Some(action) = self.relay.poll(now) {
            progressed = true;
            match action {
                RelayAction::Send { leg, to, bytes } => {
                    self.actions.push_back(CallAction::Send { leg, to, bytes });
                }
                RelayAction::Digit { leg: Leg::A, digit } => self.digit(now, digit.digit),
                RelayAction::Digit { leg: Leg::B, .. } | RelayAction::Latched { .. } => {}
                RelayAction::Heard {
                    leg: Leg::A,
                    law,
                    ssrc,
                    timestamp,
                    payload,
                } => {
                    if let Stage::Voicemail {
                        recording,
                        until: Some(_),
                    } = &mut self.stage
                    {
                        recording.add(ssrc, timestamp, law, &payload);
                    }
                }
                RelayAction::Heard { .. } => {}
                RelayAction::MediaTimeout { leg } => {
                    self.actions.push_back(CallAction::MediaTimeout { leg });
                }
            }
        }
        while let Some(output) = self.player.poll(now) {
            progressed = true;
            match output {
                PlayerOutput::Packet(bytes) => {
                    self.relay.handle(
                        now,
                        RelayEvent::Local {
                            leg: Leg::A,
                            bytes: &bytes,
                        },
                    );
                }
                PlayerOutput::Finished => match &mut self.stage {
                    Stage::Ivr(ivr) => ivr.handle(now, IvrEvent::PromptFinished),
                    Stage::Queued(announcer) => {
                        announcer.handle(now, AnnouncerEvent::PromptFinished)
                    }
                    Stage::Closing(reason) => {
                        let reason = *reason;
                        let path = self.path.clone();
                        self.end_with(CallAction::Hangup { reason, path });
                    }
                    Stage::Voicemail { until, .. } if until.is_none() => {
                        // After the tone: the caller speaks.
                        *until = Some(now + Recording::limit(self.config.voicemail_seconds));
                        self.relay.listen(Leg::A, true);
                    }
                    _ => {}
                },
            }
        }
        match &mut self.stage {
            Stage::Ivr(ivr) => {
                if let Some(action) = ivr.poll(now) {
                    progressed = true;
                    match action {
                        IvrAction::Play { language, prompts } => {
                            self.language = language;
                            self.play(now, &prompts);
                        }
                        IvrAction::Route {
                            queue,
                            skill,
                            language,
                            path,
                        } => {
                            self.language = language.clone();
                            self.path = path.clone();
                            self.actions.push_back(CallAction::Route {
                                queue,
                                skill,
                                language,
                                path,
                            });
                            // Music until routing says where the call
                            // stands, so the first announcement has it.
                            self.stage = Stage::Routing;
                            self.music(now);
                        }
                        IvrAction::Hangup { reason, path } => {
                            self.path = path.clone();
                            let reason = match reason {
                                HangupReason::Closed => CallHangup::Closed,
                                HangupReason::Menu => CallHangup::Menu,
                            };
                            self.end_with(CallAction::Hangup { reason, path });
                        }
                    }
                }
            }
            Stage::Queued(announcer) => {
                if let Some(action) = announcer.poll(now) {
                    progressed = true;
                    match action {
                        AnnouncerAction::Play(prompts) => self.play(now, &prompts),
                        AnnouncerAction::Music(_) => self.music(now),
                        AnnouncerAction::CallbackRequested => {
                            self.actions.push_back(CallAction::CallbackRequested);
                        }
                        AnnouncerAction::Hangup => {
                            let path = self.path.clone();
                            self.end_with(CallAction::Hangup {
                                reason: CallHangup::CallbackConfirmed,
                                path,
                            });
                        }
                    }
                }
            }
            Stage::Voicemail {
                until: Some(until), ..
            } if now >= *until => {
                progressed = true;
                if let Some(samples) = self.take_message() {
                    self.actions.push_back(CallAction::VoiceMessage { samples });
                }
                self.stage = Stage::Closing(CallHangup::Voicemail);
                self.play(now, &["goodbye".to_owned()]);
            }
            Stage::Routing
            | Stage::Bridged
            | Stage::Held
            | Stage::Closing(_)
            | Stage::Voicemail { .. }
            | Stage::Ended => {}
        }
        progressed
    }

    fn end_with(&mut self, action: CallAction) {
        self.player.stop();
        self.relay.set_source(Leg::A, Source::Silent);
        self.stage = Stage::Ended;
        self.actions.push_back(action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ivr::{Input, IvrConfig};
    use crate::media::g711::Law;
    use crate::media::player::Prompt;
    use crate::media::rtp::{self, PacketBuilder};
    use std::time::Duration;

    const CALLER: &str = "192.0.2.10:4000";
    const PHONE: &str = "10.0.0.5:5004";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Prompts of a few frames each, so the tests run in few steps.
    fn library() -> Arc<PromptLibrary> {
        let mut library = PromptLibrary::default();
        for language in ["it", "en"] {
            for name in [
                "welcome",
                "menu",
                "invalid",
                "no_input",
                "closed",
                "goodbye",
                "please_hold",
                "you_are_number",
                "number_2",
                "in_queue",
                "callback_offer",
                "callback_confirmed",
                "max_wait",
                "voicemail",
            ] {
                library.insert(language, Prompt::from_samples(name, vec![1000; 320]));
            }
        }
        library.insert(MUSIC, Prompt::from_samples("hold", vec![500; 1600]));
        library.insert(MUSIC, Prompt::from_samples("beep", vec![3000; 160]));
        Arc::new(library)
    }

    fn ivr() -> Arc<Ivr> {
        let config: IvrConfig = toml::from_str(
            r#"
            start = "main"
            language = "it"
            greeting = ["welcome"]
            [menus.main]
            prompts = ["menu"]
            default = { hangup = true, prompts = ["goodbye"] }
            [menus.main.choices]
            "1" = { queue = "anagrafe", skill = "anagrafe" }
            "9" = { language = "en" }
            "#,
        )
        .unwrap();
        Arc::new(config.validate(|_| true, |_| true).unwrap())
    }

    fn caller() -> LegMedia {
        LegMedia {
            remote: addr(CALLER),
            signalling_ip: None,
            law: Law::Ulaw,
            payload_type: 0,
            telephone_event: Some(101),
        }
    }

    fn phone() -> LegMedia {
        LegMedia {
            remote: addr(PHONE),
            signalling_ip: None,
            law: Law::Alaw,
            payload_type: 8,
            telephone_event: None,
        }
    }

    fn streams() -> CallStreams {
        CallStreams {
            caller: StreamStart {
                ssrc: 0xCA11,
                sequence: 100,
                timestamp: 0,
            },
            player: StreamStart {
                ssrc: 0x9,
                sequence: 0,
                timestamp: 0,
            },
        }
    }

    /// Runs the call until `until`, polling at every deadline; returns the
    /// actions other than the caller's audio, and the caller's packets.
    fn run_until(
        call: &mut CallMedia,
        from: Instant,
        until: Instant,
    ) -> (Vec<CallAction>, Vec<Vec<u8>>) {
        let mut other = Vec::new();
        let mut audio = Vec::new();
        let mut now = from;
        loop {
            while let Some(action) = call.poll(now) {
                match action {
                    CallAction::Send {
                        leg: Leg::A, bytes, ..
                    } => audio.push(bytes),
                    a => other.push(a),
                }
            }
            match call.next_deadline() {
                Some(d) if d <= until => now = d.max(now),
                _ => return (other, audio),
            }
        }
    }

    fn call(opening: Opening) -> (CallMedia, Instant) {
        let t0 = Instant::now();
        let mut config = CallMediaConfig::default();
        config.relay.media_timeout = None;
        (
            CallMedia::new(t0, config, library(), ivr(), opening, caller(), streams()),
            t0,
        )
    }

    fn dtmf(digit: u8, ts: u32, seq: u16) -> Vec<u8> {
        PacketBuilder::new(101, seq, ts, 0x77)
            .marker(true)
            .build(&[digit, 10, 0, 160])
            .unwrap()
    }

    /// The caller presses 1 (RFC 4733) at `at`; what the media does then.
    fn press_1(call: &mut CallMedia, at: Instant) -> Vec<CallAction> {
        call.handle(
            at,
            CallEvent::Received {
                leg: Leg::A,
                from: addr(CALLER),
                bytes: &dtmf(1, 800, 1),
            },
        );
        run_until(call, at, at).0
    }

    #[test]
    fn ivr_choice_queue_callback_and_hangup() {
        let (mut call, t0) = call(Opening::Open);
        // Welcome + menu: 4 frames of 20 ms.
        let (actions, audio) = run_until(&mut call, t0, t0 + Duration::from_millis(70));
        assert!(actions.is_empty());
        assert_eq!(audio.len(), 4);
        let t1 = t0 + Duration::from_millis(100);
        let actions = press_1(&mut call, t1);
        assert_eq!(
            actions,
            vec![CallAction::Route {
                queue: "anagrafe".into(),
                skill: Some("anagrafe".into()),
                language: "it".into(),
                path: vec![PathStep {
                    menu: "main".into(),
                    input: Input::Digit('1')
                }],
            }]
        );
        // The routing engine says where the call stands; the announcement
        // then music follow.
        call.handle(
            t1,
            CallEvent::QueueStatus(QueueStatus {
                position: Some(2),
                estimated_wait: None,
            }),
        );
        let (_, audio) = run_until(&mut call, t1, t1 + Duration::from_secs(2));
        assert!(audio.len() > 50, "announcement then music: {}", audio.len());
        // The callback key by SIP INFO.
        let t2 = t1 + Duration::from_secs(2);
        call.handle(t2, CallEvent::InfoDigit('9'));
        let (actions, _) = run_until(&mut call, t2, t2 + Duration::from_secs(1));
        assert_eq!(
            actions,
            vec![
                CallAction::CallbackRequested,
                CallAction::Hangup {
                    reason: CallHangup::CallbackConfirmed,
                    path: vec![PathStep {
                        menu: "main".into(),
                        input: Input::Digit('1')
                    }],
                }
            ]
        );
        assert!(call.is_ended());
        assert_eq!(call.next_deadline(), None);
    }

    #[test]
    fn closed_hangs_up_after_the_message() {
        let (mut call, t0) = call(Opening::Closed);
        let (actions, audio) = run_until(&mut call, t0, t0 + Duration::from_secs(1));
        assert_eq!(audio.len(), 4, "closed + goodbye");
        assert_eq!(
            actions,
            vec![CallAction::Hangup {
                reason: CallHangup::Closed,
                path: vec![]
            }]
        );
    }

    #[test]
    fn a_closed_queue_after_the_choice_plays_the_closed_message_and_hangs_up() {
        let (mut call, t0) = call(Opening::Open);
        let t1 = t0 + Duration::from_millis(100);
        let actions = press_1(&mut call, t1);
        assert!(
            matches!(actions[..], [CallAction::Route { .. }]),
            "{actions:?}"
        );
        call.handle(t1, CallEvent::QueueClosed);
        let (actions, audio) = run_until(&mut call, t1, t1 + Duration::from_secs(1));
        assert_eq!(audio.len(), 4, "closed + goodbye, no music after them");
        assert_eq!(
            actions,
            vec![CallAction::Hangup {
                reason: CallHangup::Closed,
                path: vec![PathStep {
                    menu: "main".into(),
                    input: Input::Digit('1')
                }],
            }]
        );
        assert!(call.is_ended());
    }

    #[test]
    fn the_maximum_wait_plays_its_message_or_the_callback_confirmation_then_hangs_up() {
        for (callback, reason) in [
            (false, CallHangup::MaxWait),
            (true, CallHangup::CallbackConfirmed),
        ] {
            let (mut call, t0) = call(Opening::Open);
            let t1 = t0 + Duration::from_millis(100);
            press_1(&mut call, t1);
            call.handle(
                t1,
                CallEvent::QueueStatus(QueueStatus {
                    position: Some(2),
                    estimated_wait: None,
                }),
            );
            let t2 = t1 + Duration::from_secs(5);
            run_until(&mut call, t1, t2);
            call.handle(t2, CallEvent::MaxWait { callback });
            let (actions, audio) = run_until(&mut call, t2, t2 + Duration::from_secs(1));
            assert_eq!(audio.len(), 4, "message + goodbye, no music after them");
            assert_eq!(
                actions,
                vec![CallAction::Hangup {
                    reason,
                    path: vec![PathStep {
                        menu: "main".into(),
                        input: Input::Digit('1')
                    }],
                }]
            );
            assert!(call.is_ended());
        }
    }

    /// The caller's audio packet `n` (20 ms of PCMU, all `code`).
    fn speech(n: u16, code: u8) -> Vec<u8> {
        PacketBuilder::new(0, 1000 + n, 160 * u32::from(n), 0x99)
            .build(&[code; 160])
            .unwrap()
    }

    /// Voicemail at the maximum wait: the prompt and the tone, then what
    /// the caller says (not before the tone) is recorded until the time
    /// limit; `goodbye` and a hang-up follow. A hang-up during the
    /// recording hands over what was said so far.
    #[test]
    fn a_voice_message_is_recorded_after_the_tone_until_the_limit_or_the_hang_up() {
        for hang_up in [false, true] {
            let t0 = Instant::now();
            let mut config = CallMediaConfig::default();
            config.relay.media_timeout = None;
            config.voicemail_seconds = 2;
            let mut call = CallMedia::new(
                t0,
                config,
                library(),
                ivr(),
                Opening::Open,
                caller(),
                streams(),
            );
            let t1 = t0 + Duration::from_millis(100);
            press_1(&mut call, t1);
            call.handle(
                t1,
                CallEvent::QueueStatus(QueueStatus {
                    position: Some(1),
                    estimated_wait: None,
                }),
            );
            run_until(&mut call, t1, t1 + Duration::from_secs(1));
            let t2 = t1 + Duration::from_secs(1);
            call.handle(t2, CallEvent::Voicemail);
            // Spoken over the prompt: not part of the message.
            call.handle(
                t2,
                CallEvent::Received {
                    leg: Leg::A,
                    from: addr(CALLER),
                    bytes: &speech(0, 0x20),
                },
            );
            let (actions, audio) = run_until(&mut call, t2, t2 + Duration::from_millis(200));
            assert!(actions.is_empty(), "{actions:?}");
            assert_eq!(audio.len(), 3, "the prompt (2 frames) and the tone (1)");
            let t3 = t2 + Duration::from_millis(200);
            for n in 1..=50u16 {
                let at = t3 + Duration::from_millis(20 * u64::from(n));
                call.handle(
                    at,
                    CallEvent::Received {
                        leg: Leg::A,
                        from: addr(CALLER),
                        bytes: &speech(n, 0x10),
                    },
                );
            }
            let t4 = t3 + Duration::from_millis(1100);
            let actions = if hang_up {
                // The server polls after every datagram.
                run_until(&mut call, t3, t4);
                call.handle(t4, CallEvent::End);
                run_until(&mut call, t4, t4).0
            } else {
                run_until(&mut call, t3, t3 + Duration::from_secs(3)).0
            };
            let Some(CallAction::VoiceMessage { samples }) = actions.first() else {
                panic!("no message: {actions:?}");
            };
            assert_eq!(samples.len(), 50 * 160);
            assert!(samples.iter().all(|&s| s == Law::Ulaw.decode(0x10)));
            if hang_up {
                assert_eq!(actions.len(), 1, "{actions:?}");
            } else {
                assert!(
                    matches!(
                        actions.last(),
                        Some(CallAction::Hangup {
                            reason: CallHangup::Voicemail,
                            ..
                        })
                    ),
                    "{actions:?}"
                );
            }
        }
    }

    /// The recording is placed by RTP timestamp: a lost packet is silence,
    /// a reordered one lands in its place, a duplicate changes nothing, a
    /// clock that jumps or another stream carries on from the end, and a
    /// flood of large packets (or timestamps racing ahead) never grows it
    /// past the limit.
    #[test]
    fn a_recording_follows_the_timestamps_and_stays_within_its_limit() {
        let mut recording = Recording::new(1);
        let base = 4_000_000_000u32; // wraps during the message
        let frame = |code: u8| vec![code; 160];
        recording.add(7, base, Law::Ulaw, &frame(0x10));
        recording.add(7, base.wrapping_add(320), Law::Ulaw, &frame(0x30)); // 160 lost
        recording.add(7, base.wrapping_add(160), Law::Ulaw, &frame(0x20)); // late
        recording.add(7, base.wrapping_add(160), Law::Ulaw, &frame(0x20)); // duplicate
        recording.add(7, base.wrapping_sub(160), Law::Ulaw, &frame(0x50)); // before the first
        recording.add(7, base.wrapping_add(800), Law::Ulaw, &frame(0x60)); // after a gap
        // The source restarts its clock far back, then another stream:
        // each carries on from the end.
        recording.add(7, 12_345, Law::Ulaw, &frame(0x70));
        recording.add(7, 12_505, Law::Ulaw, &frame(0x71));
        recording.add(9, 5, Law::Ulaw, &frame(0x40));
        let s = &recording.samples;
        assert_eq!(s.len(), 1_440);
        assert!(s[..160].iter().all(|&x| x == Law::Ulaw.decode(0x10)));
        assert!(s[160..320].iter().all(|&x| x == Law::Ulaw.decode(0x20)));
        assert!(s[320..480].iter().all(|&x| x == Law::Ulaw.decode(0x30)));
        assert!(s[480..800].iter().all(|&x| x == 0), "the gap is silence");
        assert!(s[800..960].iter().all(|&x| x == Law::Ulaw.decode(0x60)));
        assert!(s[960..1_120].iter().all(|&x| x == Law::Ulaw.decode(0x70)));
        assert!(s[1_120..1_280].iter().all(|&x| x == Law::Ulaw.decode(0x71)));
        assert!(s[1_280..].iter().all(|&x| x == Law::Ulaw.decode(0x40)));

        // A flood: 10,000 packets of 1,400 bytes, timestamps racing ahead.
        let mut flood = Recording::new(1);
        for n in 0..10_000u32 {
            flood.add(1, n.wrapping_mul(1_400), Law::Alaw, &[0xD5; 1_400]);
        }
        flood.add(1, u32::MAX / 2, Law::Alaw, &[0xD5; 1_400]);
        assert_eq!(flood.samples.len(), 8_000, "one second at 8 kHz, no more");
        assert!(flood.samples.capacity() <= 16_000);
        // The limit is bounded whatever the configuration says.
        assert_eq!(Recording::limit(0), Duration::from_secs(1));
        assert_eq!(
            Recording::limit(u64::MAX),
            Duration::from_secs(MAX_VOICEMAIL_SECONDS)
        );
    }

    #[test]
    fn bridge_hold_unhold_and_transfer_keep_one_stream_to_the_caller() {
        let (mut call, t0) = call(Opening::Open);
        let t1 = t0 + Duration::from_millis(40);
        run_until(&mut call, t0, t1);
        call.handle(t1, CallEvent::InfoDigit('1'));
        run_until(&mut call, t1, t1 + Duration::from_secs(1));
        let t2 = t1 + Duration::from_secs(1);
        call.handle(
            t2,
            CallEvent::OperatorAnswered {
                media: &phone(),
                start: StreamStart {
                    ssrc: 0xB,
                    sequence: 0,
                    timestamp: 0,
                },
            },
        );
        let mut all_audio = Vec::new();
        let mut now = t2;
        let mut phone_packets = 0;
        let step = |call: &mut CallMedia,
                    now: Instant,
                    event: Option<CallEvent<'_>>,
                    all: &mut Vec<Vec<u8>>,
                    phone_packets: &mut usize| {
            if let Some(e) = event {
                call.handle(now, e);
            }
            while let Some(a) = call.poll(now) {
                match a {
                    CallAction::Send {
                        leg: Leg::A, bytes, ..
                    } => all.push(bytes),
                    CallAction::Send { leg: Leg::B, .. } => *phone_packets += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        };
        for i in 0..10u16 {
            let from_phone = PacketBuilder::new(8, i, 160 * u32::from(i), 5)
                .build(&[0xD5; 160])
                .unwrap();
            step(
                &mut call,
                now,
                Some(CallEvent::Received {
                    leg: Leg::B,
                    from: addr(PHONE),
                    bytes: &from_phone,
                }),
                &mut all_audio,
                &mut phone_packets,
            );
            let from_caller = PacketBuilder::new(0, i, 160 * u32::from(i), 6)
                .build(&[0xFF; 160])
                .unwrap();
            step(
                &mut call,
                now,
                Some(CallEvent::Received {
                    leg: Leg::A,
                    from: addr(CALLER),
                    bytes: &from_caller,
                }),
                &mut all_audio,
                &mut phone_packets,
            );
            now += Duration::from_millis(20);
        }
        assert_eq!(all_audio.len(), 10);
        assert_eq!(phone_packets, 10);
        // Hold: music to the caller, the phone's audio goes nowhere.
        step(
            &mut call,
            now,
            Some(CallEvent::Hold),
            &mut all_audio,
            &mut phone_packets,
        );
        // (The first music packet went out with the Hold itself.)
        let (_, music) = run_until(&mut call, now, now + Duration::from_millis(190));
        assert_eq!(all_audio.len() + music.len(), 20);
        all_audio.extend(music);
        now += Duration::from_millis(200);
        let from_phone = PacketBuilder::new(8, 10, 1600, 5)
            .build(&[0xD5; 160])
            .unwrap();
        step(
            &mut call,
            now,
            Some(CallEvent::Received {
                leg: Leg::B,
                from: addr(PHONE),
                bytes: &from_phone,
            }),
            &mut all_audio,
            &mut phone_packets,
        );
        // The music's next frame went out; the phone's packet did not.
        assert_eq!(all_audio.len(), 21);
        assert_eq!(
            call.relay()
                .stats(Leg::B)
                .dropped(crate::media::relay::DropReason::NotBridged),
            1
        );
        // Unhold, then a transfer to another phone.
        step(
            &mut call,
            now,
            Some(CallEvent::Unhold),
            &mut all_audio,
            &mut phone_packets,
        );
        let other_phone = LegMedia {
            remote: addr("10.0.0.6:5004"),
            ..phone()
        };
        step(
            &mut call,
            now,
            Some(CallEvent::OperatorAnswered {
                media: &other_phone,
                start: StreamStart {
                    ssrc: 0xC,
                    sequence: 0,
                    timestamp: 0,
                },
            }),
            &mut all_audio,
            &mut phone_packets,
        );
        let from_new = PacketBuilder::new(8, 999, 99, 0x55)
            .build(&[0xD5; 160])
            .unwrap();
        step(
            &mut call,
            now,
            Some(CallEvent::Received {
                leg: Leg::B,
                from: addr("10.0.0.6:5004"),
                bytes: &from_new,
            }),
            &mut all_audio,
            &mut phone_packets,
        );
        assert_eq!(all_audio.len(), 22);
        // From the bridge through hold to the new phone: one SSRC, consecutive numbers.
        let parsed: Vec<_> = all_audio.iter().map(|b| rtp::parse(b).unwrap()).collect();
        assert!(
            parsed
                .iter()
                .all(|p| p.ssrc == 0xCA11 && p.payload_type == 0)
        );
        for pair in parsed.windows(2) {
            assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
            assert!(pair[1].timestamp.wrapping_sub(pair[0].timestamp) >= 160);
        }
        // The end: nothing more goes out.
        step(
            &mut call,
            now,
            Some(CallEvent::End),
            &mut all_audio,
            &mut phone_packets,
        );
        let from_caller = PacketBuilder::new(0, 50, 8000, 6)
            .build(&[0xFF; 160])
            .unwrap();
        call.handle(
            now,
            CallEvent::Received {
                leg: Leg::A,
                from: addr(CALLER),
                bytes: &from_caller,
            },
        );
        assert_eq!(call.poll(now), None);
        assert!(call.is_ended());
    }

    #[test]
    fn requeue_after_the_operator_left_plays_the_queue_again() {
        let (mut call, t0) = call(Opening::Open);
        call.handle(t0, CallEvent::InfoDigit('1'));
        run_until(&mut call, t0, t0);
        call.handle(
            t0,
            CallEvent::OperatorAnswered {
                media: &phone(),
                start: StreamStart {
                    ssrc: 0xB,
                    sequence: 0,
                    timestamp: 0,
                },
            },
        );
        run_until(&mut call, t0, t0);
        call.handle(
            t0,
            CallEvent::Requeue(QueueStatus {
                position: Some(2),
                estimated_wait: None,
            }),
        );
        let (actions, audio) = run_until(&mut call, t0, t0 + Duration::from_secs(1));
        assert!(actions.is_empty());
        // please_hold, you_are_number, number_2, in_queue, callback_offer:
        // 2 frames each, then music.
        assert_eq!(audio.len(), 50);
        assert!(!call.relay().has_leg(Leg::B));
    }

    #[test]
    fn a_language_switch_carries_into_the_queue_prompts() {
        let (mut call, t0) = call(Opening::Open);
        call.handle(t0, CallEvent::InfoDigit('9'));
        run_until(&mut call, t0, t0);
        assert_eq!(call.language(), "en");
        call.handle(t0, CallEvent::InfoDigit('1'));
        let (actions, _) = run_until(&mut call, t0, t0);
        assert!(matches!(&actions[0], CallAction::Route { language, .. } if language == "en"));
    }

    #[test]
    fn the_configuration_reads_from_toml_with_defaults() {
        let config: CallMediaConfig = toml::from_str(
            "[relay]\nmedia_timeout = 30000\n[announcer]\nevery_seconds = 45\ncallback_key = '*'\n",
        )
        .unwrap();
        assert_eq!(config.relay.media_timeout, Some(Duration::from_secs(30)));
        assert_eq!(config.relay.relatch_after, Duration::from_secs(2));
        assert_eq!(config.announcer.every_seconds, 45);
        assert_eq!(config.announcer.callback_key, Some('*'));
        assert_eq!(config.announcer.music, "hold");
        assert!(toml::from_str::<CallMediaConfig>("[relay]\nmedia_timeout_s = 1\n").is_err());
        assert_eq!(
            toml::from_str::<CallMediaConfig>("").unwrap(),
            CallMediaConfig::default()
        );
    }

    #[test]
    fn missing_prompts_do_not_stall_the_ivr() {
        let t0 = Instant::now();
        let mut call = CallMedia::new(
            t0,
            CallMediaConfig::default(),
            Arc::new(PromptLibrary::default()),
            ivr(),
            Opening::Open,
            caller(),
            streams(),
        );
        // No prompts at all: the menu still times out and the default hangs up.
        let (actions, audio) = run_until(&mut call, t0, t0 + Duration::from_secs(30));
        assert!(audio.is_empty());
        assert_eq!(
            actions,
            vec![CallAction::Hangup {
                reason: CallHangup::Menu,
                path: vec![PathStep {
                    menu: "main".into(),
                    input: Input::NoInput
                }],
            }]
        );
    }
}
