//! The SMTP listener driven by a real client, `swaks` (Debian package
//! `swaks`), over loopback sockets, with an in-memory sink.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use ccu_email::address::EmailAddress;
use ccu_email::inbound::{ParseLimits, parse_inbound};
use ccu_email::smtp::{
    AcceptedId, Envelope, MailSink, MailboxRoute, RecipientRouter, SinkError, SmtpConfig, serve,
    tls_acceptor_from_pem,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Keeps every accepted message and tells the test about it.
struct MemorySink {
    tx: mpsc::UnboundedSender<(Envelope, Vec<u8>)>,
}

impl RecipientRouter for MemorySink {
    fn route_recipient(&self, address: &EmailAddress) -> Option<MailboxRoute> {
        ["urp@comune.example", "tributi@comune.example"]
            .into_iter()
            .find(|m| address.eq_ignore_case(m))
            .map(|m| {
                MailboxRoute::to_queue(
                    EmailAddress::parse(m).unwrap(),
                    m.split('@').next().unwrap(),
                )
            })
    }
}

impl MailSink for MemorySink {
    async fn accept(&self, envelope: Envelope, raw: Vec<u8>) -> Result<AcceptedId, SinkError> {
        let id = envelope.id.clone();
        self.tx
            .send((envelope, raw))
            .map_err(|e| SinkError::Storage(Box::new(e)))?;
        Ok(AcceptedId(id))
    }
}

struct Server {
    addr: SocketAddr,
    received: mpsc::UnboundedReceiver<(Envelope, Vec<u8>)>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(config: SmtpConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, received) = mpsc::unbounded_channel();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            config,
            Arc::new(MemorySink { tx }),
            shutdown.clone(),
        ));
        Self {
            addr,
            received,
            shutdown,
            task,
        }
    }

    async fn next_message(&mut self) -> (Envelope, Vec<u8>) {
        tokio::time::timeout(Duration::from_secs(10), self.received.recv())
            .await
            .expect("no message reached the sink within 10 s")
            .unwrap()
    }

    fn nothing_received(&mut self) -> bool {
        self.received.try_recv().is_err()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap();
    }
}

fn config() -> SmtpConfig {
    let mut c = SmtpConfig::new("mx.comune.example");
    c.max_message_size = 64 * 1024;
    c
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Runs swaks against the server; fails (never skips) when it is missing.
async fn swaks(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out: Output = tokio::process::Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &addr.port().to_string(),
            "--helo",
            "client.example",
        ])
        .args(["--timeout", "20"])
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_mail_reaches_the_sink_with_envelope_and_received_header() {
    let mut server = Server::start(config()).await;
    let (ok, transcript) = swaks(
        server.addr,
        &[
            "--from",
            "mario@esempio.it",
            "--to",
            "URP@comune.example",
            "--data",
            data("plain.eml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );
    let (envelope, raw) = server.next_message().await;
    assert_eq!(envelope.mail_from.unwrap().as_str(), "mario@esempio.it");
    assert_eq!(envelope.recipients[0].route.queue, "urp");
    assert_eq!(envelope.helo, "client.example");
    assert!(
        raw.starts_with(b"Received: from client.example ([127.0.0.1])\r\n\tby mx.comune.example")
    );
    let mail = parse_inbound(&raw, &ParseLimits::default());
    assert_eq!(mail.message_id.as_deref(), Some("abc123@esempio.it"));
    assert!(mail.text.contains("Perché è cambiata?"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_mail_with_an_attachment_arrives_whole() {
    let mut server = Server::start(config()).await;
    let dir = tempdir();
    let pdf = dir.join("verbale.pdf");
    std::fs::write(&pdf, b"%PDF-1.4\n% prova \xe0\xe8\n%%EOF\n").unwrap();
    let attach = format!("@{}", pdf.display());
    let (ok, transcript) = swaks(
        server.addr,
        &[
            "--from",
            "mario@esempio.it",
            "--to",
            "tributi@comune.example",
            "--header",
            "Subject: Verbale",
            "--body",
            "Allego il verbale.",
            "--attach-type",
            "application/pdf",
            "--attach-name",
            "verbale.pdf",
            "--attach",
            &attach,
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    let (envelope, raw) = server.next_message().await;
    assert_eq!(envelope.recipients[0].route.queue, "tributi");
    let mail = parse_inbound(&raw, &ParseLimits::default());
    assert_eq!(mail.subject, "Verbale");
    assert!(mail.text.contains("Allego il verbale."), "{}", mail.text);
    assert_eq!(mail.attachments.len(), 1, "{mail:?}");
    assert_eq!(mail.attachments[0].content_type, "application/pdf");
    assert_eq!(
        mail.attachments[0].bytes,
        b"%PDF-1.4\n% prova \xe0\xe8\n%%EOF\n"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iso_8859_1_body_is_decoded_after_the_trip() {
    let mut server = Server::start(config()).await;
    let (ok, transcript) = swaks(
        server.addr,
        &[
            "--from",
            "giulia@esempio.it",
            "--to",
            "urp@comune.example",
            "--data",
            data("latin1.eml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    let (_, raw) = server.next_message().await;
    let mail = parse_inbound(&raw, &ParseLimits::default());
    assert_eq!(mail.subject, "Città e più");
    assert_eq!(mail.text.trim(), "La città è più bella d'estate.");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_that_is_not_ours_is_refused_with_550() {
    let mut server = Server::start(config()).await;
    let (ok, transcript) = swaks(
        server.addr,
        &[
            "--from",
            "spam@esempio.it",
            "--to",
            "someone@elsewhere.example",
        ],
    )
    .await;
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("550 5.1.1"), "{transcript}");
    assert!(server.nothing_received());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_size_message_is_refused_with_552_and_not_stored() {
    let mut c = config();
    c.max_message_size = 2000;
    let mut server = Server::start(c).await;
    let body = "x".repeat(5000);
    let (ok, transcript) = swaks(
        server.addr,
        &[
            "--from",
            "a@esempio.it",
            "--to",
            "urp@comune.example",
            "--body",
            &body,
        ],
    )
    .await;
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("552 5.3.4"), "{transcript}");
    assert!(transcript.contains("SIZE 2000"), "{transcript}");
    // The session survives the refusal: another message goes through.
    let (ok, transcript) = swaks(
        server.addr,
        &["--from", "a@esempio.it", "--to", "urp@comune.example"],
    )
    .await;
    assert!(ok, "{transcript}");
    let (envelope, _) = server.next_message().await;
    assert_eq!(envelope.mail_from.unwrap().as_str(), "a@esempio.it");
    assert!(server.nothing_received());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_gets_every_reply_and_the_message_lands() {
    let mut server = Server::start(config()).await;
    let (ok, transcript) = swaks(
        server.addr,
        &[
            "--pipeline",
            "--from",
            "a@esempio.it",
            "--to",
            "urp@comune.example,tributi@comune.example",
            "--header",
            "Subject: in fila",
        ],
    )
    .await;
    assert!(ok, "{transcript}");
    assert!(transcript.contains("PIPELINING"), "{transcript}");
    let (envelope, raw) = server.next_message().await;
    assert_eq!(envelope.recipients.len(), 2);
    assert_eq!(
        parse_inbound(&raw, &ParseLimits::default()).subject,
        "in fila"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_with_a_ring_backed_certificate_carries_the_mail() {
    let dir = tempdir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install the Debian package `openssl`")
        });
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut c = config();
    c.tls = Some(
        tls_acceptor_from_pem(
            &std::fs::read(&cert).unwrap(),
            &std::fs::read(&key).unwrap(),
        )
        .unwrap(),
    );
    let mut server = Server::start(c).await;
    let (ok, transcript) = swaks(
        server.addr,
        &[
            "--tls",
            "--from",
            "a@esempio.it",
            "--to",
            "urp@comune.example",
        ],
    )
    .await;
    assert!(
        ok,
        "{transcript}\n(swaks needs the Debian package `libnet-ssleay-perl` for --tls)"
    );
    assert!(
        transcript.contains("220 2.0.0 Ready to start TLS"),
        "{transcript}"
    );
    let (envelope, raw) = server.next_message().await;
    assert!(envelope.tls);
    assert!(String::from_utf8_lossy(&raw).contains("with ESMTPS id"));
    server.stop().await;
}

async fn read_reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .expect("no reply within 10 s")
        .unwrap();
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_421_to_idle_sessions_and_serve_returns() {
    let server = Server::start(config()).await;
    let mut client = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    assert!(
        read_reply(&mut client)
            .await
            .starts_with("220 mx.comune.example")
    );
    client.get_mut().write_all(b"EHLO c\r\n").await.unwrap();
    while !read_reply(&mut client).await.starts_with("250 ") {}
    server.shutdown.cancel();
    assert!(read_reply(&mut client).await.starts_with("421 4.3.2"));
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_limit_get_421() {
    let mut c = config();
    c.max_connections_per_ip = 1;
    let server = Server::start(c).await;
    let mut first = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    assert!(read_reply(&mut first).await.starts_with("220"));
    let mut second = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    assert!(read_reply(&mut second).await.starts_with("421 4.7.0"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_with_421_after_the_command_timeout() {
    let mut c = config();
    c.command_timeout = Duration::from_millis(300);
    let server = Server::start(c).await;
    let mut client = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    assert!(read_reply(&mut client).await.starts_with("220"));
    assert!(read_reply(&mut client).await.starts_with("421 4.4.2"));
    server.stop().await;
}

fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ccu-email-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_refusing_the_recipient_with_550_is_a_permanent_outcome() {
    use ccu_email::outbound::{
        Outcome, OutgoingMail, RelayConfig, RelaySecurity, build_mail, relay_transport, try_send,
    };
    // Our own listener plays the relay: it refuses what is not its mailbox.
    let mut server = Server::start(config()).await;
    let relay = RelayConfig {
        host: "127.0.0.1".into(),
        port: server.addr.port(),
        security: RelaySecurity::None,
        credentials: None,
        ca_pem: None,
        timeout: Duration::from_secs(10),
    };
    let (from, nobody, urp) = (
        EmailAddress::parse("a@esempio.it").unwrap(),
        EmailAddress::parse("nobody@elsewhere.example").unwrap(),
        EmailAddress::parse("urp@comune.example").unwrap(),
    );
    let mail = |to| OutgoingMail {
        outbox_id: 1,
        from: &from,
        from_name: None,
        to,
        to_name: None,
        subject: "x",
        reference: None,
        body: "y",
        automatic: false,
        replying_to: None,
        loop_token: None,
    };
    let transport = relay_transport(&relay).unwrap();
    let now = std::time::SystemTime::now();
    let outcome = try_send(
        &transport,
        build_mail(&mail(&nobody), "comune.example", now).unwrap(),
    )
    .await;
    assert!(
        matches!(&outcome, Outcome::Permanent { reason } if reason.contains("550")),
        "{outcome:?}"
    );
    let outcome = try_send(
        &transport,
        build_mail(&mail(&urp), "comune.example", now).unwrap(),
    )
    .await;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");
    let (envelope, _) = server.next_message().await;
    assert_eq!(envelope.recipients[0].route.queue, "urp");
    drop(transport);
    server.stop().await;
}
