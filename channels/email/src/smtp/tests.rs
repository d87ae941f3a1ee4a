//! Unit tests of the sans-IO session: bytes in, replies and deliveries out.

use std::sync::Arc;

use super::*;

struct Mailboxes;

impl RecipientRouter for Mailboxes {
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

const NOW: i64 = 1_795_000_000;

fn config() -> SmtpConfig {
    let mut c = SmtpConfig::new("mx.comune.example");
    c.max_message_size = 1000;
    c.max_errors = 5;
    c
}

fn session_with(config: SmtpConfig, starttls: bool) -> Session {
    Session::new(
        Arc::new(config),
        SessionInfo {
            id: "s1".into(),
            peer: "192.0.2.7:40000".parse().unwrap(),
            starttls_available: starttls,
        },
    )
}

fn session() -> Session {
    session_with(config(), false)
}

/// Feeds `input` and collects every action until the session needs more.
fn run(s: &mut Session, input: &str) -> Vec<Action> {
    s.receive(input.as_bytes());
    let mut out = Vec::new();
    while let Some(a) = s.poll(NOW, &Mailboxes) {
        let stop = matches!(a, Action::Deliver(_));
        out.push(a);
        if stop {
            break;
        }
    }
    out
}

/// The reply codes (and enhanced codes) of a list of actions.
fn codes(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send(r) | Action::SendAndClose(r) | Action::StartTls(r) => match r.enhanced {
                Some(e) => format!("{} {e}", r.code),
                None => r.code.to_string(),
            },
            Action::Deliver(_) => "deliver".into(),
        })
        .collect()
}

fn one(s: &mut Session, line: &str) -> String {
    let actions = run(s, line);
    assert_eq!(actions.len(), 1, "one reply to {line:?}: {actions:?}");
    codes(&actions).remove(0)
}

fn ehlo(s: &mut Session) {
    assert_eq!(one(s, "EHLO client.example\r\n"), "250");
}

#[test]
fn ehlo_advertises_the_extensions_and_starttls_only_with_a_certificate() {
    let mut s = session();
    assert_eq!(s.greeting().code, 220);
    let actions = run(&mut s, "EHLO client.example\r\n");
    let Action::Send(reply) = &actions[0] else {
        panic!("{actions:?}")
    };
    let text = reply.to_string();
    for ext in ["SIZE 1000", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES"] {
        assert!(text.contains(ext), "{ext} missing in {text}");
    }
    assert!(!text.contains("STARTTLS"));

    let mut s = session_with(config(), true);
    let actions = run(&mut s, "EHLO client.example\r\n");
    let Action::Send(reply) = &actions[0] else {
        panic!()
    };
    assert!(
        reply.to_string().contains("250 STARTTLS") || reply.to_string().contains("250-STARTTLS")
    );
}

#[test]
fn a_pipelined_transaction_is_delivered_with_a_received_header_and_answered_after_the_sink() {
    let mut s = session();
    let actions = run(
        &mut s,
        "EHLO client.example\r\nMAIL FROM:<mario@esempio.it> BODY=8BITMIME SIZE=100\r\nRCPT TO:<URP@comune.example>\r\nDATA\r\nSubject: ciao\r\n\r\n..punto\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(
        codes(&actions),
        ["250", "250 2.1.0", "250 2.1.5", "354", "deliver"]
    );
    let Some(Action::Deliver(d)) = actions.into_iter().last() else {
        panic!()
    };
    assert_eq!(d.envelope.mail_from.unwrap().as_str(), "mario@esempio.it");
    assert_eq!(d.envelope.recipients.len(), 1);
    assert_eq!(d.envelope.recipients[0].route.queue, "urp");
    assert_eq!(d.envelope.body, BodyType::EightBitMime);
    assert_eq!(d.envelope.helo, "client.example");
    assert_eq!(d.envelope.received_at, NOW);
    let raw = String::from_utf8(d.raw).unwrap();
    assert!(raw.starts_with("Received: from client.example ([192.0.2.7])\r\n\tby mx.comune.example (ccu) with ESMTP id s1.1\r\n\tfor <URP@comune.example>;"), "{raw}");
    assert!(
        raw.ends_with("\r\nSubject: ciao\r\n\r\n.punto\r\n"),
        "{raw}"
    );
    // Nothing more until the sink answered: no 250 before the message is durable.
    assert!(s.poll(NOW, &Mailboxes).is_none());
    assert!(!s.is_idle());
    let reply = s.delivered(Ok(AcceptedId("42".into())));
    assert_eq!((reply.code, reply.enhanced), (250, Some("2.0.0")));
    assert!(reply.to_string().contains("queued as 42"));
    assert_eq!(codes(&run(&mut s, "")), ["221 2.0.0"]);
    assert!(s.is_closed());
}

#[test]
fn a_sink_failure_is_answered_451_so_the_sender_retries() {
    let mut s = session();
    ehlo(&mut s);
    let actions = run(
        &mut s,
        "MAIL FROM:<a@b.it>\r\nRCPT TO:<urp@comune.example>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(codes(&actions).last().unwrap(), "deliver");
    let reply = s.delivered(Err(SinkError::ShuttingDown));
    assert_eq!((reply.code, reply.enhanced), (451, Some("4.3.0")));
    // The session goes on: the next transaction can start.
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "250 2.1.0");
}

#[test]
fn the_null_reverse_path_is_kept_as_none() {
    let mut s = session();
    ehlo(&mut s);
    let actions = run(
        &mut s,
        "MAIL FROM:<>\r\nRCPT TO:<urp@comune.example>\r\nDATA\r\n.\r\n",
    );
    let Some(Action::Deliver(d)) = actions.into_iter().last() else {
        panic!()
    };
    assert_eq!(d.envelope.mail_from, None);
}

#[test]
fn commands_out_of_sequence_get_503() {
    let mut s = session();
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "503 5.5.1");
    ehlo(&mut s);
    assert_eq!(one(&mut s, "RCPT TO:<urp@comune.example>\r\n"), "503 5.5.1");
    assert_eq!(one(&mut s, "DATA\r\n"), "503 5.5.1");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "250 2.1.0");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "503 5.5.1");
}

#[test]
fn unknown_recipients_are_refused_and_data_without_recipients_gets_554() {
    let mut s = session();
    ehlo(&mut s);
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "250 2.1.0");
    assert_eq!(
        one(&mut s, "RCPT TO:<someone@elsewhere.example>\r\n"),
        "550 5.1.1"
    );
    assert_eq!(
        one(&mut s, "RCPT TO:<nobody@comune.example>\r\n"),
        "550 5.1.1"
    );
    assert_eq!(one(&mut s, "DATA\r\n"), "554 5.5.1");
}

#[test]
fn the_recipient_past_the_limit_gets_452() {
    let mut c = config();
    c.max_recipients = 1;
    let mut s = session_with(c, false);
    ehlo(&mut s);
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "250 2.1.0");
    assert_eq!(one(&mut s, "RCPT TO:<urp@comune.example>\r\n"), "250 2.1.5");
    // The same recipient again is not a new one.
    assert_eq!(one(&mut s, "RCPT TO:<urp@COMUNE.example>\r\n"), "250 2.1.5");
    assert_eq!(
        one(&mut s, "RCPT TO:<tributi@comune.example>\r\n"),
        "452 4.5.3"
    );
}

#[test]
fn a_hundred_recipients_fit_by_default() {
    // RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted.
    struct Everyone;
    impl RecipientRouter for Everyone {
        fn route_recipient(&self, address: &EmailAddress) -> Option<MailboxRoute> {
            Some(MailboxRoute::to_queue(address.clone(), "q"))
        }
    }
    let mut s = session_with(SmtpConfig::new("mx"), false);
    s.receive(b"EHLO c\r\nMAIL FROM:<a@b.it>\r\n");
    while s.poll(NOW, &Everyone).is_some() {}
    for i in 0..100 {
        s.receive(format!("RCPT TO:<r{i}@comune.example>\r\n").as_bytes());
        let Some(Action::Send(r)) = s.poll(NOW, &Everyone) else {
            panic!()
        };
        assert_eq!(r.code, 250, "recipient {i}");
    }
    s.receive(b"RCPT TO:<r100@comune.example>\r\n");
    let Some(Action::Send(r)) = s.poll(NOW, &Everyone) else {
        panic!()
    };
    assert_eq!((r.code, r.enhanced), (452, Some("4.5.3")));
}

#[test]
fn a_declared_size_over_the_limit_gets_552_at_mail() {
    let mut s = session();
    ehlo(&mut s);
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it> SIZE=1001\r\n"), "552 5.3.4");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it> SIZE=1000\r\n"), "250 2.1.0");
}

#[test]
fn an_oversize_message_is_read_to_its_end_then_refused_with_552() {
    let mut s = session();
    ehlo(&mut s);
    let big = "x".repeat(600);
    let input = format!(
        "MAIL FROM:<a@b.it>\r\nRCPT TO:<urp@comune.example>\r\nDATA\r\n{big}\r\n{big}\r\n.\r\nNOOP\r\n"
    );
    assert_eq!(
        codes(&run(&mut s, &input)),
        ["250 2.1.0", "250 2.1.5", "354", "552 5.3.4", "250 2.0.0"]
    );
}

#[test]
fn unsupported_parameters_get_555_and_bad_syntax_501() {
    let mut c = config();
    c.max_errors = 20;
    let mut s = session_with(c, false);
    ehlo(&mut s);
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it> SMTPUTF8\r\n"), "555 5.5.4");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it> FOO=BAR\r\n"), "555 5.5.4");
    assert_eq!(one(&mut s, "MAIL FROM:a@b.it\r\n"), "501 5.5.4");
    assert_eq!(one(&mut s, "MAIL FROM:<a@@b.it>\r\n"), "501 5.1.7");
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "250 2.1.0");
    assert_eq!(
        one(&mut s, "RCPT TO:<urp@comune.example> NOTIFY=NEVER\r\n"),
        "555 5.5.4"
    );
}

#[test]
fn rset_noop_vrfy_help_and_unknown_commands() {
    let mut s = session();
    ehlo(&mut s);
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "250 2.1.0");
    assert_eq!(one(&mut s, "RSET\r\n"), "250 2.0.0");
    assert_eq!(one(&mut s, "RCPT TO:<urp@comune.example>\r\n"), "503 5.5.1");
    assert_eq!(one(&mut s, "NOOP\r\n"), "250 2.0.0");
    assert_eq!(one(&mut s, "VRFY urp\r\n"), "252 2.1.5");
    assert_eq!(one(&mut s, "HELP\r\n"), "214 2.0.0");
    assert_eq!(one(&mut s, "EXPN list\r\n"), "502 5.5.1");
    assert_eq!(one(&mut s, "XYZZY\r\n"), "500 5.5.2");
}

#[test]
fn helo_gives_plain_smtp_in_the_received_header() {
    let mut s = session();
    assert_eq!(one(&mut s, "HELO old.example\r\n"), "250");
    let actions = run(
        &mut s,
        "MAIL FROM:<a@b.it>\r\nRCPT TO:<urp@comune.example>\r\nDATA\r\nx\r\n.\r\n",
    );
    let Some(Action::Deliver(d)) = actions.into_iter().last() else {
        panic!()
    };
    assert!(String::from_utf8(d.raw).unwrap().contains("with SMTP id"));
}

#[test]
fn too_many_errors_close_the_session_with_421() {
    let mut s = session();
    for _ in 0..4 {
        assert_eq!(one(&mut s, "BOGUS\r\n"), "500 5.5.2");
    }
    let actions = run(&mut s, "BOGUS\r\nNOOP\r\n");
    assert_eq!(codes(&actions), ["421 4.7.0"]);
    assert!(matches!(actions[0], Action::SendAndClose(_)));
    assert!(s.is_closed());
}

#[test]
fn an_over_long_command_line_gets_500_and_the_session_goes_on() {
    let mut c = config();
    c.max_command_line = 64;
    let mut s = session_with(c, false);
    // Arrives in pieces without a line end: buffered only up to the limit.
    s.receive(format!("NOOP {}", "a".repeat(100)).as_bytes());
    assert!(s.poll(NOW, &Mailboxes).is_none());
    s.receive(&[b'a'; 100]);
    assert!(s.poll(NOW, &Mailboxes).is_none());
    assert_eq!(
        codes(&run(&mut s, "aaa\r\nNOOP\r\n")),
        ["500 5.5.2", "250 2.0.0"]
    );
    // A long line arriving whole.
    assert_eq!(
        one(&mut s, &format!("NOOP {}\r\n", "b".repeat(100))),
        "500 5.5.2"
    );
}

#[test]
fn starttls_drops_pipelined_commands_and_forgets_the_session_state() {
    let mut s = session_with(config(), true);
    ehlo(&mut s);
    let actions = run(&mut s, "STARTTLS\r\nMAIL FROM:<evil@x.it>\r\n");
    assert_eq!(codes(&actions), ["220 2.0.0"]);
    assert!(matches!(actions[0], Action::StartTls(_)));
    s.tls_established();
    assert!(s.is_tls());
    // The pipelined MAIL was dropped, and EHLO is needed again.
    assert!(s.poll(NOW, &Mailboxes).is_none());
    assert_eq!(one(&mut s, "MAIL FROM:<a@b.it>\r\n"), "503 5.5.1");
    let actions = run(&mut s, "EHLO client.example\r\n");
    let Action::Send(reply) = &actions[0] else {
        panic!()
    };
    assert!(!reply.to_string().contains("STARTTLS"));
    assert_eq!(one(&mut s, "STARTTLS\r\n"), "503 5.5.1");
    let actions = run(
        &mut s,
        "MAIL FROM:<a@b.it>\r\nRCPT TO:<urp@comune.example>\r\nDATA\r\nx\r\n.\r\n",
    );
    let Some(Action::Deliver(d)) = actions.into_iter().last() else {
        panic!()
    };
    assert!(d.envelope.tls);
    assert!(String::from_utf8(d.raw).unwrap().contains("with ESMTPS id"));
}

#[test]
fn starttls_without_a_certificate_is_not_implemented() {
    let mut s = session();
    ehlo(&mut s);
    assert_eq!(one(&mut s, "STARTTLS\r\n"), "502 5.5.1");
}

#[test]
fn the_timeout_depends_on_the_phase() {
    let c = config();
    let mut s = session_with(c.clone(), false);
    assert_eq!(s.timeout(), c.command_timeout);
    run(
        &mut s,
        "EHLO c\r\nMAIL FROM:<a@b.it>\r\nRCPT TO:<urp@comune.example>\r\nDATA\r\npart",
    );
    assert_eq!(s.timeout(), c.data_block_timeout);
    assert!(!s.is_idle());
    let reply = s.timeout_reply();
    assert_eq!((reply.code, reply.enhanced), (421, Some("4.4.2")));
    assert!(s.is_closed());
}

#[test]
fn a_command_split_across_reads_is_reassembled() {
    let mut s = session();
    assert!(run(&mut s, "EH").is_empty());
    assert!(run(&mut s, "LO c").is_empty());
    assert_eq!(codes(&run(&mut s, "\r\n")), ["250"]);
}

/// Admits everyone but `spam@esempio.it`, which is over its limit.
struct Limited;

impl RecipientRouter for Limited {
    fn route_recipient(&self, address: &EmailAddress) -> Option<MailboxRoute> {
        Mailboxes.route_recipient(address)
    }
    fn admit_sender(&self, sender: Option<&EmailAddress>, _: std::net::SocketAddr) -> Admission {
        match sender {
            Some(s) if s.eq_ignore_case("spam@esempio.it") => {
                Admission::Defer("Too many messages from this sender, try again later".into())
            }
            _ => Admission::Accept,
        }
    }
}

#[test]
fn a_sender_over_its_limit_gets_451_4_7_1_at_mail_from_before_any_text() {
    let mut s = session();
    ehlo(&mut s);
    s.receive(b"MAIL FROM:<spam@esempio.it>\r\nRCPT TO:<urp@comune.example>\r\nDATA\r\n");
    let mut replies = Vec::new();
    while let Some(a) = s.poll(NOW, &Limited) {
        replies.push(a);
    }
    // MAIL deferred, so RCPT and DATA are out of sequence: nothing is read
    // as message text and nothing reaches the sink.
    assert_eq!(codes(&replies), ["451 4.7.1", "503 5.5.1", "503 5.5.1"]);
    s.receive(b"MAIL FROM:<altra@esempio.it>\r\n");
    assert_eq!(codes(&[s.poll(NOW, &Limited).unwrap()]), ["250 2.1.0"]);
}
