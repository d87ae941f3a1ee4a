//! Property tests: the parser of outside input and the SMTP session take any
//! bytes without panicking, and keep their invariants.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ccu_email::address::EmailAddress;
use ccu_email::inbound::{ParseLimits, parse_inbound};
use ccu_email::noise::classify;
use ccu_email::smtp::{Action, MailboxRoute, RecipientRouter, Session, SessionInfo, SmtpConfig};
use ccu_email::threading::ReferenceToken;
use proptest::prelude::*;

struct Anyone;
impl RecipientRouter for Anyone {
    fn route_recipient(&self, address: &EmailAddress) -> Option<MailboxRoute> {
        Some(MailboxRoute::to_queue(address.clone(), "q"))
    }
}

/// Mail-shaped input: real header and MIME fragments mixed with noise, so
/// the generator reaches deep into the parser, not only its first check.
fn mailish() -> impl Strategy<Value = Vec<u8>> {
    let fragments = prop::sample::select(vec![
        &b"From: =?utf-8?q?M=C3=A0rio?= <m@x.it>\r\n"[..],
        b"Content-Type: multipart/mixed; boundary=\"b\"\r\n",
        b"Content-Type: text/html; charset=windows-1252\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"\r\n--b\r\n",
        b"\r\n--b--\r\n",
        b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.pdf\r\n",
        b"<script>&#x110000;&amp;<p",
        b"=E0=\r\n",
        b"\r\n\r\n",
        b"Subject: =?iso-8859-1?b?4Ojs?=\r\n",
        b"In-Reply-To: <a@b>\r\nReferences: <c@d> <e@f>\r\n",
    ]);
    prop::collection::vec(
        prop_oneof![
            fragments.prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..40)
        ],
        0..30,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_inbound_never_panics(raw in mailish()) {
        let limits = ParseLimits { max_attachments: 2, max_attachment_size: 64, ..ParseLimits::default() };
        let mail = parse_inbound(&raw, &limits);
        prop_assert!(mail.attachments.len() <= 2);
        prop_assert!(mail.attachments.iter().all(|a| a.size <= 64 && a.size == a.bytes.len()));
        prop_assert!(mail.attachments.iter().all(|a| !a.filename.contains(['/', '\\'])));
        prop_assert!(!mail.subject.contains(['\r', '\n']));
        let _ = classify(&mail, false, Some("x"));
        let _ = ReferenceToken::find_in_subject(&mail.subject);
    }

    #[test]
    fn parse_inbound_never_panics_on_raw_bytes(raw in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_inbound(&raw, &ParseLimits::default());
        let _ = ccu_email::html_to_safe_text(&String::from_utf8_lossy(&raw));
    }

    #[test]
    fn the_smtp_session_never_panics_and_never_grows_without_bound(
        chunks in prop::collection::vec(
            prop_oneof![
                prop::sample::select(vec![
                    &b"EHLO x\r\n"[..], b"MAIL FROM:<a@b.it> SIZE=10\r\n", b"RCPT TO:<u@c.it>\r\n",
                    b"DATA\r\n", b"\r\n.\r\n", b".", b"\r\n", b"RSET\r\n", b"STARTTLS\r\n", b"MAIL FROM:<>\r\n",
                ]).prop_map(<[u8]>::to_vec),
                prop::collection::vec(any::<u8>(), 0..200),
            ],
            0..40,
        )
    ) {
        let mut config = SmtpConfig::new("mx");
        config.max_message_size = 300;
        config.max_command_line = 100;
        config.max_errors = 1000;
        let mut session = Session::new(Arc::new(config), SessionInfo {
            id: "p".into(),
            peer: "127.0.0.1:1".parse().unwrap(),
            starttls_available: true,
        });
        for chunk in chunks {
            session.receive(&chunk);
            while let Some(action) = session.poll(0, &Anyone) {
                match action {
                    Action::Deliver(d) => {
                        // The Received header plus at most the size limit.
                        prop_assert!(d.raw.len() <= 300 + 400);
                        let _ = session.delivered(Ok(ccu_email::smtp::AcceptedId("1".into())));
                    }
                    Action::StartTls(_) => session.tls_established(),
                    Action::Send(_) | Action::SendAndClose(_) => {}
                }
            }
        }
    }
}

/// IMAP-shaped input: response fragments, literals announced with any
/// length, and noise.
fn imapish() -> impl Strategy<Value = Vec<u8>> {
    let fragments = prop::sample::select(vec![
        &b"* 1 FETCH (UID 7 BODY[] {5}\r\n"[..],
        b"* SEARCH 1 2 3\r\n",
        b"c1 OK done\r\n",
        b"c2 NO [TRYCREATE] no\r\n",
        b"* OK [UIDVALIDITY 42] ok\r\n",
        b"{0}\r\n",
        b"{4294967295}\r\n",
        b"(\"a\\\"b\" NIL (x (y)))",
        b")\r\n",
        b"+ go\r\n",
        b"\r\n",
        b"* BYE\r\n",
    ]);
    prop::collection::vec(
        prop_oneof![
            fragments.prop_map(<[u8]>::to_vec),
            prop::collection::vec(any::<u8>(), 0..12),
        ],
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn the_imap_response_parser_takes_any_bytes(input in imapish()) {
        // Consume responses as the client does: each one uses at least a
        // byte and never more than there is.
        let mut rest: &[u8] = &input;
        while let Ok(Some((_, used))) = ccu_email::imap::proto::parse_response(rest) {
            prop_assert!(used > 0 && used <= rest.len());
            rest = &rest[used..];
        }
    }
}
