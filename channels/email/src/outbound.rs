//! Outbound mail: building replies and acknowledgements (lettre's builder)
//! and one delivery step against the configured relay.
//!
//! The outbox table and its worker loop are the server's: it stores a mail
//! first, calls [`try_send`] for the due ones, records each attempt, and on
//! [`Outcome::Transient`] schedules the next try at [`retry_delay`]. The
//! Message-ID is derived from the outbox row id ([`message_id_for`]), so it
//! is fixed before the first attempt: a retry after a crash sends the same
//! Message-ID, and the citizen's client shows one message even in the rare
//! case the relay had accepted it just before the crash.

use std::time::{Duration, SystemTime};

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::address::EmailAddress;
use crate::inbound::InboundMail;
use crate::threading::ReferenceToken;

/// The relay every outgoing mail goes through.
#[derive(Clone)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub security: RelaySecurity,
    pub credentials: Option<(String, String)>,
    /// PEM of extra trusted roots for the relay's certificate (a city's own
    /// CA); the public roots (webpki-roots) are always trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// Per-command timeout of the SMTP client.
    pub timeout: Duration,
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password is never logged.
        f.debug_struct("RelayConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelaySecurity {
    /// Plain SMTP: only for a relay on loopback or in tests.
    None,
    /// STARTTLS required (RFC 3207), usually port 587.
    StartTls,
    /// TLS from the first byte (RFC 8314), usually port 465.
    ImplicitTls,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid address in outgoing mail: {0}")]
    Address(#[from] lettre::address::AddressError),
    #[error("building the message: {0}")]
    Build(#[from] lettre::error::Error),
    #[error("relay configuration: {0}")]
    Relay(#[from] lettre::transport::smtp::Error),
}

/// Our Message-ID for an outbox row, without angle brackets:
/// `ccu.{outbox_id}@{domain}`. The server maps it back to the conversation.
pub fn message_id_for(outbox_id: i64, domain: &str) -> String {
    format!("ccu.{outbox_id}@{domain}")
}

/// One outgoing mail as the builder needs it.
#[derive(Debug, Clone)]
pub struct OutgoingMail<'a> {
    pub outbox_id: i64,
    pub from: &'a EmailAddress,
    pub from_name: Option<&'a str>,
    pub to: &'a EmailAddress,
    pub to_name: Option<&'a str>,
    pub subject: &'a str,
    /// The conversation's reference, put in the subject as `[URP-2026-000123]`.
    pub reference: Option<&'a ReferenceToken>,
    pub body: &'a str,
    /// Sent by ccu on its own (acknowledgement, survey): `Auto-Submitted:
    /// auto-replied` (RFC 3834 §5), so the citizen's autoresponder stays quiet.
    pub automatic: bool,
    /// The citizen's mail this answers, for In-Reply-To and References.
    pub replying_to: Option<&'a InboundMail>,
    /// An `X-Loop:` token (lower case) so our own mail is recognised if it
    /// comes back (see [`crate::noise::classify`]).
    pub loop_token: Option<&'a str>,
}

/// The subject with the reference token, added once: `"[URP-2026-000123] TARI"`.
pub fn subject_with_reference(subject: &str, reference: Option<&ReferenceToken>) -> String {
    match reference {
        Some(token) => {
            let tag = format!("[{token}]");
            if subject.contains(&tag) {
                subject.to_owned()
            } else if subject.is_empty() {
                tag
            } else {
                format!("{tag} {subject}")
            }
        }
        None => subject.to_owned(),
    }
}

/// The `References:` of a reply (RFC 5322 §3.6.4): the parent's References
/// (or its In-Reply-To when it has none) followed by the parent's id. A
/// long chain keeps its first id and the last ones, as clients do, so the
/// header stays short.
pub fn references_for(parent: &InboundMail) -> Vec<String> {
    let mut chain: Vec<String> = if parent.references.is_empty() {
        parent.in_reply_to.clone()
    } else {
        parent.references.clone()
    };
    if let Some(id) = &parent.message_id {
        chain.push(id.clone());
    }
    if chain.len() > 12 {
        let tail = chain.split_off(chain.len() - 11);
        chain.truncate(1);
        chain.extend(tail);
    }
    chain
}

/// Builds the message. `domain` is ours (for the Message-ID); `date` is an
/// input so tests are deterministic.
pub fn build_mail(
    mail: &OutgoingMail<'_>,
    domain: &str,
    date: SystemTime,
) -> Result<Message, OutboundError> {
    let from = Mailbox::new(
        mail.from_name.map(str::to_owned),
        mail.from.as_str().parse()?,
    );
    let to = Mailbox::new(mail.to_name.map(str::to_owned), mail.to.as_str().parse()?);
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject_with_reference(mail.subject, mail.reference))
        .date(date)
        .message_id(Some(format!(
            "<{}>",
            message_id_for(mail.outbox_id, domain)
        )));
    if let Some(parent) = mail.replying_to {
        if let Some(id) = &parent.message_id {
            builder = builder.in_reply_to(format!("<{id}>"));
        }
        let references = references_for(parent);
        if !references.is_empty() {
            let joined = references
                .iter()
                .map(|r| format!("<{r}>"))
                .collect::<Vec<_>>()
                .join(" ");
            builder = builder.references(joined);
        }
    }
    if mail.automatic {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-replied".to_owned(),
        ));
    }
    if let Some(token) = mail.loop_token {
        builder = builder.raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Loop"),
            token.to_owned(),
        ));
    }
    // UTF-8 text; lettre picks quoted-printable or base64 as the text needs,
    // and encodes non-ASCII headers as RFC 2047 encoded words.
    Ok(builder
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.to_owned())?)
}

/// The transport to the relay. Cheap to clone; it pools connections.
pub fn relay_transport(
    config: &RelayConfig,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, OutboundError> {
    let parameters = || -> Result<TlsParameters, OutboundError> {
        let mut builder = TlsParameters::builder(config.host.clone());
        if let Some(pem) = &config.ca_pem {
            builder = builder.add_root_certificate(Certificate::from_pem(pem)?);
        }
        Ok(builder.build_rustls()?)
    };
    let tls = match config.security {
        RelaySecurity::None => Tls::None,
        RelaySecurity::StartTls => Tls::Required(parameters()?),
        RelaySecurity::ImplicitTls => Tls::Wrapper(parameters()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
        .port(config.port)
        .tls(tls)
        .timeout(Some(config.timeout));
    if let Some((user, password)) = &config.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// What one delivery attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The relay took the mail (its reply text, for the attempt record).
    Sent { response: String },
    /// 5xx: retrying will not help; mark the mail failed and tell an operator.
    Permanent { reason: String },
    /// 4xx, connection refused, timeout, TLS trouble: try again later.
    Transient { reason: String },
}

/// The delivery step (STYLE rule 13): one attempt, classified. The server's
/// outbox worker calls it in its loop; tests call it directly.
pub async fn try_send<T>(transport: &T, mail: Message) -> Outcome
where
    T: AsyncTransport + Sync,
    T::Ok: std::fmt::Debug,
    T::Error: Into<lettre::transport::smtp::Error>,
{
    match transport.send(mail).await {
        Ok(response) => Outcome::Sent {
            response: format!("{response:?}"),
        },
        Err(e) => classify_error(&e.into()),
    }
}

/// 5xx replies are permanent; everything else (4xx, network, timeouts,
/// TLS) is transient. A message refused as malformed by the client library
/// itself is permanent too: sending it again cannot succeed.
pub fn classify_error(e: &lettre::transport::smtp::Error) -> Outcome {
    let reason = e.to_string();
    if e.is_permanent() || e.is_client() {
        Outcome::Permanent { reason }
    } else {
        Outcome::Transient { reason }
    }
}

/// Delay before retry number `attempt` (1 = the first retry): 1, 2, 4, 8,
/// 16, 32 minutes, then hourly, up to `give_up_after` attempts (then
/// `None`: mark the mail failed). Deterministic; the server may add jitter.
pub fn retry_delay(attempt: u32, give_up_after: u32) -> Option<Duration> {
    if attempt == 0 || attempt > give_up_after {
        return None;
    }
    let minutes = 1u64 << (attempt - 1).min(6);
    Some(Duration::from_secs(60 * minutes.min(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_then_stays_hourly_then_gives_up() {
        let d: Vec<u64> = (1..=9)
            .map(|a| retry_delay(a, 9).unwrap().as_secs() / 60)
            .collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(10, 9), None);
        assert_eq!(retry_delay(0, 9), None);
        assert_eq!(
            retry_delay(u32::MAX, u32::MAX).map(|d| d.as_secs()),
            Some(3600)
        );
    }

    #[test]
    fn the_reference_is_added_to_the_subject_once() {
        let t = ReferenceToken::parse("URP-2026-000123").unwrap();
        assert_eq!(
            subject_with_reference("Re: TARI", Some(&t)),
            "[URP-2026-000123] Re: TARI"
        );
        assert_eq!(
            subject_with_reference("Re: [URP-2026-000123] TARI", Some(&t)),
            "Re: [URP-2026-000123] TARI"
        );
        assert_eq!(subject_with_reference("", Some(&t)), "[URP-2026-000123]");
        assert_eq!(subject_with_reference("x", None), "x");
    }

    #[test]
    fn references_chain_the_parent_and_stay_short() {
        let parent = InboundMail {
            message_id: Some("p@x".into()),
            in_reply_to: vec!["a@x".into()],
            ..InboundMail::default()
        };
        assert_eq!(references_for(&parent), ["a@x", "p@x"]);
        let long = InboundMail {
            message_id: Some("p@x".into()),
            references: (0..30).map(|i| format!("r{i}@x")).collect(),
            ..InboundMail::default()
        };
        let chain = references_for(&long);
        assert_eq!(chain.len(), 12);
        assert_eq!(chain[0], "r0@x");
        assert_eq!(chain[11], "p@x");
        assert_eq!(chain[10], "r29@x");
    }
}
