//! The e-mail channel's tables (migration `0003_mail`): inbound mail kept
//! raw, attachments, the Message-IDs of the mail we sent, and the outbox
//! with one row per delivery attempt. The channel logic is in
//! `crate::email`; this file is only storage, on both backends.

use serde::Serialize;
use sqlx::FromRow;

use super::{Arg, Db, Result, Scope, Store, StoreError};
use super::{
    CONVERSATION_COLUMNS, Conversation, ConversationRow, ConversationState, NewConversation,
};

const INSERT_INBOUND: &str = "INSERT INTO mail_inbound (envelope_id, mail_from, recipients, mailbox, queue_id, helo, peer, tls, \
     message_id, from_address, from_name, subject, noise, malformed, size, raw, received_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
     ON CONFLICT (message_id, mail_from) DO NOTHING RETURNING id";
const EXISTING_INBOUND: &str = "SELECT id, conversation_id, processed_at FROM mail_inbound \
     WHERE message_id = $1 AND mail_from = $2";

/// Inserts an inbound mail's row on `$conn`, or finds the row a retried
/// delivery already has: a `StoredInbound`.
macro_rules! insert_inbound {
    ($conn:expr, $mail:expr) => {{
        let mail: &NewInboundMail<'_> = $mail;
        let size = i64::try_from(mail.raw.len()).unwrap_or(i64::MAX);
        let id: Option<i64> = sqlx::query_scalar(INSERT_INBOUND)
            .bind(mail.envelope_id)
            .bind(mail.mail_from)
            .bind(mail.recipients)
            .bind(mail.mailbox)
            .bind(mail.queue_id)
            .bind(mail.helo)
            .bind(mail.peer)
            .bind(mail.tls)
            .bind(mail.message_id)
            .bind(mail.from_address)
            .bind(mail.from_name)
            .bind(mail.subject)
            .bind(mail.noise)
            .bind(mail.malformed)
            .bind(size)
            .bind(mail.raw)
            .bind(mail.received_at)
            .fetch_optional(&mut *$conn)
            .await?;
        match id {
            Some(id) => StoredInbound {
                id,
                conversation_id: None,
                processed: false,
                duplicate: false,
            },
            None => {
                let (id, conversation_id, processed_at): (i64, Option<i64>, Option<i64>) =
                    sqlx::query_as(EXISTING_INBOUND)
                        .bind(mail.message_id)
                        .bind(mail.mail_from)
                        .fetch_one(&mut *$conn)
                        .await?;
                StoredInbound {
                    id,
                    conversation_id,
                    processed: processed_at.is_some(),
                    duplicate: true,
                }
            }
        }
    }};
}

/// Creates a queued conversation with its reference and first event on
/// `$conn` (the SQL of `Store::create_conversation`): a `Conversation`.
macro_rules! create_conversation {
    ($conn:expr, $new:expr, $now:expr, $year:expr) => {{
        let new: &NewConversation = $new;
        let year: i32 = $year;
        let counter = "INSERT INTO reference_counters (prefix, year, value) VALUES ($1, $2, 1) \
                       ON CONFLICT (prefix, year) DO UPDATE SET value = reference_counters.value + 1 \
                       RETURNING value";
        let insert = format!(
            "INSERT INTO conversations (reference, organization_id, queue_id, channel, state, contact_id, \
             language, subject, created_at, enqueued_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) RETURNING {CONVERSATION_COLUMNS}"
        );
        let event = "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, data) VALUES ($1, $2, $3, $4, $5)";
        let value: i64 = sqlx::query_scalar(counter).bind(&new.reference_prefix).bind(year)
            .fetch_one(&mut *$conn).await?;
        let reference = format!("{}-{year}-{value:06}", new.reference_prefix);
        let row: ConversationRow = sqlx::query_as(sqlx::AssertSqlSafe(insert))
            .bind(&reference).bind(&new.organization_id).bind(&new.queue_id)
            .bind(new.channel.as_str()).bind(ConversationState::Queued.as_str())
            .bind(new.contact_id).bind(&new.language).bind(&new.subject).bind($now)
            .fetch_one(&mut *$conn).await?;
        let data = serde_json::json!({ "channel": new.channel.as_str() }).to_string();
        sqlx::query(event).bind(row.id).bind($now).bind("queued").bind(&new.queue_id).bind(&data)
            .execute(&mut *$conn).await?;
        Conversation::try_from(row)?
    }};
}

/// Queues a closed or abandoned conversation again (the citizen wrote
/// again) on `$conn`, with a `reopened` event; it enters the line now.
/// `Some(conversation)` when it moved.
macro_rules! reopen_closed {
    ($conn:expr, $id:expr, $now:expr) => {{
        let update = format!(
            "UPDATE conversations SET state = 'queued', operator_id = NULL, closed_at = NULL, \
             assigned_at = NULL, enqueued_at = $1, updated_at = $1 \
             WHERE id = $2 AND state IN ('closed', 'abandoned') RETURNING {CONVERSATION_COLUMNS}"
        );
        let row: Option<ConversationRow> = sqlx::query_as(sqlx::AssertSqlSafe(update))
            .bind($now)
            .bind($id)
            .fetch_optional(&mut *$conn)
            .await?;
        match row {
            Some(row) => {
                sqlx::query(
                    "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, data) \
                             VALUES ($1, $2, 'reopened', $3, $4)",
                )
                .bind(row.id)
                .bind($now)
                .bind(&row.queue_id)
                .bind(r#"{"by":"citizen"}"#)
                .execute(&mut *$conn)
                .await?;
                Some(Conversation::try_from(row)?)
            }
            None => None,
        }
    }};
}

/// Puts a mail in the outbox on `$conn` (inside the caller's transaction),
/// with its Message-ID and the Message-ID → conversation map entry; a
/// dedupe key already there returns the mail queued before. The id.
macro_rules! enqueue_outbox {
    ($conn:expr, $mail:expr, $domain:expr, $now:expr) => {{
        let mail: &NewOutboxMail = $mail;
        let insert = "INSERT INTO mail_outbox (conversation_id, to_address, to_name, subject, body, in_reply_to, \
                      reference_ids, kind, auto, state, attempts, next_attempt_at, created_at, dedupe_key) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $10, $11) \
                      ON CONFLICT (dedupe_key) DO NOTHING RETURNING id";
        let existing = "SELECT id FROM mail_outbox WHERE dedupe_key = $1";
        let set_id = "UPDATE mail_outbox SET message_id = $1 WHERE id = $2";
        let map = "INSERT INTO mail_message_ids (message_id, conversation_id, outbox_id) VALUES ($1, $2, $3) \
                   ON CONFLICT (message_id) DO NOTHING";
        let references = mail.references.join(" ");
        let inserted: Option<i64> = sqlx::query_scalar(insert)
            .bind(mail.conversation_id).bind(&mail.to_address).bind(&mail.to_name).bind(&mail.subject)
            .bind(&mail.body).bind(&mail.in_reply_to).bind(&references).bind(mail.kind.as_str())
            .bind(mail.automatic).bind($now).bind(&mail.dedupe_key)
            .fetch_optional(&mut *$conn).await?;
        match inserted {
            Some(id) => {
                let message_id = ccu_email::outbound::message_id_for(id, $domain);
                sqlx::query(set_id).bind(&message_id).bind(id).execute(&mut *$conn).await?;
                if let Some(conversation) = mail.conversation_id {
                    sqlx::query(map).bind(&message_id).bind(conversation).bind(id)
                        .execute(&mut *$conn).await?;
                }
                id
            }
            // Only a dedupe key conflicts: the mail is already queued.
            None => {
                let id: i64 = sqlx::query_scalar(existing).bind(&mail.dedupe_key)
                    .fetch_one(&mut *$conn).await?;
                id
            }
        }
    }};
}

/// What the SMTP door knows about a message it is about to answer 250 to.
#[derive(Debug, Clone)]
pub struct NewInboundMail<'a> {
    pub envelope_id: &'a str,
    /// `""` for the null reverse-path `<>`.
    pub mail_from: &'a str,
    /// JSON array of the accepted recipients.
    pub recipients: &'a str,
    pub mailbox: &'a str,
    pub queue_id: &'a str,
    pub helo: &'a str,
    pub peer: &'a str,
    pub tls: bool,
    pub message_id: Option<&'a str>,
    pub from_address: Option<&'a str>,
    pub from_name: Option<&'a str>,
    pub subject: &'a str,
    pub noise: Option<&'a str>,
    pub malformed: bool,
    pub raw: &'a [u8],
    pub received_at: i64,
}

/// The row an inbound mail got, possibly on an earlier delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredInbound {
    pub id: i64,
    pub conversation_id: Option<i64>,
    pub processed: bool,
    /// The same Message-ID from the same sender was already stored: the
    /// sender retried a message it did not see our 250 for.
    pub duplicate: bool,
}

/// An inbound mail as stored, for processing again after a crash and for
/// tests and the console.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct InboundMailRow {
    pub id: i64,
    pub envelope_id: String,
    pub mail_from: String,
    pub mailbox: String,
    pub queue_id: String,
    /// Received over TLS (STARTTLS on our door, or an IMAP poll over TLS).
    pub tls: bool,
    pub message_id: Option<String>,
    pub from_address: Option<String>,
    pub subject: String,
    pub noise: Option<String>,
    pub malformed: bool,
    pub size: i64,
    #[serde(skip)]
    pub raw: Vec<u8>,
    pub conversation_id: Option<i64>,
    pub received_at: i64,
    pub processed_at: Option<i64>,
}

const INBOUND_COLUMNS: &str = "id, envelope_id, mail_from, mailbox, queue_id, tls, message_id, from_address, subject, \
     noise, malformed, size, raw, conversation_id, received_at, processed_at";

/// What kind of mail the outbox holds (reports count them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailKind {
    /// An operator's answer.
    Reply,
    /// "We received your request, reference ...": for mail and web forms.
    Acknowledgement,
    /// A chat transcript the citizen asked for.
    Transcript,
    /// A satisfaction survey.
    Survey,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Reply => "reply",
            MailKind::Acknowledgement => "acknowledgement",
            MailKind::Transcript => "transcript",
            MailKind::Survey => "survey",
        }
    }
}

/// A mail to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewOutboxMail {
    pub conversation_id: Option<i64>,
    pub to_address: String,
    pub to_name: Option<String>,
    /// The final subject (reference token included).
    pub subject: String,
    pub body: String,
    /// The Message-ID this answers, without angle brackets.
    pub in_reply_to: Option<String>,
    /// The `References:` chain, oldest first, without angle brackets.
    pub references: Vec<String>,
    pub kind: MailKind,
    /// Sent by ccu on its own: `Auto-Submitted: auto-replied` (RFC 3834 §5).
    pub automatic: bool,
    /// The caller's idempotency key: a second enqueue with the same key
    /// returns the first mail instead of queueing another.
    pub dedupe_key: Option<String>,
}

/// A row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct OutboxMail {
    pub id: i64,
    pub conversation_id: Option<i64>,
    /// `ccu.{id}@{domain}`, fixed before the first attempt.
    pub message_id: String,
    pub to_address: String,
    pub to_name: Option<String>,
    pub subject: String,
    pub body: String,
    pub in_reply_to: Option<String>,
    /// Space-separated.
    pub reference_ids: String,
    /// `reply`, `acknowledgement`, `transcript` or `survey`.
    pub kind: String,
    pub auto: bool,
    /// `pending`, `sending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const OUTBOX_COLUMNS: &str = "id, conversation_id, message_id, to_address, to_name, subject, body, in_reply_to, \
     reference_ids, kind, auto, state, attempts, next_attempt_at, last_error, created_at, sent_at";

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize)]
pub struct OutboxAttempt {
    pub attempt: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    /// `sent`, `transient`, `permanent`, `interrupted`; `None` while running.
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

/// How an attempt ended, as the worker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    Sent {
        detail: String,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        detail: String,
        next_attempt_at: i64,
    },
    /// Permanent failure, or transient ones past the give-up time.
    Failed {
        detail: String,
        permanent: bool,
    },
}

/// An inbound mail's row, owned (it travels to the group-commit writer).
#[derive(Debug, Clone)]
pub struct InboundRecord {
    pub envelope_id: String,
    pub mail_from: String,
    pub recipients: String,
    pub mailbox: String,
    pub queue_id: String,
    pub helo: String,
    pub peer: String,
    pub tls: bool,
    pub message_id: Option<String>,
    pub from_address: Option<String>,
    pub from_name: Option<String>,
    pub subject: String,
    pub noise: Option<String>,
    pub malformed: bool,
    pub raw: Vec<u8>,
    pub received_at: i64,
}

impl InboundRecord {
    pub fn as_new(&self) -> NewInboundMail<'_> {
        NewInboundMail {
            envelope_id: &self.envelope_id,
            mail_from: &self.mail_from,
            recipients: &self.recipients,
            mailbox: &self.mailbox,
            queue_id: &self.queue_id,
            helo: &self.helo,
            peer: &self.peer,
            tls: self.tls,
            message_id: self.message_id.as_deref(),
            from_address: self.from_address.as_deref(),
            from_name: self.from_name.as_deref(),
            subject: &self.subject,
            noise: self.noise.as_deref(),
            malformed: self.malformed,
            raw: &self.raw,
            received_at: self.received_at,
        }
    }
}

/// The row of an inbound mail: to insert now (SMTP, IMAP), or stored
/// earlier and not processed (recovery after a crash).
#[derive(Debug, Clone)]
pub enum InboundRaw {
    /// Boxed: the record is large and the other variant two words.
    New(Box<InboundRecord>),
    Stored {
        id: i64,
        /// A conversation an earlier, interrupted processing opened.
        conversation_id: Option<i64>,
    },
}

/// Where an inbound mail goes, decided before the transaction (threading
/// only reads).
#[derive(Debug, Clone)]
pub enum InboundTarget {
    /// Threaded into an existing conversation. With `reopen`, a closed or
    /// abandoned one is queued again (the citizen wrote again).
    Thread { conversation_id: i64, reopen: bool },
    /// A new conversation, linked to the contact with this address
    /// (compared lower case; created when there is none).
    Open {
        conversation: NewConversation,
        year: i32,
        contact: Option<(String, Option<String>)>,
    },
    /// Noise that answers nothing of ours: kept without a conversation.
    Keep,
}

/// The acknowledgement of a conversation a mail opens; the reference is
/// known only inside the transaction.
#[derive(Debug, Clone)]
pub struct AcknowledgementDraft {
    pub to_address: String,
    pub to_name: Option<String>,
    /// Without the reference token: the store puts it in.
    pub subject: String,
    /// `{reference}` is replaced by the conversation's reference.
    pub body: String,
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

/// Everything the inbound path writes for one mail.
#[derive(Debug, Clone)]
pub struct InboundJob {
    pub raw: InboundRaw,
    pub target: InboundTarget,
    /// The text of the conversation message.
    pub text: String,
    pub attachments: Vec<ccu_email::inbound::Attachment>,
    /// Used only when this mail opens the conversation.
    pub acknowledgement: Option<AcknowledgementDraft>,
    pub now: i64,
}

/// What the transaction wrote for one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundWritten {
    pub id: i64,
    /// The row was there already (a retried delivery, or recovery).
    pub duplicate: bool,
    /// `false`: only the raw row was stored (processing failed and is
    /// retried at the next start).
    pub processed: bool,
    pub conversation_id: Option<i64>,
    /// Opened or queued again by this mail: the router must hear of it.
    pub queued: Option<Conversation>,
    /// `queued` is an existing conversation, queued again.
    pub reopened: bool,
    /// The conversation message, new or found (idempotent).
    pub message_id: Option<i64>,
    /// The acknowledgement queued in the outbox.
    pub acknowledgement: Option<i64>,
}

impl InboundWritten {
    fn stored(stored: StoredInbound) -> Self {
        Self {
            id: stored.id,
            duplicate: stored.duplicate,
            processed: stored.processed,
            conversation_id: stored.conversation_id,
            queued: None,
            reopened: false,
            message_id: None,
            acknowledgement: None,
        }
    }
}

/// An inbound mail as the console lists it: the envelope and headers ccu
/// kept, why it is noise (never answered automatically), and its
/// attachments. The raw message is downloaded separately.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct InboundMailSummary {
    pub id: i64,
    pub conversation_id: Option<i64>,
    pub queue_id: String,
    /// The mailbox it was sent to (one of `email.mailboxes`).
    pub mailbox: String,
    /// The envelope sender; `""` for the null reverse-path (a bounce).
    pub mail_from: String,
    pub from_address: Option<String>,
    pub from_name: Option<String>,
    pub subject: String,
    pub message_id: Option<String>,
    /// Why it is stored but never answered (RFC 3834): `null_sender`,
    /// `bounce`, `report`, `auto_submitted`, `auto_reply_header`,
    /// `precedence`, `mailing_list`, `own_loop`; absent for a person's mail.
    pub noise: Option<String>,
    /// Part of the MIME structure could not be read.
    pub malformed: bool,
    pub tls: bool,
    /// Bytes of the raw message.
    pub size: i64,
    pub received_at: i64,
    #[sqlx(skip)]
    pub attachments: Vec<AttachmentInfo>,
}

/// An attachment of an inbound mail, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Serialize, utoipa::ToSchema)]
pub struct AttachmentInfo {
    pub id: i64,
    #[serde(skip)]
    pub inbound_id: i64,
    /// A bare file name (no directories, no control characters).
    pub filename: String,
    /// As the sender declared it, lower case.
    pub content_type: String,
    pub size: i64,
}

/// An attachment with its bytes, for download.
#[derive(Debug, Clone, FromRow)]
pub struct AttachmentFile {
    pub id: i64,
    pub inbound_id: i64,
    pub conversation_id: Option<i64>,
    pub filename: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

const SUMMARY_COLUMNS: &str = "m.id, m.conversation_id, m.queue_id, m.mailbox, m.mail_from, m.from_address, \
     m.from_name, m.subject, m.message_id, m.noise, m.malformed, m.tls, m.size, m.received_at";

impl Store {
    // ---- inbound ----

    /// Stores an inbound mail, committed when this returns (the SMTP door
    /// answers 250 only then). A retried delivery of the same Message-ID
    /// from the same sender returns the first row.
    pub async fn insert_inbound_mail(&self, mail: &NewInboundMail<'_>) -> Result<StoredInbound> {
        let stored = with_pool!(self, pool => {
            let mut conn = pool.acquire().await?;
            insert_inbound!(conn, mail)
        });
        Ok(stored)
    }

    /// The whole inbound path of a batch of mails in **one transaction**
    /// (group commit): per mail the raw row, the contact, the conversation
    /// and its first event, the message, the attachments, the
    /// acknowledgement in the outbox and the processed mark. One commit
    /// (one fsync on SQLite) for the batch instead of about eight per mail.
    ///
    /// Each mail runs inside its own savepoint: one that fails is rolled
    /// back alone, then its raw row is stored unprocessed (`processed:
    /// false`; recovered at the next start) so its 250 is still deserved.
    /// `Err` for one mail means nothing of it was stored; the outer `Err`
    /// (the commit failed) means nothing of the batch was.
    pub async fn write_inbound_batch(
        &self,
        jobs: &[InboundJob],
        domain: &str,
    ) -> Result<Vec<Result<InboundWritten>>> {
        let results = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                sqlx::query("SAVEPOINT inbound_mail").execute(&mut *tx).await?;
                let written = async {
                    let stored = match &job.raw {
                        InboundRaw::New(record) => insert_inbound!(tx, &record.as_new()),
                        InboundRaw::Stored { id, conversation_id } => StoredInbound {
                            id: *id, conversation_id: *conversation_id, processed: false, duplicate: true,
                        },
                    };
                    let mut written = InboundWritten::stored(stored);
                    if stored.processed {
                        return Ok::<InboundWritten, StoreError>(written);
                    }
                    // A conversation on an unprocessed row was opened by
                    // this mail in an interrupted run: keep it.
                    let (conversation, opened) = match (stored.conversation_id, &job.target) {
                        (Some(c), _) => (Some(c), true),
                        (None, InboundTarget::Keep) => (None, false),
                        (None, InboundTarget::Thread { conversation_id, reopen }) => {
                            if *reopen {
                                written.queued = reopen_closed!(tx, *conversation_id, job.now);
                                written.reopened = written.queued.is_some();
                            }
                            (Some(*conversation_id), false)
                        }
                        (None, InboundTarget::Open { conversation, year, contact }) => {
                            let contact_id = match contact {
                                Some((email, name)) => {
                                    let email = email.to_lowercase();
                                    let found: Option<i64> = sqlx::query_scalar(
                                        "SELECT id FROM contacts WHERE email = $1 ORDER BY id LIMIT 1")
                                        .bind(&email).fetch_optional(&mut *tx).await?;
                                    match found {
                                        Some(id) => Some(id),
                                        None => Some(sqlx::query_scalar(
                                            "INSERT INTO contacts (name, email, phone, created_at, updated_at) \
                                             VALUES ($1, $2, NULL, $3, $3) RETURNING id")
                                            .bind(name).bind(&email).bind(job.now)
                                            .fetch_one(&mut *tx).await?),
                                    }
                                }
                                None => None,
                            };
                            let new = NewConversation { contact_id, ..conversation.clone() };
                            let created = create_conversation!(tx, &new, job.now, *year);
                            let id = created.id;
                            written.queued = Some(created);
                            (Some(id), true)
                        }
                    };
                    written.conversation_id = conversation;
                    if let Some(conversation_id) = conversation {
                        let client_id = format!("mail:{}", stored.id);
                        let inserted: Option<i64> = sqlx::query_scalar(
                            "INSERT INTO messages (conversation_id, at, direction, author_user_id, body, client_id) \
                             VALUES ($1, $2, 'inbound', NULL, $3, $4) ON CONFLICT (conversation_id, client_id) \
                             DO NOTHING RETURNING id")
                            .bind(conversation_id).bind(job.now).bind(&job.text).bind(&client_id)
                            .fetch_optional(&mut *tx).await?;
                        written.message_id = match inserted {
                            Some(id) => Some(id),
                            None => sqlx::query_scalar(
                                "SELECT id FROM messages WHERE conversation_id = $1 AND client_id = $2")
                                .bind(conversation_id).bind(&client_id).fetch_optional(&mut *tx).await?,
                        };
                        if opened && let Some(draft) = &job.acknowledgement {
                            // Known when this mail created the conversation.
                            let reference: String = match written.queued.as_ref().filter(|c| c.id == conversation_id) {
                                Some(created) => created.reference.clone(),
                                None => sqlx::query_scalar(
                                    "SELECT reference FROM conversations WHERE id = $1")
                                    .bind(conversation_id).fetch_one(&mut *tx).await?,
                            };
                            let token = ccu_email::threading::ReferenceToken::parse(&reference);
                            let ack = NewOutboxMail {
                                conversation_id: Some(conversation_id),
                                to_address: draft.to_address.clone(),
                                to_name: draft.to_name.clone(),
                                subject: ccu_email::outbound::subject_with_reference(&draft.subject, token.as_ref()),
                                body: draft.body.replace("{reference}", &reference),
                                in_reply_to: draft.in_reply_to.clone(),
                                references: draft.references.clone(),
                                kind: MailKind::Acknowledgement,
                                automatic: true,
                                dedupe_key: Some(format!("ack:{}", stored.id)),
                            };
                            written.acknowledgement = Some(enqueue_outbox!(tx, &ack, domain, job.now));
                        }
                    }
                    // Replaced, not added to: processing again after a crash
                    // stores them once.
                    // (A row inserted just now has none: one statement less.)
                    if stored.duplicate {
                        sqlx::query("DELETE FROM mail_attachments WHERE inbound_id = $1")
                            .bind(stored.id).execute(&mut *tx).await?;
                    }
                    for a in &job.attachments {
                        let size = i64::try_from(a.size).unwrap_or(i64::MAX);
                        sqlx::query("INSERT INTO mail_attachments (inbound_id, conversation_id, filename, \
                                     content_type, size, bytes) VALUES ($1, $2, $3, $4, $5, $6)")
                            .bind(stored.id).bind(conversation).bind(&a.filename).bind(&a.content_type)
                            .bind(size).bind(&a.bytes).execute(&mut *tx).await?;
                    }
                    sqlx::query("UPDATE mail_inbound SET processed_at = $1, conversation_id = $2 WHERE id = $3")
                        .bind(job.now).bind(conversation).bind(stored.id).execute(&mut *tx).await?;
                    written.processed = true;
                    Ok(written)
                }.await;
                match written {
                    Ok(written) => {
                        sqlx::query("RELEASE SAVEPOINT inbound_mail").execute(&mut *tx).await?;
                        results.push(Ok(written));
                    }
                    Err(err) => {
                        tracing::warn!(%err, "processing an inbound mail failed; keeping it raw");
                        sqlx::query("ROLLBACK TO SAVEPOINT inbound_mail").execute(&mut *tx).await?;
                        sqlx::query("RELEASE SAVEPOINT inbound_mail").execute(&mut *tx).await?;
                        // Keep the raw mail: the 250 needs only that.
                        let InboundRaw::New(record) = &job.raw else {
                            results.push(Err(err));
                            continue;
                        };
                        sqlx::query("SAVEPOINT inbound_raw").execute(&mut *tx).await?;
                        let kept = async {
                            Ok::<StoredInbound, StoreError>(insert_inbound!(tx, &record.as_new()))
                        }.await;
                        match kept {
                            Ok(kept) => {
                                sqlx::query("RELEASE SAVEPOINT inbound_raw").execute(&mut *tx).await?;
                                results.push(Ok(InboundWritten::stored(kept)));
                            }
                            Err(err) => {
                                sqlx::query("ROLLBACK TO SAVEPOINT inbound_raw").execute(&mut *tx).await?;
                                sqlx::query("RELEASE SAVEPOINT inbound_raw").execute(&mut *tx).await?;
                                results.push(Err(err));
                            }
                        }
                    }
                }
            }
            tx.commit().await?;
            results
        });
        Ok(results)
    }

    /// Inbound mail stored but not processed (a crash or a store error
    /// between the 250 and the conversation), oldest first.
    pub async fn unprocessed_inbound_mail(&self, limit: i64) -> Result<Vec<InboundMailRow>> {
        let sql = format!(
            "SELECT {INBOUND_COLUMNS} FROM mail_inbound WHERE processed_at IS NULL ORDER BY id LIMIT $1"
        );
        let rows = with_pool!(self, pool =>
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(limit).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Every inbound mail of a conversation, oldest first.
    pub async fn inbound_mail_for_conversation(
        &self,
        conversation_id: i64,
    ) -> Result<Vec<InboundMailRow>> {
        let sql = format!(
            "SELECT {INBOUND_COLUMNS} FROM mail_inbound WHERE conversation_id = $1 ORDER BY id"
        );
        let rows = with_pool!(self, pool =>
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(conversation_id).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Inbound mail by its Message-ID (tests, support).
    pub async fn inbound_mail_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Vec<InboundMailRow>> {
        let sql =
            format!("SELECT {INBOUND_COLUMNS} FROM mail_inbound WHERE message_id = $1 ORDER BY id");
        let rows = with_pool!(self, pool =>
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(message_id).fetch_all(pool).await?);
        Ok(rows)
    }

    /// (filename, content type, size) of a conversation's attachments.
    pub async fn attachments_for_conversation(
        &self,
        conversation_id: i64,
    ) -> Result<Vec<(String, String, i64)>> {
        let sql = "SELECT filename, content_type, size FROM mail_attachments WHERE conversation_id = $1 ORDER BY id";
        let rows = with_pool!(self, pool => sqlx::query_as(sql).bind(conversation_id).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Whether `scope` may see conversation `id`.
    pub async fn conversation_visible(&self, scope: &Scope, id: i64) -> Result<bool> {
        let mut args = vec![Arg::Int(id)];
        let filter = scope.filter("organization_id", Some("operator_id"), &mut args);
        let sql = format!("SELECT id FROM conversations WHERE id = $1{filter}");
        let found: Option<i64> = with_pool!(self, pool =>
            bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), &args).fetch_optional(pool).await?);
        Ok(found.is_some())
    }

    /// The inbound mail of one conversation, oldest first, with their
    /// attachments. The caller has checked the conversation's scope.
    pub async fn mail_summaries_for_conversation(
        &self,
        conversation_id: i64,
    ) -> Result<Vec<InboundMailSummary>> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM mail_inbound m WHERE m.conversation_id = $1 ORDER BY m.id"
        );
        let mails = with_pool!(self, pool =>
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(conversation_id).fetch_all(pool).await?);
        self.with_attachments(mails).await
    }

    /// Noise mail (auto-replies, bounces, list mail: stored, never
    /// answered) that `scope` may see through its queue's organization,
    /// newest first; `before_id` pages. Noise that threads into a
    /// conversation is listed too, with its `conversation_id`.
    pub async fn noise_mail(
        &self,
        scope: &Scope,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<InboundMailSummary>> {
        let mut args = Vec::new();
        let mut sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM mail_inbound m JOIN queues q ON q.id = m.queue_id \
             WHERE m.noise IS NOT NULL"
        );
        sql.push_str(&scope.filter("q.organization_id", None, &mut args));
        if let Some(before) = before_id {
            args.push(Arg::Int(before));
            sql.push_str(&format!(" AND m.id < ${}", args.len()));
        }
        sql.push_str(&format!(
            " ORDER BY m.id DESC LIMIT {}",
            limit.clamp(1, 200)
        ));
        let mails = with_pool!(self, pool =>
            bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args).fetch_all(pool).await?);
        self.with_attachments(mails).await
    }

    /// One inbound mail that `scope` may see: through its conversation
    /// (organization, or assigned to the operator), or through its queue's
    /// organization. `None` when it does not exist or is out of scope.
    pub async fn visible_mail(&self, scope: &Scope, id: i64) -> Result<Option<InboundMailSummary>> {
        let mut args = vec![Arg::Int(id)];
        let by_conversation = scope.filter("c.organization_id", Some("c.operator_id"), &mut args);
        let by_queue = scope.filter("q.organization_id", None, &mut args);
        // Each filter is " AND (...)" or empty for Scope::All.
        let visible = if by_conversation.is_empty() {
            String::new()
        } else {
            format!(" AND ((c.id IS NOT NULL{by_conversation}) OR (c.id IS NULL{by_queue}))")
        };
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM mail_inbound m JOIN queues q ON q.id = m.queue_id \
             LEFT JOIN conversations c ON c.id = m.conversation_id WHERE m.id = $1{visible}"
        );
        let mail: Option<InboundMailSummary> = with_pool!(self, pool =>
            bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args).fetch_optional(pool).await?);
        Ok(self
            .with_attachments(mail.into_iter().collect())
            .await?
            .pop())
    }

    async fn with_attachments(
        &self,
        mut mails: Vec<InboundMailSummary>,
    ) -> Result<Vec<InboundMailSummary>> {
        if mails.is_empty() {
            return Ok(mails);
        }
        let sql = format!(
            "SELECT id, inbound_id, filename, content_type, size FROM mail_attachments \
             WHERE inbound_id IN ({}) ORDER BY id",
            placeholders(mails.len())
        );
        let files: Vec<AttachmentInfo> = with_pool!(self, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for mail in &mails {
                query = query.bind(mail.id);
            }
            query.fetch_all(pool).await?
        });
        for file in files {
            if let Some(mail) = mails.iter_mut().find(|m| m.id == file.inbound_id) {
                mail.attachments.push(file);
            }
        }
        Ok(mails)
    }

    /// The raw message as received (with our `Received:` header).
    pub async fn inbound_raw(&self, id: i64) -> Result<Option<Vec<u8>>> {
        let raw = with_pool!(self, pool =>
            sqlx::query_scalar("SELECT raw FROM mail_inbound WHERE id = $1").bind(id)
                .fetch_optional(pool).await?);
        Ok(raw)
    }

    /// One attachment with its bytes.
    pub async fn attachment(&self, id: i64) -> Result<Option<AttachmentFile>> {
        let sql = "SELECT id, inbound_id, conversation_id, filename, content_type, bytes \
                   FROM mail_attachments WHERE id = $1";
        let file =
            with_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?);
        Ok(file)
    }

    // ---- threading ----

    /// (Message-ID, conversation) for those of `ids` that we sent.
    pub async fn conversations_by_message_ids(&self, ids: &[String]) -> Result<Vec<(String, i64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let marks = placeholders(ids.len());
        let sql = format!(
            "SELECT message_id, conversation_id FROM mail_message_ids WHERE message_id IN ({marks})"
        );
        let rows = with_pool!(self, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(id);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// (reference, conversation) for those of `references` that exist.
    pub async fn conversations_by_references(
        &self,
        references: &[String],
    ) -> Result<Vec<(String, i64)>> {
        if references.is_empty() {
            return Ok(Vec::new());
        }
        let marks = placeholders(references.len());
        let sql = format!("SELECT reference, id FROM conversations WHERE reference IN ({marks})");
        let rows = with_pool!(self, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for r in references {
                query = query.bind(r);
            }
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }

    // ---- outbox ----

    /// Stores a mail to send, with its Message-ID (`ccu.{id}@{domain}`) and,
    /// when it belongs to a conversation, the Message-ID → conversation map
    /// entry that threads the citizen's reply. One transaction.
    pub async fn enqueue_mail(
        &self,
        mail: &NewOutboxMail,
        domain: &str,
        now: i64,
    ) -> Result<OutboxMail> {
        let id: i64 = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id = enqueue_outbox!(tx, mail, domain, now);
            tx.commit().await?;
            id
        });
        self.outbox_mail(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("outbox mail {id} vanished after insert")))
    }

    pub async fn outbox_mail(&self, id: i64) -> Result<Option<OutboxMail>> {
        let sql = format!("SELECT {OUTBOX_COLUMNS} FROM mail_outbox WHERE id = $1");
        let row = with_pool!(self, pool =>
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
        Ok(row)
    }

    /// A conversation's outgoing mail, oldest first.
    pub async fn outbox_for_conversation(&self, conversation_id: i64) -> Result<Vec<OutboxMail>> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM mail_outbox WHERE conversation_id = $1 ORDER BY id"
        );
        let rows = with_pool!(self, pool =>
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(conversation_id).fetch_all(pool).await?);
        Ok(rows)
    }

    pub async fn outbox_attempts(&self, outbox_id: i64) -> Result<Vec<OutboxAttempt>> {
        let sql = "SELECT attempt, started_at, finished_at, outcome, detail FROM mail_outbox_attempts \
                   WHERE outbox_id = $1 ORDER BY attempt";
        let rows =
            with_pool!(self, pool => sqlx::query_as(sql).bind(outbox_id).fetch_all(pool).await?);
        Ok(rows)
    }

    /// When the next pending mail is due, if any.
    pub async fn next_outbox_due(&self) -> Result<Option<i64>> {
        let sql = "SELECT MIN(next_attempt_at) FROM mail_outbox WHERE state = 'pending'";
        let due: Option<i64> =
            with_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await?);
        Ok(due)
    }

    /// Claims the next due mail for one attempt: marks it `sending` until
    /// `lease_until`, counts the attempt and records it as running, in one
    /// transaction. A mail left `sending` by a worker that died (its lease
    /// ran out) is claimed again and its open attempt marked `interrupted`.
    ///
    /// The claim is a single compare-and-set `UPDATE`: two workers (two
    /// nodes on PostgreSQL) never claim the same mail; the loser gets `None`
    /// for that round and simply tries again.
    pub async fn claim_outbox_mail(
        &self,
        now: i64,
        lease_until: i64,
    ) -> Result<Option<OutboxMail>> {
        let due = "(state = 'pending' AND next_attempt_at <= $1) OR (state = 'sending' AND lease_until <= $1)";
        let claim = format!(
            "UPDATE mail_outbox SET state = 'sending', attempts = attempts + 1, lease_until = $2 \
             WHERE id = (SELECT id FROM mail_outbox WHERE {due} ORDER BY next_attempt_at, id LIMIT 1) \
             AND ({due}) RETURNING {OUTBOX_COLUMNS}"
        );
        let interrupted = "UPDATE mail_outbox_attempts SET outcome = 'interrupted', finished_at = $1, \
                           detail = 'the worker stopped during the attempt; delivery unknown' \
                           WHERE outbox_id = $2 AND outcome IS NULL";
        let attempt =
            "INSERT INTO mail_outbox_attempts (outbox_id, attempt, started_at) VALUES ($1, $2, $3)";
        let claimed = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<OutboxMail> = sqlx::query_as(sqlx::AssertSqlSafe(claim)).bind(now).bind(lease_until)
                .fetch_optional(&mut *tx).await?;
            if let Some(mail) = &row {
                sqlx::query(interrupted).bind(now).bind(mail.id).execute(&mut *tx).await?;
                sqlx::query(attempt).bind(mail.id).bind(mail.attempts).bind(now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            row
        });
        Ok(claimed)
    }

    /// Records how attempt number `attempt` of mail `id` ended and moves the
    /// mail on. The state change is guarded by the attempt number: a worker
    /// whose lease ran out and was overtaken only records its attempt.
    pub async fn finish_outbox_attempt(
        &self,
        id: i64,
        attempt: i64,
        result: &AttemptResult,
        now: i64,
    ) -> Result<()> {
        let (outcome, detail) = match result {
            AttemptResult::Sent { detail } => ("sent", detail),
            AttemptResult::Retry { detail, .. } => ("transient", detail),
            AttemptResult::Failed { detail, permanent } => {
                (if *permanent { "permanent" } else { "transient" }, detail)
            }
        };
        let record = "UPDATE mail_outbox_attempts SET outcome = $1, finished_at = $2, detail = $3 \
                      WHERE outbox_id = $4 AND attempt = $5";
        let guard = "WHERE id = $1 AND state = 'sending' AND attempts = $2";
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(record).bind(outcome).bind(now).bind(detail).bind(id).bind(attempt)
                .execute(&mut *tx).await?;
            let update = match result {
                AttemptResult::Sent { .. } => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE mail_outbox SET state = 'sent', sent_at = $3, lease_until = NULL, last_error = NULL {guard}"
                ))).bind(id).bind(attempt).bind(now),
                AttemptResult::Retry { next_attempt_at, detail } => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE mail_outbox SET state = 'pending', next_attempt_at = $3, lease_until = NULL, last_error = $4 {guard}"
                ))).bind(id).bind(attempt).bind(*next_attempt_at).bind(detail),
                AttemptResult::Failed { detail, .. } => sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE mail_outbox SET state = 'failed', lease_until = NULL, last_error = $3 {guard}"
                ))).bind(id).bind(attempt).bind(detail),
            };
            update.execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

/// What an operator's reply by e-mail needs from its conversation.
#[derive(Debug, Clone, Default)]
pub struct ReplyContext {
    /// `email`, `webform`, ... : only the first two answer by mail.
    pub channel: String,
    pub reference: String,
    pub subject: Option<String>,
    /// The contact's address, else the sender of the citizen's last mail.
    pub to_address: Option<String>,
    pub to_name: Option<String>,
    /// The Message-IDs of the conversation's mail both ways, oldest first.
    pub thread_ids: Vec<String>,
    /// The Message-ID of the citizen's latest mail (not noise).
    pub last_inbound_id: Option<String>,
    /// The citizen's latest message: (text, at).
    pub last_citizen_message: Option<(String, i64)>,
}

impl Store {
    /// The conversation's channel and, for `email` and `webform`, what a
    /// reply by e-mail needs. `None`: no such conversation.
    pub async fn mail_reply_context(&self, conversation_id: i64) -> Result<Option<ReplyContext>> {
        let head = "SELECT c.channel, c.reference, c.subject, k.email, k.name FROM conversations c \
                    LEFT JOIN contacts k ON k.id = c.contact_id WHERE c.id = $1";
        let ids = "SELECT message_id, at FROM (\
                   SELECT message_id, received_at AS at, id FROM mail_inbound WHERE conversation_id = $1 AND message_id IS NOT NULL \
                   UNION ALL SELECT message_id, created_at AS at, id FROM mail_outbox WHERE conversation_id = $1 AND message_id IS NOT NULL\
                   ) AS t ORDER BY at, id";
        let last = "SELECT message_id, from_address, mail_from FROM mail_inbound \
                    WHERE conversation_id = $1 AND noise IS NULL ORDER BY id DESC LIMIT 1";
        let said = "SELECT body, at FROM messages WHERE conversation_id = $1 AND direction = 'inbound' \
                    ORDER BY id DESC LIMIT 1";
        type Head = (
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        type Last = (Option<String>, Option<String>, String);
        let context = with_pool!(self, pool => {
            let head: Option<Head> = sqlx::query_as(head).bind(conversation_id).fetch_optional(pool).await?;
            match head {
                None => None,
                Some((channel, reference, subject, email, name)) => {
                    let mut context = ReplyContext { channel, reference, subject, to_address: email, to_name: name, ..ReplyContext::default() };
                    if context.channel == "email" || context.channel == "webform" {
                        let rows: Vec<(String, i64)> = sqlx::query_as(ids).bind(conversation_id).fetch_all(pool).await?;
                        context.thread_ids = rows.into_iter().map(|(id, _)| id).collect();
                        let last: Option<Last> = sqlx::query_as(last).bind(conversation_id).fetch_optional(pool).await?;
                        if let Some((message_id, from_address, mail_from)) = last {
                            context.last_inbound_id = message_id;
                            if context.to_address.is_none() {
                                context.to_address = from_address.or(Some(mail_from).filter(|m| !m.is_empty()));
                            }
                        }
                        context.last_citizen_message = sqlx::query_as(said).bind(conversation_id).fetch_optional(pool).await?;
                    }
                    Some(context)
                }
            }
        });
        Ok(context)
    }

    /// An operator's reply that goes out by e-mail: the conversation
    /// message and the mail in the outbox, in **one transaction**, so the
    /// console's ack means both are stored. A retry with the same
    /// `client_id` returns the first message and queues nothing more (the
    /// mail's dedupe key is `reply:{message id}`).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_message_with_mail(
        &self,
        conversation_id: i64,
        at: i64,
        author_user_id: Option<i64>,
        body: &str,
        client_id: &str,
        mail: &NewOutboxMail,
        domain: &str,
    ) -> Result<(super::Message, i64)> {
        let insert = "INSERT INTO messages (conversation_id, at, direction, author_user_id, body, client_id) \
                      VALUES ($1, $2, 'outbound', $3, $4, $5) ON CONFLICT (conversation_id, client_id) DO NOTHING \
                      RETURNING id";
        let select = "SELECT id, conversation_id, at, direction, author_user_id, body, content_type, client_id \
                      FROM messages WHERE conversation_id = $1 AND client_id = $2";
        let done = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let _: Option<i64> = sqlx::query_scalar(insert).bind(conversation_id).bind(at)
                .bind(author_user_id).bind(body).bind(client_id)
                .fetch_optional(&mut *tx).await?;
            let message: super::Message = sqlx::query_as(select).bind(conversation_id).bind(client_id)
                .fetch_one(&mut *tx).await?;
            let mail = NewOutboxMail { dedupe_key: Some(format!("reply:{}", message.id)), ..mail.clone() };
            let outbox_id = enqueue_outbox!(tx, &mail, domain, at);
            tx.commit().await?;
            (message, outbox_id)
        });
        Ok(done)
    }
}

/// `$1, $2, ... $n`
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}
