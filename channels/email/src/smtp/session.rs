//! The sans-IO SMTP server session (RFC 5321 §3, §4.1, §4.3.2).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smtp_proto::{Error as ProtoError, MAIL_BODY_7BIT, MAIL_BODY_8BITMIME, Request};

use super::data::{DataReader, Fed};
use super::{
    AcceptedId, Admission, BodyType, Envelope, MailboxRoute, Recipient, RecipientRouter, Reply,
    SinkError, SmtpConfig,
};
use crate::address::EmailAddress;

/// What the shell must do next.
#[derive(Debug)]
pub enum Action {
    /// Write this reply (the shell may batch several before flushing, which
    /// is what PIPELINING, RFC 2920 §3, expects).
    Send(Reply),
    /// Write this reply, then close the connection.
    SendAndClose(Reply),
    /// Write this reply (220), run the TLS handshake, then call
    /// [`Session::tls_established`] (RFC 3207 §4).
    StartTls(Reply),
    /// Hand the message to the sink, then give its result to
    /// [`Session::delivered`] and send the reply that returns.
    Deliver(Delivery),
}

/// A complete message for the sink.
#[derive(Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    /// The message with our `Received:` header prepended.
    pub raw: Vec<u8>,
}

/// Facts about the connection that the session cannot learn itself.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// A unique id for the session, used in transaction ids and logs.
    pub id: String,
    pub peer: SocketAddr,
    /// Whether STARTTLS can be offered (a TLS acceptor is configured).
    pub starttls_available: bool,
}

#[derive(Debug)]
enum Phase {
    /// Greeting sent; MAIL needs EHLO/HELO first (RFC 5321 §4.1.4).
    Connected,
    /// Greeted, no transaction.
    Ready,
    /// MAIL accepted; collecting RCPT.
    Transaction,
    /// Reading the message text.
    Data(DataReader),
    /// The message was handed to the sink; waiting for [`Session::delivered`].
    AwaitingSink,
    Closed,
}

#[derive(Debug, Default)]
struct Transaction {
    mail_from: Option<EmailAddress>,
    recipients: Vec<Recipient>,
    body: BodyType,
}

/// One SMTP server session. Feed it bytes with [`Session::receive`], take
/// actions from [`Session::poll`] until it returns `None`, then read more.
#[derive(Debug)]
pub struct Session {
    config: Arc<SmtpConfig>,
    info: SessionInfo,
    phase: Phase,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    transaction: Transaction,
    input: Vec<u8>,
    /// A command line grew past the limit: drop bytes until its LF.
    discarding_line: bool,
    errors: u32,
    messages: u64,
    pending: VecDeque<Action>,
}

impl Session {
    pub fn new(config: Arc<SmtpConfig>, info: SessionInfo) -> Self {
        Self {
            config,
            info,
            phase: Phase::Connected,
            helo: None,
            esmtp: false,
            tls: false,
            transaction: Transaction::default(),
            input: Vec::new(),
            discarding_line: false,
            errors: 0,
            messages: 0,
            pending: VecDeque::new(),
        }
    }

    /// The 220 greeting to send when the connection opens.
    pub fn greeting(&self) -> Reply {
        Reply::plain(220, format!("{} ESMTP ccu ready", self.config.hostname))
    }

    /// The 421 to send when the server shuts down (RFC 5321 §3.8).
    pub fn shutdown_reply(&mut self) -> Reply {
        self.phase = Phase::Closed;
        Reply::new(
            421,
            "4.3.2",
            format!("{} shutting down, try again later", self.config.hostname),
        )
    }

    /// The 421 to send when [`Session::timeout`] elapsed without input.
    pub fn timeout_reply(&mut self) -> Reply {
        self.phase = Phase::Closed;
        Reply::new(
            421,
            "4.4.2",
            format!("{} timeout, closing connection", self.config.hostname),
        )
    }

    /// How long the shell may wait for the next bytes before calling
    /// [`Session::timeout_reply`]: RFC 5321 §4.5.3.2 gives a timer per
    /// command and per block of message text, so every read restarts it.
    pub fn timeout(&self) -> Duration {
        match self.phase {
            Phase::Data(_) => self.config.data_block_timeout,
            _ => self.config.command_timeout,
        }
    }

    /// Whether the session is between commands, so a shutdown can close it
    /// with 421 now. A session inside DATA or waiting for the sink finishes
    /// that message first.
    pub fn is_idle(&self) -> bool {
        !matches!(self.phase, Phase::Data(_) | Phase::AwaitingSink)
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Bytes read from the client.
    pub fn receive(&mut self, bytes: &[u8]) {
        if self.discarding_line {
            if let Some(lf) = bytes.iter().position(|&b| b == b'\n') {
                self.discarding_line = false;
                let reply = self.error(Reply::new(500, "5.5.2", "Line too long"));
                self.pending.push_back(reply);
                self.input.extend_from_slice(&bytes[lf + 1..]);
            }
        } else {
            self.input.extend_from_slice(bytes);
        }
    }

    /// The TLS handshake after STARTTLS succeeded. RFC 3207 §4.2: everything
    /// learnt before is forgotten and the client must say EHLO again.
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.helo = None;
        self.esmtp = false;
        self.transaction = Transaction::default();
        self.input.clear();
        self.phase = Phase::Connected;
    }

    /// The sink's answer for the message handed out in [`Action::Deliver`].
    /// Only `Ok` turns into 250 (RFC 5321 §6.1: we take responsibility for
    /// the message only once it is stored).
    pub fn delivered(&mut self, result: Result<AcceptedId, SinkError>) -> Reply {
        if matches!(self.phase, Phase::AwaitingSink) {
            self.phase = Phase::Ready;
        }
        match result {
            Ok(AcceptedId(id)) => {
                self.messages += 1;
                Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
            }
            Err(e) => {
                tracing::warn!(session = %self.info.id, error = %e, "message not stored; answered 451");
                Reply::new(
                    451,
                    "4.3.0",
                    "Requested action aborted: local error in processing, try again later",
                )
            }
        }
    }

    /// The next thing to do, or `None` when more input is needed.
    /// `now_unix` (seconds) dates the `Received:` header.
    pub fn poll(
        &mut self,
        now_unix: i64,
        router: &(impl RecipientRouter + ?Sized),
    ) -> Option<Action> {
        if let Some(action) = self.pending.pop_front() {
            return Some(action);
        }
        let (consumed, action) = match &mut self.phase {
            Phase::Closed | Phase::AwaitingSink => (0, None),
            Phase::Data(reader) => match reader.feed(&self.input) {
                Fed::NeedMore => (self.input.len(), None),
                Fed::Done(n) => (n, Some(self.end_of_data(now_unix))),
            },
            _ => match self.input.iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    let line = self.input[..=lf].to_vec();
                    let more_input = lf + 1 < self.input.len();
                    (lf + 1, Some(self.command(&line, more_input, router)))
                }
                None if self.input.len() > self.config.max_command_line => {
                    self.discarding_line = true;
                    (self.input.len(), None)
                }
                None => (0, None),
            },
        };
        self.input.drain(..consumed.min(self.input.len()));
        if matches!(action, Some(Action::StartTls(_))) {
            // RFC 3207 §5 (and CVE-2011-0411): commands pipelined after
            // STARTTLS were sent in the clear and must not be executed
            // inside the TLS session.
            self.input.clear();
        }
        action
    }

    /// Counts a failed command; past the limit the answer becomes 421.
    fn error(&mut self, reply: Reply) -> Action {
        self.errors += 1;
        if self.errors >= self.config.max_errors {
            self.phase = Phase::Closed;
            return Action::SendAndClose(Reply::new(
                421,
                "4.7.0",
                format!(
                    "{} too many errors, closing connection",
                    self.config.hostname
                ),
            ));
        }
        Action::Send(reply)
    }

    fn command(
        &mut self,
        line: &[u8],
        more_input: bool,
        router: &(impl RecipientRouter + ?Sized),
    ) -> Action {
        if line.len() > self.config.max_command_line {
            return self.error(Reply::new(500, "5.5.2", "Line too long"));
        }
        match Request::parse(&mut line.iter()) {
            Ok(request) => self.request(request, more_input, router),
            Err(e) => {
                let reply = match e {
                    ProtoError::UnknownCommand => {
                        Reply::new(500, "5.5.2", "Syntax error, command unrecognized")
                    }
                    ProtoError::SyntaxError { syntax } => {
                        Reply::new(501, "5.5.4", format!("Syntax: {syntax}"))
                    }
                    ProtoError::InvalidSenderAddress => {
                        Reply::new(501, "5.1.7", "Bad sender address syntax")
                    }
                    ProtoError::InvalidRecipientAddress => {
                        Reply::new(501, "5.1.3", "Bad recipient address syntax")
                    }
                    ProtoError::InvalidParameter { param } => {
                        Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
                    }
                    ProtoError::UnsupportedParameter { param } => Reply::new(
                        555,
                        "5.5.4",
                        format!("Unsupported parameter {}", printable(&param)),
                    ),
                    ProtoError::ResponseTooLong => Reply::new(500, "5.5.2", "Line too long"),
                    ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
                        Reply::new(500, "5.5.2", "Syntax error")
                    }
                };
                self.error(reply)
            }
        }
    }

    fn request(
        &mut self,
        request: Request<Cow<'_, str>>,
        more_input: bool,
        router: &(impl RecipientRouter + ?Sized),
    ) -> Action {
        match request {
            Request::Ehlo { host } => {
                self.greeted(&host, true);
                Action::Send(self.ehlo_reply(&host))
            }
            Request::Helo { host } => {
                self.greeted(&host, false);
                Action::Send(Reply::plain(250, self.config.hostname.clone()))
            }
            Request::Mail { from } => self.mail(from, router),
            Request::Rcpt { to } => self.rcpt(to, router),
            Request::Data => self.data(),
            Request::Rset => {
                self.reset_transaction();
                Action::Send(Reply::new(250, "2.0.0", "Ok"))
            }
            Request::Noop { .. } => Action::Send(Reply::new(250, "2.0.0", "Ok")),
            Request::Quit => {
                self.phase = Phase::Closed;
                Action::SendAndClose(Reply::new(221, "2.0.0", "Bye"))
            }
            // RFC 5321 §3.5.3: 252 says "cannot verify, but will try to
            // deliver"; confirming addresses would help harvesters.
            Request::Vrfy { .. } => Action::Send(Reply::new(
                252,
                "2.1.5",
                "Cannot VRFY user, but will accept message and attempt delivery",
            )),
            Request::Help { .. } => Action::Send(Reply::multi(
                214,
                Some("2.0.0"),
                vec![
                    "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS".into(),
                    "End of HELP info".into(),
                ],
            )),
            Request::StartTls => self.starttls(more_input),
            Request::Expn { .. }
            | Request::Auth { .. }
            | Request::Bdat { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Lhlo { .. } => {
                let reply = Reply::new(502, "5.5.1", "Command not implemented");
                self.error(reply)
            }
        }
    }

    fn greeted(&mut self, host: &str, esmtp: bool) {
        // RFC 5321 §4.1.4: EHLO/HELO in the middle of a transaction resets it.
        self.transaction = Transaction::default();
        self.helo = Some(printable(host));
        self.esmtp = esmtp;
        self.phase = Phase::Ready;
    }

    fn reset_transaction(&mut self) {
        self.transaction = Transaction::default();
        if matches!(self.phase, Phase::Transaction) {
            self.phase = Phase::Ready;
        }
    }

    fn ehlo_reply(&self, host: &str) -> Reply {
        let mut lines = vec![
            format!("{} greets {}", self.config.hostname, printable(host)),
            format!("SIZE {}", self.config.max_message_size),
            "8BITMIME".to_owned(),
            "PIPELINING".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        // RFC 3207 §4.2: not advertised again once TLS is up.
        if self.info.starttls_available && !self.tls {
            lines.push("STARTTLS".to_owned());
        }
        Reply::multi(250, None, lines)
    }

    fn mail(
        &mut self,
        from: smtp_proto::MailFrom<Cow<'_, str>>,
        router: &(impl RecipientRouter + ?Sized),
    ) -> Action {
        match self.phase {
            Phase::Connected => {
                return self.error(Reply::new(503, "5.5.1", "Send EHLO/HELO first"));
            }
            Phase::Transaction => {
                return self.error(Reply::new(503, "5.5.1", "Nested MAIL command"));
            }
            _ => {}
        }
        // Only the parameters we advertise: BODY (RFC 6152) and SIZE (RFC 1870).
        if from.flags & !(MAIL_BODY_7BIT | MAIL_BODY_8BITMIME) != 0
            || from.env_id.is_some()
            || from.trans_id.is_some()
            || from.auth.is_some()
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || from.by != 0
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0
        {
            return self.error(Reply::new(555, "5.5.4", "Unsupported MAIL FROM parameter"));
        }
        // RFC 1870 §6.1: a declared size over our fixed maximum is permanent.
        if from.size > self.config.max_message_size {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed maximum of {} bytes",
                    self.config.max_message_size
                ),
            ));
        }
        let mail_from = if from.address.is_empty() {
            None
        } else {
            match EmailAddress::parse(&from.address) {
                Ok(a) => Some(a),
                Err(_) => return self.error(Reply::new(501, "5.1.7", "Bad sender address syntax")),
            }
        };
        if let Admission::Defer(reason) = router.admit_sender(mail_from.as_ref(), self.info.peer) {
            return self.error(Reply::new(451, "4.7.1", reason));
        }
        self.transaction = Transaction {
            mail_from,
            recipients: Vec::new(),
            body: if from.flags & MAIL_BODY_8BITMIME != 0 {
                BodyType::EightBitMime
            } else {
                BodyType::SevenBit
            },
        };
        self.phase = Phase::Transaction;
        Action::Send(Reply::new(250, "2.1.0", "Sender ok"))
    }

    fn rcpt(
        &mut self,
        to: smtp_proto::RcptTo<Cow<'_, str>>,
        router: &(impl RecipientRouter + ?Sized),
    ) -> Action {
        if !matches!(self.phase, Phase::Transaction) {
            return self.error(Reply::new(503, "5.5.1", "Need MAIL before RCPT"));
        }
        if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
            return self.error(Reply::new(555, "5.5.4", "Unsupported RCPT TO parameter"));
        }
        let Ok(address) = EmailAddress::parse(&to.address) else {
            return self.error(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
        };
        if self
            .transaction
            .recipients
            .iter()
            .any(|r| r.address.eq_ignore_case(address.as_str()))
        {
            return Action::Send(Reply::new(250, "2.1.5", "Recipient ok"));
        }
        // RFC 5321 §4.5.3.1.10: 452 (not 552) so the client retries the
        // remaining recipients in a later transaction.
        if self.transaction.recipients.len() >= self.config.max_recipients {
            return Action::Send(Reply::new(452, "4.5.3", "Too many recipients"));
        }
        let Some(route) = router.route_recipient(&address) else {
            return self.error(Reply::new(550, "5.1.1", "No such mailbox here"));
        };
        self.transaction
            .recipients
            .push(Recipient { address, route });
        Action::Send(Reply::new(250, "2.1.5", "Recipient ok"))
    }

    fn data(&mut self) -> Action {
        if !matches!(self.phase, Phase::Transaction) {
            return self.error(Reply::new(503, "5.5.1", "Need MAIL before DATA"));
        }
        // RFC 5321 §3.3: with no accepted recipient, 554 "no valid recipients".
        if self.transaction.recipients.is_empty() {
            return self.error(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        self.phase = Phase::Data(DataReader::new(self.config.max_message_size));
        Action::Send(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
    }

    fn starttls(&mut self, more_input: bool) -> Action {
        if self.tls {
            return self.error(Reply::new(503, "5.5.1", "TLS already active"));
        }
        if !self.info.starttls_available {
            return self.error(Reply::new(502, "5.5.1", "STARTTLS not available"));
        }
        if more_input {
            tracing::warn!(session = %self.info.id, "commands pipelined after STARTTLS dropped");
        }
        self.transaction = Transaction::default();
        self.phase = Phase::Connected;
        Action::StartTls(Reply::new(220, "2.0.0", "Ready to start TLS"))
    }

    fn end_of_data(&mut self, now_unix: i64) -> Action {
        let phase = std::mem::replace(&mut self.phase, Phase::Ready);
        let transaction = std::mem::take(&mut self.transaction);
        let Phase::Data(reader) = phase else {
            return Action::Send(Reply::new(503, "5.5.1", "Bad sequence of commands"));
        };
        if reader.oversize() {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!(
                    "Message size exceeds fixed maximum of {} bytes",
                    self.config.max_message_size
                ),
            ));
        }
        let message = reader.into_message();
        let id = format!("{}.{}", self.info.id, self.messages + 1);
        let helo = self.helo.clone().unwrap_or_default();
        let received = self.received_header(&id, &helo, &transaction.recipients, now_unix);
        let mut raw = Vec::with_capacity(received.len() + message.len());
        raw.extend_from_slice(received.as_bytes());
        raw.extend_from_slice(&message);
        self.phase = Phase::AwaitingSink;
        Action::Deliver(Delivery {
            envelope: Envelope {
                id,
                mail_from: transaction.mail_from,
                recipients: transaction.recipients,
                helo,
                peer: self.info.peer,
                tls: self.tls,
                body: transaction.body,
                received_at: now_unix,
            },
            raw,
        })
    }

    /// The trace header of RFC 5321 §4.4, with the protocol names of
    /// RFC 3848 (ESMTP, ESMTPS for ESMTP over TLS, SMTP after HELO).
    fn received_header(
        &self,
        id: &str,
        helo: &str,
        recipients: &[Recipient],
        now_unix: i64,
    ) -> String {
        let with = match (self.esmtp, self.tls) {
            (true, true) => "ESMTPS",
            (true, false) => "ESMTP",
            (false, _) => "SMTP",
        };
        let date = mail_parser::DateTime::from_timestamp(now_unix).to_rfc822();
        // "for" only with a single recipient, so one recipient does not
        // learn about the others (RFC 5321 §7.2).
        let for_clause = match recipients {
            [only] => format!("\r\n\tfor <{}>", only.address),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (ccu) with {with} id {id}{for_clause};\r\n\t{date}\r\n",
            ip = self.info.peer.ip(),
            host = self.config.hostname,
        )
    }
}

/// Client-supplied text made safe to echo in a reply or header.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .take(255)
        .collect()
}

impl MailboxRoute {
    /// A convenience for tests and simple configurations.
    pub fn to_queue(mailbox: EmailAddress, queue: impl Into<String>) -> Self {
        Self {
            mailbox,
            queue: queue.into(),
        }
    }
}
