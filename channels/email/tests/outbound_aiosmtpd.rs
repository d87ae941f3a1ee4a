//! Outbound delivery to a real SMTP server on loopback: `aiosmtpd` (Debian
//! package `python3-aiosmtpd`, run with the system `/usr/bin/python3`).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use ccu_email::address::EmailAddress;
use ccu_email::inbound::{ParseLimits, parse_inbound};
use ccu_email::outbound::{
    Outcome, OutgoingMail, RelayConfig, RelaySecurity, build_mail, relay_transport, try_send,
};
use ccu_email::threading::ReferenceToken;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const PYTHON: &str = "/usr/bin/python3";

/// A free loopback port (bound then released; aiosmtpd takes it next).
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

struct Aiosmtpd {
    child: Child,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Aiosmtpd {
    /// Starts aiosmtpd and waits until it says it listens.
    async fn start(addr: SocketAddr) -> Self {
        let mut child = Command::new(PYTHON)
            .args(["-u", "-m", "aiosmtpd", "-n", "-d", "-l", &addr.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON} ({e}): install the Debian package `python3-aiosmtpd`")
            });
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
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
        assert!(
            listening,
            "aiosmtpd exited: install the Debian package `python3-aiosmtpd`"
        );
        // Keep draining stderr so the debug log never blocks the server.
        tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, stdout }
    }

    /// The next message the Debugging handler prints, as raw text.
    async fn next_message(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(15), async {
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
        .expect("no message reached aiosmtpd within 15 s")
    }
}

fn relay(addr: SocketAddr) -> RelayConfig {
    RelayConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        security: RelaySecurity::None,
        credentials: None,
        ca_pem: None,
        timeout: Duration::from_secs(10),
    }
}

const CITIZEN_MAIL: &[u8] = b"From: Mario Rossi <mario@esempio.it>\r\nTo: urp@comune.example\r\nSubject: TARI\r\nMessage-ID: <m2@esempio.it>\r\nReferences: <m1@esempio.it>\r\n\r\nQuando scade?\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_acknowledgement_arrives_with_threading_headers() {
    let addr = free_port();
    let mut server = Aiosmtpd::start(addr).await;
    let citizen = parse_inbound(CITIZEN_MAIL, &ParseLimits::default());
    let from = EmailAddress::parse("urp@comune.example").unwrap();
    let to = citizen.from.as_ref().unwrap().address.clone();
    let token = ReferenceToken::parse("URP-2026-000123").unwrap();
    let mail = OutgoingMail {
        outbox_id: 4711,
        from: &from,
        from_name: Some("Comune – URP"),
        to: &to,
        to_name: Some("Mario Rossi"),
        subject: "Re: TARI",
        reference: Some(&token),
        body: "Gentile cittadino, abbiamo ricevuto la sua richiesta. Più dettagli a breve: città, perché, €.",
        automatic: true,
        replying_to: Some(&citizen),
        loop_token: Some("ccu@comune.example"),
    };
    let message = build_mail(&mail, "comune.example", SystemTime::now()).unwrap();
    let transport = relay_transport(&relay(addr)).unwrap();
    let outcome = try_send(&transport, message).await;
    assert!(matches!(outcome, Outcome::Sent { .. }), "{outcome:?}");

    let arrived = server.next_message().await;
    let parsed = parse_inbound(arrived.as_bytes(), &ParseLimits::default());
    assert_eq!(
        parsed.message_id.as_deref(),
        Some("ccu.4711@comune.example"),
        "{arrived}"
    );
    assert_eq!(parsed.in_reply_to, ["m2@esempio.it"]);
    assert_eq!(parsed.references, ["m1@esempio.it", "m2@esempio.it"]);
    assert_eq!(parsed.subject, "[URP-2026-000123] Re: TARI");
    assert_eq!(parsed.noise.auto_submitted.as_deref(), Some("auto-replied"));
    assert_eq!(
        parsed.from.as_ref().unwrap().name.as_deref(),
        Some("Comune – URP")
    );
    assert!(
        parsed
            .text
            .contains("Più dettagli a breve: città, perché, €."),
        "{}",
        parsed.text
    );
    // Our own mail coming back is recognised as a loop.
    assert!(ccu_email::noise::classify(&parsed, false, Some("ccu@comune.example")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_is_down_is_transient_and_the_retry_delivers_once() {
    let addr = free_port();
    let from = EmailAddress::parse("urp@comune.example").unwrap();
    let to = EmailAddress::parse("mario@esempio.it").unwrap();
    let mail = OutgoingMail {
        outbox_id: 9,
        from: &from,
        from_name: None,
        to: &to,
        to_name: None,
        subject: "Risposta",
        reference: None,
        body: "Testo",
        automatic: false,
        replying_to: None,
        loop_token: None,
    };
    let transport = relay_transport(&relay(addr)).unwrap();
    let first = try_send(
        &transport,
        build_mail(&mail, "comune.example", SystemTime::now()).unwrap(),
    )
    .await;
    assert!(matches!(first, Outcome::Transient { .. }), "{first:?}");

    let mut server = Aiosmtpd::start(addr).await;
    let second = try_send(
        &transport,
        build_mail(&mail, "comune.example", SystemTime::now()).unwrap(),
    )
    .await;
    assert!(matches!(second, Outcome::Sent { .. }), "{second:?}");
    let arrived = server.next_message().await;
    let parsed = parse_inbound(arrived.as_bytes(), &ParseLimits::default());
    assert_eq!(parsed.message_id.as_deref(), Some("ccu.9@comune.example"));
    assert_eq!(
        parsed.noise.auto_submitted, None,
        "an operator's reply is not automatic"
    );
    server.child.kill().await.unwrap();
}
