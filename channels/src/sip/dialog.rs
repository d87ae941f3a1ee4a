//! INVITE dialogs (RFC 3261 §12–§15), sans-IO: one [`Dialog`] per call leg,
//! either side.
//!
//! - **UAS** ([`Dialog::incoming`]): the citizen's INVITE from a trunk. ccu
//!   rings (`180`/`183`), answers `200` with the SDP answer, retransmits
//!   the `2xx` with T1 doubling up to T2 until the ACK arrives (§13.3.1.4),
//!   and gives up after 64·T1 with a BYE. A CANCEL before the answer is
//!   answered by the endpoint (`487`); the owner reports it with
//!   [`DialogEvent::Cancelled`].
//! - **UAC** ([`Dialog::outgoing`]): the offer to an operator's phone. ccu
//!   sends the INVITE with its Contact and SDP offer, reports `1xx`,
//!   acknowledges a `2xx` with a new ACK outside any transaction
//!   (§13.2.2.4), reports `3xx`–`6xx` as declined with the code, and
//!   CANCELs when the ring timeout passes (§9.1).
//! - **Both**, once confirmed: BYE in either direction (§15), re-INVITE
//!   from the peer answered with [`sdp::answer`] (hold and unhold, §14.2),
//!   in-dialog CSeq ordering (§12.2.2), target refresh from Contact, and
//!   other in-dialog requests (INFO, REFER, NOTIFY) handed to the owner.
//!
//! The dialog never opens a socket or reads the clock. Its owner (the
//! B2BUA [`crate::call`]) passes `now` and what arrived, and carries out
//! the [`DialogAction`]s: responses on the request's server transaction,
//! requests through client transactions, ACKs and `2xx` retransmissions
//! outside transactions, and reports.
//!
//! ```
//! use std::time::Instant;
//! use ccu_channels::sip::dialog::{Dialog, DialogAction, DialogConfig, OutgoingCall};
//! use ccu_channels::sip::header::Address;
//! use ccu_channels::sip::sdp::LocalMedia;
//! use ccu_channels::sip::Uri;
//!
//! let now = Instant::now();
//! let config = DialogConfig::new(Uri::parse("sip:ccu@192.0.2.1:5060").unwrap(), "192.0.2.1:5060");
//! let mut phone = Dialog::outgoing(now, config, OutgoingCall {
//!     target: Uri::parse("sip:1001@10.0.0.9:5062").unwrap(),
//!     from: Address::new(Uri::parse("sip:+390212345678@192.0.2.1").unwrap()),
//!     call_id: "c1".into(),
//!     local_tag: "t1".into(),
//!     media: LocalMedia::new("192.0.2.1".parse().unwrap(), 20_000, 1),
//!     headers: vec![],
//!     ring_timeout: None,
//!     credentials: None,
//! });
//! assert!(matches!(phone.poll(now), Some(DialogAction::SendRequest(invite)) if invite.headers.cseq().unwrap().seq == 1));
//! ```

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::sip::digest::{Algorithm, Challenge, ClientCredentials};
use crate::sip::header::{Address, Contacts, HeaderError};
use crate::sip::message::{HeaderName, Headers, Message, Method, Request, Response, StatusCode};
use crate::sip::sdp::{
    self, Attribute, Codec, Connection, Direction, LocalMedia, MediaDescription, Negotiated,
    NegotiationError, Origin, SessionDescription,
};
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::TransportKind;
use crate::sip::uri::Uri;

/// The methods ccu accepts inside a dialog (the `Allow` of its responses).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY";

/// How ccu appears in its dialogs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogConfig {
    pub timers: TimerConfig,
    /// Our Contact URI (RFC 3261 §8.1.1.8): where the peer sends its
    /// in-dialog requests.
    pub contact: Uri,
    /// The `sent-by` of the Via of the ACKs we build (the endpoint adds
    /// the Via of every other request).
    pub sent_by: String,
    /// The leg's transport: the ACK's Via says it, and `2xx`
    /// retransmissions are only needed over UDP.
    pub transport: TransportKind,
}

impl DialogConfig {
    pub fn new(contact: Uri, sent_by: impl Into<String>) -> DialogConfig {
        DialogConfig {
            timers: TimerConfig::default(),
            contact,
            sent_by: sent_by.into(),
            transport: TransportKind::Udp,
        }
    }
}

/// Why a dialog could not be made from a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error("an INVITE needs exactly one Contact (RFC 3261 §8.1.1.8)")]
    Contact,
    #[error("the From of the INVITE has no tag")]
    FromTag,
}

impl DialogError {
    /// The response that tells the peer (always `400`).
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

/// The state RFC 3261 §12 keeps for a dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogState {
    pub call_id: String,
    pub local_tag: String,
    /// Empty until the UAC learns it from the `2xx`.
    pub remote_tag: String,
    /// Our address in From (UAC) or To (UAS), without the tag.
    pub local: Address,
    pub remote: Address,
    /// The CSeq number of our last request (§12.2.1.1).
    pub local_cseq: u32,
    /// The peer's last CSeq number; `None` until it sends a request.
    pub remote_cseq: Option<u32>,
    /// The peer's Contact: the Request-URI of our in-dialog requests.
    pub remote_target: Uri,
    /// From Record-Route (§12.1.1 in order, §12.1.2 reversed).
    pub route_set: Vec<Address>,
}

impl DialogState {
    /// A request inside the dialog (§12.2.1.1), without Via (the endpoint
    /// adds it). ACK and CANCEL reuse a CSeq number; other methods take
    /// the next one.
    pub fn request(&mut self, method: Method, cseq: Option<u32>) -> Request {
        let seq = match cseq {
            Some(seq) => seq,
            None => {
                self.local_cseq = self.local_cseq.wrapping_add(1);
                self.local_cseq
            }
        };
        // Loose routing when the first route has `lr` (§12.2.1.1); a strict
        // router gets the Request-URI and the remote target goes last.
        let (uri, routes): (Uri, Vec<String>) = match self.route_set.first() {
            None => (self.remote_target.clone(), Vec::new()),
            Some(first) if first.uri.as_sip().is_some_and(|u| u.param("lr").is_some()) => (
                self.remote_target.clone(),
                self.route_set.iter().map(|r| r.to_string()).collect(),
            ),
            Some(first) => {
                let mut routes: Vec<String> = self
                    .route_set
                    .iter()
                    .skip(1)
                    .map(|r| r.to_string())
                    .collect();
                routes.push(format!("<{}>", self.remote_target));
                (first.uri.clone(), routes)
            }
        };
        let mut headers = Headers::new();
        for route in routes {
            headers.push(HeaderName::Route, route);
        }
        headers.push(HeaderName::MaxForwards, "70");
        headers.push(HeaderName::From, with_tag(&self.local, &self.local_tag));
        headers.push(HeaderName::To, with_tag(&self.remote, &self.remote_tag));
        headers.push(HeaderName::CallId, self.call_id.clone());
        headers.push(HeaderName::CSeq, format!("{seq} {method}"));
        Request {
            method,
            uri,
            version: crate::sip::message::Version::SIP_2_0,
            headers,
            body: Vec::new(),
        }
    }

    /// Whether a request from the peer belongs to this dialog: Call-ID,
    /// To tag = ours, From tag = theirs (§12.2.2).
    pub fn matches_request(&self, request: &Request) -> bool {
        let h = &request.headers;
        h.call_id().is_ok_and(|c| c == self.call_id)
            && h.to()
                .is_ok_and(|t| t.tag() == Some(self.local_tag.as_str()))
            && h.from()
                .is_ok_and(|f| f.tag().unwrap_or("") == self.remote_tag)
    }
}

fn with_tag(address: &Address, tag: &str) -> String {
    let mut address = address.clone();
    if !tag.is_empty() {
        address.set_param("tag", Some(tag.to_owned()));
    }
    address.to_string()
}

fn without_tag(mut address: Address) -> Address {
    address
        .params
        .retain(|p| !p.name.eq_ignore_ascii_case("tag"));
    address
}

fn single_contact(headers: &Headers) -> Result<Uri, DialogError> {
    match headers.contacts()? {
        Contacts::List(list) if list.len() == 1 => list
            .into_iter()
            .next()
            .map(|a| a.uri)
            .ok_or(DialogError::Contact),
        _ => Err(DialogError::Contact),
    }
}

/// What the owner passes in.
#[derive(Debug, Clone)]
pub enum DialogEvent<'a> {
    /// A request for this dialog (in-dialog requests and the ACK of our
    /// `2xx`).
    Request(&'a Request),
    /// A response to one of our requests.
    Response(&'a Response),
    /// A client transaction of ours timed out or could not be sent
    /// (RFC 3261 §8.1.3.1: as a `408`).
    RequestFailed { method: Method },
    /// UAS: the caller CANCELled the INVITE; the endpoint has answered
    /// `487` (RFC 3261 §9.2).
    Cancelled,
}

/// Why a dialog ended: the call's hang-up cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    /// We sent BYE.
    LocalBye,
    /// The peer sent BYE.
    RemoteBye,
    /// UAS: the caller CANCELled before the answer.
    CallerCancelled,
    /// UAS: we refused the INVITE with this final response.
    Rejected(StatusCode),
    /// UAC: the phone answered `3xx`–`6xx` (`408` when nothing came).
    Declined(StatusCode),
    /// UAC: the ring timeout passed; we CANCELled.
    NoAnswer,
    /// UAC: we CANCELled for another reason (another phone answered, the
    /// caller hung up).
    Cancelled,
    /// UAS: our `2xx` was never acknowledged (§13.3.1.4); we sent BYE.
    NoAck,
}

/// What the owner must do, or be told.
#[derive(Debug, Clone, PartialEq)]
pub enum DialogAction {
    /// Answer on the server transaction of the request whose CSeq the
    /// response carries.
    Respond(Response),
    /// Send through a new client transaction (INVITE, BYE, NOTIFY...).
    SendRequest(Request),
    /// Send a CANCEL through a client transaction whose Via is the
    /// INVITE's (same branch, RFC 3261 §9.1): the owner adds it.
    SendCancel(Request),
    /// Send outside any transaction: the ACK of a `2xx`, `2xx`
    /// retransmissions.
    SendStateless(Message),
    /// UAC: a provisional response (`180`, `183`).
    Provisional(StatusCode),
    /// UAC: the phone answered and was acknowledged; its SDP answer.
    Answered(Negotiated),
    /// UAS: the ACK of our `2xx` arrived; for an INVITE without an offer,
    /// what the ACK's answer negotiated.
    Confirmed(Option<Negotiated>),
    /// A re-INVITE from the peer was answered; `hold` when the peer stops
    /// sending to us (`sendonly`/`inactive`, or the RFC 2543 `0.0.0.0`).
    MediaUpdate { negotiated: Negotiated, hold: bool },
    /// Another in-dialog request (INFO, REFER, NOTIFY, OPTIONS...): the
    /// owner answers it with [`Dialog::respond`].
    Request(Request),
    /// The dialog is over.
    Terminated(EndCause),
}

/// What a UAC INVITE says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingCall {
    /// The Request-URI and To: the phone's registered Contact.
    pub target: Uri,
    /// Our From, with the display name to show (no tag).
    pub from: Address,
    pub call_id: String,
    pub local_tag: String,
    pub media: LocalMedia,
    /// Extra headers (`X-CCU-Queue`, `X-CCU-Conversation`).
    pub headers: Vec<(HeaderName, String)>,
    /// CANCEL after this long without a final response.
    pub ring_timeout: Option<Duration>,
    /// The account a `401`/`407` is answered with (a carrier's trunk);
    /// none: the challenge ends the call.
    pub credentials: Option<ClientCredentials>,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// UAS: the INVITE waits for our answer.
    Incoming {
        invite: Request,
    },
    /// UAC: our INVITE is out.
    Calling {
        invite: Request,
        provisional: bool,
        /// CANCEL wanted before any provisional response (§9.1: not before).
        cancel: Option<EndCause>,
    },
    /// UAC: CANCEL sent; waiting for the `487` (or a `2xx` that crossed it).
    Cancelling {
        invite: Request,
        cause: EndCause,
    },
    Confirmed,
    Terminated,
}

/// A `2xx` to an INVITE of the peer, repeated until its ACK (§13.3.1.4).
#[derive(Debug, Clone, PartialEq)]
struct PendingAck {
    response: Response,
    cseq: u32,
    next: Instant,
    interval: Duration,
    give_up: Instant,
    /// The INVITE had no offer: the ACK carries the answer.
    awaits_answer: bool,
    /// The first 2xx of the dialog (its ACK confirms the dialog).
    initial: bool,
}

/// One INVITE dialog. See the module documentation.
#[derive(Debug, Clone)]
pub struct Dialog {
    config: DialogConfig,
    state: DialogState,
    phase: Phase,
    media: Option<LocalMedia>,
    /// Our last SDP (offer or answer), offered again to an offerless
    /// re-INVITE.
    local_sdp: Option<SessionDescription>,
    pending_ack: Option<PendingAck>,
    /// UAS: hang-up asked before the ACK (§15: not before it).
    bye_after_ack: bool,
    ring_deadline: Option<Instant>,
    /// UAC: the ACK of the confirmed `2xx`, sent again for each
    /// retransmission of it (§13.2.2.4).
    last_ack: Option<Request>,
    /// UAC: what a `401`/`407` to our INVITE is answered with.
    credentials: Option<ClientCredentials>,
    /// UAC: challenges answered so far (a bound: a peer that challenges
    /// every answer must not loop us).
    challenges: u8,
    actions: VecDeque<DialogAction>,
}

impl Dialog {
    /// The UAS side of an INVITE (§12.1.1). The endpoint drew `local_tag`
    /// (the server transaction's To tag).
    pub fn incoming(
        config: DialogConfig,
        invite: &Request,
        local_tag: &str,
    ) -> Result<Dialog, DialogError> {
        let h = &invite.headers;
        let from = h.from()?;
        let remote_tag = from.tag().ok_or(DialogError::FromTag)?.to_owned();
        let state = DialogState {
            call_id: h.call_id()?.to_owned(),
            local_tag: local_tag.to_owned(),
            remote_tag,
            local: without_tag(h.to()?),
            remote: without_tag(from),
            local_cseq: 0,
            remote_cseq: Some(h.cseq()?.seq),
            remote_target: single_contact(h)?,
            route_set: h.routes(&HeaderName::RecordRoute)?,
        };
        Ok(Dialog::new(
            config,
            state,
            Phase::Incoming {
                invite: invite.clone(),
            },
        ))
    }

    /// The UAC side: builds the INVITE (sent by the first `poll`).
    pub fn outgoing(now: Instant, config: DialogConfig, call: OutgoingCall) -> Dialog {
        let mut state = DialogState {
            call_id: call.call_id,
            local_tag: call.local_tag,
            remote_tag: String::new(),
            local: call.from,
            remote: Address::new(call.target.clone()),
            local_cseq: 0,
            remote_cseq: None,
            remote_target: call.target,
            route_set: Vec::new(),
        };
        let mut invite = state.request(Method::Invite, None);
        invite
            .headers
            .push(HeaderName::Contact, format!("<{}>", config.contact));
        invite.headers.push(HeaderName::Allow, ALLOW);
        for (name, value) in call.headers {
            invite.headers.push(name, value);
        }
        let offer = offer(&call.media);
        invite
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        invite.body = offer.to_string().into_bytes();
        let mut dialog = Dialog::new(
            config,
            state,
            Phase::Calling {
                invite: invite.clone(),
                provisional: false,
                cancel: None,
            },
        );
        dialog.media = Some(call.media);
        dialog.local_sdp = Some(offer);
        dialog.ring_deadline = call.ring_timeout.map(|t| now + t);
        dialog.credentials = call.credentials;
        dialog.actions.push_back(DialogAction::SendRequest(invite));
        dialog
    }

    fn new(config: DialogConfig, state: DialogState, phase: Phase) -> Dialog {
        Dialog {
            config,
            state,
            phase,
            media: None,
            local_sdp: None,
            pending_ack: None,
            bye_after_ack: false,
            ring_deadline: None,
            last_ack: None,
            credentials: None,
            challenges: 0,
            actions: VecDeque::new(),
        }
    }

    pub fn state(&self) -> &DialogState {
        &self.state
    }

    pub fn is_confirmed(&self) -> bool {
        matches!(self.phase, Phase::Confirmed)
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.phase, Phase::Terminated)
    }

    /// Whether the peer's request belongs here (§12.2.2). Before a UAC
    /// learns the remote tag, no request matches.
    pub fn matches_request(&self, request: &Request) -> bool {
        !matches!(self.phase, Phase::Calling { .. } | Phase::Cancelling { .. })
            && self.state.matches_request(request)
    }

    /// Whether a response is to one of our requests: Call-ID and From tag.
    pub fn matches_response(&self, response: &Response) -> bool {
        let h = &response.headers;
        h.call_id().is_ok_and(|c| c == self.state.call_id)
            && h.from()
                .is_ok_and(|f| f.tag() == Some(self.state.local_tag.as_str()))
    }

    /// UAS: a provisional response (`180 Ringing`, or `183` with early
    /// media SDP).
    pub fn ring(&mut self, status: StatusCode, sdp: Option<&SessionDescription>) {
        if let Phase::Incoming { invite } = &self.phase {
            let mut response = self.dialog_response(invite, status);
            if let Some(sdp) = sdp {
                set_sdp(&mut response.headers, &mut response.body, sdp);
            }
            self.actions.push_back(DialogAction::Respond(response));
        }
    }

    /// UAS: answers the INVITE with `200` and our SDP (the answer to its
    /// offer, or an offer when it had none). An offer we cannot answer is
    /// refused with `488` and ends the dialog.
    pub fn accept(
        &mut self,
        now: Instant,
        mut media: LocalMedia,
    ) -> Result<Option<Negotiated>, NegotiationError> {
        let Phase::Incoming { invite } = &self.phase else {
            return Ok(None);
        };
        let invite = invite.clone();
        let (sdp, negotiated) = if invite.body.is_empty() {
            (offer(&media), None)
        } else {
            let answered = sdp::parse(&invite.body)
                .map_err(|_| NegotiationError::NoAudio)
                .and_then(|o| sdp::answer(&o, &media));
            match answered {
                Ok((sdp, negotiated)) => (sdp, Some(negotiated)),
                Err(error) => {
                    self.reject(StatusCode::new(488).unwrap_or(StatusCode::NOT_ACCEPTABLE));
                    return Err(error);
                }
            }
        };
        media.session_version = sdp.origin.session_version;
        let mut response = self.dialog_response(&invite, StatusCode::OK);
        set_sdp(&mut response.headers, &mut response.body, &sdp);
        self.media = Some(media);
        self.local_sdp = Some(sdp);
        self.phase = Phase::Confirmed;
        self.send_2xx(now, response, negotiated.is_none(), true);
        Ok(negotiated)
    }

    /// UAS: refuses the INVITE with a final response (`480`, `486`, `503`,
    /// `603`...).
    pub fn reject(&mut self, status: StatusCode) {
        if let Phase::Incoming { invite } = &self.phase {
            let response = invite.response(status, &self.state.local_tag);
            self.actions.push_back(DialogAction::Respond(response));
            self.end(EndCause::Rejected(status));
        }
    }

    /// Ends the call from our side: BYE when confirmed (after the ACK for
    /// a UAS, §15), CANCEL while a UAC rings, `480` for an unanswered UAS.
    pub fn hang_up(&mut self) {
        match &self.phase {
            Phase::Incoming { .. } => self.reject(StatusCode::TEMPORARILY_UNAVAILABLE),
            Phase::Calling { .. } => self.cancel(EndCause::Cancelled),
            Phase::Cancelling { .. } | Phase::Terminated => {}
            Phase::Confirmed => {
                if self.pending_ack.as_ref().is_some_and(|p| p.initial) {
                    self.bye_after_ack = true;
                } else {
                    self.bye(EndCause::LocalBye);
                }
            }
        }
    }

    /// UAC: CANCELs the INVITE (§9.1), once a provisional response has come.
    pub fn cancel(&mut self, cause: EndCause) {
        let Phase::Calling {
            invite,
            provisional,
            cancel,
        } = &mut self.phase
        else {
            return;
        };
        if !*provisional {
            *cancel = Some(cause);
            return;
        }
        let invite = invite.clone();
        self.actions
            .push_back(DialogAction::SendCancel(cancel_for(&invite)));
        self.phase = Phase::Cancelling { invite, cause };
    }

    /// Answers an in-dialog request handed out as [`DialogAction::Request`].
    pub fn respond(&mut self, request: &Request, status: StatusCode, headers: Headers) {
        let mut response = request.response(status, &self.state.local_tag);
        for header in &headers {
            response
                .headers
                .push(header.name.clone(), header.value.clone());
        }
        self.actions.push_back(DialogAction::Respond(response));
    }

    /// Sends a request inside the confirmed dialog (NOTIFY for a REFER, INFO).
    pub fn send_request(&mut self, method: Method, headers: Headers, body: Vec<u8>) {
        if !self.is_confirmed() {
            return;
        }
        let mut request = self.state.request(method, None);
        for header in &headers {
            request
                .headers
                .push(header.name.clone(), header.value.clone());
        }
        request.body = body;
        self.actions.push_back(DialogAction::SendRequest(request));
    }

    pub fn handle(&mut self, now: Instant, event: DialogEvent<'_>) {
        match event {
            DialogEvent::Request(request) => self.on_request(now, request),
            DialogEvent::Response(response) => self.on_response(response),
            DialogEvent::RequestFailed { method } => {
                if method == Method::Invite {
                    match &self.phase {
                        Phase::Calling { .. } => {
                            self.end(EndCause::Declined(StatusCode::REQUEST_TIMEOUT));
                        }
                        Phase::Cancelling { cause, .. } => {
                            let cause = *cause;
                            self.end(cause);
                        }
                        _ => {}
                    }
                }
            }
            DialogEvent::Cancelled => {
                if matches!(self.phase, Phase::Incoming { .. }) {
                    self.end(EndCause::CallerCancelled);
                }
            }
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<DialogAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        if let Some(deadline) = self.ring_deadline
            && now >= deadline
        {
            self.ring_deadline = None;
            self.cancel(EndCause::NoAnswer);
            return self.actions.pop_front();
        }
        if let Some(pending) = &mut self.pending_ack
            && now >= pending.next
        {
            if now >= pending.give_up {
                // §13.3.1.4: no ACK within 64·T1: the dialog is over.
                self.pending_ack = None;
                self.bye_after_ack = false;
                self.bye(EndCause::NoAck);
                return self.actions.pop_front();
            }
            pending.interval = (pending.interval * 2).min(self.config.timers.t2);
            pending.next = (now + pending.interval).min(pending.give_up);
            let response = pending.response.clone();
            if self.config.transport.is_reliable() {
                return self.poll(now);
            }
            return Some(DialogAction::SendStateless(Message::Response(response)));
        }
        None
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        if !self.actions.is_empty() {
            return None;
        }
        [
            self.ring_deadline,
            self.pending_ack.as_ref().map(|p| p.next),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn end(&mut self, cause: EndCause) {
        if !matches!(self.phase, Phase::Terminated) {
            self.phase = Phase::Terminated;
            self.ring_deadline = None;
            self.pending_ack = None;
            self.actions.push_back(DialogAction::Terminated(cause));
        }
    }

    fn bye(&mut self, cause: EndCause) {
        if matches!(self.phase, Phase::Confirmed) {
            let bye = self.state.request(Method::Bye, None);
            self.actions.push_back(DialogAction::SendRequest(bye));
            self.end(cause);
        }
    }

    /// A `1xx`/`2xx` to an INVITE that establishes the dialog: Contact,
    /// and the Record-Route copied (§12.1.1).
    fn dialog_response(&self, invite: &Request, status: StatusCode) -> Response {
        let mut response = invite.response(status, &self.state.local_tag);
        for route in invite.headers.get_all(&HeaderName::RecordRoute) {
            response.headers.push(HeaderName::RecordRoute, route);
        }
        response
            .headers
            .push(HeaderName::Contact, format!("<{}>", self.config.contact));
        if status.is_success() {
            response.headers.push(HeaderName::Allow, ALLOW);
        }
        response
    }

    fn send_2xx(&mut self, now: Instant, response: Response, awaits_answer: bool, initial: bool) {
        let cseq = response.headers.cseq().map(|c| c.seq).unwrap_or_default();
        let t1 = self.config.timers.t1;
        self.pending_ack = Some(PendingAck {
            response: response.clone(),
            cseq,
            next: now + t1,
            interval: t1,
            give_up: now + 64 * t1,
            awaits_answer,
            initial,
        });
        self.actions.push_back(DialogAction::Respond(response));
    }

    fn on_request(&mut self, now: Instant, request: &Request) {
        if matches!(self.phase, Phase::Terminated) {
            if request.method != Method::Ack {
                let response =
                    request.response(StatusCode::CALL_DOES_NOT_EXIST, &self.state.local_tag);
                self.actions.push_back(DialogAction::Respond(response));
            }
            return;
        }
        let Ok(cseq) = request.headers.cseq() else {
            return;
        };
        if request.method == Method::Ack {
            self.on_ack(request, cseq.seq);
            return;
        }
        // §12.2.2: a lower CSeq than the last is out of order.
        if let Some(last) = self.state.remote_cseq
            && cseq.seq < last
        {
            let response =
                request.response(StatusCode::SERVER_INTERNAL_ERROR, &self.state.local_tag);
            self.actions.push_back(DialogAction::Respond(response));
            return;
        }
        self.state.remote_cseq = Some(cseq.seq);
        if !matches!(self.phase, Phase::Confirmed) {
            let response = request.response(StatusCode::CALL_DOES_NOT_EXIST, &self.state.local_tag);
            self.actions.push_back(DialogAction::Respond(response));
            return;
        }
        match request.method {
            Method::Bye => {
                let ok = request.response(StatusCode::OK, &self.state.local_tag);
                self.actions.push_back(DialogAction::Respond(ok));
                self.end(EndCause::RemoteBye);
            }
            Method::Invite => self.on_reinvite(now, request),
            _ => self
                .actions
                .push_back(DialogAction::Request(request.clone())),
        }
    }

    fn on_ack(&mut self, request: &Request, seq: u32) {
        let Some(pending) = &self.pending_ack else {
            return;
        };
        if pending.cseq != seq {
            return;
        }
        let (awaits_answer, initial) = (pending.awaits_answer, pending.initial);
        self.pending_ack = None;
        let negotiated = if awaits_answer {
            self.answer_in(&request.body)
        } else {
            None
        };
        if initial {
            self.actions.push_back(DialogAction::Confirmed(negotiated));
        } else if let Some(negotiated) = negotiated {
            let hold = is_hold(&negotiated);
            self.actions
                .push_back(DialogAction::MediaUpdate { negotiated, hold });
        }
        if self.bye_after_ack {
            self.bye_after_ack = false;
            self.bye(EndCause::LocalBye);
        }
    }

    /// The SDP answer in an ACK or a `2xx`, to our offer.
    fn answer_in(&self, body: &[u8]) -> Option<Negotiated> {
        let media = self.media.as_ref()?;
        let answer = sdp::parse(body).ok()?;
        negotiate_answer(&answer, media).ok()
    }

    /// §14.2: a re-INVITE (hold, unhold, new address) answered at once.
    fn on_reinvite(&mut self, now: Instant, request: &Request) {
        if self.pending_ack.is_some() {
            // An INVITE while our 2xx waits for its ACK: 500 with
            // Retry-After (§14.2).
            let mut response =
                request.response(StatusCode::SERVER_INTERNAL_ERROR, &self.state.local_tag);
            response.headers.push(HeaderName::RetryAfter, "1");
            self.actions.push_back(DialogAction::Respond(response));
            return;
        }
        let Some(mut media) = self.media.clone() else {
            return;
        };
        media.session_version = media.session_version.wrapping_add(1);
        let (sdp, negotiated) = if request.body.is_empty() {
            let mut sdp = self.local_sdp.clone().unwrap_or_else(|| offer(&media));
            sdp.origin.session_version = media.session_version;
            (sdp, None)
        } else {
            match sdp::parse(&request.body)
                .map_err(|_| NegotiationError::NoAudio)
                .and_then(|o| sdp::answer(&o, &media))
            {
                Ok((sdp, negotiated)) => (sdp, Some(negotiated)),
                Err(_) => {
                    let status = StatusCode::new(488).unwrap_or(StatusCode::NOT_ACCEPTABLE);
                    let response = request.response(status, &self.state.local_tag);
                    self.actions.push_back(DialogAction::Respond(response));
                    return;
                }
            }
        };
        // Target refresh (§12.2.2).
        if let Ok(target) = single_contact(&request.headers) {
            self.state.remote_target = target;
        }
        let mut response = self.dialog_response(request, StatusCode::OK);
        set_sdp(&mut response.headers, &mut response.body, &sdp);
        self.media = Some(media);
        self.local_sdp = Some(sdp);
        self.send_2xx(now, response, negotiated.is_none(), false);
        if let Some(negotiated) = negotiated {
            let hold = is_hold(&negotiated);
            self.actions
                .push_back(DialogAction::MediaUpdate { negotiated, hold });
        }
    }

    fn on_response(&mut self, response: &Response) {
        let Ok(cseq) = response.headers.cseq() else {
            return;
        };
        if cseq.method != Method::Invite || !self.matches_response(response) {
            return;
        }
        let status = response.status;
        if status.is_provisional() {
            if status == StatusCode::TRYING {
                return;
            }
            if let Phase::Calling {
                provisional,
                cancel,
                ..
            } = &mut self.phase
            {
                *provisional = true;
                let pending = cancel.take();
                self.actions.push_back(DialogAction::Provisional(status));
                if let Some(cause) = pending {
                    self.cancel(cause);
                }
            }
            return;
        }
        if status.is_success() {
            self.on_invite_2xx(response, cseq.seq);
            return;
        }
        // 3xx–6xx: the endpoint's transaction has sent the ACK (§17.1.1.3).
        if self.answer_challenge(response) {
            return;
        }
        match &self.phase {
            Phase::Calling { .. } => self.end(EndCause::Declined(status)),
            Phase::Cancelling { cause, .. } => {
                let cause = *cause;
                self.end(cause);
            }
            _ => {}
        }
    }

    /// §22.2: a `401`/`407` to our INVITE is answered by the same INVITE
    /// with a new CSeq and the credentials for the challenge. Not when the
    /// rejected INVITE already carried them (wrong credentials) unless the
    /// nonce was only stale, nor when a CANCEL is wanted, nor more than
    /// three times in all.
    fn answer_challenge(&mut self, response: &Response) -> bool {
        let (challenge_header, answer_header) = match response.status.as_u16() {
            401 => (HeaderName::WwwAuthenticate, HeaderName::Authorization),
            407 => (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            ),
            _ => return false,
        };
        let Phase::Calling {
            invite,
            cancel: None,
            ..
        } = &self.phase
        else {
            return false;
        };
        let Some(credentials) = &self.credentials else {
            return false;
        };
        if self.challenges >= 3 {
            return false;
        }
        let Ok(challenge) = Challenge::pick(response.headers.get_all(&challenge_header)) else {
            return false;
        };
        if invite.headers.get(&answer_header).is_some() && !challenge.stale {
            return false;
        }
        let mut retry = invite.clone();
        self.state.local_cseq = self.state.local_cseq.wrapping_add(1);
        let seq = self.state.local_cseq;
        retry
            .headers
            .set(HeaderName::CSeq, format!("{seq} {}", Method::Invite));
        // The client nonce: unpredictable to the peer (the local tag is
        // random), no clock or RNG needed here.
        let cnonce = Algorithm::Sha256
            .hex(format!("{}:{}:{seq}", self.state.local_tag, self.state.call_id).as_bytes());
        let uri = retry.uri.to_string();
        let value = challenge.authorize(credentials, "INVITE", &uri, &cnonce[..32]);
        retry.headers.remove_all(&answer_header);
        retry.headers.push(answer_header, value);
        self.challenges += 1;
        self.phase = Phase::Calling {
            invite: retry.clone(),
            provisional: false,
            cancel: None,
        };
        self.actions.push_back(DialogAction::SendRequest(retry));
        true
    }

    fn on_invite_2xx(&mut self, response: &Response, seq: u32) {
        let to_tag = response
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_owned))
            .unwrap_or_default();
        match &self.phase {
            Phase::Calling { .. } | Phase::Cancelling { .. } => {
                // A CANCEL sent, or wanted but held back until a
                // provisional (§9.1): either way the answer is not wanted.
                let cancelled = match &self.phase {
                    Phase::Cancelling { cause, .. }
                    | Phase::Calling {
                        cancel: Some(cause),
                        ..
                    } => Some(*cause),
                    _ => None,
                };
                // §12.1.2: the dialog from the 2xx.
                self.state.remote_tag = to_tag;
                if let Ok(target) = single_contact(&response.headers) {
                    self.state.remote_target = target;
                }
                let mut routes = response
                    .headers
                    .routes(&HeaderName::RecordRoute)
                    .unwrap_or_default();
                routes.reverse();
                self.state.route_set = routes;
                if let Ok(to) = response.headers.to() {
                    self.state.remote = without_tag(to);
                }
                let ack = self.ack(seq);
                self.last_ack = Some(ack.clone());
                self.actions
                    .push_back(DialogAction::SendStateless(Message::Request(ack)));
                self.phase = Phase::Confirmed;
                self.ring_deadline = None;
                match cancelled {
                    // The 2xx crossed our CANCEL: ACK, then BYE (§15).
                    Some(cause) => self.bye(cause),
                    None => match self.answer_in(&response.body) {
                        Some(negotiated) => {
                            self.actions.push_back(DialogAction::Answered(negotiated));
                        }
                        None => {
                            // An answer we cannot use: no call (§13.2.1 lets
                            // the UAC end it with BYE after the ACK).
                            self.bye(EndCause::Declined(
                                StatusCode::new(488).unwrap_or(StatusCode::NOT_ACCEPTABLE),
                            ));
                        }
                    },
                }
            }
            Phase::Confirmed | Phase::Terminated if to_tag == self.state.remote_tag => {
                // A retransmission: our ACK was lost (§13.2.2.4).
                if let Some(ack) = &self.last_ack {
                    self.actions
                        .push_back(DialogAction::SendStateless(Message::Request(ack.clone())));
                }
            }
            Phase::Confirmed | Phase::Terminated => {
                // Another fork answered (§13.2.2.4): ACK it and BYE it.
                let mut other = self.state.clone();
                other.remote_tag = to_tag;
                if let Ok(target) = single_contact(&response.headers) {
                    other.remote_target = target;
                }
                let ack = ack_request(&mut other, &self.config, seq);
                self.actions
                    .push_back(DialogAction::SendStateless(Message::Request(ack)));
                let bye = other.request(Method::Bye, None);
                self.actions.push_back(DialogAction::SendRequest(bye));
            }
            Phase::Incoming { .. } => {}
        }
    }

    fn ack(&mut self, seq: u32) -> Request {
        ack_request(&mut self.state, &self.config, seq)
    }
}

/// The ACK of a `2xx` (§13.2.2.4): a new request in the dialog with the
/// INVITE's CSeq number and its own Via; its branch is derived from the
/// (random) local tag and the CSeq, unique per dialog and INVITE.
fn ack_request(state: &mut DialogState, config: &DialogConfig, seq: u32) -> Request {
    let mut ack = state.request(Method::Ack, Some(seq));
    let mut headers = Headers::new();
    headers.push(
        HeaderName::Via,
        format!(
            "SIP/2.0/{} {};branch=z9hG4bK{}.{seq}a;rport",
            config.transport, config.sent_by, state.local_tag
        ),
    );
    for header in &ack.headers {
        headers.push(header.name.clone(), header.value.clone());
    }
    ack.headers = headers;
    ack
}

/// The CANCEL of an INVITE (§9.1): Request-URI, Call-ID, From, To, Route
/// and CSeq number of the INVITE; the owner adds the INVITE's Via.
fn cancel_for(invite: &Request) -> Request {
    let mut headers = Headers::new();
    for route in invite.headers.get_all(&HeaderName::Route) {
        headers.push(HeaderName::Route, route);
    }
    headers.push(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(value) = invite.headers.get(&name) {
            headers.push(name, value);
        }
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
    headers.push(HeaderName::CSeq, format!("{seq} CANCEL"));
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: invite.version,
        headers,
        body: Vec::new(),
    }
}

fn set_sdp(headers: &mut Headers, body: &mut Vec<u8>, sdp: &SessionDescription) {
    headers.push(HeaderName::ContentType, "application/sdp");
    *body = sdp.to_string().into_bytes();
}

/// Whether the peer stopped sending to us: our answered direction is
/// `recvonly`/`inactive`, or the RFC 2543 hold address `0.0.0.0`.
pub fn is_hold(negotiated: &Negotiated) -> bool {
    matches!(
        negotiated.direction,
        Direction::RecvOnly | Direction::Inactive
    ) || negotiated.remote.ip().is_unspecified()
}

/// Our SDP offer (RFC 3264 §5): one audio stream with our codecs in order
/// of preference and telephone-event (payload type 101), `sendrecv`.
pub fn offer(local: &LocalMedia) -> SessionDescription {
    let address_type = if local.address.is_ipv4() {
        "IP4"
    } else {
        "IP6"
    };
    let mut formats: Vec<String> = local
        .codecs
        .iter()
        .map(|c| c.payload_type.to_string())
        .collect();
    let mut attributes: Vec<Attribute> = local
        .codecs
        .iter()
        .map(|c| Attribute {
            name: "rtpmap".into(),
            value: Some(format!(
                "{} {}/{}",
                c.payload_type,
                c.encoding(),
                c.clock_rate
            )),
        })
        .collect();
    if local.telephone_event {
        formats.push(TELEPHONE_EVENT.to_string());
        attributes.push(Attribute {
            name: "rtpmap".into(),
            value: Some(format!("{TELEPHONE_EVENT} telephone-event/8000")),
        });
        attributes.push(Attribute {
            name: "fmtp".into(),
            value: Some(format!("{TELEPHONE_EVENT} 0-16")),
        });
    }
    attributes.push(Attribute {
        name: "ptime".into(),
        value: Some("20".into()),
    });
    attributes.push(Attribute {
        name: Direction::SendRecv.as_str().into(),
        value: None,
    });
    SessionDescription {
        origin: Origin {
            username: "ccu".into(),
            session_id: local.session_id,
            session_version: local.session_version,
            address_type: address_type.into(),
            address: local.address.to_string(),
        },
        session_name: "ccu".into(),
        connection: Some(Connection {
            address_type: address_type.into(),
            address: local.address.to_string(),
        }),
        timing: (0, 0),
        attributes: Vec::new(),
        other: Vec::new(),
        media: vec![MediaDescription {
            media: "audio".into(),
            port: local.port,
            port_count: None,
            protocol: "RTP/AVP".into(),
            formats,
            connection: None,
            attributes,
            other: Vec::new(),
        }],
    }
}

/// The payload type of telephone-event in our offers.
pub const TELEPHONE_EVENT: u8 = 101;

/// What an SDP answer to our [`offer`] chose (RFC 3264 §6: the answerer's
/// first codec that we offered, telephone-event if kept).
pub fn negotiate_answer(
    answer: &SessionDescription,
    local: &LocalMedia,
) -> Result<Negotiated, NegotiationError> {
    let m = answer
        .media
        .iter()
        .find(|m| m.media == "audio" && m.port != 0)
        .ok_or(NegotiationError::NoAudio)?;
    let codecs: Vec<Codec> = m
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| m.codec(pt))
        .collect();
    let codec = codecs
        .iter()
        .find(|c| local.codecs.iter().any(|ours| ours.same_format(c)))
        .cloned()
        .ok_or(NegotiationError::NoCommonCodec)?;
    let telephone_event = local
        .telephone_event
        .then(|| {
            codecs
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case("telephone-event") && c.clock_rate == 8_000)
        })
        .flatten()
        .map(|c| c.payload_type);
    let ip: IpAddr = answer.media_address(m).ok_or(NegotiationError::NoAddress)?;
    Ok(Negotiated {
        codec,
        telephone_event,
        remote: std::net::SocketAddr::new(ip, m.port),
        direction: m.direction(answer).answer(),
        ptime: m.ptime(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::parse;

    const T0_OFFER: &str = "v=0\r\no=trunk 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn request(text: &str, body: &str) -> Request {
        let bytes = format!("{text}Content-Length: {}\r\n\r\n{body}", body.len());
        match parse(bytes.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn response(text: &str, body: &str) -> Response {
        let bytes = format!("{text}Content-Length: {}\r\n\r\n{body}", body.len());
        match parse(bytes.as_bytes()) {
            Ok(Message::Response(r)) => r,
            other => panic!("not a response: {other:?}"),
        }
    }

    const INVITE_HEAD: &str = "INVITE sip:+390200000000@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKtrunk1;received=203.0.113.5;rport=5060\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:sbc.example;lr>\r\n\
From: \"Mario Rossi\" <sip:+393331234567@trunk.example>;tag=tr1\r\n\
To: <sip:+390200000000@ccu.example>\r\n\
Call-ID: call-1@trunk.example\r\n\
CSeq: 10 INVITE\r\n\
Contact: <sip:+393331234567@203.0.113.5:5060>\r\n\
Content-Type: application/sdp\r\n";

    fn config() -> DialogConfig {
        DialogConfig::new(
            Uri::parse("sip:ccu@192.0.2.1:5060").unwrap(),
            "192.0.2.1:5060",
        )
    }

    fn local_media() -> LocalMedia {
        LocalMedia::new("192.0.2.1".parse().unwrap(), 20_000, 7)
    }

    fn drain(dialog: &mut Dialog, now: Instant) -> Vec<DialogAction> {
        std::iter::from_fn(|| dialog.poll(now)).collect()
    }

    fn text(message: &Message) -> String {
        String::from_utf8(message.to_bytes()).unwrap()
    }

    fn respond_text(action: &DialogAction) -> String {
        match action {
            DialogAction::Respond(r) => String::from_utf8(r.to_bytes()).unwrap(),
            other => panic!("not a response: {other:?}"),
        }
    }

    fn request_text(action: &DialogAction) -> String {
        match action {
            DialogAction::SendRequest(r) | DialogAction::SendCancel(r) => {
                String::from_utf8(r.to_bytes()).unwrap()
            }
            DialogAction::SendStateless(m) => text(m),
            other => panic!("not a request: {other:?}"),
        }
    }

    const ANSWER: &str = "v=0\r\no=ccu 7 7 IN IP4 192.0.2.1\r\ns=ccu\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\na=sendrecv\r\n";

    fn answered_uas(now: Instant) -> Dialog {
        let invite = request(INVITE_HEAD, T0_OFFER);
        let mut uas = Dialog::incoming(config(), &invite, "ccu7").unwrap();
        let negotiated = uas.accept(now, local_media()).unwrap().unwrap();
        assert_eq!(negotiated.codec.encoding(), "PCMA", "the offerer's first");
        assert_eq!(negotiated.telephone_event, Some(101));
        assert_eq!(negotiated.remote, "203.0.113.5:30000".parse().unwrap());
        uas
    }

    fn ack_of_200() -> Request {
        request(
            "ACK sip:ccu@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKtrunk2\r\n\
Route: <sip:sbc.example;lr>\r\nMax-Forwards: 70\r\n\
From: \"Mario Rossi\" <sip:+393331234567@trunk.example>;tag=tr1\r\n\
To: <sip:+390200000000@ccu.example>;tag=ccu7\r\n\
Call-ID: call-1@trunk.example\r\nCSeq: 10 ACK\r\n",
            "",
        )
    }

    fn in_dialog(method: &str, cseq: u32, extra: &str, body: &str) -> Request {
        request(
            &format!(
                "{method} sip:ccu@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKtr{method}{cseq}\r\n\
Max-Forwards: 70\r\n\
From: \"Mario Rossi\" <sip:+393331234567@trunk.example>;tag=tr1\r\n\
To: <sip:+390200000000@ccu.example>;tag=ccu7\r\n\
Call-ID: call-1@trunk.example\r\nCSeq: {cseq} {method}\r\n{extra}"
            ),
            body,
        )
    }

    #[test]
    fn the_uas_rings_and_answers_with_contact_record_route_and_its_sdp_byte_for_byte() {
        let now = Instant::now();
        let invite = request(INVITE_HEAD, T0_OFFER);
        let mut uas = Dialog::incoming(config(), &invite, "ccu7").unwrap();
        assert_eq!(
            uas.state().remote_target.to_string(),
            "sip:+393331234567@203.0.113.5:5060"
        );
        assert_eq!(uas.state().remote_cseq, Some(10));
        uas.ring(StatusCode::RINGING, None);
        uas.accept(now, local_media()).unwrap();
        let actions = drain(&mut uas, now);
        assert_eq!(actions.len(), 2, "{actions:?}");
        let common = "Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKtrunk1;received=203.0.113.5;rport=5060\r\n\
From: \"Mario Rossi\" <sip:+393331234567@trunk.example>;tag=tr1\r\n\
To: <sip:+390200000000@ccu.example>;tag=ccu7\r\n\
Call-ID: call-1@trunk.example\r\n\
CSeq: 10 INVITE\r\n\
Record-Route: <sip:sbc.example;lr>\r\n\
Contact: <sip:ccu@192.0.2.1:5060>\r\n";
        assert_eq!(
            respond_text(&actions[0]),
            format!("SIP/2.0 180 Ringing\r\n{common}Content-Length: 0\r\n\r\n")
        );
        assert_eq!(
            respond_text(&actions[1]),
            format!(
                "SIP/2.0 200 OK\r\n{common}Allow: {ALLOW}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{ANSWER}",
                ANSWER.len()
            )
        );
        assert!(uas.is_confirmed());
    }

    #[test]
    fn the_uas_repeats_its_2xx_with_t1_doubling_up_to_t2_until_the_ack() {
        let t0 = Instant::now();
        let mut uas = answered_uas(t0);
        let first = drain(&mut uas, t0);
        let DialogAction::Respond(ok) = &first[0] else {
            panic!("{first:?}")
        };
        let mut at = t0;
        let mut intervals = Vec::new();
        for _ in 0..6 {
            let next = uas.next_deadline().unwrap();
            intervals.push((next - at).as_millis());
            at = next;
            assert_eq!(
                drain(&mut uas, at),
                vec![DialogAction::SendStateless(Message::Response(ok.clone()))]
            );
        }
        assert_eq!(intervals, [500, 1000, 2000, 4000, 4000, 4000]);
        uas.handle(at, DialogEvent::Request(&ack_of_200()));
        assert_eq!(drain(&mut uas, at), vec![DialogAction::Confirmed(None)]);
        assert_eq!(uas.next_deadline(), None, "no more retransmissions");
        // A retransmitted ACK is absorbed.
        uas.handle(at, DialogEvent::Request(&ack_of_200()));
        assert_eq!(drain(&mut uas, at), vec![]);
    }

    #[test]
    fn without_an_ack_the_uas_gives_up_after_64_t1_with_a_bye_byte_for_byte() {
        let t0 = Instant::now();
        let mut uas = answered_uas(t0);
        drain(&mut uas, t0);
        let mut sent = 0;
        let mut last = Vec::new();
        while let Some(next) = uas.next_deadline() {
            last = drain(&mut uas, next);
            sent += last.len();
            assert!(next <= t0 + Duration::from_secs(32));
        }
        // 0.5+1+2+4+4·6 = 31.5 s: 10 retransmissions, then at 32 s the BYE.
        assert_eq!(sent, 10 + 2);
        assert_eq!(
            last.last(),
            Some(&DialogAction::Terminated(EndCause::NoAck))
        );
        assert_eq!(
            request_text(&last[0]),
            "BYE sip:+393331234567@203.0.113.5:5060 SIP/2.0\r\n\
Route: <sip:sbc.example;lr>\r\n\
Max-Forwards: 70\r\n\
From: <sip:+390200000000@ccu.example>;tag=ccu7\r\n\
To: \"Mario Rossi\" <sip:+393331234567@trunk.example>;tag=tr1\r\n\
Call-ID: call-1@trunk.example\r\n\
CSeq: 1 BYE\r\n\
Content-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn over_tcp_the_2xx_is_not_repeated_but_the_ack_is_still_awaited() {
        let t0 = Instant::now();
        let invite = request(INVITE_HEAD, T0_OFFER);
        let mut config = config();
        config.transport = TransportKind::Tcp;
        let mut uas = Dialog::incoming(config, &invite, "ccu7").unwrap();
        uas.accept(t0, local_media()).unwrap();
        assert_eq!(drain(&mut uas, t0).len(), 1);
        let mut actions = Vec::new();
        while let Some(next) = uas.next_deadline() {
            actions.extend(drain(&mut uas, next));
        }
        assert!(
            matches!(actions[0], DialogAction::SendRequest(ref bye) if bye.method == Method::Bye)
        );
        assert_eq!(actions[1], DialogAction::Terminated(EndCause::NoAck));
        assert_eq!(actions.len(), 2);
    }

    #[test]
    fn a_bye_from_the_peer_gets_200_and_ends_the_dialog() {
        let t0 = Instant::now();
        let mut uas = answered_uas(t0);
        uas.handle(t0, DialogEvent::Request(&ack_of_200()));
        drain(&mut uas, t0);
        let bye = in_dialog("BYE", 11, "", "");
        assert!(uas.matches_request(&bye));
        uas.handle(t0, DialogEvent::Request(&bye));
        let actions = drain(&mut uas, t0);
        assert_eq!(
            respond_text(&actions[0]),
            "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKtrBYE11\r\n\
From: \"Mario Rossi\" <sip:+393331234567@trunk.example>;tag=tr1\r\n\
To: <sip:+390200000000@ccu.example>;tag=ccu7\r\n\
Call-ID: call-1@trunk.example\r\n\
CSeq: 11 BYE\r\n\
Content-Length: 0\r\n\r\n"
        );
        assert_eq!(actions[1], DialogAction::Terminated(EndCause::RemoteBye));
        assert!(uas.is_terminated());
        // Anything later: 481.
        uas.handle(t0, DialogEvent::Request(&in_dialog("INFO", 12, "", "")));
        let actions = drain(&mut uas, t0);
        assert!(respond_text(&actions[0]).starts_with("SIP/2.0 481 "));
    }

    #[test]
    fn a_re_invite_to_hold_is_answered_recvonly_and_reported_then_unhold() {
        let t0 = Instant::now();
        let mut uas = answered_uas(t0);
        uas.handle(t0, DialogEvent::Request(&ack_of_200()));
        drain(&mut uas, t0);
        let hold = T0_OFFER.replace("o=trunk 1 1", "o=trunk 1 2").to_owned() + "a=sendonly\r\n";
        let reinvite = in_dialog(
            "INVITE",
            11,
            "Contact: <sip:+393331234567@203.0.113.6:5070>\r\nContent-Type: application/sdp\r\n",
            &hold,
        );
        uas.handle(t0, DialogEvent::Request(&reinvite));
        let actions = drain(&mut uas, t0);
        let ok = respond_text(&actions[0]);
        assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
        assert!(ok.contains("CSeq: 11 INVITE\r\n"), "{ok}");
        assert!(ok.contains("o=ccu 7 8 IN IP4"), "session version + 1: {ok}");
        assert!(ok.ends_with("a=recvonly\r\n"), "{ok}");
        let DialogAction::MediaUpdate { negotiated, hold } = &actions[1] else {
            panic!("{actions:?}")
        };
        assert!(*hold);
        assert_eq!(negotiated.direction, Direction::RecvOnly);
        assert_eq!(
            uas.state().remote_target.to_string(),
            "sip:+393331234567@203.0.113.6:5070",
            "target refresh"
        );
        // Its 2xx is repeated until its own ACK.
        assert_eq!(uas.next_deadline(), Some(t0 + Duration::from_millis(500)));
        let mut ack = ack_of_200();
        ack.headers.set(HeaderName::CSeq, "11 ACK");
        uas.handle(t0, DialogEvent::Request(&ack));
        assert_eq!(drain(&mut uas, t0), vec![]);
        assert_eq!(uas.next_deadline(), None);
        // Unhold.
        let unhold = T0_OFFER.replace("o=trunk 1 1", "o=trunk 1 3");
        uas.handle(
            t0,
            DialogEvent::Request(&in_dialog(
                "INVITE",
                12,
                "Content-Type: application/sdp\r\n",
                &unhold,
            )),
        );
        let actions = drain(&mut uas, t0);
        assert!(respond_text(&actions[0]).ends_with("a=sendrecv\r\n"));
        assert!(matches!(
            actions[1],
            DialogAction::MediaUpdate { hold: false, .. }
        ));
    }

    #[test]
    fn a_re_invite_while_the_2xx_waits_for_its_ack_gets_500_with_retry_after() {
        let t0 = Instant::now();
        let mut uas = answered_uas(t0);
        drain(&mut uas, t0);
        uas.handle(
            t0,
            DialogEvent::Request(&in_dialog(
                "INVITE",
                11,
                "Content-Type: application/sdp\r\n",
                T0_OFFER,
            )),
        );
        let actions = drain(&mut uas, t0);
        let text = respond_text(&actions[0]);
        assert!(text.starts_with("SIP/2.0 500 "), "{text}");
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");
    }

    #[test]
    fn an_out_of_order_cseq_gets_500_and_other_requests_go_to_the_owner() {
        let t0 = Instant::now();
        let mut uas = answered_uas(t0);
        uas.handle(t0, DialogEvent::Request(&ack_of_200()));
        drain(&mut uas, t0);
        let info = in_dialog(
            "INFO",
            12,
            "Content-Type: application/dtmf-relay\r\n",
            "Signal=5\r\nDuration=160\r\n",
        );
        uas.handle(t0, DialogEvent::Request(&info));
        assert_eq!(
            drain(&mut uas, t0),
            vec![DialogAction::Request(info.clone())]
        );
        uas.respond(&info, StatusCode::OK, Headers::new());
        assert!(respond_text(&drain(&mut uas, t0)[0]).contains("CSeq: 12 INFO\r\n"));
        uas.handle(t0, DialogEvent::Request(&in_dialog("INFO", 11, "", "")));
        let text = respond_text(&drain(&mut uas, t0)[0]);
        assert!(
            text.starts_with("SIP/2.0 500 ") && text.contains("CSeq: 11 INFO"),
            "{text}"
        );
    }

    #[test]
    fn a_cancelled_or_refused_incoming_call_ends_with_its_cause() {
        let invite = request(INVITE_HEAD, T0_OFFER);
        let t0 = Instant::now();
        let mut uas = Dialog::incoming(config(), &invite, "ccu7").unwrap();
        uas.handle(t0, DialogEvent::Cancelled);
        assert_eq!(
            drain(&mut uas, t0),
            vec![DialogAction::Terminated(EndCause::CallerCancelled)]
        );

        let mut uas = Dialog::incoming(config(), &invite, "ccu7").unwrap();
        uas.reject(StatusCode::SERVICE_UNAVAILABLE);
        let actions = drain(&mut uas, t0);
        assert!(respond_text(&actions[0]).starts_with("SIP/2.0 503 Service Unavailable\r\n"));
        assert_eq!(
            actions[1],
            DialogAction::Terminated(EndCause::Rejected(StatusCode::SERVICE_UNAVAILABLE))
        );

        // An offer without a common codec: 488.
        let g729 = T0_OFFER.replace("RTP/AVP 8 0 101", "RTP/AVP 18");
        let mut uas = Dialog::incoming(config(), &request(INVITE_HEAD, &g729), "ccu7").unwrap();
        assert_eq!(
            uas.accept(t0, local_media()),
            Err(NegotiationError::NoCommonCodec)
        );
        assert!(respond_text(&drain(&mut uas, t0)[0]).starts_with("SIP/2.0 488 "));
    }

    #[test]
    fn an_invite_without_contact_or_from_tag_makes_no_dialog() {
        let no_contact =
            INVITE_HEAD.replace("Contact: <sip:+393331234567@203.0.113.5:5060>\r\n", "");
        assert_eq!(
            Dialog::incoming(config(), &request(&no_contact, T0_OFFER), "x").unwrap_err(),
            DialogError::Contact
        );
        let no_tag = INVITE_HEAD.replace(";tag=tr1", "");
        assert_eq!(
            Dialog::incoming(config(), &request(&no_tag, T0_OFFER), "x").unwrap_err(),
            DialogError::FromTag
        );
    }

    #[test]
    fn a_hang_up_before_the_ack_waits_for_it_then_byes() {
        let t0 = Instant::now();
        let mut uas = answered_uas(t0);
        drain(&mut uas, t0);
        uas.hang_up();
        assert_eq!(drain(&mut uas, t0), vec![], "no BYE before the ACK (§15)");
        uas.handle(t0, DialogEvent::Request(&ack_of_200()));
        let actions = drain(&mut uas, t0);
        assert_eq!(actions[0], DialogAction::Confirmed(None));
        assert!(matches!(actions[1], DialogAction::SendRequest(ref r) if r.method == Method::Bye));
        assert_eq!(actions[2], DialogAction::Terminated(EndCause::LocalBye));
    }

    // ---- UAC: the offer to an operator's phone ----

    fn outgoing(now: Instant, ring_timeout: Option<Duration>) -> Dialog {
        Dialog::outgoing(
            now,
            config(),
            OutgoingCall {
                target: Uri::parse("sip:1001@10.0.0.9:5062").unwrap(),
                from: Address {
                    display_name: Some("+393331234567 anagrafe".into()),
                    uri: Uri::parse("sip:+393331234567@192.0.2.1").unwrap(),
                    params: Vec::new(),
                },
                call_id: "op-1@ccu".into(),
                local_tag: "ut1".into(),
                media: LocalMedia::new("192.0.2.1".parse().unwrap(), 20_002, 9),
                headers: vec![
                    (HeaderName::Other("X-CCU-Queue".into()), "anagrafe".into()),
                    (HeaderName::Other("X-CCU-Conversation".into()), "42".into()),
                ],
                ring_timeout,
                credentials: None,
            },
        )
    }

    const OFFER: &str = "v=0\r\no=ccu 9 9 IN IP4 192.0.2.1\r\ns=ccu\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 20002 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

    const PHONE_ANSWER: &str = "v=0\r\no=phone 5 5 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn phone_response(status: &str, to_tag: &str, cseq: &str, extra: &str, body: &str) -> Response {
        response(
            &format!(
                "SIP/2.0 {status}\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1;rport=5060\r\n\
Record-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>\r\n\
From: \"+393331234567 anagrafe\" <sip:+393331234567@192.0.2.1>;tag=ut1\r\n\
To: <sip:1001@10.0.0.9:5062>{to_tag}\r\n\
Call-ID: op-1@ccu\r\nCSeq: {cseq}\r\n{extra}"
            ),
            body,
        )
    }

    #[test]
    fn the_uac_invite_carries_contact_offer_display_name_and_ccu_headers_byte_for_byte() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, None);
        let actions = drain(&mut uac, t0);
        assert_eq!(
            request_text(&actions[0]),
            format!(
                "INVITE sip:1001@10.0.0.9:5062 SIP/2.0\r\n\
Max-Forwards: 70\r\n\
From: \"+393331234567 anagrafe\" <sip:+393331234567@192.0.2.1>;tag=ut1\r\n\
To: <sip:1001@10.0.0.9:5062>\r\n\
Call-ID: op-1@ccu\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:ccu@192.0.2.1:5060>\r\n\
Allow: {ALLOW}\r\n\
X-CCU-Queue: anagrafe\r\n\
X-CCU-Conversation: 42\r\n\
Content-Type: application/sdp\r\n\
Content-Length: {}\r\n\r\n{OFFER}",
                OFFER.len()
            )
        );
        assert_eq!(actions.len(), 1);
        // Our offer parses back to itself.
        assert_eq!(sdp::parse(OFFER.as_bytes()).unwrap().to_string(), OFFER);
    }

    /// §22.2: a carrier's `407` is answered once by the same INVITE with
    /// CSeq 2 and Proxy-Authorization; the CANCEL then names CSeq 2; a
    /// second `407` for those credentials (wrong password) ends the call.
    #[test]
    fn the_uac_answers_a_challenge_once_and_a_second_refusal_ends_the_call() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, Some(Duration::from_secs(20)));
        uac.credentials = Some(ClientCredentials {
            username: "ccu-trunk".into(),
            password: "s3cret".into(),
        });
        drain(&mut uac, t0);
        let challenge = "Proxy-Authenticate: Digest realm=\"carrier\", nonce=\"n1\", qop=\"auth\", algorithm=MD5\r\n";
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "407 Proxy Authentication Required",
                ";tag=px",
                "1 INVITE",
                challenge,
                "",
            )),
        );
        let actions = drain(&mut uac, t0);
        let [DialogAction::SendRequest(retry)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(retry.headers.cseq().unwrap().seq, 2);
        assert_eq!(retry.headers.call_id().unwrap(), "op-1@ccu");
        assert_eq!(retry.headers.from().unwrap().tag(), Some("ut1"));
        assert!(retry.headers.to().unwrap().tag().is_none());
        assert_eq!(retry.body, OFFER.as_bytes());
        let value = retry.headers.get(&HeaderName::ProxyAuthorization).unwrap();
        let credentials = crate::sip::digest::DigestCredentials::from_auth_value(
            &crate::sip::header::AuthValue::parse(value, "Proxy-Authorization").unwrap(),
        )
        .unwrap();
        assert_eq!(credentials.username, "ccu-trunk");
        assert_eq!(credentials.uri, "sip:1001@10.0.0.9:5062");
        let key = crate::sip::digest::ha1(Algorithm::Md5, "ccu-trunk", "carrier", "s3cret");
        assert!(credentials.verify("INVITE", &key), "{value}");
        assert!(!uac.is_terminated());

        // Ringing, then our CANCEL is for the INVITE with the credentials.
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "180 Ringing",
                ";tag=ph1",
                "2 INVITE",
                "",
                "",
            )),
        );
        drain(&mut uac, t0);
        uac.cancel(EndCause::Cancelled);
        let actions = drain(&mut uac, t0);
        assert!(
            matches!(&actions[0], DialogAction::SendCancel(c) if c.headers.cseq().unwrap().seq == 2),
            "{actions:?}"
        );

        // Wrong credentials: the second challenge is not answered again.
        let mut wrong = outgoing(t0, None);
        wrong.credentials = uac.credentials.clone();
        drain(&mut wrong, t0);
        for cseq in ["1 INVITE", "2 INVITE"] {
            wrong.handle(
                t0,
                DialogEvent::Response(&phone_response(
                    "407 Proxy Authentication Required",
                    ";tag=px",
                    cseq,
                    challenge,
                    "",
                )),
            );
        }
        let actions = drain(&mut wrong, t0);
        assert!(
            matches!(actions[0], DialogAction::SendRequest(_)),
            "{actions:?}"
        );
        let status = StatusCode::new(407).unwrap();
        assert_eq!(
            actions[1],
            DialogAction::Terminated(EndCause::Declined(status))
        );

        // Without credentials a 401 is the end at once.
        let mut none = outgoing(t0, None);
        drain(&mut none, t0);
        none.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "401 Unauthorized",
                ";tag=px",
                "1 INVITE",
                "WWW-Authenticate: Digest realm=\"c\", nonce=\"n\"\r\n",
                "",
            )),
        );
        let unauthorized = StatusCode::new(401).unwrap();
        assert_eq!(
            drain(&mut none, t0),
            vec![DialogAction::Terminated(EndCause::Declined(unauthorized))]
        );
    }

    #[test]
    fn the_uac_acks_a_2xx_outside_the_transaction_and_byes_through_the_reversed_route_set() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, Some(Duration::from_secs(20)));
        drain(&mut uac, t0);
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response("100 Trying", "", "1 INVITE", "", "")),
        );
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "180 Ringing",
                ";tag=ph1",
                "1 INVITE",
                "",
                "",
            )),
        );
        assert_eq!(
            drain(&mut uac, t0),
            vec![DialogAction::Provisional(StatusCode::RINGING)]
        );
        let ok = phone_response(
            "200 OK",
            ";tag=ph1",
            "1 INVITE",
            "Contact: <sip:1001@10.0.0.9:5062;transport=udp>\r\nContent-Type: application/sdp\r\n",
            PHONE_ANSWER,
        );
        uac.handle(t0, DialogEvent::Response(&ok));
        let actions = drain(&mut uac, t0);
        assert_eq!(
            request_text(&actions[0]),
            "ACK sip:1001@10.0.0.9:5062;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKut1.1a;rport\r\n\
Route: <sip:p2.example;lr>\r\n\
Route: <sip:p1.example;lr>\r\n\
Max-Forwards: 70\r\n\
From: \"+393331234567 anagrafe\" <sip:+393331234567@192.0.2.1>;tag=ut1\r\n\
To: <sip:1001@10.0.0.9:5062>;tag=ph1\r\n\
Call-ID: op-1@ccu\r\n\
CSeq: 1 ACK\r\n\
Content-Length: 0\r\n\r\n"
        );
        let DialogAction::Answered(negotiated) = &actions[1] else {
            panic!("{actions:?}")
        };
        assert_eq!(negotiated.codec.encoding(), "PCMU", "the answerer's choice");
        assert_eq!(negotiated.telephone_event, Some(101));
        assert_eq!(negotiated.remote, "10.0.0.9:40000".parse().unwrap());
        assert!(uac.is_confirmed());
        assert_eq!(uac.next_deadline(), None, "the ring timeout is off");

        // A retransmitted 2xx: the same ACK again (§13.2.2.4).
        uac.handle(t0, DialogEvent::Response(&ok));
        assert_eq!(drain(&mut uac, t0), vec![actions[0].clone()]);

        uac.hang_up();
        let actions = drain(&mut uac, t0);
        assert_eq!(
            request_text(&actions[0]),
            "BYE sip:1001@10.0.0.9:5062;transport=udp SIP/2.0\r\n\
Route: <sip:p2.example;lr>\r\n\
Route: <sip:p1.example;lr>\r\n\
Max-Forwards: 70\r\n\
From: \"+393331234567 anagrafe\" <sip:+393331234567@192.0.2.1>;tag=ut1\r\n\
To: <sip:1001@10.0.0.9:5062>;tag=ph1\r\n\
Call-ID: op-1@ccu\r\n\
CSeq: 2 BYE\r\n\
Content-Length: 0\r\n\r\n"
        );
        assert_eq!(actions[1], DialogAction::Terminated(EndCause::LocalBye));
    }

    #[test]
    fn a_busy_or_declining_phone_ends_the_offer_with_its_code() {
        let t0 = Instant::now();
        for (status, code) in [
            ("486 Busy Here", 486),
            ("603 Decline", 603),
            ("480 Temporarily Unavailable", 480),
        ] {
            let mut uac = outgoing(t0, None);
            drain(&mut uac, t0);
            uac.handle(
                t0,
                DialogEvent::Response(&phone_response(status, ";tag=ph1", "1 INVITE", "", "")),
            );
            assert_eq!(
                drain(&mut uac, t0),
                vec![DialogAction::Terminated(EndCause::Declined(
                    StatusCode::new(code).unwrap()
                ))]
            );
        }
        let mut uac = outgoing(t0, None);
        drain(&mut uac, t0);
        uac.handle(
            t0,
            DialogEvent::RequestFailed {
                method: Method::Invite,
            },
        );
        assert_eq!(
            drain(&mut uac, t0),
            vec![DialogAction::Terminated(EndCause::Declined(
                StatusCode::REQUEST_TIMEOUT
            ))]
        );
    }

    #[test]
    fn the_ring_timeout_cancels_with_the_invites_headers_and_the_487_ends_it() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, Some(Duration::from_secs(15)));
        drain(&mut uac, t0);
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "180 Ringing",
                ";tag=ph1",
                "1 INVITE",
                "",
                "",
            )),
        );
        drain(&mut uac, t0);
        let deadline = uac.next_deadline().unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(15));
        assert_eq!(drain(&mut uac, deadline - Duration::from_millis(1)), vec![]);
        let actions = drain(&mut uac, deadline);
        let DialogAction::SendCancel(_) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            request_text(&actions[0]),
            "CANCEL sip:1001@10.0.0.9:5062 SIP/2.0\r\n\
Max-Forwards: 70\r\n\
From: \"+393331234567 anagrafe\" <sip:+393331234567@192.0.2.1>;tag=ut1\r\n\
To: <sip:1001@10.0.0.9:5062>\r\n\
Call-ID: op-1@ccu\r\n\
CSeq: 1 CANCEL\r\n\
Content-Length: 0\r\n\r\n"
        );
        uac.handle(
            deadline,
            DialogEvent::Response(&phone_response("200 OK", ";tag=ph1", "1 CANCEL", "", "")),
        );
        assert_eq!(drain(&mut uac, deadline), vec![]);
        uac.handle(
            deadline,
            DialogEvent::Response(&phone_response(
                "487 Request Terminated",
                ";tag=ph1",
                "1 INVITE",
                "",
                "",
            )),
        );
        assert_eq!(
            drain(&mut uac, deadline),
            vec![DialogAction::Terminated(EndCause::NoAnswer)]
        );
    }

    #[test]
    fn a_cancel_before_any_provisional_response_waits_for_one() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, None);
        drain(&mut uac, t0);
        uac.cancel(EndCause::Cancelled);
        assert_eq!(drain(&mut uac, t0), vec![], "§9.1: no CANCEL before a 1xx");
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "180 Ringing",
                ";tag=ph1",
                "1 INVITE",
                "",
                "",
            )),
        );
        let actions = drain(&mut uac, t0);
        assert_eq!(actions[0], DialogAction::Provisional(StatusCode::RINGING));
        assert!(matches!(actions[1], DialogAction::SendCancel(_)));
    }

    #[test]
    fn a_2xx_that_crosses_the_cancel_is_acked_and_byed() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, None);
        drain(&mut uac, t0);
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "180 Ringing",
                ";tag=ph1",
                "1 INVITE",
                "",
                "",
            )),
        );
        uac.cancel(EndCause::Cancelled);
        drain(&mut uac, t0);
        let ok = phone_response(
            "200 OK",
            ";tag=ph1",
            "1 INVITE",
            "Contact: <sip:1001@10.0.0.9:5062>\r\nContent-Type: application/sdp\r\n",
            PHONE_ANSWER,
        );
        uac.handle(t0, DialogEvent::Response(&ok));
        let actions = drain(&mut uac, t0);
        assert!(
            matches!(&actions[0], DialogAction::SendStateless(Message::Request(r)) if r.method == Method::Ack)
        );
        assert!(matches!(&actions[1], DialogAction::SendRequest(r) if r.method == Method::Bye));
        assert_eq!(actions[2], DialogAction::Terminated(EndCause::Cancelled));
        assert_eq!(actions.len(), 3);
    }

    /// A phone that answers without a provisional (auto-answer, a lost
    /// 180) after we wanted to CANCEL: the CANCEL was held back (§9.1),
    /// so the 2xx is acknowledged and hung up, never reported answered.
    #[test]
    fn a_2xx_while_a_cancel_waits_for_a_provisional_is_acked_and_byed() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, None);
        drain(&mut uac, t0);
        uac.cancel(EndCause::Cancelled);
        assert_eq!(drain(&mut uac, t0), vec![]);
        let ok = phone_response(
            "200 OK",
            ";tag=ph1",
            "1 INVITE",
            "Contact: <sip:1001@10.0.0.9:5062>\r\nContent-Type: application/sdp\r\n",
            PHONE_ANSWER,
        );
        uac.handle(t0, DialogEvent::Response(&ok));
        let actions = drain(&mut uac, t0);
        assert!(
            matches!(&actions[0], DialogAction::SendStateless(Message::Request(r)) if r.method == Method::Ack),
            "{actions:?}"
        );
        assert!(matches!(&actions[1], DialogAction::SendRequest(r) if r.method == Method::Bye));
        assert_eq!(actions[2], DialogAction::Terminated(EndCause::Cancelled));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, DialogAction::Answered(_)))
        );
    }

    #[test]
    fn a_2xx_from_another_fork_is_acked_and_byed_and_the_dialog_stays() {
        let t0 = Instant::now();
        let mut uac = outgoing(t0, None);
        drain(&mut uac, t0);
        let contact = "Contact: <sip:1001@10.0.0.9:5062>\r\nContent-Type: application/sdp\r\n";
        uac.handle(
            t0,
            DialogEvent::Response(&phone_response(
                "200 OK",
                ";tag=ph1",
                "1 INVITE",
                contact,
                PHONE_ANSWER,
            )),
        );
        drain(&mut uac, t0);
        let other = phone_response(
            "200 OK",
            ";tag=ph2",
            "1 INVITE",
            "Contact: <sip:1001@10.0.0.10:5062>\r\nContent-Type: application/sdp\r\n",
            PHONE_ANSWER,
        );
        uac.handle(t0, DialogEvent::Response(&other));
        let actions = drain(&mut uac, t0);
        let ack = request_text(&actions[0]);
        assert!(
            ack.starts_with("ACK sip:1001@10.0.0.10:5062 SIP/2.0\r\n"),
            "{ack}"
        );
        assert!(ack.contains(";tag=ph2\r\n"), "{ack}");
        let bye = request_text(&actions[1]);
        assert!(
            bye.starts_with("BYE sip:1001@10.0.0.10:5062 SIP/2.0\r\n"),
            "{bye}"
        );
        assert!(uac.is_confirmed());
        assert_eq!(uac.state().remote_tag, "ph1");
    }

    #[test]
    fn a_strict_router_gets_the_request_uri_and_the_target_goes_last() {
        let mut state = DialogState {
            call_id: "c".into(),
            local_tag: "a".into(),
            remote_tag: "b".into(),
            local: Address::new(Uri::parse("sip:ccu@192.0.2.1").unwrap()),
            remote: Address::new(Uri::parse("sip:x@example.net").unwrap()),
            local_cseq: 4,
            remote_cseq: None,
            remote_target: Uri::parse("sip:x@10.0.0.1").unwrap(),
            route_set: vec![
                Address::new(Uri::parse("sip:strict.example").unwrap()),
                Address::new(Uri::parse("sip:next.example;lr").unwrap()),
            ],
        };
        let request = state.request(Method::Bye, None);
        assert_eq!(request.uri.to_string(), "sip:strict.example");
        let routes: Vec<&str> = request.headers.get_all(&HeaderName::Route).collect();
        assert_eq!(routes, ["<sip:next.example;lr>", "<sip:x@10.0.0.1>"]);
        assert_eq!(request.headers.cseq().unwrap().seq, 5);
    }

    #[test]
    fn an_offerless_invite_gets_our_offer_and_the_ack_carries_the_answer() {
        let t0 = Instant::now();
        let head = INVITE_HEAD.replace("Content-Type: application/sdp\r\n", "");
        let mut uas = Dialog::incoming(config(), &request(&head, ""), "ccu7").unwrap();
        assert_eq!(uas.accept(t0, local_media()), Ok(None));
        let text = respond_text(&drain(&mut uas, t0)[0]);
        assert!(text.contains("m=audio 20000 RTP/AVP 8 0 101\r\n"), "{text}");
        let mut ack = ack_of_200();
        ack.headers.push(HeaderName::ContentType, "application/sdp");
        ack.body = PHONE_ANSWER.as_bytes().to_vec();
        uas.handle(t0, DialogEvent::Request(&ack));
        let actions = drain(&mut uas, t0);
        let DialogAction::Confirmed(Some(negotiated)) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(negotiated.codec.encoding(), "PCMU");
    }
}
