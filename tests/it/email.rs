//! The e-mail channel end to end (issue 6): real `swaks` delivering into
//! the server's SMTP port, a real `aiosmtpd` as the outbox relay, and the
//! binary killed with SIGKILL after a 250. Missing tools fail the tests
//! with the Debian package to install.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use ccu::email::{EmailChannel, OutboxStep};
use ccu::store::mail::{
    InboundJob, InboundMailRow, InboundRaw, InboundRecord, InboundTarget, NewInboundMail,
    OutboxMail,
};
use ccu::store::{ConversationDetail, ConversationState, Scope, Store};
use ccu_email::inbound::{ParseLimits, parse_inbound};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader as AsyncBufReader};

use crate::helpers::*;

const PYTHON: &str = "/usr/bin/python3";
const TRIBUTI: &str = "tributi@comune.monteverde.it";
const URP: &str = "urp@comune.monteverde.it";
const CITIZEN: &str = "mario.rossi@esempio.it";

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The server with its relay on `relay` (a closed port unless given).
async fn spawn_mail_app(relay: Option<SocketAddr>, overrides: &[(&str, Value)]) -> TestApp {
    let relay = relay.unwrap_or_else(free_port);
    let mut all = vec![
        ("email.relay.host", json!(relay.ip().to_string())),
        ("email.relay.port", json!(relay.port())),
    ];
    all.extend(overrides.iter().cloned());
    spawn_app_with(&all).await
}

/// Runs swaks against `addr`; fails (never skips) when it is missing.
async fn swaks(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--helo", "mx.esempio.it", "--timeout", "20"])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run swaks ({e}): install the Debian package `swaks`"));
    let transcript = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), transcript)
}

/// A citizen's mail: accepted with 250, or the test fails with the transcript.
async fn send(addr: SocketAddr, to: &str, message_id: &str, subject: &str, extra: &[&str]) {
    let header = format!("Message-Id: <{message_id}>");
    let subject = format!("Subject: {subject}");
    let mut args = vec![
        "--from",
        CITIZEN,
        "--to",
        to,
        "--header",
        &header,
        "--header",
        &subject,
        "--header",
        "From: Mario Rossi <mario.rossi@esempio.it>",
        "--body",
        "Buongiorno, quando scade la rata della TARI?\nGrazie, Mario",
    ];
    args.extend_from_slice(extra);
    let (ok, transcript) = swaks(addr, &args).await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("<-  250 2.0.0"), "{transcript}");
}

async fn inbound(store: &Store, message_id: &str) -> InboundMailRow {
    let rows = store.inbound_mail_by_message_id(message_id).await.unwrap();
    assert_eq!(rows.len(), 1, "one stored mail for {message_id}");
    rows.into_iter().next().unwrap()
}

async fn conversation(store: &Store, id: i64) -> ConversationDetail {
    store
        .get_conversation(&Scope::All, id)
        .await
        .unwrap()
        .expect("the conversation exists")
}

async fn outbox(store: &Store, conversation_id: i64) -> Vec<OutboxMail> {
    store
        .outbox_for_conversation(conversation_id)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_mail_becomes_a_conversation_in_the_mailbox_queue_with_an_acknowledgement_queued() {
    let app = spawn_mail_app(None, &[]).await;
    send(
        app.smtp_addr,
        TRIBUTI,
        "nuova-1@esempio.it",
        "TARI 2026",
        &[],
    )
    .await;

    // The 250 came after the mail was stored and routed: no waiting needed.
    let mail = inbound(app.store(), "nuova-1@esempio.it").await;
    assert_eq!(mail.queue_id, "tributi");
    assert_eq!(mail.mail_from, CITIZEN);
    assert_eq!(mail.noise, None);
    assert!(mail.processed_at.is_some());
    assert!(String::from_utf8_lossy(&mail.raw).starts_with("Received: from mx.esempio.it"));
    let detail = conversation(app.store(), mail.conversation_id.unwrap()).await;
    let c = &detail.conversation;
    assert_eq!(c.queue_id, "tributi");
    assert_eq!(c.channel, ccu::config::Channel::Email);
    assert_eq!(c.subject.as_deref(), Some("TARI 2026"));
    let contact = c.contact_id.expect("linked to the sender's contact");
    assert_eq!(detail.messages.len(), 1);
    assert_eq!(detail.messages[0].direction, "inbound");
    assert!(
        detail.messages[0]
            .body
            .contains("quando scade la rata della TARI?")
    );

    let acks = outbox(app.store(), c.id).await;
    assert_eq!(acks.len(), 1);
    let ack = &acks[0];
    assert_eq!(ack.kind, "acknowledgement");
    assert!(ack.auto);
    assert_eq!(ack.to_address, CITIZEN);
    assert_eq!(ack.subject, format!("[{}] Re: TARI 2026", c.reference));
    assert!(ack.body.contains(&c.reference), "{}", ack.body);
    assert_eq!(ack.in_reply_to.as_deref(), Some("nuova-1@esempio.it"));
    assert_eq!(
        ack.message_id,
        format!("ccu.{}@comune.monteverde.it", ack.id)
    );

    // A second conversation from the same address reuses the contact.
    send(app.smtp_addr, URP, "nuova-2@esempio.it", "Altro", &[]).await;
    let second = inbound(app.store(), "nuova-2@esempio.it").await;
    let detail = conversation(app.store(), second.conversation_id.unwrap()).await;
    assert_eq!(detail.conversation.queue_id, "urp");
    assert_eq!(detail.conversation.contact_id, Some(contact));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_our_acknowledgement_threads_into_the_same_conversation_without_a_new_acknowledgement()
 {
    let app = spawn_mail_app(None, &[]).await;
    send(app.smtp_addr, TRIBUTI, "filo-1@esempio.it", "IMU", &[]).await;
    let first = inbound(app.store(), "filo-1@esempio.it").await;
    let conversation_id = first.conversation_id.unwrap();
    let ack = outbox(app.store(), conversation_id).await.remove(0);

    // The citizen answers our acknowledgement; the subject lost the token.
    let in_reply_to = format!("In-Reply-To: <{}>", ack.message_id);
    let references = format!("References: <filo-1@esempio.it> <{}>", ack.message_id);
    send(
        app.smtp_addr,
        URP,
        "filo-2@esempio.it",
        "Re: IMU",
        &["--add-header", &in_reply_to, "--add-header", &references],
    )
    .await;
    let reply = inbound(app.store(), "filo-2@esempio.it").await;
    assert_eq!(reply.conversation_id, Some(conversation_id));
    let detail = conversation(app.store(), conversation_id).await;
    assert_eq!(detail.messages.len(), 2);
    assert_eq!(
        detail.conversation.queue_id, "tributi",
        "stays where it was"
    );
    assert_eq!(outbox(app.store(), conversation_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_token_in_the_subject_threads_a_mail_without_headers() {
    let app = spawn_mail_app(None, &[]).await;
    send(app.smtp_addr, URP, "token-1@esempio.it", "ZTL", &[]).await;
    let first = inbound(app.store(), "token-1@esempio.it").await;
    let conversation_id = first.conversation_id.unwrap();
    let reference = conversation(app.store(), conversation_id)
        .await
        .conversation
        .reference;
    let subject = format!("I: [{reference}] ZTL, altre domande");
    send(app.smtp_addr, URP, "token-2@esempio.it", &subject, &[]).await;
    assert_eq!(
        inbound(app.store(), "token-2@esempio.it")
            .await
            .conversation_id,
        Some(conversation_id)
    );
    assert_eq!(
        conversation(app.store(), conversation_id)
            .await
            .messages
            .len(),
        2
    );
    // An unknown token opens a new conversation.
    send(
        app.smtp_addr,
        URP,
        "token-3@esempio.it",
        "[URP-1999-000001] vecchia",
        &[],
    )
    .await;
    let other = inbound(app.store(), "token-3@esempio.it").await;
    assert_ne!(other.conversation_id, Some(conversation_id));
    assert!(other.conversation_id.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_reply_is_stored_and_never_answered() {
    let app = spawn_mail_app(None, &[]).await;
    // An out-of-office answering nothing of ours: kept, no conversation,
    // so nothing to answer and no work for an operator.
    send(
        app.smtp_addr,
        URP,
        "ferie-1@esempio.it",
        "Fuori ufficio",
        &["--add-header", "Auto-Submitted: auto-replied"],
    )
    .await;
    let noise = inbound(app.store(), "ferie-1@esempio.it").await;
    assert_eq!(noise.noise.as_deref(), Some("auto_submitted"));
    assert_eq!(noise.conversation_id, None);
    assert!(noise.processed_at.is_some());

    // An out-of-office answering our acknowledgement joins the
    // conversation, and is not acknowledged (RFC 3834 §2).
    send(
        app.smtp_addr,
        URP,
        "ferie-2@esempio.it",
        "Passo carrabile",
        &[],
    )
    .await;
    let conversation_id = inbound(app.store(), "ferie-2@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let ack = outbox(app.store(), conversation_id).await.remove(0);
    let in_reply_to = format!("In-Reply-To: <{}>", ack.message_id);
    send(
        app.smtp_addr,
        URP,
        "ferie-3@esempio.it",
        "Risposta automatica: Passo carrabile",
        &[
            "--add-header",
            "Auto-Submitted: auto-replied",
            "--add-header",
            &in_reply_to,
        ],
    )
    .await;
    let auto = inbound(app.store(), "ferie-3@esempio.it").await;
    assert_eq!(auto.conversation_id, Some(conversation_id));
    assert_eq!(auto.noise.as_deref(), Some("auto_submitted"));
    assert_eq!(outbox(app.store(), conversation_id).await.len(), 1);

    // A bounce (null sender) opens nothing either.
    let (ok, transcript) = swaks(
        app.smtp_addr,
        &[
            "--from",
            "<>",
            "--to",
            URP,
            "--header",
            "Message-Id: <bounce-1@esempio.it>",
            "--header",
            "From: MAILER-DAEMON@esempio.it",
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    let bounce = inbound(app.store(), "bounce-1@esempio.it").await;
    assert_eq!(bounce.mail_from, "");
    assert_eq!(bounce.noise.as_deref(), Some("null_sender"));
    assert_eq!(bounce.conversation_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_configured_the_door_offers_starttls_and_the_mail_is_recorded_as_tls() {
    let dir = tempfile::tempdir().unwrap();
    test_ca_and_certificate(dir.path());
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let app = spawn_mail_app(
        None,
        &[
            ("email.tls_cert", json!(cert)),
            ("email.tls_key", json!(key)),
        ],
    )
    .await;
    let (ok, transcript) = swaks(
        app.smtp_addr,
        &[
            "--tls",
            "--from",
            CITIZEN,
            "--to",
            URP,
            "--header",
            "Message-Id: <tls-1@esempio.it>",
        ],
    )
    .await;
    assert!(
        ok,
        "{transcript}\n(swaks needs the Debian package `libnet-ssleay-perl` for --tls)"
    );
    assert!(transcript.contains("STARTTLS"), "{transcript}");
    assert!(transcript.contains("<~  250 2.0.0"), "{transcript}");
    let mail = inbound(app.store(), "tls-1@esempio.it").await;
    assert!(mail.tls);
    assert!(String::from_utf8_lossy(&mail.raw).contains("with ESMTPS id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_recipients_get_550_and_oversize_mail_552() {
    let app = spawn_mail_app(None, &[("email.max_message_bytes", json!(20_000))]).await;
    let (ok, transcript) = swaks(
        app.smtp_addr,
        &["--from", CITIZEN, "--to", "chiunque@altrove.example"],
    )
    .await;
    assert!(!ok);
    assert!(transcript.contains("<** 550 5.1.1"), "{transcript}");

    let body = "x".repeat(30_000);
    let (ok, transcript) = swaks(
        app.smtp_addr,
        &[
            "--from",
            CITIZEN,
            "--to",
            URP,
            "--header",
            "Message-Id: <grande@esempio.it>",
            "--body",
            &body,
        ],
    )
    .await;
    assert!(!ok);
    assert!(transcript.contains("<** 552 5.3.4"), "{transcript}");
    assert!(
        app.store()
            .inbound_mail_by_message_id("grande@esempio.it")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_its_hourly_limit_gets_451_4_7_1_at_mail_from_and_nothing_is_stored() {
    let app = spawn_mail_app(None, &[("email.per_sender_per_hour", json!(2))]).await;
    send(app.smtp_addr, URP, "limite-1@esempio.it", "uno", &[]).await;
    send(app.smtp_addr, URP, "limite-2@esempio.it", "due", &[]).await;
    let (ok, transcript) = swaks(
        app.smtp_addr,
        &[
            "--from",
            CITIZEN,
            "--to",
            URP,
            "--header",
            "Message-Id: <limite-3@esempio.it>",
        ],
    )
    .await;
    assert!(!ok);
    // Refused at MAIL FROM with a temporary policy code (RFC 3463 4.7.1),
    // so the sender's server keeps the message and retries; swaks never
    // reached RCPT or DATA.
    let mail_from = transcript
        .find(&format!(" -> MAIL FROM:<{CITIZEN}>"))
        .unwrap_or_else(|| panic!("{transcript}"));
    assert!(
        transcript[mail_from..]
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("<** 451 4.7.1")),
        "{transcript}"
    );
    assert!(!transcript.contains("-> RCPT TO"), "{transcript}");
    assert!(!transcript.contains("-> DATA"), "{transcript}");
    assert!(
        app.store()
            .inbound_mail_by_message_id("limite-3@esempio.it")
            .await
            .unwrap()
            .is_empty()
    );
    // Another sender is not affected.
    let (ok, transcript) = swaks(app.smtp_addr, &["--from", "altra@esempio.it", "--to", URP]).await;
    assert!(ok, "{transcript}");
    // Bounces (null sender) are counted by the client's address.
    for n in 0..3 {
        let (ok, transcript) = swaks(app.smtp_addr, &["--from", "<>", "--to", URP]).await;
        assert_eq!(ok, n < 2, "{n}: {transcript}");
        if n == 2 {
            assert!(transcript.contains("<** 451 4.7.1"), "{transcript}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delivery_of_the_same_message_is_stored_once() {
    let app = spawn_mail_app(None, &[]).await;
    send(app.smtp_addr, URP, "doppio@esempio.it", "Doppio", &[]).await;
    // The sender did not see our 250 and sends again: 250 again, one copy.
    send(app.smtp_addr, URP, "doppio@esempio.it", "Doppio", &[]).await;
    let mail = inbound(app.store(), "doppio@esempio.it").await;
    let detail = conversation(app.store(), mail.conversation_id.unwrap()).await;
    assert_eq!(detail.messages.len(), 1);
    assert_eq!(outbox(app.store(), detail.conversation.id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_stored_but_not_processed_before_a_crash_becomes_a_conversation_at_the_next_start() {
    let app = spawn_mail_app(None, &[]).await;
    // What a crash right after the commit (and the 250) leaves behind.
    let raw = b"From: Anna <anna@esempio.it>\r\nTo: urp@comune.monteverde.it\r\nSubject: Residenza\r\nMessage-ID: <crash-1@esempio.it>\r\n\r\nVorrei cambiare residenza.\r\n";
    app.store()
        .insert_inbound_mail(&NewInboundMail {
            envelope_id: "test",
            mail_from: "anna@esempio.it",
            recipients: "[\"urp@comune.monteverde.it\"]",
            mailbox: URP,
            queue_id: "urp",
            helo: "mx.esempio.it",
            peer: "127.0.0.1:1",
            tls: false,
            message_id: Some("crash-1@esempio.it"),
            from_address: Some("anna@esempio.it"),
            from_name: Some("Anna"),
            subject: "Residenza",
            noise: None,
            malformed: false,
            raw,
            received_at: ccu::now_ms(),
        })
        .await
        .unwrap();
    let app = app.restart().await;
    let conversation_id = poll_until("the stored mail to be processed", || async {
        inbound(app.store(), "crash-1@esempio.it")
            .await
            .processed_at
            .and(
                inbound(app.store(), "crash-1@esempio.it")
                    .await
                    .conversation_id,
            )
    })
    .await;
    let detail = conversation(app.store(), conversation_id).await;
    assert!(
        detail.messages[0]
            .body
            .contains("Vorrei cambiare residenza.")
    );
    assert_eq!(outbox(app.store(), conversation_id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mails_delivered_at_once_over_many_connections_each_become_one_conversation() {
    let app = spawn_mail_app(None, &[]).await;
    // Twelve sessions at once: the writer commits them in shared
    // transactions; each mail must still get its own conversation, message
    // and acknowledgement, and references must not collide.
    let sends = (0..12).map(|i| {
        let addr = app.smtp_addr;
        tokio::spawn(async move {
            let id = format!("insieme-{i}@esempio.it");
            let subject = format!("Domanda {i}");
            send(addr, URP, &id, &subject, &[]).await;
        })
    });
    for send in sends.collect::<Vec<_>>() {
        send.await.unwrap();
    }
    let mut conversations = std::collections::BTreeSet::new();
    let mut references = std::collections::BTreeSet::new();
    for i in 0..12 {
        let mail = inbound(app.store(), &format!("insieme-{i}@esempio.it")).await;
        assert!(mail.processed_at.is_some());
        let detail = conversation(app.store(), mail.conversation_id.unwrap()).await;
        assert_eq!(detail.conversation.subject, Some(format!("Domanda {i}")));
        assert_eq!(detail.messages.len(), 1);
        assert_eq!(detail.events[0].kind, "queued");
        assert_eq!(outbox(app.store(), detail.conversation.id).await.len(), 1);
        conversations.insert(detail.conversation.id);
        references.insert(detail.conversation.reference);
    }
    assert_eq!((conversations.len(), references.len()), (12, 12));
}

/// A mail for the batch writer, as the SMTP door would build it.
fn job(message_id: &str, target: InboundTarget) -> InboundJob {
    let raw = format!(
        "From: anna@esempio.it\r\nSubject: Prova\r\nMessage-ID: <{message_id}>\r\n\r\nTesto.\r\n"
    );
    InboundJob {
        raw: InboundRaw::New(Box::new(InboundRecord {
            envelope_id: "test".into(),
            mail_from: "anna@esempio.it".into(),
            recipients: "[\"urp@comune.monteverde.it\"]".into(),
            mailbox: URP.into(),
            queue_id: "urp".into(),
            helo: "mx.esempio.it".into(),
            peer: "127.0.0.1:1".into(),
            tls: false,
            message_id: Some(message_id.into()),
            from_address: Some("anna@esempio.it".into()),
            from_name: None,
            subject: "Prova".into(),
            noise: None,
            malformed: false,
            raw: raw.into_bytes(),
            received_at: ccu::now_ms(),
        })),
        target,
        text: "Testo.".into(),
        attachments: Vec::new(),
        acknowledgement: None,
        now: ccu::now_ms(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_whose_processing_fails_in_a_batch_is_kept_raw_and_its_neighbours_are_processed() {
    let app = spawn_mail_app(None, &[]).await;
    let good = app.conversation("urp").await;
    // The second mail threads into a conversation that does not exist: its
    // message violates a foreign key, inside the shared transaction.
    let jobs = [
        job(
            "batch-ok@esempio.it",
            InboundTarget::Thread {
                conversation_id: good.id,
                reopen: false,
            },
        ),
        job(
            "batch-bad@esempio.it",
            InboundTarget::Thread {
                conversation_id: i64::MAX,
                reopen: false,
            },
        ),
    ];
    let results = app
        .store()
        .write_inbound_batch(&jobs, "comune.monteverde.it")
        .await
        .unwrap();
    let ok = results[0].as_ref().unwrap();
    assert!(ok.processed && ok.message_id.is_some());
    let bad = results[1].as_ref().unwrap();
    assert!(!bad.processed, "{bad:?}");
    // Both are durable; the bad one waits for the recovery pass.
    assert!(
        inbound(app.store(), "batch-ok@esempio.it")
            .await
            .processed_at
            .is_some()
    );
    let kept = inbound(app.store(), "batch-bad@esempio.it").await;
    assert_eq!((kept.processed_at, kept.conversation_id), (None, None));
    assert_eq!(conversation(app.store(), good.id).await.messages.len(), 1);
    let pending = app.store().unprocessed_inbound_mail(10).await.unwrap();
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), [kept.id]);
    // Written again (a retried delivery), the stored row is found: no copy.
    let again = app
        .store()
        .write_inbound_batch(&jobs[..1], "comune.monteverde.it")
        .await
        .unwrap();
    let again = again[0].as_ref().unwrap();
    assert!(again.duplicate && again.processed);
    assert_eq!(conversation(app.store(), good.id).await.messages.len(), 1);
}

// ---- outbound, against a real SMTP server ----

struct Aiosmtpd {
    _child: tokio::process::Child,
    stdout: tokio::io::Lines<AsyncBufReader<tokio::process::ChildStdout>>,
}

impl Aiosmtpd {
    /// Starts aiosmtpd (Debian `python3-aiosmtpd`) and waits until it listens.
    async fn start(addr: SocketAddr) -> Self {
        Self::spawn(&["-u", "-m", "aiosmtpd", "-n", "-d", "-l", &addr.to_string()]).await
    }

    /// A relay that requires STARTTLS and then AUTH as `user`/`password`
    /// (`tests/relay_tls_auth.py`, on aiosmtpd), with the certificate of
    /// [`test_ca_and_certificate`] in `dir`.
    async fn start_tls_auth(addr: SocketAddr, dir: &Path, user: &str, password: &str) -> Self {
        let script = repo_path("tests/relay_tls_auth.py");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let port = addr.port().to_string();
        Self::spawn(&[
            "-u",
            script.to_str().unwrap(),
            "127.0.0.1",
            &port,
            cert.to_str().unwrap(),
            key.to_str().unwrap(),
            user,
            password,
        ])
        .await
    }

    async fn spawn(args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(PYTHON)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON} ({e}): install the Debian package `python3-aiosmtpd`")
            });
        let mut stderr = AsyncBufReader::new(child.stderr.take().unwrap()).lines();
        let listening = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(line) = stderr.next_line().await.unwrap() {
                if line.contains("Server is listening") {
                    return true;
                }
                if line.contains("No module named aiosmtpd") {
                    panic!("aiosmtpd missing: install the Debian package `python3-aiosmtpd`");
                }
            }
            false
        })
        .await
        .expect("aiosmtpd did not start within 15 s");
        assert!(listening, "aiosmtpd exited: install `python3-aiosmtpd`");
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let stdout = AsyncBufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            stdout,
        }
    }

    /// The next message the debugging handler prints.
    async fn next_message(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), async {
            let mut message = String::new();
            let mut inside = false;
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if line.contains("MESSAGE FOLLOWS") {
                    inside = true;
                } else if line.contains("END MESSAGE") {
                    return message;
                } else if inside {
                    message.push_str(&line);
                    message.push_str("\r\n");
                }
            }
            panic!("aiosmtpd closed its output")
        })
        .await
        .expect("no message reached aiosmtpd within 20 s")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acknowledgement_reaches_the_relay_with_threading_and_loop_headers() {
    let relay_addr = free_port();
    let mut relay = Aiosmtpd::start(relay_addr).await;
    let app = spawn_mail_app(Some(relay_addr), &[]).await;
    send(
        app.smtp_addr,
        TRIBUTI,
        "consegna-1@esempio.it",
        "Rimborso TARI",
        &["--add-header", "References: <prima@esempio.it>"],
    )
    .await;
    let conversation_id = inbound(app.store(), "consegna-1@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let reference = conversation(app.store(), conversation_id)
        .await
        .conversation
        .reference;

    // The worker was woken by the enqueue and delivered it.
    let arrived = relay.next_message().await;
    let parsed = parse_inbound(arrived.as_bytes(), &ParseLimits::default());
    let ack = outbox(app.store(), conversation_id).await.remove(0);
    assert_eq!(
        parsed.message_id.as_deref(),
        Some(ack.message_id.as_str()),
        "{arrived}"
    );
    assert_eq!(parsed.in_reply_to, ["consegna-1@esempio.it"]);
    assert_eq!(
        parsed.references,
        ["prima@esempio.it", "consegna-1@esempio.it"]
    );
    assert_eq!(parsed.subject, format!("[{reference}] Re: Rimborso TARI"));
    assert_eq!(parsed.noise.auto_submitted.as_deref(), Some("auto-replied"));
    assert_eq!(parsed.noise.x_loop, ["urp@comune.monteverde.it"]);
    assert_eq!(
        parsed.from.as_ref().unwrap().address.as_str(),
        "urp@comune.monteverde.it"
    );
    assert!(parsed.text.contains(&reference));

    let sent = poll_until("the acknowledgement to be marked sent", || async {
        let mail = app.store().outbox_mail(ack.id).await.unwrap().unwrap();
        (mail.state == "sent").then_some(mail)
    })
    .await;
    assert_eq!(sent.attempts, 1);
    let attempts = app.store().outbox_attempts(ack.id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("sent"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_relay_down_then_up_a_mail_is_delivered_exactly_once_and_every_attempt_is_recorded()
 {
    let relay_addr = free_port();
    let app = spawn_mail_app(Some(relay_addr), &[]).await;
    send(app.smtp_addr, URP, "giu-1@esempio.it", "Relay giù", &[]).await;
    let conversation_id = inbound(app.store(), "giu-1@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let ack_id = outbox(app.store(), conversation_id).await[0].id;

    // The worker tries at once, finds the relay down and schedules a retry.
    let waiting = poll_until("the first failed attempt", || async {
        let mail = app.store().outbox_mail(ack_id).await.unwrap().unwrap();
        (mail.attempts == 1 && mail.state == "pending").then_some(mail)
    })
    .await;
    let now = ccu::now_ms();
    assert!(
        waiting.next_attempt_at > now,
        "retried later, not in a busy loop"
    );
    assert!(waiting.last_error.is_some());

    // Up again. Drive the worker step with the clock past the retry time.
    let mut relay = Aiosmtpd::start(relay_addr).await;
    let channel = EmailChannel::new(&app.state).unwrap();
    let later = waiting.next_attempt_at + 1;
    assert_eq!(
        channel.try_send_next(later).await.unwrap(),
        OutboxStep::Sent { outbox_id: ack_id }
    );
    let arrived = relay.next_message().await;
    assert!(
        arrived.contains(&format!("ccu.{ack_id}@comune.monteverde.it")),
        "{arrived}"
    );
    assert_eq!(
        channel.try_send_next(later + 86_400_000).await.unwrap(),
        OutboxStep::Idle
    );

    let attempts = app.store().outbox_attempts(ack_id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(outcomes, [Some("transient"), Some("sent")]);
    assert!(attempts[0].detail.is_some());

    // After a restart nothing is sent again.
    let app = app.restart().await;
    let channel = EmailChannel::new(&app.state).unwrap();
    assert_eq!(
        channel.try_send_next(later + 86_400_000).await.unwrap(),
        OutboxStep::Idle
    );
    let mail = app.store().outbox_mail(ack_id).await.unwrap().unwrap();
    assert_eq!((mail.state.as_str(), mail.attempts), ("sent", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cut_by_a_crash_is_tried_again_after_its_lease_with_the_same_message_id_and_recorded_as_interrupted()
 {
    let relay_addr = free_port();
    let app = spawn_mail_app(Some(relay_addr), &[]).await;
    send(
        app.smtp_addr,
        URP,
        "lease-1@esempio.it",
        "Crash in invio",
        &[],
    )
    .await;
    let conversation_id = inbound(app.store(), "lease-1@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let ack_id = outbox(app.store(), conversation_id).await[0].id;
    poll_until("the first failed attempt", || async {
        let mail = app.store().outbox_mail(ack_id).await.unwrap().unwrap();
        (mail.attempts == 1 && mail.state == "pending").then_some(())
    })
    .await;

    // A worker claims the mail and dies before it hears back from the
    // relay (the claim is committed, the outcome never is).
    let far = ccu::now_ms() + 10 * 86_400_000;
    let lease_until = far + 60_000;
    let claimed = app
        .store()
        .claim_outbox_mail(far, lease_until)
        .await
        .unwrap()
        .expect("the mail is due");
    assert_eq!(claimed.id, ack_id);
    let app = app.restart().await;
    let mut relay = Aiosmtpd::start(relay_addr).await;
    let channel = EmailChannel::new(&app.state).unwrap();

    // While the lease runs nobody else takes it; after it, once.
    assert_eq!(
        channel.try_send_next(far + 1).await.unwrap(),
        OutboxStep::Idle
    );
    assert_eq!(
        channel.try_send_next(lease_until).await.unwrap(),
        OutboxStep::Sent { outbox_id: ack_id }
    );
    let arrived = relay.next_message().await;
    // The same Message-ID as the interrupted attempt: if that one did
    // reach the citizen, their client shows one message.
    assert!(
        arrived.contains(&format!("<{}>", claimed.message_id)),
        "{arrived}"
    );
    assert_eq!(
        channel
            .try_send_next(lease_until + 86_400_000)
            .await
            .unwrap(),
        OutboxStep::Idle
    );
    let attempts = app.store().outbox_attempts(ack_id).await.unwrap();
    let outcomes: Vec<_> = attempts.iter().map(|a| a.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        [Some("transient"), Some("interrupted"), Some("sent")]
    );
    let mail = app.store().outbox_mail(ack_id).await.unwrap().unwrap();
    assert_eq!((mail.state.as_str(), mail.attempts), ("sent", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_delivers_over_starttls_with_credentials_and_refuses_a_relay_certificate_it_cannot_verify()
 {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca_and_certificate(dir.path());
    let relay_addr = free_port();
    let mut relay =
        Aiosmtpd::start_tls_auth(relay_addr, dir.path(), "ccu-relay", "segreta-relay").await;
    let settings = |trust: bool| {
        let mut relay = json!({
            "host": "127.0.0.1", "port": relay_addr.port(), "starttls": true,
            "username": "ccu-relay", "password": "segreta-relay", "timeout_seconds": 10,
        });
        if trust {
            relay["ca_file"] = json!(ca);
        }
        vec![("email.relay", relay)]
    };

    // Without the city's CA the relay's certificate is unknown: nothing is
    // sent (the credentials never leave), the attempt is transient.
    let app = spawn_app_with(&settings(false)).await;
    send(
        app.smtp_addr,
        URP,
        "relay-tls-1@esempio.it",
        "Relay con TLS",
        &[],
    )
    .await;
    let conversation_id = inbound(app.store(), "relay-tls-1@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let ack_id = outbox(app.store(), conversation_id).await[0].id;
    let refused = poll_until("the attempt against the unknown certificate", || async {
        let mail = app.store().outbox_mail(ack_id).await.unwrap().unwrap();
        (mail.attempts == 1 && mail.state == "pending").then_some(mail)
    })
    .await;
    let error = refused.last_error.unwrap_or_default();
    assert!(
        error.to_lowercase().contains("certificate") || error.to_lowercase().contains("issuer"),
        "{error}"
    );

    // Trusting it: STARTTLS, AUTH, delivered once.
    let app = spawn_app_with(&settings(true)).await;
    send(
        app.smtp_addr,
        URP,
        "relay-tls-2@esempio.it",
        "Relay con TLS",
        &[],
    )
    .await;
    let arrived = relay.next_message().await;
    assert!(arrived.contains("X-Test-Login: ccu-relay"), "{arrived}");
    assert!(arrived.contains("X-Test-Tls: True"), "{arrived}");
    assert!(
        arrived.contains("In-Reply-To: <relay-tls-2@esempio.it>"),
        "{arrived}"
    );
    let conversation_id = inbound(app.store(), "relay-tls-2@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let ack_id = outbox(app.store(), conversation_id).await[0].id;
    poll_until("the acknowledgement marked sent", || async {
        let mail = app.store().outbox_mail(ack_id).await.unwrap().unwrap();
        (mail.state == "sent" && mail.attempts == 1).then_some(())
    })
    .await;
}

/// A relay that refuses every recipient with 550 5.1.1: the SMTP door of
/// the channel crate with no mailboxes.
struct RefusingRelay;

impl ccu_email::smtp::RecipientRouter for RefusingRelay {
    fn route_recipient(
        &self,
        _: &ccu_email::address::EmailAddress,
    ) -> Option<ccu_email::smtp::MailboxRoute> {
        None
    }
}

impl ccu_email::smtp::MailSink for RefusingRelay {
    async fn accept(
        &self,
        _: ccu_email::smtp::Envelope,
        _: Vec<u8>,
    ) -> Result<ccu_email::smtp::AcceptedId, ccu_email::smtp::SinkError> {
        Err(ccu_email::smtp::SinkError::ShuttingDown)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_the_relay_refuses_permanently_is_failed_and_not_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    tokio::spawn(ccu_email::smtp::serve(
        listener,
        ccu_email::smtp::SmtpConfig::new("relay.example"),
        std::sync::Arc::new(RefusingRelay),
        stop,
    ));
    let app = spawn_mail_app(Some(relay_addr), &[]).await;
    send(
        app.smtp_addr,
        URP,
        "rifiuto-1@esempio.it",
        "Indirizzo sbagliato",
        &[],
    )
    .await;
    let conversation_id = inbound(app.store(), "rifiuto-1@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let ack_id = outbox(app.store(), conversation_id).await[0].id;
    let failed = poll_until("the refused mail to be failed", || async {
        let m = app.store().outbox_mail(ack_id).await.unwrap().unwrap();
        (m.state == "failed").then_some(m)
    })
    .await;
    assert_eq!(failed.attempts, 1);
    assert!(
        failed
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("550"),
        "{failed:?}"
    );
    let attempts = app.store().outbox_attempts(ack_id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome.as_deref(), Some("permanent"));
    let channel = EmailChannel::new(&app.state).unwrap();
    assert_eq!(
        channel
            .try_send_next(ccu::now_ms() + 86_400_000)
            .await
            .unwrap(),
        OutboxStep::Idle
    );
}

// ---- operators answer from the console ----

/// A console on `/ws/operator`, for the reply tests.
struct Console {
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Console {
    /// An operator of the city with the URP skill, available.
    async fn available(app: &TestApp, name: &str) -> Console {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let (_, token) = app.user(name, "operator", "comune").await;
        let mut request = format!("ws://{}/ws/operator", app.addr)
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut console = Console { socket };
        console.expect("hello").await;
        console
            .send(json!({"type": "presence", "presence": "available"}))
            .await;
        console
    }

    async fn send(&mut self, value: Value) {
        use futures_util::SinkExt;
        self.socket
            .send(tokio_tungstenite::tungstenite::Message::Text(
                value.to_string().into(),
            ))
            .await
            .unwrap();
    }

    /// The next frame of `kind`, skipping others (20 s at most).
    async fn expect(&mut self, kind: &str) -> Value {
        use futures_util::StreamExt;
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match self.socket.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) => {
                        let value: Value = serde_json::from_str(&text).unwrap();
                        if value["type"] == kind {
                            return value;
                        }
                    }
                    Some(Ok(_)) => continue,
                    other => panic!("console closed waiting for {kind}: {other:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {kind} frame within 20 s"))
    }

    /// Accepts the next offer: the conversation id.
    async fn take_next(&mut self) -> i64 {
        let offer = self.expect("offer").await;
        self.send(json!({"type": "accept", "offer": offer["offer"]}))
            .await;
        let assigned = self.expect("assigned").await;
        assigned["conversation"]["conversation"]["id"]
            .as_i64()
            .unwrap()
    }
}

/// URP open all day, no wrap-up, and the relay on `relay`.
async fn reply_app(relay: SocketAddr) -> TestApp {
    spawn_mail_app(
        Some(relay),
        &[
            ("queues.urp.schedule", json!("h24")),
            ("queues.urp.holidays", json!(false)),
            ("queues.urp.wrap_up_seconds", json!(0)),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_reply_from_the_console_reaches_the_citizen_by_mail_and_the_answer_threads_back()
 {
    let relay_addr = free_port();
    let mut relay = Aiosmtpd::start(relay_addr).await;
    let app = reply_app(relay_addr).await;
    let mut console = Console::available(&app, "giulia.neri").await;
    send(
        app.smtp_addr,
        URP,
        "residenza-1@esempio.it",
        "Certificato di residenza",
        &[],
    )
    .await;
    let ack = relay.next_message().await;
    assert!(ack.contains("Auto-Submitted: auto-replied"), "{ack}");
    let conversation_id = console.take_next().await;
    let detail = conversation(app.store(), conversation_id).await;
    let reference = detail.conversation.reference.clone();
    let ack_id = outbox(app.store(), conversation_id).await[0]
        .message_id
        .clone();

    let text = "Buongiorno Mario,\nil certificato è pronto allo sportello.";
    console
        .send(json!({"type": "message", "conversation_id": conversation_id, "client_id": "r-1", "text": text}))
        .await;
    let acked = console.expect("ack").await;
    // The reply is a message of the conversation and a mail in the outbox,
    // both there when the console hears "ack".
    let message_id = acked["id"].as_i64().unwrap();
    let detail = conversation(app.store(), conversation_id).await;
    let stored = detail.messages.iter().find(|m| m.id == message_id).unwrap();
    assert_eq!(
        (stored.direction.as_str(), stored.body.as_str()),
        ("outbound", text)
    );
    let replies: Vec<OutboxMail> = outbox(app.store(), conversation_id)
        .await
        .into_iter()
        .filter(|m| m.kind == "reply")
        .collect();
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert!(!reply.auto);

    let arrived = relay.next_message().await;
    let parsed = parse_inbound(arrived.as_bytes(), &ParseLimits::default());
    assert_eq!(
        parsed.message_id.as_deref(),
        Some(reply.message_id.as_str())
    );
    assert_eq!(
        parsed.subject,
        format!("Re: Certificato di residenza [{reference}]")
    );
    assert_eq!(parsed.in_reply_to, ["residenza-1@esempio.it"]);
    assert_eq!(
        parsed.references,
        [ack_id.clone(), "residenza-1@esempio.it".into()]
    );
    assert_eq!(
        parsed.noise.auto_submitted, None,
        "a person wrote it: {arrived}"
    );
    assert_eq!(
        parsed.from.as_ref().unwrap().address.as_str(),
        "urp@comune.monteverde.it"
    );
    assert!(
        arrived.contains("To: mario.rossi@esempio.it")
            || arrived.contains("<mario.rossi@esempio.it>"),
        "{arrived}"
    );
    assert!(
        parsed
            .text
            .contains("il certificato è pronto allo sportello."),
        "{}",
        parsed.text
    );
    assert!(
        parsed
            .text
            .contains("> Buongiorno, quando scade la rata della TARI?"),
        "{}",
        parsed.text
    );
    assert!(parsed.text.contains(&reference));

    // A retried frame (same client id) stores and sends nothing more.
    console
        .send(json!({"type": "message", "conversation_id": conversation_id, "client_id": "r-1", "text": text}))
        .await;
    assert_eq!(console.expect("ack").await["id"], message_id);
    assert_eq!(
        outbox(app.store(), conversation_id)
            .await
            .iter()
            .filter(|m| m.kind == "reply")
            .count(),
        1
    );

    // The citizen answers our reply; the subject lost the reference.
    let in_reply_to = format!("In-Reply-To: <{}>", reply.message_id);
    send(
        app.smtp_addr,
        URP,
        "residenza-2@esempio.it",
        "Re: Certificato di residenza",
        &["--add-header", &in_reply_to],
    )
    .await;
    assert_eq!(
        inbound(app.store(), "residenza-2@esempio.it")
            .await
            .conversation_id,
        Some(conversation_id)
    );
    let seen = console.expect("message").await;
    assert_eq!(seen["conversation_id"], conversation_id);
    assert!(seen["text"].as_str().unwrap().contains("quando scade"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_web_form_request_goes_out_as_mail_to_the_address_of_the_form() {
    let relay_addr = free_port();
    let mut relay = Aiosmtpd::start(relay_addr).await;
    let app = reply_app(relay_addr).await;
    let mut console = Console::available(&app, "paolo.blu").await;
    let response = app
        .client
        .post(app.url("/api/v1/requests"))
        .json(&json!({
            "name": "Lucia Bianchi", "email": "lucia.bianchi@esempio.it", "topic": "urp",
            "subject": "Orari biblioteca", "text": "A che ora apre la biblioteca il sabato?",
            "privacy_consent": true,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let ack = relay.next_message().await;
    let ack = parse_inbound(ack.as_bytes(), &ParseLimits::default());
    let conversation_id = console.take_next().await;
    let reference = conversation(app.store(), conversation_id)
        .await
        .conversation
        .reference;
    console
        .send(json!({"type": "message", "conversation_id": conversation_id, "client_id": "w-1", "text": "Il sabato apre alle 9."}))
        .await;
    console.expect("ack").await;
    let arrived = relay.next_message().await;
    let parsed = parse_inbound(arrived.as_bytes(), &ParseLimits::default());
    assert_eq!(
        parsed.subject,
        format!("Re: Orari biblioteca [{reference}]")
    );
    // It answers our acknowledgement, so the citizen's client threads them.
    assert_eq!(parsed.in_reply_to, [ack.message_id.unwrap()]);
    assert!(arrived.contains("lucia.bianchi@esempio.it"), "{arrived}");
    assert_eq!(parsed.noise.auto_submitted, None);
    assert!(parsed.text.contains("Il sabato apre alle 9."));
    assert!(
        parsed
            .text
            .contains("> A che ora apre la biblioteca il sabato?"),
        "{}",
        parsed.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_writing_again_to_a_closed_conversation_is_queued_again() {
    let app = reply_app(free_port()).await;
    let mut console = Console::available(&app, "sara.gialli").await;
    send(app.smtp_addr, URP, "riapri-1@esempio.it", "Passaporto", &[]).await;
    let conversation_id = console.take_next().await;
    console
        .send(json!({"type": "end", "conversation_id": conversation_id}))
        .await;
    poll_until("the conversation to close", || async {
        (conversation(app.store(), conversation_id)
            .await
            .conversation
            .state
            == ccu::store::ConversationState::Closed)
            .then_some(())
    })
    .await;
    let ack = outbox(app.store(), conversation_id).await.remove(0);
    let in_reply_to = format!("In-Reply-To: <{}>", ack.message_id);
    send(
        app.smtp_addr,
        URP,
        "riapri-2@esempio.it",
        "Re: Passaporto",
        &["--add-header", &in_reply_to],
    )
    .await;
    // Routed again, not silently appended: the operator is offered it.
    assert_eq!(console.take_next().await, conversation_id);
    let detail = conversation(app.store(), conversation_id).await;
    assert_eq!(
        detail.conversation.state,
        ccu::store::ConversationState::Assigned
    );
    assert!(
        detail.events.iter().any(|e| e.kind == "reopened"),
        "{:?}",
        detail.events
    );
    assert_eq!(detail.messages.len(), 2);
    // No second acknowledgement for a conversation that already has one
    // (the survey of its first closing may be there too).
    let acknowledgements = outbox(app.store(), conversation_id)
        .await
        .into_iter()
        .filter(|m| m.kind == "acknowledgement")
        .count();
    assert_eq!(acknowledgements, 1);
}

// ---- IMAP polling, against a real dovecot ----

/// A dovecot IMAP server (Debian `dovecot-imapd`) on a loopback port, with
/// one user `citta` whose maildir the test fills. Run unprivileged when the
/// test is; as root, its processes drop to dovecot's own users.
struct Dovecot {
    _child: tokio::process::Child,
    port: u16,
    /// With [`Dovecot::start_tls`]: the implicit-TLS listener (993-style)
    /// and the PEM of the test CA that signed the server's certificate.
    tls: Option<(u16, std::path::PathBuf)>,
    maildir: std::path::PathBuf,
    owner: Option<(u32, u32)>,
    _dir: tempfile::TempDir,
}

impl Dovecot {
    async fn start() -> Dovecot {
        Self::start_with(false).await
    }

    /// Dovecot with `ssl = yes`: STARTTLS on the plain port and implicit
    /// TLS on a second one, with a certificate for 127.0.0.1 signed by a
    /// CA made for this test only (so the client's public roots do not
    /// trust it).
    async fn start_tls() -> Dovecot {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Dovecot {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (ssl, imaps_port, tls_files) = if tls {
            let ca = test_ca_and_certificate(root);
            let port = free_port().port();
            let r = root.display();
            (
                format!("ssl = yes\nssl_cert = <{r}/cert.pem\nssl_key = <{r}/key.pem\n"),
                port,
                Some((port, ca)),
            )
        } else {
            ("ssl = no\n".to_owned(), 0, None)
        };
        let id = |flag: &str| {
            let out = std::process::Command::new("id").arg(flag).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let is_root = id("-u") == "0";
        // Dovecot refuses to run logins or mail access as root.
        let (owner, uid, gid, login, internal, group) = if is_root {
            (
                Some((65534, 65534)),
                "65534".to_owned(),
                "65534".to_owned(),
                "dovenull".to_owned(),
                "dovecot".to_owned(),
                "dovecot".to_owned(),
            )
        } else {
            (None, id("-u"), id("-g"), id("-un"), id("-un"), id("-gn"))
        };
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let home = root.join("home");
        let maildir = home.join("Maildir");
        for sub in [
            "new",
            "cur",
            "tmp",
            ".Archivio/new",
            ".Archivio/cur",
            ".Archivio/tmp",
        ] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let port = free_port().port();
        std::fs::write(
            root.join("passwd"),
            format!(
                "citta:{{PLAIN}}segreta-imap:{uid}:{gid}::{}\n",
                home.display()
            ),
        )
        .unwrap();
        let conf = root.join("dovecot.conf");
        let r = root.display();
        std::fs::write(
            &conf,
            format!(
                "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {r}/run\nstate_dir = {r}/state\n\
                 instance_name = ccu-test-{port}\nlog_path = {r}/dovecot.log\n{ssl}\
                 disable_plaintext_auth = no\nauth_mechanisms = plain login\n\
                 mail_location = maildir:~/Maildir\nfirst_valid_uid = 0\n\
                 default_internal_user = {internal}\ndefault_internal_group = {group}\n\
                 default_login_user = {login}\n\
                 passdb {{\n  driver = passwd-file\n  args = {r}/passwd\n}}\n\
                 userdb {{\n  driver = passwd-file\n  args = {r}/passwd\n}}\n\
                 service imap-login {{\n  chroot =\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {imaps_port}\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n"
            ),
        )
        .unwrap();
        let server = Dovecot {
            _child: tokio::process::Command::new(
                // /usr/sbin is not on every PATH (a non-root shell's).
                if Path::new("/usr/sbin/dovecot").exists() {
                    "/usr/sbin/dovecot"
                } else {
                    "dovecot"
                },
            )
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run dovecot ({e}): install the Debian package `dovecot-imapd`")
            }),
            port,
            tls: tls_files,
            maildir,
            owner,
            _dir: dir,
        };
        server.chown(&home);
        for port in std::iter::once(port).chain(server.tls.as_ref().map(|(p, _)| *p)) {
            poll_until("dovecot to listen", || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            })
            .await;
        }
        server
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            for entry in walk(path) {
                std::os::unix::fs::chown(&entry, Some(uid), Some(gid)).unwrap();
            }
        }
    }

    /// Delivers a message into the inbox (a maildir file in `new/`).
    fn deliver(&self, name: &str, message: &str) {
        let path = self.maildir.join("new").join(name);
        std::fs::write(&path, message.replace('\n', "\r\n")).unwrap();
        self.chown(&path);
    }

    /// The maildir flags of the inbox's messages (`S` is \Seen), by file.
    fn inbox_flags(&self) -> Vec<String> {
        let mut flags: Vec<String> = ["new", "cur"]
            .iter()
            .flat_map(|sub| std::fs::read_dir(self.maildir.join(sub)).unwrap())
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.split_once(":2,")
                    .map(|(_, f)| f.to_owned())
                    .unwrap_or_default()
            })
            .collect();
        flags.sort();
        flags
    }

    fn archived(&self) -> usize {
        ["new", "cur"]
            .iter()
            .map(|sub| {
                std::fs::read_dir(self.maildir.join(".Archivio").join(sub))
                    .unwrap()
                    .count()
            })
            .sum()
    }

    fn settings(&self, move_to: Option<&str>) -> Vec<(&'static str, Value)> {
        let mut imap = json!({
            "host": "127.0.0.1", "port": self.port, "tls": "none", "username": "citta",
            "password": "segreta-imap", "address": TRIBUTI, "poll_interval_seconds": 3600,
            "timeout_seconds": 10,
        });
        if let Some(folder) = move_to {
            imap["move_to"] = json!(folder);
        }
        vec![("email.imap", imap)]
    }

    /// `[email.imap]` over TLS: `implicit` on the imaps port or `starttls`
    /// on the plain one; `trust` names the test CA in `ca_file`.
    fn tls_settings(&self, mode: &str, trust: bool) -> Vec<(&'static str, Value)> {
        let (imaps, ca) = self.tls.as_ref().expect("started with start_tls");
        let mut imap = json!({
            "host": "127.0.0.1", "tls": mode, "username": "citta",
            "password": "segreta-imap", "address": TRIBUTI, "poll_interval_seconds": 3600,
            "timeout_seconds": 10,
            "port": if mode == "implicit" { *imaps } else { self.port },
        });
        if trust {
            imap["ca_file"] = json!(ca);
        }
        vec![("email.imap", imap)]
    }
}

/// Runs openssl (Debian `openssl`), failing with the package to install.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install the Debian package `openssl`")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA (`ca.pem`) and a server certificate for 127.0.0.1 and
/// localhost signed by it (`cert.pem`, `key.pem`) in `dir`; returns the
/// CA's path. The leaf is a proper end-entity certificate (CA:FALSE,
/// serverAuth): webpki refuses a CA certificate presented as the server's.
fn test_ca_and_certificate(dir: &Path) -> std::path::PathBuf {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=ccu test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=localhost"];
    csr.extend(ec);
    csr.extend(["-keyout", "key.pem", "-out", "server.csr"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "cert.pem",
        ],
    );
    // Dovecot reads the key as root before it drops privileges; the test
    // user (or root) owns it.
    dir.join("ca.pem")
}

fn walk(path: &Path) -> Vec<std::path::PathBuf> {
    let mut all = vec![path.to_owned()];
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            all.extend(walk(&entry.unwrap().path()));
        }
    }
    all
}

const IMAP_MAIL: &str = "From: Carla Verdi <carla.verdi@esempio.it>\nTo: tributi@comune.monteverde.it\nSubject: Rimborso IMU\nMessage-ID: <imap-1@esempio.it>\n\nHo pagato due volte la rata di giugno.\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_polled_over_imap_becomes_a_conversation_and_is_flagged_only_after_it_is_stored() {
    let dovecot = Dovecot::start().await;
    dovecot.deliver("1.eml", IMAP_MAIL);
    // The poller runs at start.
    let app = spawn_mail_app(None, &dovecot.settings(None)).await;
    let mail = poll_until("the polled mail to be stored", || async {
        app.store()
            .inbound_mail_by_message_id("imap-1@esempio.it")
            .await
            .unwrap()
            .pop()
    })
    .await;
    assert_eq!(mail.queue_id, "tributi");
    assert_eq!(mail.mail_from, "carla.verdi@esempio.it");
    assert!(
        mail.envelope_id.starts_with("imap:"),
        "{}",
        mail.envelope_id
    );
    let detail = conversation(app.store(), mail.conversation_id.unwrap()).await;
    assert_eq!(detail.conversation.channel, ccu::config::Channel::Email);
    assert_eq!(detail.conversation.subject.as_deref(), Some("Rimborso IMU"));
    assert!(detail.messages[0].body.contains("due volte la rata"));
    assert_eq!(outbox(app.store(), detail.conversation.id).await.len(), 1);
    poll_until("the message to be flagged \\Seen on the server", || async {
        (dovecot.inbox_flags() == ["S"]).then_some(())
    })
    .await;

    // The same message again, unseen (as after a crash between our commit
    // and the flag): stored once, flagged.
    dovecot.deliver("2.eml", IMAP_MAIL);
    let channel = EmailChannel::new(&app.state).unwrap();
    let poll = channel.poll_imap().await.unwrap();
    assert_eq!((poll.fetched, poll.stored, poll.duplicates), (1, 0, 1));
    assert_eq!(dovecot.inbox_flags(), ["S", "S"]);
    inbound(app.store(), "imap-1@esempio.it").await;

    // A restarted server finds nothing new.
    let app = app.restart().await;
    let channel = EmailChannel::new(&app.state).unwrap();
    assert_eq!(channel.poll_imap().await.unwrap().fetched, 0);
    inbound(app.store(), "imap-1@esempio.it").await;
    assert_eq!(
        conversation(app.store(), detail.conversation.id)
            .await
            .messages
            .len(),
        1
    );
}

/// Polls once with `settings` and returns what the poll did (the poller
/// the server starts may have run first: then it reports a duplicate).
async fn poll_with(
    settings: Vec<(&'static str, Value)>,
) -> (
    TestApp,
    Result<ccu::email::ImapPoll, ccu::email::EmailError>,
) {
    let app = spawn_mail_app(None, &settings).await;
    let channel = EmailChannel::new(&app.state).unwrap();
    let poll = channel.poll_imap().await;
    (app, poll)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_polled_over_implicit_tls_and_over_starttls_is_stored_when_the_ca_is_trusted() {
    let dovecot = Dovecot::start_tls().await;
    for (n, mode) in ["implicit", "starttls"].iter().enumerate() {
        let message_id = format!("imap-tls-{mode}@esempio.it");
        dovecot.deliver(
            &format!("{n}.eml"),
            &IMAP_MAIL.replace("imap-1@esempio.it", &message_id),
        );
        let (app, poll) = poll_with(dovecot.tls_settings(mode, true)).await;
        let poll = poll.unwrap_or_else(|e| panic!("{mode}: {e}"));
        // This poll or the one the server ran at start took it.
        assert!(poll.fetched <= 1, "{mode}: {poll:?}");
        let mail = poll_until("the mail polled over TLS", || async {
            app.store()
                .inbound_mail_by_message_id(&message_id)
                .await
                .unwrap()
                .pop()
        })
        .await;
        assert!(mail.conversation_id.is_some(), "{mode}");
        assert!(mail.tls, "{mode}: the mail is recorded as fetched over TLS");
    }
    poll_until("both messages flagged \\Seen", || async {
        (dovecot.inbox_flags() == ["S", "S"]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imap_server_whose_certificate_is_from_an_unknown_ca_is_refused_and_nothing_is_fetched()
{
    let dovecot = Dovecot::start_tls().await;
    dovecot.deliver("1.eml", IMAP_MAIL);
    for mode in ["implicit", "starttls"] {
        let (app, poll) = poll_with(dovecot.tls_settings(mode, false)).await;
        let err = poll.expect_err(mode).to_string();
        assert!(
            err.contains("TLS") && err.to_lowercase().contains("issuer"),
            "{mode}: {err}"
        );
        assert!(
            app.store()
                .inbound_mail_by_message_id("imap-1@esempio.it")
                .await
                .unwrap()
                .is_empty(),
            "{mode}"
        );
    }
    // The password never went out and the message is still unseen.
    assert_eq!(dovecot.inbox_flags(), [""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_polled_over_imap_can_be_moved_to_a_folder_after_it_is_stored() {
    let dovecot = Dovecot::start().await;
    dovecot.deliver("1.eml", IMAP_MAIL);
    let app = spawn_mail_app(None, &dovecot.settings(Some("Archivio"))).await;
    poll_until("the message to be moved", || async {
        (dovecot.archived() == 1 && dovecot.inbox_flags().is_empty()).then_some(())
    })
    .await;
    let mail = inbound(app.store(), "imap-1@esempio.it").await;
    assert!(mail.processed_at.is_some() && mail.conversation_id.is_some());
}

// ---- the binary, killed after a 250 ----

/// The binary with its relay pointed at a port where nobody listens, so the
/// acknowledgement stays in the outbox.
fn start_binary(dir: &Path, database_url: &str) -> crate::process::Server {
    let relay = free_port().port().to_string();
    crate::process::start_with(dir, database_url, &[("CCU_EMAIL__RELAY__PORT", relay)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_answered_250_survives_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database_url(dir.path()).await;
    let mut server = start_binary(dir.path(), &url);
    send(
        server.smtp,
        TRIBUTI,
        "sigkill-1@esempio.it",
        "Prima del crash",
        &[],
    )
    .await;

    // SIGKILL right after the 250: no shutdown code runs.
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let _server = start_binary(dir.path(), &url);
    let store = Store::connect(&url).await.unwrap();
    let mail = inbound(&store, "sigkill-1@esempio.it").await;
    let detail = conversation(&store, mail.conversation_id.unwrap()).await;
    assert_eq!(detail.conversation.queue_id, "tributi");
    assert!(detail.messages[0].body.contains("quando scade"));
    assert_eq!(outbox(&store, detail.conversation.id).await.len(), 1);
    store.close().await;
}

#[test]
fn email_settings_are_validated_and_errors_name_the_key() {
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};
    let with = |key: &str, value: Value| {
        ccu::config::Settings::from_figment(
            Figment::new()
                .merge(Toml::file(repo_path("config/default.toml")))
                .merge(Serialized::global(key, value)),
        )
    };
    let err = with(
        "email.mailboxes",
        json!({ "x@comune.monteverde.it": "astrologia" }),
    )
    .unwrap_err();
    assert_eq!(err.key, "email.mailboxes.\"x@comune.monteverde.it\"");
    assert!(err.reason.contains("unknown queue"), "{err}");
    let err = with("email.from", json!("non un indirizzo")).unwrap_err();
    assert_eq!(err.key, "email.from");
    let err = with("email.relay.password", json!("segreta")).unwrap_err();
    assert_eq!(err.key, "email.relay.username");
    let err = with("email.relay.colour", json!("blu")).unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
    let err = with("email.tls_cert", json!("/etc/ccu/mx.pem")).unwrap_err();
    assert_eq!(err.key, "email.tls_key");
    let err = with("email.survey.subject", json!("due\nrighe")).unwrap_err();
    assert_eq!(err.key, "email.survey.subject");
    let err = with("email.survey.body", json!("  ")).unwrap_err();
    assert_eq!(err.key, "email.survey.body");
    let imap = json!({
        "host": "imap.esempio.it", "port": 993, "tls": "implicit", "username": "urp",
        "password": "segretissima-imap", "address": "altro@comune.monteverde.it",
        "poll_interval_seconds": 60,
    });
    let err = with("email.imap", imap.clone()).unwrap_err();
    assert_eq!(err.key, "email.imap.address");
    let mut no_password = imap.clone();
    no_password["address"] = json!(URP);
    no_password.as_object_mut().unwrap().remove("password");
    assert_eq!(
        with("email.imap", no_password).unwrap_err().key,
        "email.imap.password"
    );
    let mut good = imap.clone();
    good["address"] = json!(URP);
    let settings = with("email.imap", good).unwrap();
    let imap = settings.email.imap.expect("imap settings");
    assert_eq!(imap.mailbox, "INBOX");
    assert!(!format!("{imap:?}").contains("segretissima-imap"));
    // The relay password never appears in debug output.
    let settings = with("email.relay.username", json!("ccu")).unwrap();
    let mut relay = settings.email.relay.clone();
    relay.password = Some("segretissima".into());
    assert!(!format!("{relay:?}").contains("segretissima"));
}

// ---- the console's view of the mail: originals, attachments, noise ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_download_the_original_and_attachments_as_files_and_noise_is_listed_in_scope() {
    let app = spawn_mail_app(None, &[]).await;
    let (ok, transcript) = swaks(
        app.smtp_addr,
        &[
            "--from",
            "mario@esempio.it",
            "--to",
            URP,
            "--data",
            repo_path("channels/email/tests/data/multipart_attachment.eml")
                .to_str()
                .unwrap(),
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    send(
        app.smtp_addr,
        URP,
        "ferie-api@esempio.it",
        "Fuori ufficio",
        &["--add-header", "Auto-Submitted: auto-replied"],
    )
    .await;
    let mail = inbound(app.store(), "multi@esempio.it").await;
    let conversation_id = mail.conversation_id.unwrap();
    let (_, operator) = app.user("op.posta", "operator", "comune").await;
    let (_, water_operator) = app.user("op.acque", "operator", "acque").await;
    let (_, supervisor) = app.user("sup.posta", "supervisor", "comune").await;
    let (_, water_supervisor) = app.user("sup.acque", "supervisor", "acque").await;

    // The conversation's mail, with its attachments (not their bytes).
    let response = app
        .get(
            &format!("/api/v1/conversations/{conversation_id}/mail"),
            &operator,
        )
        .await;
    assert_eq!(response.status(), 200);
    let list: Value = response.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], mail.id);
    assert_eq!(list[0]["noise"], Value::Null);
    let files = list[0]["attachments"].as_array().unwrap();
    let names: Vec<&str> = files
        .iter()
        .map(|f| f["filename"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["verbale.pdf", "foto.png"]);

    // The original .eml: a download, byte for byte what was stored.
    let response = app
        .get(&format!("/api/v1/mail/{}/raw", mail.id), &operator)
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "message/rfc822");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with(&format!("attachment; filename=\"mail-{}.eml\"", mail.id)),
        "{headers:?}"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        mail.raw.as_slice()
    );

    // The HTML original, script and all, only ever as a download.
    let response = app
        .get(&format!("/api/v1/mail/{}/html", mail.id), &operator)
        .await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-security-policy"], "sandbox");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<script>steal()</script>")
    );

    // An attachment, decoded, with its safe name.
    let pdf = files[0]["id"].as_i64().unwrap();
    let response = app
        .get(
            &format!("/api/v1/mail/{}/attachments/{pdf}", mail.id),
            &operator,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"verbale.pdf\"")
    );
    assert!(response.bytes().await.unwrap().starts_with(b"%PDF-1.4"));

    // Another organization's operator: nothing exists for them.
    for path in [
        format!("/api/v1/conversations/{conversation_id}/mail"),
        format!("/api/v1/mail/{}", mail.id),
        format!("/api/v1/mail/{}/raw", mail.id),
        format!("/api/v1/mail/{}/html", mail.id),
        format!("/api/v1/mail/{}/attachments/{pdf}", mail.id),
    ] {
        assert_eq!(
            app.get(&path, &water_operator).await.status(),
            404,
            "{path}"
        );
    }
    // An attachment id under another mail's id is not found either.
    let plain = inbound(app.store(), "ferie-api@esempio.it").await;
    assert_eq!(
        app.get(
            &format!("/api/v1/mail/{}/attachments/{pdf}", plain.id),
            &operator
        )
        .await
        .status(),
        404
    );

    // Noise: stored, never answered, listed for supervisors of its queue's
    // organization; operators may not list it.
    assert_eq!(app.get("/api/v1/mail/noise", &operator).await.status(), 403);
    let page: Value = app
        .get("/api/v1/mail/noise", &supervisor)
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["message_id"], "ferie-api@esempio.it");
    assert_eq!(items[0]["noise"], "auto_submitted");
    assert_eq!(items[0]["conversation_id"], Value::Null);
    let page: Value = app
        .get("/api/v1/mail/noise", &water_supervisor)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]));
    // The noise's original, for the supervisor who looks into it.
    let response = app
        .get(&format!("/api/v1/mail/{}/raw", plain.id), &supervisor)
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.get(&format!("/api/v1/mail/{}/raw", plain.id), &water_supervisor)
            .await
            .status(),
        404
    );

    // In the OpenAPI document, with their security.
    // (The document /api/openapi.json serves.)
    let doc = serde_json::to_value(ccu::api::openapi()).unwrap();
    for path in [
        "/api/v1/conversations/{id}/mail",
        "/api/v1/mail/noise",
        "/api/v1/mail/{id}",
        "/api/v1/mail/{id}/raw",
        "/api/v1/mail/{id}/html",
        "/api/v1/mail/{id}/attachments/{attachment}",
    ] {
        assert!(doc["paths"][path]["get"]["security"].is_array(), "{path}");
    }
}

// ---- the satisfaction survey ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_mail_conversation_gets_one_satisfaction_survey_through_the_outbox() {
    let app = spawn_mail_app(None, &[]).await;
    send(
        app.smtp_addr,
        URP,
        "survey-1@esempio.it",
        "Certificato",
        &[],
    )
    .await;
    send(
        app.smtp_addr,
        URP,
        "survey-2@esempio.it",
        "Ancora aperta",
        &[],
    )
    .await;
    let closed = inbound(app.store(), "survey-1@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let open = inbound(app.store(), "survey-2@esempio.it")
        .await
        .conversation_id
        .unwrap();
    let (operator, _) = app.user("op.survey", "operator", "comune").await;
    assert!(
        app.store()
            .assign_conversation(closed, operator, ccu::now_ms())
            .await
            .unwrap()
    );
    // What the hub and the console do when the operator ends it without
    // wrap-up: the store first, then the end on the bus. (Straight on the
    // store: the router is not part of this test.)
    assert!(
        app.store()
            .transition(
                closed,
                &[ConversationState::Assigned],
                ConversationState::Closed,
                "completed",
                Some(operator),
                &json!({}),
                ccu::now_ms(),
            )
            .await
            .unwrap()
    );
    app.state.hub.announce_end(closed, "operator").await;

    let survey = poll_until("the survey in the outbox", || async {
        outbox(app.store(), closed)
            .await
            .into_iter()
            .find(|m| m.kind == "survey")
    })
    .await;
    let reference = conversation(app.store(), closed)
        .await
        .conversation
        .reference;
    assert_eq!(
        survey.subject,
        format!("[{reference}] Come valuta la risposta alla sua richiesta?")
    );
    assert!(
        survey.body.contains(&format!("rif={reference}")),
        "{}",
        survey.body
    );
    assert!(survey.auto, "automatic mail: Auto-Submitted");
    assert_eq!(survey.to_address, CITIZEN);
    assert_eq!(survey.in_reply_to.as_deref(), Some("survey-1@esempio.it"));

    // Once: another end event, or a direct call, queues nothing more.
    app.state.hub.announce_end(closed, "operator").await;
    let channel = EmailChannel::new(&app.state).unwrap();
    assert_eq!(channel.send_survey(closed).await.unwrap(), Some(survey.id));
    let kinds: Vec<String> = outbox(app.store(), closed)
        .await
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, ["acknowledgement", "survey"]);
    // A conversation still open gets none.
    assert_eq!(channel.send_survey(open).await.unwrap(), None);
    assert_eq!(outbox(app.store(), open).await.len(), 1);
}
