//! The callback call, sans-IO: ccu rings the operator the router offered a
//! callback conversation to, and once the operator has answered and the
//! router has given them the conversation, calls the citizen back through
//! the trunk and bridges the two.
//!
//! ```text
//!  ringing: INVITE to every device of the operator (first 200 wins)
//!    │ answered ─▶ OfferOutcome::Accepted ─▶ the server asks the router
//!    ▼
//!  confirming (the operator hears "calling the citizen" and music)
//!    │ CallbackInput::Accepted(true)          false: the operator is hung up
//!    ▼
//!  dialing: INVITE to the citizen through the trunk, for the ring timeout
//!    │ 200 OK (ACK)                 486/603/4xx-6xx/no answer: the operator hears
//!    ▼                              "the citizen did not answer", then BYE
//!  bridged (relay both ways; hold from the phone plays music to the citizen)
//!    │ BYE either side, the console
//!    ▼
//!  ended: CallbackOutput::Ended(CallbackEnd)
//! ```
//!
//! The operator is rung first so that the citizen, who asked to be called,
//! never answers a call with nobody on it (a preview callback). The citizen
//! is only dialled after the router's accept: a conversation that was
//! given to someone else meanwhile is never called twice.
//!
//! Legs: [`SipLeg::Caller`] is the citizen's dialog (through the trunk),
//! [`SipLeg::Phone`] the operator's devices; media leg A the citizen, B
//! the operator, as in [`super::Call`].

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    CallOutput, CallRecord, Device, Fork, HangupCause, OfferEnd, OfferOutcome, Ringing, SipLeg,
    SipSend, allow_for, fork_end, poll_forks, ring, worse,
};
use crate::media::g711::Law;
use crate::media::player::{MUSIC, PlayItem, Player, PlayerOutput, PromptLibrary};
use crate::media::relay::{
    Leg, LegMedia, Relay, RelayAction, RelayConfig, RelayEvent, Source, StreamStart,
};
use crate::sip::dialog::{Dialog, DialogAction, DialogConfig, DialogEvent, EndCause, OutgoingCall};
use crate::sip::digest::ClientCredentials;
use crate::sip::header::Address;
use crate::sip::message::{HeaderName, Method, Request, StatusCode};
use crate::sip::sdp::{LocalMedia, Negotiated};
use crate::sip::uri::Uri;

/// The prompt the operator hears while the citizen's phone rings.
pub const DIALING_PROMPT: &str = "callback_dialing";
/// The prompt the operator hears when the citizen was not reached.
pub const NO_ANSWER_PROMPT: &str = "callback_no_answer";

/// How callbacks are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackConfig {
    /// Our side of the dialogs with the phones.
    pub phone_dialog: DialogConfig,
    /// Our side of the citizen's dialog (Contact and Via as the trunk sees us).
    pub citizen_dialog: DialogConfig,
    pub relay: RelayConfig,
    /// How long the operator's phone rings (the router's offer may end it
    /// sooner).
    pub ring_timeout: Duration,
    /// How long the citizen's phone rings before it is no answer.
    pub citizen_ring_timeout: Duration,
    /// The hold music's name under `music/`.
    pub music: String,
}

/// One callback offer, as the server knows it.
#[derive(Debug, Clone)]
pub struct CallbackSetup {
    pub offer: u64,
    pub operator: i64,
    pub conversation: i64,
    /// The operator's devices (registered bindings).
    pub devices: Vec<Device>,
    /// The offer's own end, if sooner than the ring timeout.
    pub ring_for: Option<Duration>,
    /// What the operator's phone shows.
    pub display: Address,
    /// Extra headers on the INVITEs to the phones.
    pub phone_headers: Vec<(HeaderName, String)>,
    /// The Request-URI of the INVITE to the citizen (at the trunk).
    pub citizen: Uri,
    /// Our From towards the citizen: the unified number they called.
    pub caller_id: Address,
    pub citizen_call_id: String,
    pub citizen_tag: String,
    /// The trunk's address: media from it is the citizen's, whatever the
    /// SDP says.
    pub trunk_ip: IpAddr,
    /// The account a carrier's `401`/`407` to our INVITE is answered with.
    pub trunk_credentials: Option<ClientCredentials>,
    pub phone_media: LocalMedia,
    pub citizen_media: LocalMedia,
    /// Random stream starts (RFC 3550 §5.1): to the citizen, to the
    /// operator, and the player's.
    pub citizen_stream: StreamStart,
    pub operator_stream: StreamStart,
    pub player_stream: StreamStart,
    pub library: Arc<PromptLibrary>,
    /// The citizen's language, for the operator's prompts too (the
    /// operator speaks it).
    pub language: String,
}

/// What the server passes in.
#[derive(Debug, Clone)]
pub enum CallbackInput<'a> {
    Sip {
        leg: SipLeg,
        event: DialogEvent<'a>,
    },
    Rtp {
        leg: Leg,
        from: SocketAddr,
        bytes: &'a [u8],
    },
    /// The router's answer to [`OfferOutcome::Accepted`]: whether the
    /// conversation is now the operator's.
    Accepted(bool),
    /// The router took the offer back: stop ringing, no outcome to report.
    WithdrawOffer,
    /// The conversation is not this operator's any more (the console
    /// declined or transferred it, someone else took it): stop ringing, or
    /// hang up both legs.
    TakenAway,
    /// The console, or the server stopping.
    HangUp,
}

/// Why the citizen was not reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CitizenEnd {
    /// `486 Busy Here` or `600 Busy Everywhere`.
    Busy(StatusCode),
    /// `603 Decline`: the citizen refused the call.
    Declined(StatusCode),
    /// It rang for the ring timeout (we CANCELled).
    NoAnswer,
    /// The number cannot be reached (`404`, `410`, `480`, `484`, `485`,
    /// `604`), or an answer without usable media (`488`).
    Failed(StatusCode),
    /// The trunk failed, not the citizen: `5xx`, no response (`408`), a
    /// refusal of ours (`401`/`403`/`407`), anything else. Not the
    /// citizen's attempt.
    TrunkFailed(StatusCode),
}

impl CitizenEnd {
    /// The stable name stored in conversation events.
    pub fn as_str(self) -> &'static str {
        match self {
            CitizenEnd::Busy(_) => "busy",
            CitizenEnd::Declined(_) => "declined",
            CitizenEnd::NoAnswer => "no_answer",
            CitizenEnd::Failed(_) => "failed",
            CitizenEnd::TrunkFailed(_) => "trunk_failed",
        }
    }

    /// Whether the citizen's line said so (an attempt that counts), rather
    /// than the trunk.
    pub fn is_citizens(self) -> bool {
        !matches!(self, CitizenEnd::TrunkFailed(_))
    }

    /// What a final response (or a timeout, as `408`) to the INVITE says
    /// of the citizen.
    pub fn from_status(status: StatusCode) -> CitizenEnd {
        match status.as_u16() {
            486 | 600 => CitizenEnd::Busy(status),
            603 => CitizenEnd::Declined(status),
            404 | 410 | 480 | 484 | 485 | 488 | 604 => CitizenEnd::Failed(status),
            _ => CitizenEnd::TrunkFailed(status),
        }
    }

    pub fn status(self) -> Option<StatusCode> {
        match self {
            CitizenEnd::Busy(s)
            | CitizenEnd::Declined(s)
            | CitizenEnd::Failed(s)
            | CitizenEnd::TrunkFailed(s) => Some(s),
            CitizenEnd::NoAnswer => None,
        }
    }
}

/// How the callback ended, for the server (what becomes of the
/// conversation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackEnd {
    /// The operator's phones did not take the offer (its outcome was
    /// reported), or it was withdrawn: the citizen was not called.
    NotTaken,
    /// The router did not give the conversation to the operator.
    Refused,
    /// The citizen was not reached: an attempt.
    NotReached(CitizenEnd),
    /// The operator hung up (or the console, the server stopping, a media
    /// timeout) before the citizen answered: not the citizen's attempt.
    Interrupted(HangupCause),
    /// They talked; who ended it.
    Talked(HangupCause),
}

/// What the server must do. SIP, RTP, offer outcomes and records are those
/// of [`CallOutput`].
#[derive(Debug, Clone, PartialEq)]
// As large as a call's output, which is what it mostly carries (RTP):
// boxing it would allocate per packet.
#[allow(clippy::large_enum_variant)]
pub enum CallbackOutput {
    Call(CallOutput),
    Ended(CallbackEnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ringing,
    /// The operator answered; the router is asked.
    Confirming {
        leg: u32,
    },
    Dialing {
        leg: u32,
    },
    /// The operator hears that the citizen was not reached.
    Telling {
        leg: u32,
        end: CitizenEnd,
    },
    Bridged {
        leg: u32,
    },
    Ended,
}

/// One callback. See the module documentation.
pub struct Callback {
    config: CallbackConfig,
    offer: u64,
    operator: i64,
    started: Instant,
    phones: Vec<Fork>,
    refusal: Option<OfferOutcome>,
    citizen: Option<Dialog>,
    citizen_setup: Option<CitizenCall>,
    relay: Relay,
    player: Player,
    library: Arc<PromptLibrary>,
    language: String,
    operator_stream: StreamStart,
    citizen_stream: StreamStart,
    trunk_ip: IpAddr,
    stage: Stage,
    held: bool,
    out: VecDeque<CallbackOutput>,
    ended: Option<CallbackEnd>,
}

/// The INVITE to the citizen, made once the router accepted.
struct CitizenCall {
    target: Uri,
    from: Address,
    call_id: String,
    local_tag: String,
    media: LocalMedia,
    credentials: Option<ClientCredentials>,
}

impl Callback {
    /// Rings the operator's devices (at once: the first `poll` has the
    /// INVITEs). With no device the offer is missed and the callback ends.
    pub fn new(now: Instant, config: CallbackConfig, setup: CallbackSetup) -> Callback {
        let mut callback = Callback {
            relay: Relay::empty(config.relay),
            player: Player::new(
                Law::Alaw,
                setup.player_stream.ssrc,
                setup.player_stream.sequence,
                setup.player_stream.timestamp,
            ),
            config,
            offer: setup.offer,
            operator: setup.operator,
            started: now,
            phones: Vec::new(),
            refusal: None,
            citizen: None,
            citizen_setup: Some(CitizenCall {
                target: setup.citizen,
                from: setup.caller_id,
                call_id: setup.citizen_call_id,
                local_tag: setup.citizen_tag,
                media: setup.citizen_media,
                credentials: setup.trunk_credentials,
            }),
            library: setup.library,
            language: setup.language,
            operator_stream: setup.operator_stream,
            citizen_stream: setup.citizen_stream,
            trunk_ip: setup.trunk_ip,
            stage: Stage::Ringing,
            held: false,
            out: VecDeque::new(),
            ended: None,
        };
        let (offer, operator) = (setup.offer, setup.operator);
        if setup.devices.is_empty() {
            callback.record(CallRecord::OfferEnded {
                offer,
                operator,
                end: OfferEnd::NoDevice,
            });
            callback.outcome(OfferOutcome::Missed);
            callback.finish(now, CallbackEnd::NotTaken);
            return callback;
        }
        callback.record(CallRecord::Rang {
            offer,
            operator,
            devices: setup.devices.len(),
        });
        let ring_timeout = setup.ring_for.map_or(callback.config.ring_timeout, |d| {
            d.min(callback.config.ring_timeout)
        });
        let mut next_leg = 0;
        callback.phones = ring(
            now,
            &callback.config.phone_dialog,
            Ringing {
                devices: setup.devices,
                from: setup.display,
                headers: setup.phone_headers,
                media: &setup.phone_media,
                ring_timeout,
            },
            &mut next_leg,
        );
        callback
    }

    /// Whether the operator's phones are still ringing (nobody answered).
    pub fn is_ringing(&self) -> bool {
        self.stage == Stage::Ringing
    }

    /// The relay's counters.
    pub fn relay(&self) -> &Relay {
        &self.relay
    }

    /// The citizen's dialog's Call-ID, once dialled.
    pub fn citizen_call_id(&self) -> Option<&str> {
        self.citizen.as_ref().map(|d| d.state().call_id.as_str())
    }

    /// The phone leg a message belongs to, by Call-ID.
    pub fn phone_leg(&self, call_id: &str) -> Option<SipLeg> {
        self.phones
            .iter()
            .find(|f| f.dialog.state().call_id == call_id)
            .map(|f| SipLeg::Phone(f.leg))
    }

    /// Over: ended, every dialog finished, every output taken.
    pub fn is_done(&self) -> bool {
        self.ended.is_some()
            && self.out.is_empty()
            && self.phones.is_empty()
            && self.citizen.as_ref().is_none_or(Dialog::is_terminated)
    }

    pub fn handle(&mut self, now: Instant, input: CallbackInput<'_>) {
        match input {
            CallbackInput::Sip {
                leg: SipLeg::Caller,
                event,
            } => {
                if let Some(citizen) = &mut self.citizen {
                    citizen.handle(now, event);
                }
            }
            CallbackInput::Sip {
                leg: SipLeg::Phone(id),
                event,
            } => {
                if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == id) {
                    fork.dialog.handle(now, event);
                }
            }
            CallbackInput::Rtp { leg, from, bytes } => {
                if self.ended.is_none() {
                    self.relay
                        .handle(now, RelayEvent::Received { leg, from, bytes });
                }
            }
            CallbackInput::Accepted(accepted) => {
                if let Stage::Confirming { leg } = self.stage {
                    if accepted {
                        self.dial(now, leg);
                    } else {
                        self.finish(now, CallbackEnd::Refused);
                    }
                }
            }
            CallbackInput::TakenAway if self.stage != Stage::Ringing => {
                self.handle(now, CallbackInput::HangUp);
            }
            CallbackInput::WithdrawOffer | CallbackInput::TakenAway => {
                if self.stage == Stage::Ringing {
                    let (offer, operator) = (self.offer, self.operator);
                    self.record(CallRecord::OfferEnded {
                        offer,
                        operator,
                        end: OfferEnd::Withdrawn,
                    });
                    self.finish(now, CallbackEnd::NotTaken);
                }
            }
            CallbackInput::HangUp => {
                let end = match self.stage {
                    Stage::Bridged { .. } => CallbackEnd::Talked(HangupCause::Console),
                    Stage::Telling { end, .. } => CallbackEnd::NotReached(end),
                    Stage::Ringing => CallbackEnd::NotTaken,
                    _ => CallbackEnd::Interrupted(HangupCause::Console),
                };
                self.finish(now, end);
            }
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<CallbackOutput> {
        loop {
            if let Some(output) = self.out.pop_front() {
                return Some(output);
            }
            if !self.step(now) {
                return None;
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        let mut deadlines: Vec<Option<Instant>> = self
            .phones
            .iter()
            .map(|f| f.dialog.next_deadline())
            .collect();
        deadlines.push(self.citizen.as_ref().and_then(Dialog::next_deadline));
        if self.ended.is_none() {
            deadlines.push(self.relay.next_deadline());
            deadlines.push(self.player.next_deadline());
        }
        deadlines.into_iter().flatten().min()
    }

    fn step(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        for (leg, action) in poll_forks(&mut self.phones, now) {
            progressed = true;
            self.on_phone(now, leg, action);
        }
        while let Some(action) = self.citizen.as_mut().and_then(|d| d.poll(now)) {
            progressed = true;
            self.on_citizen(now, action);
        }
        while let Some(output) = self.player.poll(now) {
            progressed = true;
            match output {
                PlayerOutput::Packet(bytes) => {
                    let leg = if self.held { Leg::A } else { Leg::B };
                    self.relay
                        .handle(now, RelayEvent::Local { leg, bytes: &bytes });
                }
                PlayerOutput::Finished => {
                    if let Stage::Telling { end, .. } = self.stage {
                        self.finish(now, CallbackEnd::NotReached(end));
                    }
                }
            }
        }
        while let Some(action) = self.relay.poll(now) {
            progressed = true;
            match action {
                RelayAction::Send { leg, to, bytes } => {
                    self.out
                        .push_back(CallbackOutput::Call(CallOutput::Rtp { leg, to, bytes }));
                }
                RelayAction::MediaTimeout { leg } => {
                    let end = match self.stage {
                        Stage::Bridged { .. } => {
                            CallbackEnd::Talked(HangupCause::MediaTimeout(leg))
                        }
                        _ => CallbackEnd::Interrupted(HangupCause::MediaTimeout(leg)),
                    };
                    self.finish(now, end);
                }
                RelayAction::Digit { .. }
                | RelayAction::Latched { .. }
                | RelayAction::Heard { .. } => {}
            }
        }
        progressed
    }

    fn sip(&mut self, leg: SipLeg, send: SipSend) {
        self.out
            .push_back(CallbackOutput::Call(CallOutput::Sip { leg, send }));
    }

    fn record(&mut self, record: CallRecord) {
        self.out
            .push_back(CallbackOutput::Call(CallOutput::Record(record)));
    }

    fn outcome(&mut self, outcome: OfferOutcome) {
        let offer = self.offer;
        self.out
            .push_back(CallbackOutput::Call(CallOutput::OfferOutcome {
                offer,
                outcome,
            }));
    }

    fn on_phone(&mut self, now: Instant, leg: u32, action: DialogAction) {
        let sip_leg = SipLeg::Phone(leg);
        match action {
            DialogAction::Respond(r) => self.sip(sip_leg, SipSend::Respond(r)),
            DialogAction::SendRequest(r) => self.sip(sip_leg, SipSend::Request(r)),
            DialogAction::SendCancel(r) => self.sip(sip_leg, SipSend::Cancel(r)),
            DialogAction::SendStateless(m) => self.sip(sip_leg, SipSend::Stateless(m)),
            DialogAction::Provisional(_) | DialogAction::Confirmed(_) => {}
            DialogAction::Answered(negotiated) => self.operator_answered(now, leg, &negotiated),
            DialogAction::MediaUpdate { negotiated, hold } => {
                if self.stage == (Stage::Bridged { leg })
                    && let Some(ip) = self.fork_ip(leg)
                    && let Some(media) = LegMedia::from_negotiated(&negotiated, Some(ip))
                {
                    if !hold {
                        self.relay.update(now, Leg::B, media);
                    }
                    self.hold(now, hold);
                }
            }
            DialogAction::Request(request) => {
                let status = in_dialog_status(&request);
                if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) {
                    fork.dialog.respond(&request, status, allow_for(status));
                }
            }
            DialogAction::Terminated(cause) => self.phone_ended(now, leg, cause),
        }
    }

    fn on_citizen(&mut self, now: Instant, action: DialogAction) {
        match action {
            DialogAction::Respond(r) => self.sip(SipLeg::Caller, SipSend::Respond(r)),
            DialogAction::SendRequest(r) => self.sip(SipLeg::Caller, SipSend::Request(r)),
            DialogAction::SendCancel(r) => self.sip(SipLeg::Caller, SipSend::Cancel(r)),
            DialogAction::SendStateless(m) => self.sip(SipLeg::Caller, SipSend::Stateless(m)),
            DialogAction::Provisional(_)
            | DialogAction::Confirmed(_)
            | DialogAction::MediaUpdate { .. } => {}
            DialogAction::Answered(negotiated) => self.citizen_answered(now, &negotiated),
            DialogAction::Request(request) => {
                let status = in_dialog_status(&request);
                if let Some(citizen) = &mut self.citizen {
                    citizen.respond(&request, status, allow_for(status));
                }
            }
            DialogAction::Terminated(cause) => match self.stage {
                Stage::Dialing { leg } => {
                    let end = match cause {
                        EndCause::NoAnswer => CitizenEnd::NoAnswer,
                        EndCause::Declined(s) => CitizenEnd::from_status(s),
                        _ => CitizenEnd::TrunkFailed(StatusCode::REQUEST_TIMEOUT),
                    };
                    self.not_reached(now, leg, end);
                }
                Stage::Bridged { .. } => self.finish(now, CallbackEnd::Talked(HangupCause::Caller)),
                _ => {}
            },
        }
    }

    fn fork_ip(&self, leg: u32) -> Option<IpAddr> {
        self.phones
            .iter()
            .find(|f| f.leg == leg)
            .map(|f| f.source_ip)
    }

    fn hang_up_phone(&mut self, leg: u32) {
        if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) {
            fork.dialog.hang_up();
        }
    }

    fn operator_answered(&mut self, now: Instant, leg: u32, negotiated: &Negotiated) {
        if self.stage != Stage::Ringing {
            // Another device won, or the offer ended: that phone is hung up.
            self.hang_up_phone(leg);
            return;
        }
        let Some(media) = self
            .fork_ip(leg)
            .and_then(|ip| LegMedia::from_negotiated(negotiated, Some(ip)))
        else {
            self.hang_up_phone(leg);
            return;
        };
        for fork in self.phones.iter_mut().filter(|f| f.leg != leg) {
            fork.dialog.cancel(EndCause::Cancelled);
        }
        self.relay.attach(now, Leg::B, media, self.operator_stream);
        self.relay.set_source(Leg::B, Source::Local);
        self.play(now, DIALING_PROMPT, true);
        self.stage = Stage::Confirming { leg };
        self.outcome(OfferOutcome::Accepted);
    }

    /// The router gave the conversation to the operator: call the citizen.
    fn dial(&mut self, now: Instant, leg: u32) {
        let Some(call) = self.citizen_setup.take() else {
            return;
        };
        let (offer, operator) = (self.offer, self.operator);
        self.record(CallRecord::Answered {
            offer,
            operator,
            waited: now.saturating_duration_since(self.started),
        });
        self.record(CallRecord::CallbackDialing {
            number: call.target.to_string(),
        });
        self.citizen = Some(Dialog::outgoing(
            now,
            self.config.citizen_dialog.clone(),
            OutgoingCall {
                target: call.target,
                from: call.from,
                call_id: call.call_id,
                local_tag: call.local_tag,
                media: call.media,
                headers: Vec::new(),
                ring_timeout: Some(self.config.citizen_ring_timeout),
                credentials: call.credentials,
            },
        ));
        self.stage = Stage::Dialing { leg };
    }

    fn citizen_answered(&mut self, now: Instant, negotiated: &Negotiated) {
        let Stage::Dialing { leg } = self.stage else {
            if let Some(citizen) = &mut self.citizen {
                citizen.hang_up();
            }
            return;
        };
        let Some(media) = LegMedia::from_negotiated(negotiated, Some(self.trunk_ip)) else {
            if let Some(citizen) = &mut self.citizen {
                citizen.hang_up();
            }
            let unusable = StatusCode::new(488).unwrap_or(StatusCode::BAD_REQUEST);
            self.not_reached(now, leg, CitizenEnd::Failed(unusable));
            return;
        };
        self.player.stop();
        self.relay.attach(now, Leg::A, media, self.citizen_stream);
        self.relay.bridge();
        self.stage = Stage::Bridged { leg };
        self.record(CallRecord::CallbackAttempt { end: None });
    }

    fn not_reached(&mut self, now: Instant, leg: u32, end: CitizenEnd) {
        self.record(CallRecord::CallbackAttempt { end: Some(end) });
        self.stage = Stage::Telling { leg, end };
        self.play(now, NO_ANSWER_PROMPT, false);
    }

    fn phone_ended(&mut self, now: Instant, leg: u32, cause: EndCause) {
        match self.stage {
            Stage::Ringing => {
                let (outcome, end) = fork_end(cause);
                if let Some(end) = end {
                    let (offer, operator) = (self.offer, self.operator);
                    self.record(CallRecord::OfferEnded {
                        offer,
                        operator,
                        end,
                    });
                }
                self.refusal = Some(worse(self.refusal, outcome));
                let ringing = self
                    .phones
                    .iter()
                    .any(|f| f.leg != leg && !f.dialog.is_terminated());
                if !ringing {
                    let outcome = self.refusal.take().unwrap_or(OfferOutcome::Missed);
                    self.outcome(outcome);
                    self.finish(now, CallbackEnd::NotTaken);
                }
            }
            Stage::Confirming { leg: l } | Stage::Dialing { leg: l } if l == leg => {
                self.finish(now, CallbackEnd::Interrupted(HangupCause::Operator));
            }
            Stage::Telling { leg: l, end } if l == leg => {
                self.finish(now, CallbackEnd::NotReached(end));
            }
            Stage::Bridged { leg: l } if l == leg => {
                self.finish(now, CallbackEnd::Talked(HangupCause::Operator));
            }
            _ => {}
        }
    }

    /// Hold from the operator's phone: music to the citizen.
    fn hold(&mut self, now: Instant, hold: bool) {
        if self.held == hold {
            return;
        }
        self.held = hold;
        if hold {
            self.relay.set_source(Leg::A, Source::Local);
            self.relay.set_source(Leg::B, Source::Silent);
            self.relay.expect_media(now, Leg::B, false);
            self.music(now);
        } else {
            self.player.stop();
            self.relay.bridge();
            self.relay.expect_media(now, Leg::B, true);
        }
        self.record(if hold {
            CallRecord::Hold { by_phone: true }
        } else {
            CallRecord::Unhold {
                by_phone: true,
                music_packets: 0,
            }
        });
    }

    /// Plays a prompt to the operator, then the music if `then_music`.
    fn play(&mut self, now: Instant, name: &str, then_music: bool) {
        let mut items: Vec<PlayItem> = self
            .library
            .get(&self.language, name)
            .map(PlayItem::Prompt)
            .into_iter()
            .collect();
        if then_music && let Some(music) = self.library.get(MUSIC, &self.config.music) {
            items.push(PlayItem::Loop(music));
        }
        self.player.play(now, items);
    }

    fn music(&mut self, now: Instant) {
        match self.library.get(MUSIC, &self.config.music) {
            Some(music) => self.player.play(now, [PlayItem::Loop(music)]),
            None => self.player.stop(),
        }
    }

    /// Ends the callback: CANCEL or BYE every live dialog, report once.
    fn finish(&mut self, now: Instant, end: CallbackEnd) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(end);
        self.stage = Stage::Ended;
        // BYE once answered, CANCEL while ringing.
        for fork in &mut self.phones {
            fork.dialog.hang_up();
        }
        if let Some(citizen) = &mut self.citizen {
            citizen.hang_up();
        }
        self.player.stop();
        while self.step(now) {}
        let cause = match end {
            CallbackEnd::NotTaken | CallbackEnd::Refused => None,
            CallbackEnd::NotReached(_) => Some(HangupCause::NotReached),
            CallbackEnd::Interrupted(cause) | CallbackEnd::Talked(cause) => Some(cause),
        };
        if let Some(cause) = cause {
            let relayed_to_caller = self.relay.stats(Leg::A).relayed_packets;
            let relayed_to_operator = self.relay.stats(Leg::B).relayed_packets;
            self.record(CallRecord::Hangup {
                cause,
                relayed_to_caller,
                relayed_to_operator,
            });
        }
        self.out.push_back(CallbackOutput::Ended(end));
    }
}

/// INFO and OPTIONS are fine; nothing else is for a callback (`405`).
fn in_dialog_status(request: &Request) -> StatusCode {
    match request.method {
        Method::Info | Method::Options => StatusCode::OK,
        _ => StatusCode::METHOD_NOT_ALLOWED,
    }
}
