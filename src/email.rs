//! The e-mail channel in the server (issue 6): the storage side of the SMTP
//! door and the outbox worker. The protocol, parsing, noise and threading
//! logic is the `ccu-email` crate's; this module joins it to the store and
//! the hub.
//!
//! ```text
//! SMTP DATA ─▶ EmailChannel::accept ── rate limit (451, nothing stored)
//!                │ parse (pure), noise, threading (reads only)
//!                └▶ group-commit writer: ONE transaction for every mail waiting:
//!                     raw row, contact, conversation + first event, message,
//!                     attachments, acknowledgement in the outbox, processed mark
//!                   ─▶ commit ─▶ 250 to each session ─▶ router + bus told
//! outbox worker: try_send_next ─▶ claim (sending, attempt n) ─▶ relay ─▶ sent | retry | failed
//! ```
//!
//! **Inbound durability.** `accept` returns (and the client sees 250) only
//! after the commit that holds the raw message (RFC 5321 §6.1). Processing
//! is in the same transaction, so a mail is either fully processed or not
//! stored at all, and the router hears of its conversation only after the
//! commit (store first, then route; a lost notice is repaired by the
//! router's rebuild from the store). If processing one mail fails, its
//! savepoint is rolled back alone and the raw row is stored unprocessed:
//! [`EmailChannel::process_unprocessed`] (run when the worker starts)
//! finishes it through the same path. A retried delivery (same Message-ID
//! and sender) finds its row and is stored once.
//!
//! **Group commit.** SQLite has one writer and `synchronous=FULL` makes
//! each commit an fsync (about 4.6 ms on the test machine). One writer task
//! takes every job waiting and commits them together, so concurrent SMTP
//! sessions share the fsync; an idle server still commits a lone mail at
//! once. Each mail has its own savepoint, so one bad mail never fails its
//! neighbours.
//!
//! **Rate limit.** Over `per_sender_per_hour`, the transaction is refused
//! at MAIL FROM with a temporary `451 4.7.1` (RFC 3463 §3.8, policy): the
//! sender's server keeps the message and retries later (RFC 5321 §4.2.5),
//! which loses nothing, costs neither side the message text, and does not
//! fill the store; accepting then dropping would lose mail we answered 250
//! to.
//!
//! **Outbox: at-least-once, duplicates recognisable.** A mail is claimed
//! (`sending`, attempt recorded) and committed before the relay sees it,
//! and marked `sent` after the relay's 250. A mail marked `sent` is never
//! sent again. If the process dies between the relay's 250 and that mark,
//! the claim's lease runs out and the mail is sent once more, with the same
//! Message-ID (`ccu.{outbox id}@{domain}`), so the citizen's client shows
//! one message; the interrupted attempt is recorded as such. The opposite
//! choice (at-most-once: never retry an interrupted attempt) would lose an
//! operator's answer to a crash, which a public office must not do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use ccu_email::address::EmailAddress;
use ccu_email::imap::{ImapClient, ImapConfig, ImapSecurity};
use ccu_email::inbound::{InboundMail, ParseLimits, parse_inbound};
use ccu_email::noise::{NoiseReason, classify};
use ccu_email::outbound::{
    self, Outcome, OutgoingMail, RelayConfig, RelaySecurity, build_mail, references_for,
    relay_transport, retry_delay, subject_with_reference,
};
use ccu_email::smtp::{
    AcceptedId, Admission, Envelope, MailSink, MailboxRoute, RecipientRouter, SinkError, SmtpConfig,
};
use ccu_email::threading::{ReferenceToken, Thread, ThreadLookup, thread};
use lettre::{AsyncSmtpTransport, Tokio1Executor};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::bus::BusEvent;
use crate::config::{Channel, EmailSettings, ImapSettings, ImapTls};
use crate::hub::{Hub, HubError};
use crate::ratelimit::{RateLimiter, Verdict};
use crate::store::mail::{
    AcknowledgementDraft, AttemptResult, InboundJob, InboundRaw, InboundRecord, InboundTarget,
    InboundWritten, MailKind, NewOutboxMail, OutboxMail,
};
use crate::store::{Message, NewConversation, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("hub: {0}")]
    Hub(#[from] HubError),
    #[error("a transaction without recipients reached the sink")]
    NoRecipient,
    #[error("invalid recipient address {0:?}")]
    Recipient(String),
    #[error("inbound writer: {0}")]
    Writer(String),
    #[error("conversation {0} has no e-mail address to answer")]
    NoAddress(i64),
    #[error("IMAP: {0}")]
    Imap(#[from] ccu_email::imap::ImapError),
}

/// What one step of the outbox worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxStep {
    /// Nothing due.
    Idle,
    /// The relay took the mail.
    Sent { outbox_id: i64 },
    /// A transient failure: tried again at `next_attempt_at` (Unix ms).
    Retry {
        outbox_id: i64,
        next_attempt_at: i64,
    },
    /// A permanent failure, or transient ones for longer than
    /// `email.outbox.give_up_after_hours`: an operator must look at it.
    Failed { outbox_id: i64, reason: String },
}

/// A mail other parts of ccu send (operator replies, transcripts, web-form
/// acknowledgements, surveys): see [`EmailChannel::enqueue_mail`].
#[derive(Debug, Clone)]
pub struct MailToSend {
    pub conversation_id: Option<i64>,
    pub to: EmailAddress,
    pub to_name: Option<String>,
    pub subject: String,
    /// Put as `[URP-2026-000123]` in the subject (once), so a reply threads
    /// even from a client that drops the headers.
    pub reference: Option<String>,
    pub body: String,
    /// The citizen's Message-ID this answers, without angle brackets, and
    /// the chain before it: In-Reply-To and References (RFC 5322 §3.6.4).
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
    pub kind: MailKind,
    /// `Auto-Submitted: auto-replied` (RFC 3834 §5).
    pub automatic: bool,
    /// Enqueue at most once per key.
    pub dedupe_key: Option<String>,
}

/// The e-mail channel: [`MailSink`] for the SMTP door, the outbox and its
/// worker step. Cheap to share (`Arc`).
pub struct EmailChannel {
    store: Store,
    hub: Hub,
    settings: EmailSettings,
    /// Mailbox (lower case) → route.
    mailboxes: HashMap<String, MailboxRoute>,
    /// Queue → (organization, conversation language: the queue's first).
    queues: HashMap<String, (String, String)>,
    zone: chrono_tz::Tz,
    /// The group-commit writer of the inbound path (see [`run_writer`]).
    writer: mpsc::Sender<(InboundJob, WriterReply)>,
    limits: ParseLimits,
    per_sender: RateLimiter,
    from: EmailAddress,
    /// Our `X-Loop:` value (RFC 3834 §2 leaves the mechanism open).
    loop_token: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    lease: Duration,
    give_up_after: Duration,
    pause_after_transient: Duration,
    /// Wakes the worker when a mail is enqueued.
    wake: Arc<Notify>,
    /// `[email.imap]` as the client needs it.
    imap: Option<ImapConfig>,
}

type WriterReply = oneshot::Sender<Result<InboundWritten, EmailError>>;

/// Mails written in one transaction at most. Sessions that arrive while a
/// commit is in flight wait for the next one, so under load each commit
/// (each fsync) carries several mails, and an idle server commits one mail
/// at once: no added delay.
const MAX_BATCH: usize = 64;

impl EmailChannel {
    pub fn new(state: &AppState) -> anyhow::Result<Self> {
        let settings = state.settings.email.clone();
        let mut mailboxes = HashMap::new();
        for (address, queue) in &settings.mailboxes {
            let mailbox = EmailAddress::parse(address)
                .with_context(|| format!("email.mailboxes.{address:?}"))?;
            mailboxes.insert(
                address.to_lowercase(),
                MailboxRoute::to_queue(mailbox, queue.as_str()),
            );
        }
        let queues = state
            .settings
            .queues
            .iter()
            .map(|(id, q)| {
                let language = q.languages.first().cloned().unwrap_or_else(|| "it".into());
                (id.clone(), (q.organization.clone(), language))
            })
            .collect();
        let wake = Arc::new(Notify::new());
        let (writer, jobs) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run_writer(
            state.store.clone(),
            state.hub.clone(),
            wake.clone(),
            settings.domain.clone(),
            jobs,
        ));
        let from = EmailAddress::parse(&settings.from).context("email.from")?;
        let relay = &settings.relay;
        let timeout = Duration::from_secs(relay.timeout_seconds);
        let transport =
            relay_transport(&RelayConfig {
                host: relay.host.clone(),
                port: relay.port,
                security: if relay.starttls {
                    RelaySecurity::StartTls
                } else {
                    RelaySecurity::None
                },
                credentials: relay
                    .username
                    .clone()
                    .map(|user| (user, relay.password.clone().unwrap_or_default())),
                ca_pem: match &relay.ca_file {
                    Some(path) => Some(std::fs::read(path).with_context(|| {
                        format!("email.relay.ca_file: reading {}", path.display())
                    })?),
                    None => None,
                },
                timeout,
            })
            .context("email.relay")?;
        Ok(Self {
            store: state.store.clone(),
            hub: state.hub.clone(),
            limits: ParseLimits {
                max_attachments: settings.max_attachments,
                max_attachment_size: settings.max_attachment_bytes,
                max_total_attachment_size: settings.max_message_bytes,
                ..ParseLimits::default()
            },
            per_sender: RateLimiter::new(settings.per_sender_per_hour, Duration::from_secs(3600)),
            loop_token: from.as_str().to_ascii_lowercase(),
            from,
            transport,
            // A send is about ten SMTP commands, each bounded by the timeout.
            lease: timeout * 10 + Duration::from_secs(60),
            give_up_after: Duration::from_secs(settings.outbox.give_up_after_hours * 3600),
            pause_after_transient: Duration::from_secs(
                settings.outbox.pause_after_transient_seconds,
            ),
            wake,
            writer,
            imap: settings.imap.as_ref().map(imap_config).transpose()?,
            zone: state.settings.zone(),
            mailboxes,
            queues,
            settings,
        })
    }

    /// The listener's settings from `email.*`.
    pub fn smtp_config(&self) -> anyhow::Result<SmtpConfig> {
        let mut config = SmtpConfig::new(self.settings.hostname.clone());
        config.max_message_size = self.settings.max_message_bytes;
        if let (Some(cert), Some(key)) = (&self.settings.tls_cert, &self.settings.tls_key) {
            let cert = std::fs::read(cert)
                .with_context(|| format!("email.tls_cert: reading {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("email.tls_key: reading {}", key.display()))?;
            config.tls = Some(
                ccu_email::smtp::tls_acceptor_from_pem(&cert, &key).context("email.tls_cert")?,
            );
        }
        Ok(config)
    }

    // ---- inbound ----

    async fn store_and_process(
        &self,
        envelope: &Envelope,
        raw: Vec<u8>,
    ) -> Result<(i64, bool), EmailError> {
        let route = envelope
            .recipients
            .first()
            .map(|r| r.route.clone())
            .ok_or(EmailError::NoRecipient)?;
        let sender = envelope.mail_from.as_ref().map(|a| a.as_str().to_owned());
        let (mail, raw) = self.parse(raw).await?;
        let noise = classify(&mail, sender.is_none(), Some(&self.loop_token));
        let recipients = serde_json::to_string(
            &envelope
                .recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into());
        let record = InboundRecord {
            envelope_id: envelope.id.clone(),
            mail_from: sender.clone().unwrap_or_default(),
            recipients,
            mailbox: route.mailbox.as_str().to_owned(),
            queue_id: route.queue.to_string(),
            helo: envelope.helo.clone(),
            peer: envelope.peer.to_string(),
            tls: envelope.tls,
            message_id: mail.message_id.clone(),
            from_address: mail.from.as_ref().map(|f| f.address.as_str().to_owned()),
            from_name: mail.from.as_ref().and_then(|f| f.name.clone()),
            subject: mail.subject.clone(),
            noise: noise.map(noise_name).map(str::to_owned),
            malformed: mail.malformed,
            raw,
            received_at: envelope.received_at.saturating_mul(1000),
        };
        let written = self
            .intake(
                InboundRaw::New(Box::new(record)),
                &route.queue,
                sender.is_none(),
                mail,
                noise,
            )
            .await?;
        // Durable from here: whatever happens next, the 250 is deserved.
        if written.duplicate {
            tracing::info!(mail = written.id, envelope = %envelope.id, "a retried delivery of a stored mail");
        }
        Ok((written.id, written.duplicate))
    }

    /// Parsing is pure and total; a large message is parsed off the async
    /// threads.
    async fn parse(&self, raw: Vec<u8>) -> Result<(InboundMail, Vec<u8>), EmailError> {
        if raw.len() > 256 * 1024 {
            let limits = self.limits;
            tokio::task::spawn_blocking(move || (parse_inbound(&raw, &limits), raw))
                .await
                .map_err(|e| EmailError::Writer(format!("parsing task: {e}")))
        } else {
            Ok((parse_inbound(&raw, &self.limits), raw))
        }
    }

    /// The one durable inbound path, for SMTP, IMAP and recovery: decides
    /// where the mail goes (threading only reads), then hands everything to
    /// the group-commit writer, which stores raw mail, conversation,
    /// message, attachments and acknowledgement in one transaction and
    /// tells the router and the bus after the commit. When this returns
    /// `Ok`, at least the raw mail is durable.
    async fn intake(
        &self,
        raw: InboundRaw,
        queue_id: &str,
        null_sender: bool,
        mail: InboundMail,
        noise: Option<NoiseReason>,
    ) -> Result<InboundWritten, EmailError> {
        let now = crate::now_ms();
        let target = match self.thread(&mail).await? {
            Thread::ByHeader { conversation, .. } | Thread::BySubject { conversation, .. } => {
                // The citizen writing again into a closed conversation
                // opens it again; noise (an out-of-office) never does.
                InboundTarget::Thread {
                    conversation_id: conversation,
                    reopen: noise.is_none() && !null_sender,
                }
            }
            // Bounces, auto-replies and list mail that answer nothing of
            // ours are kept (mail_inbound) but do not become work for an
            // operator.
            Thread::New if noise.is_some() => InboundTarget::Keep,
            Thread::New => {
                let (organization_id, language) =
                    self.queues.get(queue_id).cloned().ok_or_else(|| {
                        EmailError::Hub(HubError::UnknownQueue(queue_id.to_owned()))
                    })?;
                let year = chrono::DateTime::from_timestamp_millis(now)
                    .map(|t| chrono::Datelike::year(&t.with_timezone(&self.zone)))
                    .unwrap_or(1970);
                InboundTarget::Open {
                    conversation: NewConversation {
                        reference_prefix: "URP".into(),
                        organization_id,
                        queue_id: queue_id.to_owned(),
                        channel: Channel::Email,
                        contact_id: None,
                        language,
                        subject: Some(mail.subject.clone()).filter(|s| !s.trim().is_empty()),
                    },
                    year,
                    contact: mail
                        .from
                        .as_ref()
                        .or(mail.reply_to.as_ref())
                        .map(|f| (f.address.as_str().to_owned(), f.name.clone())),
                }
            }
        };
        // A new conversation from a person gets its reference at once.
        // Never for noise, never without an address (RFC 3834 §2, §3.1).
        let acknowledgement = if noise.is_none() && !null_sender {
            self.acknowledgement_draft(&mail)
        } else {
            None
        };
        let job = InboundJob {
            raw,
            target,
            text: mail.text,
            attachments: mail.attachments,
            acknowledgement,
            now,
        };
        let (reply, written) = oneshot::channel();
        self.writer
            .send((job, reply))
            .await
            .map_err(|_| EmailError::Writer("the inbound writer stopped".into()))?;
        let written = written
            .await
            .map_err(|_| EmailError::Writer("the inbound writer stopped".into()))??;
        if !written.processed {
            tracing::warn!(
                mail = written.id,
                "stored mail not processed yet; retried at the next start"
            );
        }
        Ok(written)
    }

    /// The acknowledgement of a conversation `mail` opens, the reference
    /// left for the transaction to fill in.
    fn acknowledgement_draft(&self, mail: &InboundMail) -> Option<AcknowledgementDraft> {
        // RFC 3834 §4: answer the Reply-To when there is one, else From.
        let to = mail.reply_to.as_ref().or(mail.from.as_ref())?;
        let subject = if mail.subject.trim().is_empty() {
            "Richiesta ricevuta".to_owned()
        } else if mail.subject.to_lowercase().starts_with("re:") {
            mail.subject.clone()
        } else {
            format!("Re: {}", mail.subject)
        };
        Some(AcknowledgementDraft {
            to_address: to.address.as_str().to_owned(),
            to_name: to.name.clone(),
            subject,
            body: self.settings.acknowledgement.clone(),
            in_reply_to: mail.message_id.clone(),
            references: {
                // references_for ends with the parent's id, which goes in
                // In-Reply-To too; the outbox keeps the chain before it.
                let mut chain = references_for(mail);
                if mail.message_id.is_some() {
                    chain.pop();
                }
                chain
            },
        })
    }

    /// An operator's reply in a conversation that came by e-mail or by the
    /// web form (issue 6 point 7, issue 4 point 6): stored as a message of
    /// the conversation and queued in the outbox in one transaction, then
    /// announced on the bus and handed to the worker. `Ok(None)`: the
    /// conversation is of another channel (the caller stores a plain
    /// message).
    ///
    /// The mail goes to the contact's address with `Re: <subject>
    /// [REFERENCE]`, In-Reply-To the citizen's latest Message-ID (for a web
    /// form, our acknowledgement's) and References the conversation's mail
    /// both ways (RFC 5322 §3.6.4), no `Auto-Submitted` (a person wrote
    /// it, RFC 3834 §5), the operator's text and the citizen's last message
    /// quoted. Its Message-ID is in `mail_message_ids`, so the citizen's
    /// answer threads back here.
    pub async fn operator_reply(
        &self,
        conversation_id: i64,
        operator_id: i64,
        text: &str,
        client_id: &str,
    ) -> Result<Option<Message>, EmailError> {
        let Some(context) = self.store.mail_reply_context(conversation_id).await? else {
            return Ok(None);
        };
        if context.channel != "email" && context.channel != "webform" {
            return Ok(None);
        }
        let to = context
            .to_address
            .as_deref()
            .and_then(|a| EmailAddress::parse(a).ok())
            .ok_or(EmailError::NoAddress(conversation_id))?;
        // The parent: the citizen's latest mail, else our latest mail (a
        // web form's acknowledgement), so the citizen's client threads it.
        let parent = context
            .last_inbound_id
            .clone()
            .or_else(|| context.thread_ids.last().cloned());
        let mut references: Vec<String> = context
            .thread_ids
            .iter()
            .filter(|id| Some(*id) != parent.as_ref())
            .cloned()
            .collect();
        // Like references_for: the first id and the last ones.
        if references.len() > 11 {
            let tail = references.split_off(references.len() - 10);
            references.truncate(1);
            references.extend(tail);
        }
        let now = crate::now_ms();
        let mail = NewOutboxMail {
            conversation_id: Some(conversation_id),
            to_address: to.as_str().to_owned(),
            to_name: context.to_name.clone(),
            subject: reply_subject(context.subject.as_deref(), &context.reference),
            body: reply_body(
                text,
                &context.reference,
                self.settings.from_name.as_deref(),
                context.to_name.as_deref(),
                context.last_citizen_message.as_ref(),
            ),
            in_reply_to: parent,
            references,
            kind: MailKind::Reply,
            automatic: false,
            dedupe_key: None,
        };
        let (message, outbox_id) = self
            .store
            .add_message_with_mail(
                conversation_id,
                now,
                Some(operator_id),
                text,
                client_id,
                &mail,
                &self.settings.domain,
            )
            .await?;
        tracing::debug!(
            conversation = conversation_id,
            outbox = outbox_id,
            "operator reply queued by e-mail"
        );
        self.hub.message_stored(conversation_id, message.id).await;
        self.wake.notify_one();
        Ok(Some(message))
    }

    /// Queues the acknowledgement of a web-form request, with its reference
    /// (once per conversation).
    pub async fn acknowledge_request(
        &self,
        conversation_id: i64,
        reference: &str,
        to: &str,
        name: Option<&str>,
        subject: &str,
    ) -> Result<(), EmailError> {
        let Ok(to) = EmailAddress::parse(to) else {
            return Ok(());
        };
        self.enqueue_mail(&MailToSend {
            conversation_id: Some(conversation_id),
            to,
            to_name: name.map(str::to_owned),
            subject: format!("Richiesta ricevuta: {subject}"),
            body: self
                .settings
                .acknowledgement
                .replace("{reference}", reference),
            reference: Some(reference.to_owned()),
            in_reply_to: None,
            references: Vec::new(),
            kind: MailKind::Acknowledgement,
            automatic: true,
            dedupe_key: Some(format!("request-ack:{conversation_id}")),
        })
        .await?;
        Ok(())
    }

    /// Queues the transcript of a chat for the citizen (once per conversation).
    pub async fn send_transcript(
        &self,
        conversation_id: i64,
        to: &str,
    ) -> Result<bool, EmailError> {
        let Ok(to) = EmailAddress::parse(to) else {
            return Ok(false);
        };
        let Some(detail) = self
            .store
            .get_conversation(&crate::store::Scope::All, conversation_id)
            .await?
        else {
            return Ok(false);
        };
        let reference = detail.conversation.reference.clone();
        let mut body = format!("Trascrizione della conversazione {reference}\n\n");
        for message in detail.messages.iter().filter(|m| m.direction != "internal") {
            let who = if message.direction == "inbound" {
                "Lei"
            } else {
                "Operatore"
            };
            let at = chrono::DateTime::from_timestamp_millis(message.at)
                .map(|t| {
                    t.with_timezone(&chrono_tz::Europe::Rome)
                        .format("%d/%m/%Y %H:%M")
                        .to_string()
                })
                .unwrap_or_default();
            body.push_str(&format!("[{at}] {who}: {}\n", message.body));
        }
        self.enqueue_mail(&MailToSend {
            conversation_id: Some(conversation_id),
            to,
            to_name: None,
            subject: "Trascrizione della chat".to_owned(),
            body,
            reference: Some(reference),
            in_reply_to: None,
            references: Vec::new(),
            kind: MailKind::Transcript,
            automatic: true,
            dedupe_key: Some(format!("transcript:{conversation_id}")),
        })
        .await?;
        Ok(true)
    }

    /// Queues the satisfaction survey (`[email.survey]`) of a closed e-mail
    /// or web-form conversation, once per conversation (dedupe key), as
    /// automatic mail (`Auto-Submitted`, RFC 3834 §5) threaded under the
    /// citizen's last mail. `Ok(None)`: no survey configured, not closed,
    /// another channel, or no address to write to.
    pub async fn send_survey(&self, conversation_id: i64) -> Result<Option<i64>, EmailError> {
        let Some(survey) = &self.settings.survey else {
            return Ok(None);
        };
        let closed = self
            .store
            .get_conversation(&crate::store::Scope::All, conversation_id)
            .await?
            .is_some_and(|d| d.conversation.state == crate::store::ConversationState::Closed);
        if !closed {
            return Ok(None);
        }
        let Some(context) = self.store.mail_reply_context(conversation_id).await? else {
            return Ok(None);
        };
        let to = context
            .to_address
            .as_deref()
            .and_then(|a| EmailAddress::parse(a).ok());
        let (true, Some(to)) = (
            context.channel == "email" || context.channel == "webform",
            to,
        ) else {
            return Ok(None);
        };
        let mail = self
            .enqueue_mail(&MailToSend {
                conversation_id: Some(conversation_id),
                to,
                to_name: context.to_name.clone(),
                subject: survey.subject.clone(),
                reference: Some(context.reference.clone()),
                body: survey.body.replace("{reference}", &context.reference),
                in_reply_to: context.last_inbound_id.clone(),
                references: Vec::new(),
                kind: MailKind::Survey,
                automatic: true,
                dedupe_key: Some(format!("survey:{conversation_id}")),
            })
            .await?;
        Ok(Some(mail.id))
    }

    /// Sends the survey when a conversation closes, until shutdown. Closing
    /// is seen on the bus (the router's "closed" after wrap-up, the console's
    /// end when there is none); the store says whether it is closed. Every
    /// node of a cluster hears the event; the dedupe key queues one mail.
    /// A conversation whose event this node missed (bus lag, or wrap-up
    /// closed by a restart) gets no survey: it is a courtesy, not a record.
    pub async fn run_surveys(
        self: Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<Arc<BusEvent>>,
        shutdown: CancellationToken,
    ) {
        if self.settings.survey.is_none() {
            return;
        }
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => event,
            };
            let conversation_id = match event.as_deref() {
                Ok(BusEvent::ConversationChanged {
                    conversation_id,
                    state,
                    ..
                }) if state == "closed" => *conversation_id,
                Ok(BusEvent::ConversationEnded {
                    conversation_id, ..
                }) => *conversation_id,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "survey: bus events missed; their surveys are not sent"
                    );
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if let Err(err) = self.send_survey(conversation_id).await {
                tracing::warn!(conversation = conversation_id, %err, "queueing the satisfaction survey failed");
            }
        }
    }

    /// The threading decision, with what the store knows fetched first
    /// (the crate's [`ThreadLookup`] is synchronous and pure).
    async fn thread(&self, mail: &InboundMail) -> Result<Thread, StoreError> {
        let ids: Vec<String> = mail
            .in_reply_to
            .iter()
            .chain(mail.references.iter().rev())
            .take(100)
            .cloned()
            .collect();
        let tokens: Vec<String> = ReferenceToken::find_in_subject(&mail.subject)
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect();
        let lookup = Known {
            message_ids: self
                .store
                .conversations_by_message_ids(&ids)
                .await?
                .into_iter()
                .collect(),
            references: self
                .store
                .conversations_by_references(&tokens)
                .await?
                .into_iter()
                .collect(),
        };
        Ok(thread(mail, &lookup))
    }

    /// Finishes mail stored but not processed (a crash or a store error
    /// after the 250). Returns how many were processed.
    pub async fn process_unprocessed(&self) -> Result<usize, EmailError> {
        let mut done = 0;
        loop {
            let rows = self.store.unprocessed_inbound_mail(100).await?;
            if rows.is_empty() {
                return Ok(done);
            }
            let count = rows.len();
            let mut progressed = false;
            for row in rows {
                let null_sender = row.mail_from.is_empty();
                let (mail, _) = self.parse(row.raw).await?;
                let noise = classify(&mail, null_sender, Some(&self.loop_token));
                let raw = InboundRaw::Stored {
                    id: row.id,
                    conversation_id: row.conversation_id,
                };
                match self
                    .intake(raw, &row.queue_id, null_sender, mail, noise)
                    .await
                {
                    Ok(written) if written.processed => {
                        done += 1;
                        progressed = true;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(mail = row.id, %err, "processing a stored mail failed")
                    }
                }
            }
            if !progressed || count < 100 {
                return Ok(done);
            }
        }
    }

    // ---- IMAP polling (optional) ----

    /// One poll of `[email.imap]` (STYLE rule 13; the loop is
    /// [`EmailChannel::run_imap`]): logs in, takes every unseen message,
    /// stores each through the same durable path as SMTP mail, and only
    /// after its commit flags it `\Seen` or moves it. A crash in between
    /// fetches it again next time; the Message-ID dedupe stores it once.
    pub async fn poll_imap(&self) -> Result<ImapPoll, EmailError> {
        let (Some(imap), Some(config)) = (&self.settings.imap, &self.imap) else {
            return Ok(ImapPoll::default());
        };
        let mut client = ImapClient::connect(config).await?;
        let validity = client.select(&imap.mailbox).await?.unwrap_or(0);
        let mut poll = ImapPoll::default();
        for uid in client.unseen().await? {
            let Some(raw) = client.fetch(uid).await? else {
                continue;
            };
            poll.fetched += 1;
            let written = self.store_fetched(raw, validity, uid, imap).await?;
            if written.duplicate {
                poll.duplicates += 1;
            } else {
                poll.stored += 1;
            }
            match &imap.move_to {
                Some(folder) => client.move_to(uid, folder).await?,
                None => client.mark_seen(uid).await?,
            }
        }
        client.logout().await;
        Ok(poll)
    }

    async fn store_fetched(
        &self,
        raw: Vec<u8>,
        validity: u32,
        uid: u32,
        imap: &ImapSettings,
    ) -> Result<InboundWritten, EmailError> {
        let route = self
            .mailboxes
            .get(&imap.address.to_lowercase())
            .cloned()
            .ok_or_else(|| EmailError::Recipient(imap.address.clone()))?;
        let null_sender = null_return_path(&raw);
        let (mail, raw) = self.parse(raw).await?;
        let noise = classify(&mail, null_sender, Some(&self.loop_token));
        // No envelope over IMAP: the sender is the From: address (the
        // dedupe key with the Message-ID), `""` for a bounce.
        let sender = match (&mail.from, null_sender) {
            (Some(from), false) => from.address.as_str().to_owned(),
            _ => String::new(),
        };
        let record = InboundRecord {
            envelope_id: format!("imap:{validity}:{uid}"),
            mail_from: sender,
            recipients: serde_json::to_string(&[route.mailbox.as_str()])
                .unwrap_or_else(|_| "[]".into()),
            mailbox: route.mailbox.as_str().to_owned(),
            queue_id: route.queue.to_string(),
            helo: imap.host.clone(),
            peer: format!("imap://{}:{}/{}", imap.host, imap.port, imap.mailbox),
            tls: imap.tls != ImapTls::None,
            message_id: mail.message_id.clone(),
            from_address: mail.from.as_ref().map(|f| f.address.as_str().to_owned()),
            from_name: mail.from.as_ref().and_then(|f| f.name.clone()),
            subject: mail.subject.clone(),
            noise: noise.map(noise_name).map(str::to_owned),
            malformed: mail.malformed,
            raw,
            received_at: crate::now_ms(),
        };
        self.intake(
            InboundRaw::New(Box::new(record)),
            &route.queue,
            null_sender,
            mail,
            noise,
        )
        .await
    }

    /// Polls `[email.imap]` every `poll_interval_seconds` until shutdown.
    /// A poll cut by shutdown is safe: what was committed is flagged at the
    /// next poll, found by its Message-ID.
    pub async fn run_imap(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(imap) = self.settings.imap.clone() else {
            return;
        };
        let every = Duration::from_secs(imap.poll_interval_seconds);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                polled = self.poll_imap() => match polled {
                    Ok(poll) if poll.fetched > 0 => tracing::info!(
                        fetched = poll.fetched, stored = poll.stored, duplicates = poll.duplicates,
                        mailbox = %imap.mailbox, "IMAP poll"
                    ),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, host = %imap.host, "IMAP poll failed; trying again at the next interval"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    // ---- outbound ----

    /// Stores a mail in the outbox (durable when this returns) and wakes
    /// the worker. Its Message-ID is fixed now; when it belongs to a
    /// conversation, a reply to it threads there.
    pub async fn enqueue_mail(&self, mail: &MailToSend) -> Result<OutboxMail, StoreError> {
        let reference = mail.reference.as_deref().and_then(ReferenceToken::parse);
        let stored = self
            .store
            .enqueue_mail(
                &NewOutboxMail {
                    conversation_id: mail.conversation_id,
                    to_address: mail.to.as_str().to_owned(),
                    to_name: mail.to_name.clone(),
                    subject: subject_with_reference(&mail.subject, reference.as_ref()),
                    body: mail.body.clone(),
                    in_reply_to: mail.in_reply_to.clone(),
                    references: mail.references.clone(),
                    kind: mail.kind,
                    automatic: mail.automatic,
                    dedupe_key: mail.dedupe_key.clone(),
                },
                &self.settings.domain,
                crate::now_ms(),
            )
            .await?;
        self.wake.notify_one();
        Ok(stored)
    }

    /// One step of the outbox worker (STYLE rule 13): claims the next mail
    /// due at `now` (Unix ms), tries the relay once, records the attempt.
    /// Tests drive it with a `now` of their choosing.
    pub async fn try_send_next(&self, now: i64) -> Result<OutboxStep, StoreError> {
        let lease_until = now.saturating_add(duration_ms(self.lease));
        let Some(mail) = self.store.claim_outbox_mail(now, lease_until).await? else {
            return Ok(OutboxStep::Idle);
        };
        let attempt = mail.attempts;
        let outcome = match self.build(&mail) {
            Ok(message) => outbound::try_send(&self.transport, message).await,
            Err(reason) => Outcome::Permanent { reason },
        };
        let finished = crate::now_ms().max(now);
        let (result, step) = match outcome {
            Outcome::Sent { response } => (
                AttemptResult::Sent { detail: response },
                OutboxStep::Sent { outbox_id: mail.id },
            ),
            Outcome::Permanent { reason } => (
                AttemptResult::Failed {
                    detail: reason.clone(),
                    permanent: true,
                },
                OutboxStep::Failed {
                    outbox_id: mail.id,
                    reason,
                },
            ),
            Outcome::Transient { reason } => {
                let attempt_no = u32::try_from(attempt).unwrap_or(u32::MAX);
                let deadline = mail
                    .created_at
                    .saturating_add(duration_ms(self.give_up_after));
                let next = retry_delay(attempt_no, u32::MAX)
                    .map(|d| now.saturating_add(duration_ms(d)))
                    .filter(|at| *at <= deadline);
                match next {
                    Some(next_attempt_at) => (
                        AttemptResult::Retry {
                            detail: reason,
                            next_attempt_at,
                        },
                        OutboxStep::Retry {
                            outbox_id: mail.id,
                            next_attempt_at,
                        },
                    ),
                    None => {
                        let reason = format!("gave up after {attempt} attempts: {reason}");
                        (
                            AttemptResult::Failed {
                                detail: reason.clone(),
                                permanent: false,
                            },
                            OutboxStep::Failed {
                                outbox_id: mail.id,
                                reason,
                            },
                        )
                    }
                }
            }
        };
        self.store
            .finish_outbox_attempt(mail.id, attempt, &result, finished)
            .await?;
        match &step {
            OutboxStep::Failed { reason, .. } => {
                tracing::warn!(outbox = mail.id, attempt, %reason, "outgoing mail failed")
            }
            OutboxStep::Retry {
                next_attempt_at, ..
            } => {
                tracing::info!(
                    outbox = mail.id,
                    attempt,
                    next_attempt_at,
                    "relay unavailable; will retry"
                )
            }
            _ => tracing::debug!(outbox = mail.id, attempt, "outgoing mail sent"),
        }
        Ok(step)
    }

    fn build(&self, mail: &OutboxMail) -> Result<lettre::Message, String> {
        let to = EmailAddress::parse(&mail.to_address).map_err(|e| e.to_string())?;
        // The builder derives In-Reply-To and References from the parent
        // mail: rebuild that parent from what the outbox kept.
        let parent = mail.in_reply_to.as_ref().map(|id| InboundMail {
            message_id: Some(id.clone()),
            references: mail
                .reference_ids
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            ..InboundMail::default()
        });
        // The Message-ID's domain is the one fixed at enqueue time.
        let domain = mail
            .message_id
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or(&self.settings.domain);
        build_mail(
            &OutgoingMail {
                outbox_id: mail.id,
                from: &self.from,
                from_name: self.settings.from_name.as_deref(),
                to: &to,
                to_name: mail.to_name.as_deref(),
                subject: &mail.subject,
                reference: None,
                body: &mail.body,
                automatic: mail.auto,
                replying_to: parent.as_ref(),
                loop_token: Some(&self.loop_token),
            },
            domain,
            SystemTime::now(),
        )
        .map_err(|e| e.to_string())
    }

    /// The worker loop: processes mail left over from a crash, then sends
    /// what is due, sleeping until the next due time or an enqueue. On
    /// shutdown it finishes the attempt in progress, then returns.
    pub async fn run_outbox(self: Arc<Self>, shutdown: CancellationToken) {
        match self.process_unprocessed().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(mails = n, "processed mail stored before a restart"),
            Err(err) => tracing::warn!(%err, "processing stored mail failed"),
        }
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let wait = match self.try_send_next(crate::now_ms()).await {
                Ok(OutboxStep::Idle) => match self.store.next_outbox_due().await {
                    // Capped so mail enqueued by another node is seen.
                    Ok(Some(at)) => Duration::from_millis(
                        u64::try_from(at.saturating_sub(crate::now_ms())).unwrap_or(0),
                    )
                    .min(Duration::from_secs(30)),
                    Ok(None) => Duration::from_secs(30),
                    Err(err) => {
                        tracing::warn!(%err, "outbox: reading the next due time failed");
                        Duration::from_secs(5)
                    }
                },
                // The relay is down or said "not now": the next mail would
                // most likely fail the same way. Mail enqueued meanwhile
                // waits for the pause (it is stored).
                Ok(OutboxStep::Retry { .. }) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.pause_after_transient) => {}
                    }
                    continue;
                }
                Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(%err, "outbox step failed");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl RecipientRouter for EmailChannel {
    fn route_recipient(&self, address: &EmailAddress) -> Option<MailboxRoute> {
        self.mailboxes
            .get(&address.as_str().to_lowercase())
            .cloned()
    }

    /// `email.per_sender_per_hour`, counted per transaction at MAIL FROM:
    /// by the envelope sender, or by the client's address for the null
    /// sender (bounces carry no address to count by).
    fn admit_sender(&self, sender: Option<&EmailAddress>, peer: SocketAddr) -> Admission {
        let key = sender
            .map(|s| s.as_str().to_lowercase())
            .unwrap_or_else(|| format!("<>@{}", peer.ip()));
        match self.per_sender.check(&key, Instant::now()) {
            Verdict::Allowed => Admission::Accept,
            Verdict::Limited { retry_after } => {
                tracing::info!(sender = %key, ?retry_after, "sender over its hourly limit; answered 451 4.7.1");
                Admission::Defer(format!(
                    "Too many messages from this sender, try again in {} minutes",
                    retry_after.as_secs().div_ceil(60).max(1)
                ))
            }
        }
    }
}

impl MailSink for EmailChannel {
    async fn accept(&self, envelope: Envelope, raw: Vec<u8>) -> Result<AcceptedId, SinkError> {
        match self.store_and_process(&envelope, raw).await {
            Ok((id, _)) => Ok(AcceptedId(format!("{} (mail {id})", envelope.id))),
            // A temporary refusal: the sender's server keeps the message.
            Err(err) => Err(SinkError::Storage(Box::new(err))),
        }
    }
}

/// The e-mail tasks of a running server.
pub struct Running {
    smtp: JoinHandle<()>,
    outbox: JoinHandle<()>,
    imap: JoinHandle<()>,
    surveys: JoinHandle<()>,
}

impl Running {
    /// Waits for the SMTP sessions to end and the outbox worker to finish
    /// its attempt in progress (both were told by the shutdown token).
    pub async fn stopped(self) {
        let _ = self.smtp.await;
        let _ = self.outbox.await;
        let _ = self.imap.await;
        let _ = self.surveys.await;
    }
}

/// Starts the SMTP door on `listener`, the outbox worker and, when
/// `[email.imap]` is set, the IMAP poller.
pub fn start(
    state: &AppState,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    let channel = Arc::new(EmailChannel::new(state)?);
    let _ = state.outbox.set(channel.clone());
    let config = channel.smtp_config()?;
    let smtp = tokio::spawn(ccu_email::smtp::serve(
        listener,
        config,
        channel.clone(),
        shutdown.child_token(),
    ));
    let imap = tokio::spawn(channel.clone().run_imap(shutdown.child_token()));
    let surveys = tokio::spawn(
        channel
            .clone()
            .run_surveys(state.bus.subscribe(), shutdown.child_token()),
    );
    let outbox = tokio::spawn(channel.run_outbox(shutdown.child_token()));
    Ok(Running {
        smtp,
        outbox,
        imap,
        surveys,
    })
}

/// Binds the SMTP listener (`smtp_addr`).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding smtp_addr {addr}"))?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// The group-commit writer: takes every inbound job waiting (up to
/// [`MAX_BATCH`]), writes them in one transaction, answers each session,
/// then tells the router and the bus (store first, then route). Ends when
/// every [`EmailChannel`] holding its sender is gone.
async fn run_writer(
    store: Store,
    hub: Hub,
    wake: Arc<Notify>,
    domain: String,
    mut jobs: mpsc::Receiver<(InboundJob, WriterReply)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (work, replies): (Vec<InboundJob>, Vec<WriterReply>) = batch.drain(..).unzip();
        let results = match store.write_inbound_batch(&work, &domain).await {
            Ok(results) => results,
            Err(err) => {
                tracing::warn!(%err, mails = work.len(), "inbound commit failed; answered 451");
                for reply in replies {
                    let _ = reply.send(Err(EmailError::Writer(format!("commit failed: {err}"))));
                }
                continue;
            }
        };
        let mut written = Vec::with_capacity(results.len());
        for (result, reply) in results.into_iter().zip(replies) {
            let result = result.map_err(EmailError::Store);
            if let Ok(w) = &result {
                if !w.duplicate {
                    metrics::counter!("ccu_email_inbound_stored_total").increment(1);
                }
                written.push(w.clone());
            }
            // The session may be gone (its client timed out): the mail is
            // stored all the same, and a retry finds it.
            let _ = reply.send(result);
        }
        let hub = hub.clone();
        let wake = wake.clone();
        // Routing is off the writer's path; the router rebuilds from the
        // store if this is lost to a crash.
        tokio::spawn(async move {
            for w in written {
                if let Some(conversation) = &w.queued {
                    match hub.conversation_stored(conversation, w.reopened).await {
                        // The router has taken the conversation in (the
                        // SMTP benchmark waits for this count).
                        Ok(()) => {
                            metrics::counter!("ccu_email_conversations_routed_total").increment(1)
                        }
                        Err(err) => {
                            tracing::warn!(conversation = conversation.id, %err, "routing a mail's conversation failed; the router's rebuild recovers it")
                        }
                    }
                }
                if let (Some(conversation), Some(message)) = (w.conversation_id, w.message_id) {
                    hub.message_stored(conversation, message).await;
                }
                if w.acknowledgement.is_some() {
                    wake.notify_one();
                }
            }
        });
    }
}

/// What one IMAP poll did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImapPoll {
    /// Unseen messages fetched.
    pub fetched: usize,
    /// Of those, stored now.
    pub stored: usize,
    /// Of those, already stored (a poll cut between commit and flag).
    pub duplicates: usize,
}

/// `Return-Path: <>` in the header: a bounce (RFC 5321 §4.4), the IMAP
/// equivalent of the null reverse-path.
fn null_return_path(raw: &[u8]) -> bool {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len());
    raw[..end].split(|&b| b == b'\n').any(|line| {
        let line = String::from_utf8_lossy(line);
        let lower = line.to_ascii_lowercase();
        lower
            .strip_prefix("return-path:")
            .is_some_and(|v| v.trim() == "<>")
    })
}

fn imap_config(imap: &ImapSettings) -> anyhow::Result<ImapConfig> {
    let ca_pem = match &imap.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("email.imap.ca_file: reading {}", path.display()))?,
        ),
        None => None,
    };
    Ok(ImapConfig {
        host: imap.host.clone(),
        port: imap.port,
        security: match imap.tls {
            ImapTls::None => ImapSecurity::None,
            ImapTls::Implicit => ImapSecurity::Implicit,
            ImapTls::Starttls => ImapSecurity::StartTls,
        },
        username: imap.username.clone(),
        password: imap.password.clone().unwrap_or_default(),
        ca_pem,
        timeout: Duration::from_secs(imap.timeout_seconds),
    })
}

struct Known {
    message_ids: HashMap<String, i64>,
    references: HashMap<String, i64>,
}

impl ThreadLookup for Known {
    fn conversation_by_message_id(&self, message_id: &str) -> Option<i64> {
        self.message_ids.get(message_id).copied()
    }
    fn conversation_by_reference(&self, token: &ReferenceToken) -> Option<i64> {
        self.references.get(&token.to_string()).copied()
    }
}

/// `Re: <subject> [URP-2026-000123]`: one `Re:`, the reference once.
fn reply_subject(subject: Option<&str>, reference: &str) -> String {
    let tag = format!("[{reference}]");
    let mut rest = subject.unwrap_or("").replace(&tag, "");
    loop {
        let trimmed = rest.trim_start();
        let lower = trimmed.to_lowercase();
        let cut = ["re:", "r:", "aw:", "fwd:", "i:"]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map(|p| p.len());
        match cut {
            Some(n) => rest = trimmed[n..].to_owned(),
            None => break,
        }
    }
    let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    if rest.is_empty() {
        format!("Re: {tag}")
    } else {
        format!("Re: {rest} {tag}")
    }
}

/// The operator's text, a signature with the reference, and the citizen's
/// last message quoted (at most 20 lines).
fn reply_body(
    text: &str,
    reference: &str,
    office: Option<&str>,
    citizen: Option<&str>,
    last: Option<&(String, i64)>,
) -> String {
    let mut body = text.trim_end().to_owned();
    body.push_str("\n\n-- \n");
    if let Some(office) = office {
        body.push_str(office);
        body.push('\n');
    }
    body.push_str(&format!(
        "Riferimento {reference}: per scriverci ancora risponda a questo messaggio.\n"
    ));
    if let Some((said, at)) = last {
        let when = chrono::DateTime::from_timestamp_millis(*at)
            .map(|t| {
                t.with_timezone(&chrono_tz::Europe::Rome)
                    .format("%d/%m/%Y %H:%M")
                    .to_string()
            })
            .unwrap_or_default();
        let who = citizen.unwrap_or("lei");
        body.push_str(&format!("\nIl {when}, {who} ha scritto:\n"));
        let lines: Vec<&str> = said.lines().collect();
        for line in lines.iter().take(20) {
            body.push_str("> ");
            body.push_str(line);
            body.push('\n');
        }
        if lines.len() > 20 {
            body.push_str("> [...]\n");
        }
    }
    body
}

fn noise_name(reason: NoiseReason) -> &'static str {
    match reason {
        NoiseReason::NullSender => "null_sender",
        NoiseReason::Bounce => "bounce",
        NoiseReason::Report => "report",
        NoiseReason::AutoSubmitted => "auto_submitted",
        NoiseReason::AutoReplyHeader => "auto_reply_header",
        NoiseReason::Precedence => "precedence",
        NoiseReason::MailingList => "mailing_list",
        NoiseReason::OwnLoop => "own_loop",
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
