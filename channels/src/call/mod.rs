//! The B2BUA call, sans-IO: one [`Call`] per citizen who dials the unified
//! number. It owns the inbound dialog (the trunk's INVITE), the outbound
//! dialogs to the operator's registered phones, and the call's media
//! ([`CallMedia`]: relay, prompts, IVR, announcements).
//!
//! ```text
//!  IVR ──Route──▶ queued (music, announcements, 9 = callback)
//!                   │ Offer{devices}                 ▲ 486/603/408/no answer: OfferOutcome, back in place
//!                   ▼                                │
//!                 ringing: INVITE to every device ───┘  first 200 wins, CANCEL the others
//!                   │ 200 OK (ACK)
//!                   ▼
//!                 bridged ⇄ held (re-INVITE sendonly/inactive from the phone, or the console)
//!                   │ REFER from the phone / console transfer: back to a queue
//!                   ▼
//!                 ended (BYE either side, CANCEL, IVR hang-up, callback, media timeout)
//! ```
//!
//! The server's voice task feeds it ([`CallInput`]: SIP events per leg,
//! datagrams per media leg, the router's offers and queue status, the
//! console's commands) with `now`, and carries out its [`CallOutput`]s:
//! SIP to send on a leg, RTP to send from a media socket, and what the
//! router and the store must hear (`Route`, `OfferOutcome`, `Abandoned`,
//! `Ended`, records). Leg identifiers are the call's own; the server maps
//! [`SipLeg::Phone`] to the device it rang.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ivr::{Ivr, Opening, PathStep};
use crate::media::announce::QueueStatus;
use crate::media::call::{
    CallAction, CallEvent, CallHangup, CallMedia, CallMediaConfig, CallStreams,
};
use crate::media::dtmf::parse_info;
use crate::media::player::PromptLibrary;
use crate::media::relay::{Leg, LegMedia, StreamStart};
use crate::sip::dialog::{Dialog, DialogAction, DialogConfig, DialogEvent, EndCause, OutgoingCall};
use crate::sip::header::Address;
use crate::sip::message::{HeaderName, Headers, Message, Method, Request, Response, StatusCode};
use crate::sip::sdp::{LocalMedia, Negotiated};
use crate::sip::uri::{SipUri, Uri};

pub mod callback;

/// How calls are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallConfig {
    /// Our side of the citizen's dialog (Contact and Via as the trunk sees us).
    pub caller_dialog: DialogConfig,
    /// Our side of the dialogs with the phones.
    pub phone_dialog: DialogConfig,
    pub media: CallMediaConfig,
    /// How long a phone rings before the offer counts as missed (the
    /// router's offer timeout).
    pub ring_timeout: Duration,
}

/// What the server knows when it accepts an INVITE to the unified number.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// The INVITE, as the endpoint passed it (Via stamped).
    pub invite: Request,
    /// The server transaction's To tag.
    pub local_tag: String,
    /// Where the INVITE came from: media from that IP is the caller's
    /// even when the SDP says otherwise (NAT).
    pub source_ip: IpAddr,
    /// The caller's number in E.164 (from P-Asserted-Identity or From).
    pub caller_number: String,
    /// Our media socket for the caller (leg A) and for the phone (leg B).
    pub caller_media: LocalMedia,
    pub phone_media: LocalMedia,
    /// Random stream starts (RFC 3550 §5.1): caller, player, operator.
    pub streams: CallStreams,
    pub operator_stream: StreamStart,
    pub opening: Opening,
}

/// A SIP leg of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipLeg {
    /// The citizen's dialog.
    Caller,
    /// One INVITE to one device of an operator; numbered by the call.
    Phone(u32),
}

/// SIP to send on a leg.
#[derive(Debug, Clone, PartialEq)]
pub enum SipSend {
    /// On the server transaction of the request the response answers.
    Respond(Response),
    /// Through a new client transaction.
    Request(Request),
    /// A CANCEL: through a client transaction with the INVITE's Via (RFC
    /// 3261 §9.1).
    Cancel(Request),
    /// Outside transactions: an ACK of a `2xx`, a `2xx` retransmission.
    Stateless(Message),
}

/// A registered device to ring, with the randomness its dialog needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The binding's Contact URI (the INVITE's Request-URI).
    pub target: Uri,
    /// Where the phone's REGISTER came from (media from that IP is the
    /// phone's, behind NAT).
    pub source_ip: IpAddr,
    pub call_id: String,
    pub local_tag: String,
}

/// What the server passes in.
#[derive(Debug, Clone)]
pub enum CallInput<'a> {
    Sip {
        leg: SipLeg,
        event: DialogEvent<'a>,
    },
    /// A datagram on a media socket.
    Rtp {
        leg: Leg,
        from: SocketAddr,
        bytes: &'a [u8],
    },
    /// The router's position and estimate for the waiting call.
    QueueStatus(QueueStatus),
    /// The router offered the call to an operator: ring their devices,
    /// for the configured ring timeout or until the offer expires
    /// (`ring_for`), whichever comes first.
    Offer {
        offer: u64,
        operator: i64,
        conversation: i64,
        devices: Vec<Device>,
        ring_for: Option<Duration>,
    },
    /// The router took the offer back (declined in the console, timed out
    /// there): stop ringing, no outcome to report.
    WithdrawOffer,
    /// Hold and unhold from the console.
    Hold,
    Unhold,
    /// Transfer from the console to a queue: the operator's leg ends, the
    /// caller waits again.
    TransferToQueue(QueueStatus),
    /// The queue the IVR chose is closed (the server looked up its
    /// hours at `Route`): the closed prompts, then a hang-up
    /// (`HangupCause::Ivr(Closed)`); no abandon.
    QueueClosed,
    /// The queue's maximum wait (the router's notice): the caller hears
    /// that they will be called back (`callback`: the place is kept) or
    /// the maximum-wait message, then a hang-up (no abandon).
    MaxWait {
        callback: bool,
    },
    /// The queue's maximum wait with `voicemail`: the caller may leave a
    /// message ([`CallOutput::VoiceMessage`]); the place is kept.
    Voicemail,
    /// Hang-up from the console, or shutdown.
    HangUp,
}

/// How an offer went, for the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferOutcome {
    Accepted,
    /// The phone refused (`486`, `603`...).
    Declined(StatusCode),
    /// Nobody answered (ring timeout, `408`, `480`, no device).
    Missed,
}

/// Why the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HangupCause {
    /// The citizen hung up (BYE, or CANCEL before the answer).
    Caller,
    /// The operator's phone hung up.
    Operator,
    /// The IVR ended the call (closed, a menu choice).
    Ivr(CallHangup),
    /// The console, or the server shutting down.
    Console,
    /// A leg sent no media for too long.
    MediaTimeout(Leg),
    /// The trunk never acknowledged our answer.
    NoAck,
    /// The caller's SDP offer could not be answered (`488`).
    NotAcceptable,
    /// A callback did not reach the citizen (busy, no answer, failed).
    NotReached,
}

impl HangupCause {
    /// The stable name stored in conversation events.
    pub fn as_str(self) -> &'static str {
        match self {
            HangupCause::Caller => "caller",
            HangupCause::Operator => "operator",
            HangupCause::Ivr(CallHangup::Closed) => "closed",
            HangupCause::Ivr(CallHangup::Menu) => "ivr",
            HangupCause::Ivr(CallHangup::CallbackConfirmed) => "callback",
            HangupCause::Ivr(CallHangup::MaxWait) => "max_wait",
            HangupCause::Ivr(CallHangup::Voicemail) => "voicemail",
            HangupCause::Console => "console",
            HangupCause::MediaTimeout(_) => "media_timeout",
            HangupCause::NoAck => "no_ack",
            HangupCause::NotAcceptable => "not_acceptable",
            HangupCause::NotReached => "not_reached",
        }
    }
}

/// How one offer's ringing ended without an answer (for the records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferEnd {
    /// The ring timeout passed (we CANCELled).
    RingTimeout,
    /// `486 Busy Here` or `600 Busy Everywhere`.
    Busy(StatusCode),
    /// `603 Decline`.
    Declined(StatusCode),
    /// Another final failure (`408`, `480`, `5xx`...) or no response.
    Failed(StatusCode),
    /// The router took the offer back (its own timeout, the console).
    Withdrawn,
    /// The caller hung up while the phones rang (we CANCELled).
    CallerLeft,
    /// The operator has no registered device.
    NoDevice,
}

impl OfferEnd {
    /// The stable name stored in conversation events.
    pub fn as_str(self) -> &'static str {
        match self {
            OfferEnd::RingTimeout => "ring_timeout",
            OfferEnd::Busy(_) => "busy",
            OfferEnd::Declined(_) => "declined",
            OfferEnd::Failed(_) => "failed",
            OfferEnd::Withdrawn => "withdrawn",
            OfferEnd::CallerLeft => "caller_left",
            OfferEnd::NoDevice => "no_device",
        }
    }

    /// The phone's final response, when there was one.
    pub fn status(self) -> Option<StatusCode> {
        match self {
            OfferEnd::Busy(s) | OfferEnd::Declined(s) | OfferEnd::Failed(s) => Some(s),
            _ => None,
        }
    }
}

/// What the store records about the call (conversation events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRecord {
    IvrPath(Vec<PathStep>),
    /// The operator's devices rang.
    Rang {
        offer: u64,
        operator: i64,
        devices: usize,
    },
    /// One device of the offer refused, failed or was cancelled.
    OfferEnded {
        offer: u64,
        operator: i64,
        end: OfferEnd,
    },
    Answered {
        offer: u64,
        operator: i64,
        /// Since the call was queued.
        waited: Duration,
    },
    Hold {
        by_phone: bool,
    },
    Unhold {
        by_phone: bool,
        /// Hold-music packets the caller was sent while on hold.
        music_packets: u64,
    },
    /// Blind transfer (REFER from the phone, or the console).
    Transferred {
        to: String,
    },
    /// A callback's INVITE to the citizen went out (to this Request-URI).
    CallbackDialing {
        number: String,
    },
    /// How the call to the citizen went: answered (`None`) or not.
    CallbackAttempt {
        end: Option<callback::CitizenEnd>,
    },
    Hangup {
        cause: HangupCause,
        /// RTP packets relayed from the operator to the caller, and from
        /// the caller to the operator, over the whole call.
        relayed_to_caller: u64,
        relayed_to_operator: u64,
    },
}

/// What the server must do.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutput {
    Sip {
        leg: SipLeg,
        send: SipSend,
    },
    /// Send from the media leg's socket.
    Rtp {
        leg: Leg,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The IVR chose: open the conversation and queue it.
    Route {
        queue: String,
        skill: Option<String>,
        language: String,
        ivr_path: Vec<PathStep>,
    },
    OfferOutcome {
        offer: u64,
        outcome: OfferOutcome,
    },
    /// The caller pressed the callback key while waiting.
    CallbackRequested,
    /// REFER from the operator's phone: the caller is back in a queue
    /// with music; the server transfers the conversation to `target`.
    Transfer {
        target: Uri,
    },
    /// The caller's voice message, as a 16-bit PCM WAV file (8 kHz mono),
    /// before the call's end.
    VoiceMessage {
        wav: Vec<u8>,
        duration: Duration,
    },
    /// The caller hung up while waiting (after `Route`).
    Abandoned {
        wait: Duration,
    },
    Record(CallRecord),
    /// The call is over (after its last SIP).
    Ended {
        cause: HangupCause,
    },
}

/// What the media needs when an offerless INVITE's answer comes in its ACK.
struct PendingMedia {
    library: Arc<PromptLibrary>,
    ivr: Arc<Ivr>,
    opening: Opening,
    source_ip: IpAddr,
    streams: CallStreams,
}

struct Fork {
    leg: u32,
    dialog: Dialog,
    source_ip: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ivr,
    Queued,
    Ringing { offer: u64, operator: i64 },
    Bridged { leg: u32 },
    Ended,
}

/// One citizen's call. See the module documentation.
pub struct Call {
    config: CallConfig,
    caller: Dialog,
    caller_number: String,
    phone_media: LocalMedia,
    operator_stream: StreamStart,
    media: Option<CallMedia>,
    /// An offerless INVITE: the media starts with the ACK's answer.
    pending_media: Option<PendingMedia>,
    stage: Stage,
    /// Every outbound dialog not yet terminated (ringing forks, the
    /// bridged phone, legs being torn down).
    phones: Vec<Fork>,
    next_leg: u32,
    /// The worst refusal of the current offer's forks so far.
    refusal: Option<OfferOutcome>,
    queue: Option<String>,
    ivr_path: Vec<PathStep>,
    queued_at: Option<Instant>,
    held: bool,
    /// Local packets sent to the caller when the hold began.
    held_at_local: u64,
    /// A leg whose end is expected (transfer, an offer withdrawn or won by
    /// another phone): its BYE does not end the call, its late answer is
    /// hung up and its end is not the outcome of the offer ringing now.
    leaving: Vec<u32>,
    /// The caller is leaving the queue (a callback was confirmed, or the
    /// maximum wait): hearing the last prompts, no longer waiting, so a
    /// hang-up now is not an abandon and offers are turned down.
    leaving_queue: bool,
    out: VecDeque<CallOutput>,
    ended: Option<HangupCause>,
}

impl Call {
    /// Answers the citizen's INVITE (the IVR starts at once). An offer
    /// that cannot be answered gets `488` and the call ends at once; an
    /// INVITE that makes no dialog is refused with the response to send.
    pub fn new(
        now: Instant,
        config: CallConfig,
        setup: CallSetup,
        library: Arc<PromptLibrary>,
        ivr: Arc<Ivr>,
    ) -> Result<Call, Box<Response>> {
        let caller = Dialog::incoming(
            config.caller_dialog.clone(),
            &setup.invite,
            &setup.local_tag,
        )
        .map_err(|error| Box::new(setup.invite.response(error.status(), &setup.local_tag)))?;
        let mut call = Call::empty(
            config,
            setup.caller_number,
            setup.phone_media,
            setup.operator_stream,
            caller,
        );
        match call.caller.accept(now, setup.caller_media) {
            Ok(Some(negotiated)) => {
                match LegMedia::from_negotiated(&negotiated, Some(setup.source_ip)) {
                    Some(leg) => {
                        call.media = Some(CallMedia::new(
                            now,
                            call.config.media.clone(),
                            library,
                            ivr,
                            setup.opening,
                            leg,
                            setup.streams,
                        ));
                    }
                    None => call.finish(now, HangupCause::NotAcceptable),
                }
            }
            // RFC 3261 §13.2.1, RFC 3264 §5: an INVITE without an offer
            // gets ours in the 200 and the answer comes in the ACK; the IVR
            // starts then (the prompts would go nowhere before).
            Ok(None) => {
                call.pending_media = Some(PendingMedia {
                    library,
                    ivr,
                    opening: setup.opening,
                    source_ip: setup.source_ip,
                    streams: setup.streams,
                });
            }
            Err(_) => call.finish(now, HangupCause::NotAcceptable),
        }
        Ok(call)
    }

    fn empty(
        config: CallConfig,
        caller_number: String,
        phone_media: LocalMedia,
        operator_stream: StreamStart,
        caller: Dialog,
    ) -> Call {
        Call {
            config,
            caller,
            caller_number,
            phone_media,
            operator_stream,
            media: None,
            pending_media: None,
            stage: Stage::Ivr,
            phones: Vec::new(),
            next_leg: 0,
            refusal: None,
            queue: None,
            ivr_path: Vec::new(),
            queued_at: None,
            held: false,
            held_at_local: 0,
            leaving: Vec::new(),
            leaving_queue: false,
            out: VecDeque::new(),
            ended: None,
        }
    }

    /// The call's media (relay counters, latched addresses).
    pub fn media(&self) -> Option<&CallMedia> {
        self.media.as_ref()
    }

    /// The caller's dialog (its Call-ID and tags, for matching requests).
    pub fn caller_dialog(&self) -> &Dialog {
        &self.caller
    }

    /// The phone leg a message belongs to, by Call-ID.
    pub fn phone_leg(&self, call_id: &str) -> Option<SipLeg> {
        self.phones
            .iter()
            .find(|f| f.dialog.state().call_id == call_id)
            .map(|f| SipLeg::Phone(f.leg))
    }

    /// Whether the call is ringing a phone, and which offer.
    pub fn ringing_offer(&self) -> Option<u64> {
        match self.stage {
            Stage::Ringing { offer, .. } => Some(offer),
            _ => None,
        }
    }

    pub fn is_bridged(&self) -> bool {
        matches!(self.stage, Stage::Bridged { .. })
    }

    /// Over: ended, every dialog finished, every output taken.
    pub fn is_done(&self) -> bool {
        self.ended.is_some()
            && self.out.is_empty()
            && self.caller.is_terminated()
            && self.phones.is_empty()
    }

    pub fn handle(&mut self, now: Instant, input: CallInput<'_>) {
        match input {
            CallInput::Sip {
                leg: SipLeg::Caller,
                event,
            } => self.caller.handle(now, event),
            CallInput::Sip {
                leg: SipLeg::Phone(id),
                event,
            } => {
                if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == id) {
                    fork.dialog.handle(now, event);
                }
            }
            CallInput::Rtp { leg, from, bytes } => {
                if let Some(media) = &mut self.media {
                    media.handle(now, CallEvent::Received { leg, from, bytes });
                }
            }
            CallInput::QueueStatus(status) => {
                if let Some(media) = &mut self.media {
                    media.handle(now, CallEvent::QueueStatus(status));
                }
            }
            CallInput::Offer {
                offer,
                operator,
                conversation,
                devices,
                ring_for,
            } => {
                self.offer(now, offer, operator, conversation, devices, ring_for);
            }
            CallInput::WithdrawOffer => {
                if let Stage::Ringing { offer, operator } = self.stage {
                    for fork in &mut self.phones {
                        if !fork.dialog.is_terminated() {
                            fork.dialog.cancel(EndCause::Cancelled);
                            // Its late answer or end is not the next offer's.
                            self.leaving.push(fork.leg);
                        }
                    }
                    self.out
                        .push_back(CallOutput::Record(CallRecord::OfferEnded {
                            offer,
                            operator,
                            end: OfferEnd::Withdrawn,
                        }));
                    self.stage = Stage::Queued;
                }
            }
            CallInput::Hold => self.hold(now, true, false),
            CallInput::Unhold => self.hold(now, false, false),
            CallInput::TransferToQueue(status) => {
                if let Stage::Bridged { leg } = self.stage {
                    self.leaving.push(leg);
                    if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) {
                        fork.dialog.hang_up();
                    }
                    self.requeue(now, status);
                    let to = self.queue.clone().unwrap_or_default();
                    self.out
                        .push_back(CallOutput::Record(CallRecord::Transferred { to }));
                }
            }
            CallInput::QueueClosed => {
                if self.stage == Stage::Queued
                    && let Some(media) = &mut self.media
                {
                    media.handle(now, CallEvent::QueueClosed);
                }
            }
            CallInput::MaxWait { callback } => {
                if self.stage == Stage::Queued
                    && let Some(media) = &mut self.media
                {
                    self.leaving_queue = true;
                    media.handle(now, CallEvent::MaxWait { callback });
                }
            }
            CallInput::Voicemail => {
                if self.stage == Stage::Queued
                    && let Some(media) = &mut self.media
                {
                    self.leaving_queue = true;
                    media.handle(now, CallEvent::Voicemail);
                }
            }
            CallInput::HangUp => self.finish(now, HangupCause::Console),
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<CallOutput> {
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
        let mut deadlines = vec![self.caller.next_deadline()];
        deadlines.extend(self.phones.iter().map(|f| f.dialog.next_deadline()));
        if let Some(media) = &self.media {
            deadlines.push(media.next_deadline());
        }
        deadlines.into_iter().flatten().min()
    }

    /// One round over the dialogs and the media; whether anything happened.
    fn step(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        while let Some(action) = self.caller.poll(now) {
            progressed = true;
            self.on_caller(now, action);
        }
        for (leg, action) in poll_forks(&mut self.phones, now) {
            progressed = true;
            self.on_phone(now, leg, action);
        }
        while let Some(action) = self.media.as_mut().and_then(|m| m.poll(now)) {
            progressed = true;
            self.on_media(now, action);
        }
        progressed
    }

    fn sip(&mut self, leg: SipLeg, send: SipSend) {
        self.out.push_back(CallOutput::Sip { leg, send });
    }

    fn on_caller(&mut self, now: Instant, action: DialogAction) {
        match action {
            DialogAction::Respond(r) => self.sip(SipLeg::Caller, SipSend::Respond(r)),
            DialogAction::SendRequest(r) => self.sip(SipLeg::Caller, SipSend::Request(r)),
            DialogAction::SendCancel(r) => self.sip(SipLeg::Caller, SipSend::Cancel(r)),
            DialogAction::SendStateless(m) => self.sip(SipLeg::Caller, SipSend::Stateless(m)),
            DialogAction::Request(request) => {
                let status = self.in_dialog_request(now, &request, true);
                self.caller.respond(&request, status, allow_for(status));
            }
            DialogAction::Confirmed(answer) => {
                if let Some(pending) = self.pending_media.take() {
                    let leg = answer
                        .as_ref()
                        .and_then(|n| LegMedia::from_negotiated(n, Some(pending.source_ip)));
                    match leg {
                        Some(leg) => {
                            self.media = Some(CallMedia::new(
                                now,
                                self.config.media.clone(),
                                pending.library,
                                pending.ivr,
                                pending.opening,
                                leg,
                                pending.streams,
                            ));
                        }
                        // An ACK without a usable answer: RFC 3261 §13.2.1
                        // lets us end the call with BYE.
                        None => self.finish(now, HangupCause::NotAcceptable),
                    }
                }
            }
            // A trunk's session refresh keeps the same media; the relay
            // stays latched to where the caller's packets come from.
            DialogAction::MediaUpdate { .. }
            | DialogAction::Provisional(_)
            | DialogAction::Answered(_) => {}
            DialogAction::Terminated(cause) => {
                let cause = match cause {
                    EndCause::NoAck => HangupCause::NoAck,
                    EndCause::Rejected(_) => HangupCause::NotAcceptable,
                    _ => HangupCause::Caller,
                };
                if cause == HangupCause::Caller
                    && !self.leaving_queue
                    && matches!(self.stage, Stage::Queued | Stage::Ringing { .. })
                    && let Some(since) = self.queued_at
                {
                    self.out.push_back(CallOutput::Abandoned {
                        wait: now.saturating_duration_since(since),
                    });
                }
                self.finish(now, cause);
            }
        }
    }

    /// INFO (DTMF), OPTIONS; anything else is not for a call (`405`).
    fn in_dialog_request(
        &mut self,
        now: Instant,
        request: &Request,
        from_caller: bool,
    ) -> StatusCode {
        match request.method {
            Method::Info => {
                let content_type = request.headers.get(&HeaderName::ContentType).unwrap_or("");
                if from_caller
                    && let Ok(info) = parse_info(content_type, &request.body)
                    && let Some(media) = &mut self.media
                {
                    media.handle(now, CallEvent::InfoDigit(info.digit));
                }
                StatusCode::OK
            }
            Method::Options => StatusCode::OK,
            _ => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn on_phone(&mut self, now: Instant, leg: u32, action: DialogAction) {
        let sip_leg = SipLeg::Phone(leg);
        match action {
            DialogAction::Respond(r) => self.sip(sip_leg, SipSend::Respond(r)),
            DialogAction::SendRequest(r) => self.sip(sip_leg, SipSend::Request(r)),
            DialogAction::SendCancel(r) => self.sip(sip_leg, SipSend::Cancel(r)),
            DialogAction::SendStateless(m) => self.sip(sip_leg, SipSend::Stateless(m)),
            DialogAction::Provisional(_) | DialogAction::Confirmed(_) => {}
            DialogAction::Answered(negotiated) => self.answered(now, leg, &negotiated),
            DialogAction::MediaUpdate { negotiated, hold } => {
                if self.stage == (Stage::Bridged { leg }) {
                    let source_ip = self.fork_ip(leg);
                    if let (Some(media), Some(source_ip)) = (&mut self.media, source_ip)
                        && let Some(leg_media) =
                            LegMedia::from_negotiated(&negotiated, Some(source_ip))
                        && !hold
                    {
                        media.handle(now, CallEvent::OperatorMedia(&leg_media));
                    }
                    self.hold(now, hold, true);
                }
            }
            DialogAction::Request(request) => {
                if request.method == Method::Refer {
                    self.refer(now, leg, &request);
                } else {
                    let status = self.in_dialog_request(now, &request, false);
                    if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) {
                        fork.dialog.respond(&request, status, allow_for(status));
                    }
                }
            }
            DialogAction::Terminated(cause) => self.phone_ended(now, leg, cause),
        }
    }

    fn fork_ip(&self, leg: u32) -> Option<IpAddr> {
        self.phones
            .iter()
            .find(|f| f.leg == leg)
            .map(|f| f.source_ip)
    }

    fn offer(
        &mut self,
        now: Instant,
        offer: u64,
        operator: i64,
        conversation: i64,
        devices: Vec<Device>,
        ring_for: Option<Duration>,
    ) {
        if self.leaving_queue {
            // Called back later, or closed: not this call's to take.
            self.out.push_back(CallOutput::OfferOutcome {
                offer,
                outcome: OfferOutcome::Declined(StatusCode::TEMPORARILY_UNAVAILABLE),
            });
            return;
        }
        if self.stage != Stage::Queued || devices.is_empty() {
            if devices.is_empty() && self.stage == Stage::Queued {
                self.out
                    .push_back(CallOutput::Record(CallRecord::OfferEnded {
                        offer,
                        operator,
                        end: OfferEnd::NoDevice,
                    }));
            }
            self.out.push_back(CallOutput::OfferOutcome {
                offer,
                outcome: OfferOutcome::Missed,
            });
            return;
        }
        let ring_timeout = ring_for.map_or(self.config.ring_timeout, |d| {
            d.min(self.config.ring_timeout)
        });
        let from = self.phone_from();
        let queue = self.queue.clone().unwrap_or_default();
        self.out.push_back(CallOutput::Record(CallRecord::Rang {
            offer,
            operator,
            devices: devices.len(),
        }));
        let forks = ring(
            now,
            &self.config.phone_dialog,
            Ringing {
                devices,
                from,
                headers: vec![
                    (HeaderName::Other("X-CCU-Queue".into()), queue),
                    (
                        HeaderName::Other("X-CCU-Conversation".into()),
                        conversation.to_string(),
                    ),
                ],
                media: &self.phone_media,
                ring_timeout,
            },
            &mut self.next_leg,
        );
        self.phones.extend(forks);
        self.refusal = None;
        self.stage = Stage::Ringing { offer, operator };
    }

    /// The caller's number and IVR choice as the phone shows them:
    /// `"+39333... anagrafe" <sip:+39333...@ccu>`.
    fn phone_from(&self) -> Address {
        let host = match &self.config.phone_dialog.contact {
            Uri::Sip(sip) => sip.host.clone(),
            Uri::Other { .. } => crate::sip::uri::Host::Domain("invalid".into()),
        };
        let user = if self.caller_number.is_empty() {
            "anonymous"
        } else {
            &self.caller_number
        };
        let mut display = user.to_owned();
        if let Some(queue) = &self.queue {
            display.push(' ');
            display.push_str(queue);
        }
        Address {
            display_name: Some(display),
            uri: Uri::Sip(SipUri::new(Some(user), host)),
            params: Vec::new(),
        }
    }

    fn answered(&mut self, now: Instant, leg: u32, negotiated: &Negotiated) {
        let stale = self.leaving.contains(&leg);
        let Stage::Ringing { offer, operator } = self.stage else {
            // Answered after the offer ended (withdrawn, another phone won,
            // the caller left): that phone is hung up.
            if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) {
                fork.dialog.hang_up();
            }
            return;
        };
        if stale {
            // A phone of an offer that ended (withdrawn) answering late:
            // hung up, never taken for the offer ringing now.
            if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) {
                fork.dialog.hang_up();
            }
            return;
        }
        let leg_media = self
            .fork_ip(leg)
            .and_then(|ip| LegMedia::from_negotiated(negotiated, Some(ip)));
        let (Some(leg_media), Some(media)) = (leg_media, &mut self.media) else {
            if let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) {
                fork.dialog.hang_up();
            }
            return;
        };
        media.handle(
            now,
            CallEvent::OperatorAnswered {
                media: &leg_media,
                start: self.operator_stream,
            },
        );
        for fork in self.phones.iter_mut().filter(|f| f.leg != leg) {
            if !fork.dialog.is_terminated() {
                fork.dialog.cancel(EndCause::Cancelled);
                self.leaving.push(fork.leg);
            }
        }
        self.stage = Stage::Bridged { leg };
        self.held = false;
        self.out.push_back(CallOutput::OfferOutcome {
            offer,
            outcome: OfferOutcome::Accepted,
        });
        let waited = self
            .queued_at
            .map(|since| now.saturating_duration_since(since))
            .unwrap_or_default();
        self.out.push_back(CallOutput::Record(CallRecord::Answered {
            offer,
            operator,
            waited,
        }));
    }

    fn phone_ended(&mut self, now: Instant, leg: u32, cause: EndCause) {
        if let Some(i) = self.leaving.iter().position(|l| *l == leg) {
            self.leaving.swap_remove(i);
            return;
        }
        match self.stage {
            Stage::Ringing { offer, operator } => {
                let (outcome, end) = fork_end(cause);
                if let Some(end) = end {
                    self.out
                        .push_back(CallOutput::Record(CallRecord::OfferEnded {
                            offer,
                            operator,
                            end,
                        }));
                }
                self.refusal = Some(worse(self.refusal, outcome));
                let ringing = self
                    .phones
                    .iter()
                    .any(|f| f.leg != leg && !f.dialog.is_terminated());
                if !ringing {
                    let outcome = self.refusal.take().unwrap_or(OfferOutcome::Missed);
                    self.out
                        .push_back(CallOutput::OfferOutcome { offer, outcome });
                    self.stage = Stage::Queued;
                }
            }
            Stage::Bridged { leg: bridged } if bridged == leg => {
                self.finish(now, HangupCause::Operator);
            }
            _ => {}
        }
    }

    /// Hold from the phone (re-INVITE) or the console.
    fn hold(&mut self, now: Instant, hold: bool, by_phone: bool) {
        if !matches!(self.stage, Stage::Bridged { .. }) || self.held == hold {
            return;
        }
        self.held = hold;
        let local = self.local_to_caller();
        if let Some(media) = &mut self.media {
            media.handle(
                now,
                if hold {
                    CallEvent::Hold
                } else {
                    CallEvent::Unhold
                },
            );
        }
        let record = if hold {
            self.held_at_local = local;
            CallRecord::Hold { by_phone }
        } else {
            CallRecord::Unhold {
                by_phone,
                music_packets: local.saturating_sub(self.held_at_local),
            }
        };
        self.out.push_back(CallOutput::Record(record));
    }

    /// RFC 3515 blind transfer from the phone: `202`, a NOTIFY with the
    /// sipfrag `200 OK` (the transfer is ours to carry out), the phone's
    /// leg hung up, the caller back in a queue with music.
    fn refer(&mut self, now: Instant, leg: u32, request: &Request) {
        let target = request.headers.get(&HeaderName::ReferTo).and_then(|value| {
            let value = value.trim();
            let inner = value
                .strip_prefix('<')
                .and_then(|v| v.split_once('>'))
                .map(|(u, _)| u);
            Uri::parse(inner.unwrap_or(value)).ok()
        });
        let bridged = self.stage == (Stage::Bridged { leg });
        let Some(fork) = self.phones.iter_mut().find(|f| f.leg == leg) else {
            return;
        };
        let Some(target) = target.filter(|_| bridged) else {
            let status = if bridged {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::FORBIDDEN
            };
            fork.dialog.respond(request, status, Headers::new());
            return;
        };
        let accepted = StatusCode::new(202).unwrap_or(StatusCode::OK);
        fork.dialog.respond(request, accepted, Headers::new());
        let mut headers = Headers::new();
        headers.push(HeaderName::Event, "refer");
        headers.push(
            HeaderName::Other("Subscription-State".into()),
            "terminated;reason=noresource",
        );
        headers.push(HeaderName::ContentType, "message/sipfrag;version=2.0");
        fork.dialog
            .send_request(Method::Notify, headers, b"SIP/2.0 200 OK\r\n".to_vec());
        fork.dialog.hang_up();
        self.leaving.push(leg);
        self.requeue(
            now,
            QueueStatus {
                position: None,
                estimated_wait: None,
            },
        );
        self.out
            .push_back(CallOutput::Record(CallRecord::Transferred {
                to: target.to_string(),
            }));
        self.out.push_back(CallOutput::Transfer { target });
    }

    /// Local packets (prompts, music) sent to the caller so far.
    fn local_to_caller(&self) -> u64 {
        self.media
            .as_ref()
            .map_or(0, |m| m.relay().stats(Leg::A).local_packets)
    }

    fn requeue(&mut self, now: Instant, status: QueueStatus) {
        if let Some(media) = &mut self.media {
            media.handle(now, CallEvent::Requeue(status));
        }
        self.held = false;
        self.stage = Stage::Queued;
        self.queued_at.get_or_insert(now);
    }

    fn on_media(&mut self, now: Instant, action: CallAction) {
        match action {
            CallAction::Send { leg, to, bytes } => {
                self.out.push_back(CallOutput::Rtp { leg, to, bytes })
            }
            CallAction::Route {
                queue,
                skill,
                language,
                path,
            } => {
                if self.stage == Stage::Ivr {
                    self.stage = Stage::Queued;
                    self.queued_at = Some(now);
                    self.queue = Some(queue.clone());
                    self.ivr_path = path.clone();
                    self.out
                        .push_back(CallOutput::Record(CallRecord::IvrPath(path.clone())));
                    self.out.push_back(CallOutput::Route {
                        queue,
                        skill,
                        language,
                        ivr_path: path,
                    });
                }
            }
            CallAction::CallbackRequested => {
                self.leaving_queue = true;
                self.out.push_back(CallOutput::CallbackRequested);
            }
            CallAction::Hangup { reason, path } => {
                if self.stage == Stage::Ivr {
                    self.out
                        .push_back(CallOutput::Record(CallRecord::IvrPath(path)));
                }
                self.finish(now, HangupCause::Ivr(reason));
            }
            CallAction::MediaTimeout { leg } => self.finish(now, HangupCause::MediaTimeout(leg)),
            CallAction::VoiceMessage { samples } => {
                let duration = Duration::from_micros(samples.len() as u64 * 125);
                self.out.push_back(CallOutput::VoiceMessage {
                    wav: crate::media::wav::write_pcm16(&samples),
                    duration,
                });
            }
        }
    }

    /// Ends the call: BYE (or CANCEL) every live dialog, stop the media,
    /// and report the cause once.
    fn finish(&mut self, now: Instant, cause: HangupCause) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some(cause);
        if let Stage::Ringing { offer, operator } = self.stage {
            let end = if cause == HangupCause::Caller {
                OfferEnd::CallerLeft
            } else {
                OfferEnd::Withdrawn
            };
            self.out
                .push_back(CallOutput::Record(CallRecord::OfferEnded {
                    offer,
                    operator,
                    end,
                }));
        }
        self.stage = Stage::Ended;
        self.caller.hang_up();
        for fork in &mut self.phones {
            fork.dialog.hang_up();
        }
        if let Some(media) = &mut self.media {
            media.handle(now, CallEvent::End);
        }
        // The dialogs' BYEs go out before the end is reported.
        while self.step(now) {}
        let (relayed_to_caller, relayed_to_operator) = self.media.as_ref().map_or((0, 0), |m| {
            (
                m.relay().stats(Leg::A).relayed_packets,
                m.relay().stats(Leg::B).relayed_packets,
            )
        });
        self.out.push_back(CallOutput::Record(CallRecord::Hangup {
            cause,
            relayed_to_caller,
            relayed_to_operator,
        }));
        self.out.push_back(CallOutput::Ended { cause });
    }
}

/// What rings an operator's devices for one offer.
struct Ringing<'a> {
    devices: Vec<Device>,
    /// What the phone shows (the caller's number, the queue).
    from: Address,
    headers: Vec<(HeaderName, String)>,
    /// Our media for the phone leg (each fork gets its own session id).
    media: &'a LocalMedia,
    ring_timeout: Duration,
}

/// One INVITE per device (a fork each), numbered from `next_leg`.
fn ring(
    now: Instant,
    config: &DialogConfig,
    ringing: Ringing<'_>,
    next_leg: &mut u32,
) -> Vec<Fork> {
    let mut forks = Vec::with_capacity(ringing.devices.len());
    for device in ringing.devices {
        let leg = *next_leg;
        *next_leg = next_leg.wrapping_add(1);
        let mut media = ringing.media.clone();
        media.session_id = media.session_id.wrapping_add(u64::from(leg));
        media.session_version = media.session_id;
        let dialog = Dialog::outgoing(
            now,
            config.clone(),
            OutgoingCall {
                target: device.target,
                from: ringing.from.clone(),
                call_id: device.call_id,
                local_tag: device.local_tag,
                media,
                headers: ringing.headers.clone(),
                ring_timeout: Some(ringing.ring_timeout),
                credentials: None,
            },
        );
        forks.push(Fork {
            leg,
            dialog,
            source_ip: device.source_ip,
        });
    }
    forks
}

/// What the forks have to do now, by leg; the terminated ones are dropped
/// (their last action, `Terminated`, is in the list). Empty most of the
/// time, so no allocation.
fn poll_forks(phones: &mut Vec<Fork>, now: Instant) -> Vec<(u32, DialogAction)> {
    let mut actions = Vec::new();
    for fork in phones.iter_mut() {
        while let Some(action) = fork.dialog.poll(now) {
            actions.push((fork.leg, action));
        }
    }
    phones.retain(|f| !f.dialog.is_terminated());
    actions
}

/// How a ringing fork's end counts for the offer, and what to record
/// (`None`: we cancelled it, recorded where we did).
fn fork_end(cause: EndCause) -> (OfferOutcome, Option<OfferEnd>) {
    let outcome = match cause {
        EndCause::Declined(status) if is_refusal(status) => OfferOutcome::Declined(status),
        _ => OfferOutcome::Missed,
    };
    let end = match cause {
        EndCause::NoAnswer => Some(OfferEnd::RingTimeout),
        EndCause::Declined(status) if status.as_u16() == 603 => Some(OfferEnd::Declined(status)),
        EndCause::Declined(status) if is_refusal(status) => Some(OfferEnd::Busy(status)),
        EndCause::Declined(status) => Some(OfferEnd::Failed(status)),
        _ => None,
    };
    (outcome, end)
}

/// The offer's outcome so far with one more fork's: a refusal from any
/// device beats silence from the others.
fn worse(so_far: Option<OfferOutcome>, outcome: OfferOutcome) -> OfferOutcome {
    match so_far {
        Some(declined @ OfferOutcome::Declined(_))
            if !matches!(outcome, OfferOutcome::Declined(_)) =>
        {
            declined
        }
        _ => outcome,
    }
}

/// `486 Busy Here`, `600 Busy Everywhere`, `603 Decline`: the operator said
/// no. Other failures (`408`, `480`, `5xx`) count as no answer.
fn is_refusal(status: StatusCode) -> bool {
    matches!(status.as_u16(), 486 | 600 | 603)
}

fn allow_for(status: StatusCode) -> Headers {
    let mut headers = Headers::new();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.push(HeaderName::Allow, crate::sip::dialog::ALLOW);
    }
    headers
}
