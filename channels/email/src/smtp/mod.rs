//! The SMTP door (RFC 5321): a sans-IO [`Session`] state machine and the
//! tokio shell [`serve`] that feeds it from sockets.
//!
//! The session never touches a socket or a clock: bytes and the wall-clock
//! time go in, [`Action`]s come out (send this reply, hand this message to
//! the sink, upgrade to TLS, close). The shell does the IO, arms the
//! timeouts the session asks for, and calls the [`MailSink`].

mod data;
mod reply;
mod server;
mod session;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::address::EmailAddress;

pub use reply::Reply;
pub use server::{TlsSetupError, serve, tls_acceptor_from_pem};
pub use session::{Action, Delivery, Session, SessionInfo};

/// Limits and timers of the SMTP listener. Every value comes from the
/// server's settings; [`SmtpConfig::new`] fills in the RFC defaults.
#[derive(Clone)]
pub struct SmtpConfig {
    /// Our name in the greeting, EHLO reply and `Received:` header.
    pub hostname: String,
    /// Largest message accepted, advertised as `SIZE` (RFC 1870); larger ones
    /// get 552 5.3.4.
    pub max_message_size: usize,
    /// RFC 5321 §4.5.3.1.8 requires room for at least 100; one more gets
    /// 452 4.5.3 and the client sends the rest in another transaction.
    pub max_recipients: usize,
    /// Longest command line including CRLF. RFC 5321 §4.5.3.1.4 says 512,
    /// and lets extensions (SIZE=, BODY=) grow it, so the default is larger.
    pub max_command_line: usize,
    /// After this many failed commands (4xx/5xx answers) in one session we
    /// answer 421 4.7.0 and close, as RFC 5321 §4.3.2 allows.
    pub max_errors: u32,
    /// Waiting for the next command (RFC 5321 §4.5.3.2.7, 5 minutes).
    pub command_timeout: Duration,
    /// Waiting for each block of message text (§4.5.3.2.5, 3 minutes).
    pub data_block_timeout: Duration,
    /// How long the sink may take to make a message durable before we give
    /// up with 451: the client waits 10 minutes for our answer to the final
    /// dot (§4.5.3.2.6), so this must not exceed that.
    pub data_end_timeout: Duration,
    /// Simultaneous sessions; one more gets 421 4.7.0 at once.
    pub max_connections: usize,
    /// Simultaneous sessions from one IP address.
    pub max_connections_per_ip: usize,
    /// When set, STARTTLS (RFC 3207) is advertised and offered.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl SmtpConfig {
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 1024,
            max_errors: 10,
            command_timeout: Duration::from_secs(5 * 60),
            data_block_timeout: Duration::from_secs(3 * 60),
            data_end_timeout: Duration::from_secs(10 * 60),
            max_connections: 200,
            max_connections_per_ip: 20,
            tls: None,
        }
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("hostname", &self.hostname)
            .field("max_message_size", &self.max_message_size)
            .field("max_recipients", &self.max_recipients)
            .field("max_command_line", &self.max_command_line)
            .field("max_errors", &self.max_errors)
            .field("command_timeout", &self.command_timeout)
            .field("data_block_timeout", &self.data_block_timeout)
            .field("data_end_timeout", &self.data_end_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Where mail for one of our mailboxes goes: the configured mailbox and the
/// queue its conversations join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRoute {
    pub mailbox: EmailAddress,
    pub queue: String,
}

/// The recipient check, implemented by the server from its mailbox → queue
/// configuration. Anything it does not know is refused with 550 5.1.1, so
/// the door is never an open relay.
pub trait RecipientRouter: Send + Sync {
    fn route_recipient(&self, address: &EmailAddress) -> Option<MailboxRoute>;

    /// The sender check at `MAIL FROM` (per-sender and per-address rate
    /// limits). Refusing here, before any text is sent, costs the sender
    /// one line and us nothing; refusing after DATA would cost both the
    /// whole message. `sender` is `None` for the null reverse-path. The
    /// default admits everyone.
    fn admit_sender(&self, sender: Option<&EmailAddress>, peer: SocketAddr) -> Admission {
        let _ = (sender, peer);
        Admission::Accept
    }
}

/// The answer of [`RecipientRouter::admit_sender`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Accept,
    /// Not now: `451 4.7.1` with this text. A 4xx keeps the message at the
    /// sender's server, which retries later (RFC 5321 §4.2.5); `4.7.x` is
    /// the "security or policy status" class of RFC 3463 §3.8.
    Defer(String),
}

/// One accepted recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub address: EmailAddress,
    pub route: MailboxRoute,
}

/// The body type declared with `MAIL FROM:<...> BODY=` (RFC 6152).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

/// The SMTP envelope of one message, as handed to the [`MailSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Our id for this transaction, also in the `Received:` header and the
    /// logs, so a sender's complaint can be matched.
    pub id: String,
    /// `None` is the null reverse-path `<>` (bounces, RFC 5321 §4.5.5):
    /// such mail must never be answered.
    pub mail_from: Option<EmailAddress>,
    pub recipients: Vec<Recipient>,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    pub peer: SocketAddr,
    /// Whether the message came over TLS (STARTTLS).
    pub tls: bool,
    pub body: BodyType,
    /// Wall-clock time the message was completed, Unix seconds.
    pub received_at: i64,
}

/// The sink's receipt for a stored message, echoed in the 250 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedId(pub String);

/// Why the sink could not make a message durable. Every variant becomes
/// 451 4.3.0: the sender keeps the message and tries again later.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the message could not be stored: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("storing the message took longer than {0:?}")]
    TimedOut(Duration),
}

/// Makes an accepted message durable. The server implements it on its store.
///
/// **Durable before 250** (RFC 5321 §6.1): the session answers 250 to the
/// final dot only after `accept` returned `Ok`, so when it returns the raw
/// message must be committed (written and synced), not merely queued in
/// memory. An `Err` becomes 451 4.3.0 and the sender retries.
///
/// The method returns `impl Future + Send` (return-position impl trait in a
/// trait, stable since Rust 1.75) rather than being declared `async fn`:
/// that lets the trait demand a `Send` future, which the multi-threaded
/// runtime needs, and still needs no boxing; implementations may simply
/// write `async fn accept(...)`. [`serve`] is generic over the sink, so the
/// call is statically dispatched.
pub trait MailSink: RecipientRouter + 'static {
    /// `raw` is the message as received (CRLF line ends, dots unstuffed)
    /// with our `Received:` trace header prepended (RFC 5321 §4.4).
    fn accept(
        &self,
        envelope: Envelope,
        raw: Vec<u8>,
    ) -> impl Future<Output = Result<AcceptedId, SinkError>> + Send;
}
