//! RFC 3261 §17 transactions, sans-IO.
//!
//! A transaction is fed events with the current time ([`ClientTransaction::handle`],
//! [`ServerTransaction::handle`]), and yields what to do through `poll(now)`:
//! send a message, pass one to the transaction user (TU), report a timeout,
//! or report that it is over. `next_deadline()` says when `poll` must be
//! called again even if nothing arrives; the shell sleeps until then.
//! Nothing here reads a clock, so tests move time by hand.
//!
//! Timers (RFC 3261 Table 4), with T1/T2/T4 from [`TimerConfig`]:
//!
//! | timer | machine | value | meaning |
//! | --- | --- | --- | --- |
//! | A | INVITE client | T1, doubling | retransmit INVITE (unreliable transports) |
//! | B | INVITE client | 64·T1 | give up |
//! | D | INVITE client | 32 s / 0 | absorb final-response retransmissions |
//! | E | non-INVITE client | T1, doubling to T2 | retransmit request |
//! | F | non-INVITE client | 64·T1 | give up |
//! | K | non-INVITE client | T4 / 0 | absorb response retransmissions |
//! | M | INVITE client | 64·T1 | pass `2xx` retransmissions to the TU (RFC 6026 §7.2) |
//! | G | INVITE server | T1, doubling to T2 | retransmit final response |
//! | H | INVITE server | 64·T1 | give up waiting for ACK |
//! | I | INVITE server | T4 / 0 | absorb ACK retransmissions |
//! | J | non-INVITE server | 64·T1 / 0 | absorb request retransmissions |
//!
//! A 2xx ends an INVITE server transaction at once, as in RFC 3261: the
//! dialog layer (the TU) retransmits the 2xx and absorbs the ACK. An
//! INVITE client transaction that got a 2xx waits in RFC 6026's Accepted
//! state for 64·T1 (Timer M) and passes every further 2xx to the TU: the
//! phone repeats its 2xx until our ACK arrives, and the dialog must send
//! the ACK again for each (RFC 3261 §13.2.2.4), which it cannot do if
//! the endpoint drops the retransmissions for want of a transaction.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use ccu_channels::sip::parse::parse;
//! use ccu_channels::sip::message::Message;
//! use ccu_channels::sip::transaction::{Action, ClientTransaction, TimerConfig, Transport};
//!
//! let Ok(Message::Request(options)) = parse(b"OPTIONS sip:trunk.example SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKka1\r\nFrom: <sip:ccu.example>;tag=1\r\n\
//! To: <sip:trunk.example>\r\nCall-ID: k1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n") else { panic!() };
//! let t0 = Instant::now();
//! let mut tx = ClientTransaction::new(options, Transport::Unreliable, TimerConfig::default(), t0);
//! assert!(matches!(tx.poll(t0), Some(Action::Send(_))));
//! assert_eq!(tx.next_deadline(), Some(t0 + Duration::from_millis(500))); // Timer E
//! assert!(matches!(tx.poll(t0 + Duration::from_millis(500)), Some(Action::Send(_)))); // retransmission
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::sip::header::{HeaderError, MAGIC_COOKIE};
use crate::sip::message::{HeaderName, Headers, Message, Method, Request, Response};

/// T1, T2, T4 (RFC 3261 §17.1.1.1, Table 4). Configurable because
/// networks with longer round trips need a larger T1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms by default.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE
    /// responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> TimerConfig {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Whether the transport retransmits for us (TCP, TLS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unreliable,
    Reliable,
}

/// What a transaction asks its owner to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this message to the peer (first time or retransmission).
    Send(Message),
    /// Hand this message to the transaction user.
    PassToTu(Message),
    /// Timer B, F or H fired: tell the TU the transaction timed out (a
    /// client TU treats it as a 408).
    Timeout,
    /// The transport failed: tell the TU (RFC 3261 §17.1.4, §17.2.4).
    TransportError,
    /// The transaction is over; remove it from the table.
    Terminated,
}

/// The RFC 3261 timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    A,
    B,
    D,
    E,
    F,
    G,
    H,
    I,
    J,
    K,
    /// RFC 6026 §7.2: the INVITE client leaves Accepted.
    M,
    /// Send `100 Trying` for an INVITE the TU has not answered within
    /// 200 ms (RFC 3261 §17.2.1).
    Trying,
}

#[derive(Debug, Clone, Default)]
struct Timers {
    armed: Vec<(Timer, Instant)>,
}

impl Timers {
    fn arm(&mut self, timer: Timer, at: Instant) {
        self.disarm(timer);
        self.armed.push((timer, at));
    }

    fn disarm(&mut self, timer: Timer) {
        self.armed.retain(|(t, _)| *t != timer);
    }

    fn clear(&mut self) {
        self.armed.clear();
    }

    fn next(&self) -> Option<Instant> {
        self.armed.iter().map(|(_, at)| *at).min()
    }

    /// Removes and returns the earliest timer due at `now`.
    fn take_due(&mut self, now: Instant) -> Option<Timer> {
        let (index, _) = self
            .armed
            .iter()
            .enumerate()
            .filter(|(_, (_, at))| *at <= now)
            .min_by_key(|(_, (_, at))| *at)?;
        Some(self.armed.swap_remove(index).0)
    }
}

/// Client transaction states (RFC 3261 Figures 5 and 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE, before any response.
    Calling,
    /// Non-INVITE, before any response.
    Trying,
    Proceeding,
    Completed,
    /// INVITE, after a 2xx (RFC 6026 §7.2): further 2xx go to the TU.
    Accepted,
    Terminated,
}

/// Events for a client transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A response matched to this transaction.
    Response(Response),
    TransportError,
}

/// A client transaction: INVITE (§17.1.1) or non-INVITE (§17.1.2),
/// decided by the request's method. Not for ACK, which has none.
#[derive(Debug, Clone)]
pub struct ClientTransaction {
    request: Request,
    invite: bool,
    transport: Transport,
    config: TimerConfig,
    state: ClientState,
    timers: Timers,
    interval: Duration,
    ack: Option<Request>,
    actions: VecDeque<Action>,
}

impl ClientTransaction {
    /// Starts the transaction: the request is sent on the first `poll`.
    pub fn new(
        request: Request,
        transport: Transport,
        config: TimerConfig,
        now: Instant,
    ) -> ClientTransaction {
        let invite = request.method == Method::Invite;
        let mut tx = ClientTransaction {
            invite,
            transport,
            config,
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            timers: Timers::default(),
            interval: config.t1,
            ack: None,
            actions: VecDeque::new(),
            request,
        };
        tx.actions
            .push_back(Action::Send(Message::Request(tx.request.clone())));
        let (retransmit, give_up) = if invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        if transport == Transport::Unreliable {
            tx.timers.arm(retransmit, now + config.t1);
        }
        tx.timers.arm(give_up, now + config.t1.saturating_mul(64));
        tx
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    /// When `poll` must next be called.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.actions.is_empty() {
            self.timers.next()
        } else {
            None
        }
    }

    pub fn handle(&mut self, now: Instant, event: ClientEvent) {
        match event {
            ClientEvent::TransportError => {
                if self.state != ClientState::Terminated {
                    self.actions.push_back(Action::TransportError);
                    self.terminate();
                }
            }
            ClientEvent::Response(response) => self.on_response(now, response),
        }
    }

    /// The next action, after firing any timers due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        while self.actions.is_empty() {
            let timer = self.timers.take_due(now)?;
            self.on_timer(now, timer);
        }
        self.actions.pop_front()
    }

    fn terminate(&mut self) {
        self.state = ClientState::Terminated;
        self.timers.clear();
        self.actions.push_back(Action::Terminated);
    }

    fn on_response(&mut self, now: Instant, response: Response) {
        let status = response.status;
        match self.state {
            ClientState::Calling | ClientState::Trying | ClientState::Proceeding => {
                if status.is_provisional() {
                    self.state = ClientState::Proceeding;
                    if self.invite {
                        // §17.1.1.2: in Proceeding the INVITE is no longer
                        // retransmitted, and Timer B no longer applies.
                        self.timers.disarm(Timer::A);
                        self.timers.disarm(Timer::B);
                    }
                    self.actions
                        .push_back(Action::PassToTu(Message::Response(response)));
                } else if self.invite && status.is_success() {
                    self.actions
                        .push_back(Action::PassToTu(Message::Response(response)));
                    self.state = ClientState::Accepted;
                    self.timers.clear();
                    self.timers
                        .arm(Timer::M, now + self.config.t1.saturating_mul(64));
                } else {
                    self.state = ClientState::Completed;
                    self.timers.clear();
                    if self.invite {
                        let ack = ack_for(&self.request, &response);
                        self.actions
                            .push_back(Action::Send(Message::Request(ack.clone())));
                        self.ack = Some(ack);
                    }
                    self.actions
                        .push_back(Action::PassToTu(Message::Response(response)));
                    let (timer, wait) = if self.invite {
                        // "at least 32 seconds" (§17.1.1.2)
                        (
                            Timer::D,
                            Duration::from_secs(32).max(self.config.t1.saturating_mul(64)),
                        )
                    } else {
                        (Timer::K, self.config.t4)
                    };
                    match self.transport {
                        Transport::Unreliable => self.timers.arm(timer, now + wait),
                        Transport::Reliable => self.terminate(),
                    }
                }
            }
            ClientState::Completed => {
                // A retransmitted final response: re-send the ACK (INVITE),
                // absorb it otherwise.
                if let Some(ack) = &self.ack
                    && status.is_final()
                {
                    self.actions
                        .push_back(Action::Send(Message::Request(ack.clone())));
                }
            }
            // RFC 6026 §7.2: a 2xx (retransmitted, or from another fork)
            // goes to the TU, which sends its ACK; anything else is absorbed.
            ClientState::Accepted => {
                if status.is_success() {
                    self.actions
                        .push_back(Action::PassToTu(Message::Response(response)));
                }
            }
            ClientState::Terminated => {}
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::A => {
                // INVITE: the interval doubles without the T2 cap.
                self.interval = self.interval.saturating_mul(2);
                self.timers.arm(Timer::A, now + self.interval);
                self.actions
                    .push_back(Action::Send(Message::Request(self.request.clone())));
            }
            Timer::E => {
                self.interval = if self.state == ClientState::Proceeding {
                    self.config.t2
                } else {
                    self.interval.saturating_mul(2).min(self.config.t2)
                };
                self.timers.arm(Timer::E, now + self.interval);
                self.actions
                    .push_back(Action::Send(Message::Request(self.request.clone())));
            }
            Timer::B | Timer::F => {
                self.actions.push_back(Action::Timeout);
                self.terminate();
            }
            Timer::D | Timer::K | Timer::M => self.terminate(),
            _ => {}
        }
    }
}

/// The ACK for a non-2xx final response to an INVITE (RFC 3261
/// §17.1.1.3): same Request-URI, Call-ID, From, CSeq number and top Via
/// as the INVITE, the To of the response, and the INVITE's Route set.
pub fn ack_for(invite: &Request, response: &Response) -> Request {
    let mut headers = Headers::new();
    if let Some(via) = invite.headers.get(&HeaderName::Via) {
        // Only the top value of the first Via line.
        let top = invite
            .headers
            .top_via()
            .map(|v| v.to_string())
            .unwrap_or_else(|_| via.to_owned());
        headers.push(HeaderName::Via, top);
    }
    for route in invite.headers.get_all(&HeaderName::Route) {
        headers.push(HeaderName::Route, route);
    }
    if let Some(mf) = invite.headers.get(&HeaderName::MaxForwards) {
        headers.push(HeaderName::MaxForwards, mf);
    }
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = invite.headers.get(&name) {
            headers.push(name, v);
        }
    }
    if let Some(to) = response.headers.get(&HeaderName::To) {
        headers.push(HeaderName::To, to);
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(0);
    headers.push(HeaderName::CSeq, format!("{seq} ACK"));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: invite.version,
        headers,
        body: Vec::new(),
    }
}

/// Server transaction states (RFC 3261 Figures 7 and 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE, before the TU answered.
    Trying,
    Proceeding,
    Completed,
    /// INVITE, after the ACK.
    Confirmed,
    Terminated,
}

/// Events for a server transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// A request matched to this transaction: a retransmission, or the ACK
    /// of a non-2xx final response.
    Request(Request),
    /// A response the TU wants sent.
    Respond(Response),
    TransportError,
}

/// A server transaction: INVITE (§17.2.1) or non-INVITE (§17.2.2).
#[derive(Debug, Clone)]
pub struct ServerTransaction {
    request: Request,
    invite: bool,
    transport: Transport,
    config: TimerConfig,
    state: ServerState,
    timers: Timers,
    interval: Duration,
    last_response: Option<Response>,
    actions: VecDeque<Action>,
}

impl ServerTransaction {
    /// Creates the transaction for a new request: the request goes to the
    /// TU on the first `poll`. An INVITE gets `100 Trying` if the TU has
    /// not responded within 200 ms.
    pub fn new(
        request: Request,
        transport: Transport,
        config: TimerConfig,
        now: Instant,
    ) -> ServerTransaction {
        let invite = request.method == Method::Invite;
        let mut tx = ServerTransaction {
            invite,
            transport,
            config,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            timers: Timers::default(),
            interval: config.t1,
            last_response: None,
            actions: VecDeque::new(),
            request,
        };
        tx.actions
            .push_back(Action::PassToTu(Message::Request(tx.request.clone())));
        if invite {
            tx.timers
                .arm(Timer::Trying, now + Duration::from_millis(200));
        }
        tx
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn request(&self) -> &Request {
        &self.request
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        if self.actions.is_empty() {
            self.timers.next()
        } else {
            None
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        while self.actions.is_empty() {
            let timer = self.timers.take_due(now)?;
            self.on_timer(now, timer);
        }
        self.actions.pop_front()
    }

    fn terminate(&mut self) {
        self.state = ServerState::Terminated;
        self.timers.clear();
        self.actions.push_back(Action::Terminated);
    }

    fn resend_last(&mut self) {
        if let Some(r) = &self.last_response {
            self.actions
                .push_back(Action::Send(Message::Response(r.clone())));
        }
    }

    pub fn handle(&mut self, now: Instant, event: ServerEvent) {
        match event {
            ServerEvent::TransportError => {
                if self.state != ServerState::Terminated {
                    self.actions.push_back(Action::TransportError);
                    self.terminate();
                }
            }
            ServerEvent::Request(request) => self.on_request(now, request),
            ServerEvent::Respond(response) => self.on_tu_response(now, response),
        }
    }

    fn on_request(&mut self, now: Instant, request: Request) {
        let is_ack = request.method == Method::Ack;
        match self.state {
            // A retransmission: repeat the last provisional, if any
            // (§17.2.1, §17.2.2); in Trying it is just absorbed.
            ServerState::Trying => {}
            ServerState::Proceeding if !is_ack => self.resend_last(),
            ServerState::Completed if self.invite && is_ack => {
                self.state = ServerState::Confirmed;
                self.timers.disarm(Timer::G);
                self.timers.disarm(Timer::H);
                match self.transport {
                    Transport::Unreliable => self.timers.arm(Timer::I, now + self.config.t4),
                    Transport::Reliable => self.terminate(),
                }
            }
            ServerState::Completed if !is_ack => self.resend_last(),
            _ => {}
        }
    }

    fn on_tu_response(&mut self, now: Instant, response: Response) {
        if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            // §17.2.2: responses from the TU after the final are dropped.
            return;
        }
        self.timers.disarm(Timer::Trying);
        let status = response.status;
        self.actions
            .push_back(Action::Send(Message::Response(response.clone())));
        self.last_response = Some(response);
        if status.is_provisional() {
            self.state = ServerState::Proceeding;
            return;
        }
        if self.invite && status.is_success() {
            // The TU (dialog layer) retransmits 2xx until the ACK.
            self.terminate();
            return;
        }
        self.state = ServerState::Completed;
        if self.invite {
            if self.transport == Transport::Unreliable {
                self.timers.arm(Timer::G, now + self.config.t1);
            }
            self.timers
                .arm(Timer::H, now + self.config.t1.saturating_mul(64));
        } else {
            match self.transport {
                Transport::Unreliable => self
                    .timers
                    .arm(Timer::J, now + self.config.t1.saturating_mul(64)),
                Transport::Reliable => self.terminate(),
            }
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Trying
                if self.state == ServerState::Proceeding && self.last_response.is_none() =>
            {
                let trying = self.request.trying();
                self.actions
                    .push_back(Action::Send(Message::Response(trying.clone())));
                self.last_response = Some(trying);
            }
            Timer::G => {
                self.interval = self.interval.saturating_mul(2).min(self.config.t2);
                self.timers.arm(Timer::G, now + self.interval);
                self.resend_last();
            }
            Timer::H => {
                // No ACK came: tell the TU and give up.
                self.actions.push_back(Action::Timeout);
                self.terminate();
            }
            Timer::I | Timer::J => self.terminate(),
            _ => {}
        }
    }
}

/// What matches messages to a transaction (RFC 3261 §17.1.3, §17.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// The branch (with the magic cookie), the top Via sent-by, and the
    /// method, ACK counting as INVITE. CANCEL is its own transaction.
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// RFC 2543 peers without a magic-cookie branch (RFC 4475 §3.4.1):
    /// Call-ID, CSeq number and method, From tag and top Via. (The To tag
    /// is left out so that the ACK for a non-2xx, which carries it, still
    /// matches.)
    Rfc2543 {
        call_id: String,
        cseq: u32,
        method: String,
        from_tag: String,
        top_via: String,
    },
}

impl TransactionKey {
    /// The key of a received request (server side).
    pub fn for_request(request: &Request) -> Result<TransactionKey, HeaderError> {
        let method = match request.method {
            Method::Ack => Method::Invite,
            ref m => m.clone(),
        };
        Self::build(&request.headers, method)
    }

    /// The key of a received response (client side), from its top Via and
    /// CSeq method.
    pub fn for_response(response: &Response) -> Result<TransactionKey, HeaderError> {
        let method = response.headers.cseq()?.method;
        Self::build(&response.headers, method)
    }

    fn build(headers: &Headers, method: Method) -> Result<TransactionKey, HeaderError> {
        let via = headers.top_via()?;
        let sent_by = match via.port {
            Some(port) => format!("{}:{port}", via.host).to_ascii_lowercase(),
            None => via.host.to_string().to_ascii_lowercase(),
        };
        if let Some(branch) = via.branch().filter(|b| b.starts_with(MAGIC_COOKIE)) {
            return Ok(TransactionKey::Rfc3261 {
                branch: branch.to_owned(),
                sent_by,
                method: method.as_str().to_owned(),
            });
        }
        Ok(TransactionKey::Rfc2543 {
            call_id: headers.call_id()?.to_owned(),
            cseq: headers.cseq()?.seq,
            method: method.as_str().to_owned(),
            from_tag: headers.from()?.tag().unwrap_or("").to_owned(),
            top_via: via.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::StatusCode;
    use crate::sip::parse::parse;

    fn request(method: &str) -> Request {
        let text = format!(
            "{method} sip:1001@ccu.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKtx1\r\n\
Max-Forwards: 70\r\n\
Route: <sip:edge.example;lr>\r\n\
From: <sip:ccu@ccu.example>;tag=ccu1\r\n\
To: <sip:1001@ccu.example>\r\n\
Call-ID: tx-test\r\n\
CSeq: 7 {method}\r\n\
Content-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!(),
        }
    }

    fn respond(req: &Request, code: u16) -> Response {
        req.response(StatusCode::new(code).unwrap(), "uas9")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Drains every action available at `now`.
    fn drain_client(tx: &mut ClientTransaction, now: Instant) -> Vec<Action> {
        std::iter::from_fn(|| tx.poll(now)).collect()
    }

    fn drain_server(tx: &mut ServerTransaction, now: Instant) -> Vec<Action> {
        std::iter::from_fn(|| tx.poll(now)).collect()
    }

    fn sends(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Send(_)))
            .count()
    }

    #[test]
    fn invite_client_retransmits_with_doubling_intervals_then_times_out() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(
            request("INVITE"),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        assert_eq!(sends(&drain_client(&mut tx, t0)), 1);
        // Timer A: 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s (doubling, no T2 cap).
        let mut fired = Vec::new();
        let mut now = t0;
        while let Some(deadline) = tx.next_deadline() {
            now = deadline;
            let actions = drain_client(&mut tx, now);
            if sends(&actions) > 0 {
                fired.push((now - t0).as_millis());
            }
            if actions.contains(&Action::Timeout) {
                assert_eq!(actions.last(), Some(&Action::Terminated));
                break;
            }
        }
        assert_eq!(fired, [500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(now - t0, ms(32_000), "Timer B = 64*T1");
        assert_eq!(tx.state(), ClientState::Terminated);
    }

    #[test]
    fn invite_client_stops_retransmitting_on_a_provisional_and_acks_a_failure() {
        let t0 = Instant::now();
        let invite = request("INVITE");
        let mut tx = ClientTransaction::new(
            invite.clone(),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        drain_client(&mut tx, t0);
        tx.handle(t0 + ms(100), ClientEvent::Response(respond(&invite, 180)));
        let actions = drain_client(&mut tx, t0 + ms(100));
        assert!(matches!(&actions[..], [Action::PassToTu(_)]));
        assert_eq!(tx.state(), ClientState::Proceeding);
        assert_eq!(tx.next_deadline(), None, "no Timer A or B in Proceeding");

        let busy = respond(&invite, 486);
        tx.handle(t0 + ms(200), ClientEvent::Response(busy.clone()));
        let actions = drain_client(&mut tx, t0 + ms(200));
        let Some(Action::Send(Message::Request(ack))) = actions.first() else {
            panic!("{actions:?}")
        };
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(ack.uri, invite.uri);
        assert_eq!(ack.headers.cseq().unwrap().seq, 7);
        assert_eq!(ack.headers.cseq().unwrap().method, Method::Ack);
        assert_eq!(ack.headers.to().unwrap().tag(), Some("uas9"));
        assert_eq!(ack.headers.top_via().unwrap().branch(), Some("z9hG4bKtx1"));
        assert_eq!(ack.headers.routes(&HeaderName::Route).unwrap().len(), 1);
        assert!(matches!(actions.get(1), Some(Action::PassToTu(_))));

        // A retransmitted 486 is answered with the ACK again, not passed up.
        tx.handle(t0 + ms(700), ClientEvent::Response(busy));
        let actions = drain_client(&mut tx, t0 + ms(700));
        assert!(
            matches!(&actions[..], [Action::Send(Message::Request(a))] if a.method == Method::Ack)
        );

        // Timer D: 32 s after the final response.
        assert_eq!(tx.next_deadline(), Some(t0 + ms(200) + ms(32_000)));
        let actions = drain_client(&mut tx, t0 + ms(32_200));
        assert_eq!(actions, [Action::Terminated]);
    }

    #[test]
    fn invite_client_passes_2xx_retransmissions_to_the_tu_until_timer_m() {
        let t0 = Instant::now();
        let invite = request("INVITE");
        let mut tx = ClientTransaction::new(
            invite.clone(),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        drain_client(&mut tx, t0);
        tx.handle(t0, ClientEvent::Response(respond(&invite, 200)));
        let actions = drain_client(&mut tx, t0);
        assert!(matches!(&actions[..], [Action::PassToTu(_)]), "{actions:?}");
        assert_eq!(tx.state(), ClientState::Accepted);
        // No INVITE retransmission any more (Timer A is gone), only Timer M.
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)));
        // The phone did not get our ACK and repeats its 2xx: the TU hears
        // it again (and sends the ACK again); a stray 4xx is absorbed.
        tx.handle(t0 + ms(500), ClientEvent::Response(respond(&invite, 200)));
        tx.handle(t0 + ms(600), ClientEvent::Response(respond(&invite, 486)));
        let actions = drain_client(&mut tx, t0 + ms(600));
        assert!(matches!(&actions[..], [Action::PassToTu(_)]), "{actions:?}");
        assert_eq!(drain_client(&mut tx, t0 + ms(32_000)), [Action::Terminated]);
    }

    #[test]
    fn non_invite_client_caps_retransmissions_at_t2() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(
            request("OPTIONS"),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        drain_client(&mut tx, t0);
        let mut fired = Vec::new();
        while let Some(deadline) = tx.next_deadline() {
            let actions = drain_client(&mut tx, deadline);
            if sends(&actions) > 0 {
                fired.push((deadline - t0).as_millis());
            }
            if actions.contains(&Action::Timeout) {
                assert_eq!((deadline - t0).as_millis(), 32_000, "Timer F");
                break;
            }
        }
        // E: 0.5, 1.5, 3.5, then every 4 s.
        assert_eq!(fired[..6], [500, 1500, 3500, 7500, 11500, 15500]);
        assert_eq!(*fired.last().unwrap(), 31500);
    }

    #[test]
    fn non_invite_client_retransmits_every_t2_once_proceeding_and_waits_k() {
        let t0 = Instant::now();
        let options = request("OPTIONS");
        let mut tx = ClientTransaction::new(
            options.clone(),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        drain_client(&mut tx, t0);
        tx.handle(t0 + ms(100), ClientEvent::Response(respond(&options, 100)));
        drain_client(&mut tx, t0 + ms(100));
        // Timer E still fires at 500 ms, then every T2.
        assert_eq!(sends(&drain_client(&mut tx, t0 + ms(500))), 1);
        assert_eq!(tx.next_deadline(), Some(t0 + ms(4_500)));
        tx.handle(t0 + ms(600), ClientEvent::Response(respond(&options, 200)));
        let actions = drain_client(&mut tx, t0 + ms(600));
        assert!(matches!(&actions[..], [Action::PassToTu(_)]));
        assert_eq!(tx.state(), ClientState::Completed);
        // A retransmitted 200 is absorbed; Timer K = T4.
        tx.handle(t0 + ms(700), ClientEvent::Response(respond(&options, 200)));
        assert!(drain_client(&mut tx, t0 + ms(700)).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(5_600)));
        assert_eq!(drain_client(&mut tx, t0 + ms(5_600)), [Action::Terminated]);
    }

    #[test]
    fn reliable_transports_do_not_retransmit_or_linger() {
        let t0 = Instant::now();
        let options = request("OPTIONS");
        let mut tx = ClientTransaction::new(
            options.clone(),
            Transport::Reliable,
            TimerConfig::default(),
            t0,
        );
        drain_client(&mut tx, t0);
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_000)), "only Timer F");
        tx.handle(t0, ClientEvent::Response(respond(&options, 404)));
        let actions = drain_client(&mut tx, t0);
        assert!(matches!(
            &actions[..],
            [Action::PassToTu(_), Action::Terminated]
        ));
    }

    #[test]
    fn transport_errors_end_the_transaction() {
        let t0 = Instant::now();
        let mut tx = ClientTransaction::new(
            request("INVITE"),
            Transport::Reliable,
            TimerConfig::default(),
            t0,
        );
        drain_client(&mut tx, t0);
        tx.handle(t0, ClientEvent::TransportError);
        assert_eq!(
            drain_client(&mut tx, t0),
            [Action::TransportError, Action::Terminated]
        );
        assert_eq!(tx.next_deadline(), None);
    }

    #[test]
    fn invite_server_sends_trying_after_200ms_and_repeats_it_on_retransmission() {
        let t0 = Instant::now();
        let invite = request("INVITE");
        let mut tx = ServerTransaction::new(
            invite.clone(),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        assert!(matches!(
            &drain_server(&mut tx, t0)[..],
            [Action::PassToTu(_)]
        ));
        assert_eq!(tx.next_deadline(), Some(t0 + ms(200)));
        let actions = drain_server(&mut tx, t0 + ms(200));
        let [Action::Send(Message::Response(trying))] = &actions[..] else {
            panic!("{actions:?}")
        };
        assert_eq!(trying.status, StatusCode::TRYING);
        assert_eq!(trying.headers.to().unwrap().tag(), None);
        tx.handle(t0 + ms(500), ServerEvent::Request(invite));
        assert_eq!(sends(&drain_server(&mut tx, t0 + ms(500))), 1);
    }

    #[test]
    fn invite_server_needs_no_trying_when_the_tu_answers_quickly() {
        let t0 = Instant::now();
        let invite = request("INVITE");
        let mut tx = ServerTransaction::new(
            invite.clone(),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        drain_server(&mut tx, t0);
        tx.handle(t0 + ms(50), ServerEvent::Respond(respond(&invite, 180)));
        assert_eq!(sends(&drain_server(&mut tx, t0 + ms(50))), 1);
        assert!(drain_server(&mut tx, t0 + ms(300)).is_empty());
    }

    #[test]
    fn invite_server_retransmits_a_failure_until_the_ack_then_absorbs_for_t4() {
        let t0 = Instant::now();
        let invite = request("INVITE");
        let mut tx = ServerTransaction::new(
            invite.clone(),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        drain_server(&mut tx, t0);
        tx.handle(t0, ServerEvent::Respond(respond(&invite, 486)));
        assert_eq!(sends(&drain_server(&mut tx, t0)), 1);
        assert_eq!(tx.state(), ServerState::Completed);
        // Timer G: 0.5, 1.5, 3.5, 7.5 (capped at T2 = 4 s).
        let mut fired = Vec::new();
        for _ in 0..4 {
            let deadline = tx.next_deadline().unwrap();
            assert_eq!(sends(&drain_server(&mut tx, deadline)), 1);
            fired.push((deadline - t0).as_millis());
        }
        assert_eq!(fired, [500, 1500, 3500, 7500]);
        let ack = ack_for(&invite, &respond(&invite, 486));
        tx.handle(t0 + ms(8_000), ServerEvent::Request(ack.clone()));
        assert!(drain_server(&mut tx, t0 + ms(8_000)).is_empty());
        assert_eq!(tx.state(), ServerState::Confirmed);
        tx.handle(t0 + ms(8_100), ServerEvent::Request(ack));
        assert!(drain_server(&mut tx, t0 + ms(8_100)).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(13_000)), "Timer I = T4");
        assert_eq!(drain_server(&mut tx, t0 + ms(13_000)), [Action::Terminated]);
    }

    #[test]
    fn invite_server_gives_up_after_timer_h_without_ack() {
        let t0 = Instant::now();
        let invite = request("INVITE");
        let mut tx = ServerTransaction::new(
            invite.clone(),
            Transport::Reliable,
            TimerConfig::default(),
            t0,
        );
        drain_server(&mut tx, t0);
        tx.handle(t0, ServerEvent::Respond(respond(&invite, 603)));
        drain_server(&mut tx, t0);
        assert_eq!(
            tx.next_deadline(),
            Some(t0 + ms(32_000)),
            "only Timer H over TCP"
        );
        assert_eq!(
            drain_server(&mut tx, t0 + ms(32_000)),
            [Action::Timeout, Action::Terminated]
        );
    }

    #[test]
    fn non_invite_server_repeats_its_final_response_until_timer_j() {
        let t0 = Instant::now();
        let register = request("REGISTER");
        let mut tx = ServerTransaction::new(
            register.clone(),
            Transport::Unreliable,
            TimerConfig::default(),
            t0,
        );
        drain_server(&mut tx, t0);
        assert_eq!(
            tx.next_deadline(),
            None,
            "no 100 Trying timer for non-INVITE"
        );
        // A retransmission before the TU answers is absorbed.
        tx.handle(t0 + ms(10), ServerEvent::Request(register.clone()));
        assert!(drain_server(&mut tx, t0 + ms(10)).is_empty());
        tx.handle(t0 + ms(20), ServerEvent::Respond(respond(&register, 401)));
        assert_eq!(sends(&drain_server(&mut tx, t0 + ms(20))), 1);
        tx.handle(t0 + ms(520), ServerEvent::Request(register.clone()));
        assert_eq!(sends(&drain_server(&mut tx, t0 + ms(520))), 1);
        // A late TU response is dropped.
        tx.handle(t0 + ms(600), ServerEvent::Respond(respond(&register, 200)));
        assert!(drain_server(&mut tx, t0 + ms(600)).is_empty());
        assert_eq!(tx.next_deadline(), Some(t0 + ms(32_020)));
        assert_eq!(drain_server(&mut tx, t0 + ms(32_020)), [Action::Terminated]);
    }

    #[test]
    fn keys_match_requests_acks_and_responses() {
        let invite = request("INVITE");
        let key = TransactionKey::for_request(&invite).unwrap();
        let ack = ack_for(&invite, &respond(&invite, 486));
        assert_eq!(TransactionKey::for_request(&ack).unwrap(), key);
        assert_eq!(
            TransactionKey::for_response(&respond(&invite, 180)).unwrap(),
            key
        );
        let cancel = request("CANCEL");
        assert_ne!(TransactionKey::for_request(&cancel).unwrap(), key);
    }

    #[test]
    fn rfc_2543_requests_get_a_fallback_key() {
        let mut invite = request("INVITE");
        invite
            .headers
            .set(HeaderName::Via, "SIP/2.0/UDP iftgw.example.com");
        let key = TransactionKey::for_request(&invite).unwrap();
        assert!(matches!(key, TransactionKey::Rfc2543 { cseq: 7, .. }));
        let ack = ack_for(&invite, &respond(&invite, 486));
        assert_eq!(TransactionKey::for_request(&ack).unwrap(), key);
    }
}
