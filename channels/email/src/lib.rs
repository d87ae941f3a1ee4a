//! ccu-email: the e-mail channel of ccu — the SMTP door citizens' mail
//! comes in through, the parsing, noise filtering and threading that turn a
//! mail into a conversation message, and the builder and delivery step for
//! the mail ccu sends.
//!
//! Where it sits (see `docs/email.md`):
//!
//! ```text
//! mailer ─SMTP─▶ smtp::serve ─▶ Session (sans-IO) ─▶ MailSink::accept (server: store raw, durable)
//!                                                           │ 250 only after Ok (RFC 5321 §6.1)
//! server worker: stored raw ─▶ inbound::parse_inbound ─▶ noise::classify ─▶ threading::thread ─▶ hub
//! outbox worker: outbound::build_mail ─▶ outbound::try_send ─▶ relay  (retry_delay on Transient)
//! ```
//!
//! Every part but the two IO edges ([`smtp::serve`], [`outbound::try_send`])
//! is a pure function or a sans-IO state machine; the server crate supplies
//! storage through [`smtp::MailSink`] / [`smtp::RecipientRouter`] and
//! [`threading::ThreadLookup`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use ccu_email::address::EmailAddress;
//! use ccu_email::smtp::{AcceptedId, Envelope, MailSink, MailboxRoute, RecipientRouter, SinkError, SmtpConfig};
//!
//! struct Door;
//! impl RecipientRouter for Door {
//!     fn route_recipient(&self, to: &EmailAddress) -> Option<MailboxRoute> {
//!         to.eq_ignore_case("urp@comune.example")
//!             .then(|| MailboxRoute::to_queue(to.clone(), "urp"))
//!     }
//! }
//! impl MailSink for Door {
//!     async fn accept(&self, envelope: Envelope, raw: Vec<u8>) -> Result<AcceptedId, SinkError> {
//!         // Insert `raw` and the envelope, commit, then:
//!         Ok(AcceptedId(envelope.id))
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2525").await?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! ccu_email::smtp::serve(listener, SmtpConfig::new("mx.comune.example"), Arc::new(Door), shutdown).await;
//! # Ok(()) }
//! ```

pub mod address;
mod html;
pub mod imap;
pub mod inbound;
pub mod noise;
pub mod outbound;
pub mod smtp;
pub mod threading;

pub use html::html_to_safe_text;
