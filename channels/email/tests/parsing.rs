//! Parsing, noise classification and threading over the sample mails in
//! `tests/data/`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use ccu_email::inbound::{DropReason, ParseLimits, ParseWarning, parse_inbound};
use ccu_email::noise::{NoiseReason, classify};
use ccu_email::threading::{ReferenceToken, Thread, ThreadLookup, thread};

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(name: &str) -> ccu_email::inbound::InboundMail {
    parse_inbound(&sample(name), &ParseLimits::default())
}

#[test]
fn a_plain_mail_gives_addresses_decoded_subject_ids_and_text() {
    let mail = parse("plain.eml");
    let from = mail.from.as_ref().unwrap();
    assert_eq!(from.address.as_str(), "Mario@esempio.it");
    assert_eq!(from.name.as_deref(), Some("Mario Rossì"));
    assert_eq!(mail.to[0].address.as_str(), "urp@comune.example");
    assert_eq!(mail.to[0].name.as_deref(), Some("URP Comune"));
    assert_eq!(mail.cc.len(), 2);
    assert_eq!(mail.cc[1].name.as_deref(), Some("Anna Bianchi"));
    assert_eq!(mail.subject, "Richiesta informazioni – TARI");
    assert_eq!(mail.message_id.as_deref(), Some("abc123@esempio.it"));
    // Mon, 23 Nov 2026 10:15:00 +0100 = 09:15 UTC.
    assert_eq!(mail.date, Some(1_795_425_300));
    assert!(mail.text.contains("Perché è cambiata?"), "{}", mail.text);
    assert!(!mail.text.contains('\r'));
    assert!(!mail.malformed);
    assert!(mail.warnings.is_empty(), "{:?}", mail.warnings);
    assert_eq!(classify(&mail, false, None), None);
}

#[test]
fn iso_8859_1_and_windows_1252_bodies_are_decoded() {
    let mail = parse("latin1.eml");
    assert_eq!(mail.subject, "Città e più");
    assert_eq!(mail.text.trim(), "La città è più bella d'estate.");
    let mail = parse("cp1252.eml");
    assert_eq!(mail.text.trim(), "Ho pagato 120 € e l’ufficio dice “no”.");
}

#[test]
fn multipart_mail_gives_the_text_part_the_original_html_and_safe_attachments() {
    let mail = parse("multipart_attachment.eml");
    assert_eq!(mail.text.trim(), "Allego il verbale.");
    let html = mail.original_html.as_deref().unwrap();
    assert!(html.contains("<script>"), "the original is kept as a blob");
    assert_eq!(mail.attachments.len(), 2);
    let pdf = &mail.attachments[0];
    assert_eq!(pdf.filename, "verbale.pdf", "no path components");
    assert_eq!(pdf.content_type, "application/pdf");
    assert!(pdf.bytes.starts_with(b"%PDF-1.4"));
    assert_eq!(pdf.size, pdf.bytes.len());
    assert_eq!(mail.attachments[1].filename, "foto.png");
    assert!(mail.attachments[1].bytes.starts_with(b"\x89PNG"));
}

#[test]
fn attachments_over_the_limits_are_dropped_not_fatal() {
    let raw = sample("multipart_attachment.eml");
    let limits = ParseLimits {
        max_attachments: 1,
        ..ParseLimits::default()
    };
    let mail = parse_inbound(&raw, &limits);
    assert_eq!(mail.attachments.len(), 1);
    assert_eq!(mail.dropped_attachments.len(), 1);
    assert_eq!(mail.dropped_attachments[0].reason, DropReason::TooMany);
    assert_eq!(mail.dropped_attachments[0].filename, "foto.png");

    let sizes = parse_inbound(&raw, &ParseLimits::default())
        .attachments
        .iter()
        .map(|a| a.size)
        .collect::<Vec<_>>();
    assert!(sizes[1] < sizes[0], "{sizes:?}");
    let limits = ParseLimits {
        max_attachment_size: sizes[1],
        ..ParseLimits::default()
    };
    let mail = parse_inbound(&raw, &limits);
    assert_eq!(
        mail.attachments.len(),
        1,
        "the PNG fits, the PDF does not: {sizes:?}"
    );
    assert_eq!(mail.attachments[0].filename, "foto.png");
    assert_eq!(mail.dropped_attachments[0].reason, DropReason::TooLarge);
    assert_eq!(mail.text.trim(), "Allego il verbale.");
}

#[test]
fn an_html_only_mail_is_shown_as_text_without_scripts() {
    let mail = parse("html_only.eml");
    assert_eq!(mail.text, "Segnalazione\n\nBuca in via Roma & via Verdi");
    assert!(mail.original_html.is_some());
}

#[test]
fn malformed_mime_is_read_as_far_as_possible_and_flagged() {
    let mail = parse("malformed.eml");
    assert!(mail.malformed);
    assert!(
        mail.warnings.contains(&ParseWarning::MissingFrom),
        "{:?}",
        mail.warnings
    );
    assert!(
        mail.warnings
            .contains(&ParseWarning::InvalidAddress("broken".into()))
            || mail.from.is_none()
    );
    assert_eq!(mail.subject, "rotto");
    assert_eq!(mail.to[0].address.as_str(), "urp@comune.example");
}

#[test]
fn bytes_that_are_not_a_mail_at_all_still_give_a_flagged_result() {
    let mail = parse_inbound(b"", &ParseLimits::default());
    assert!(mail.malformed);
    let mail = parse_inbound(b"\xff\xfe\x00garbage", &ParseLimits::default());
    assert!(mail.malformed);
}

#[test]
fn auto_replies_bounces_and_list_mail_are_classified() {
    assert_eq!(
        classify(&parse("autoreply.eml"), false, None),
        Some(NoiseReason::AutoSubmitted)
    );
    assert_eq!(
        classify(&parse("bounce.eml"), false, None),
        Some(NoiseReason::Bounce)
    );
    assert_eq!(
        classify(&parse("list.eml"), false, None),
        Some(NoiseReason::Precedence)
    );
    assert_eq!(
        classify(&parse("plain.eml"), true, None),
        Some(NoiseReason::NullSender)
    );
    assert_eq!(classify(&parse("reply.eml"), false, None), None);
}

#[test]
fn each_noise_header_alone_is_enough() {
    let base = "From: a@esempio.it\nTo: urp@comune.example\nSubject: x\n";
    let cases = [
        ("Auto-Submitted: no\n", None),
        ("Auto-Submitted: No (manually)\n", None),
        (
            "Auto-Submitted: auto-generated\n",
            Some(NoiseReason::AutoSubmitted),
        ),
        (
            "Auto-Submitted: something-new\n",
            Some(NoiseReason::AutoSubmitted),
        ),
        ("X-Autorespond: yes\n", Some(NoiseReason::AutoReplyHeader)),
        ("Precedence: junk\n", Some(NoiseReason::Precedence)),
        ("Precedence: first-class\n", None),
        ("List-Id: <x.esempio.it>\n", Some(NoiseReason::MailingList)),
        (
            "List-Unsubscribe: <mailto:u@esempio.it>\n",
            Some(NoiseReason::MailingList),
        ),
        ("X-Loop: ccu@comune.example\n", Some(NoiseReason::OwnLoop)),
        (
            "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n",
            Some(NoiseReason::Report),
        ),
    ];
    for (header, expected) in cases {
        let raw = format!("{base}{header}\nbody\n");
        let mail = parse_inbound(raw.as_bytes(), &ParseLimits::default());
        assert_eq!(
            classify(&mail, false, Some("ccu@comune.example")),
            expected,
            "{header}"
        );
    }
}

struct Store {
    ids: HashMap<&'static str, i64>,
    refs: HashMap<String, i64>,
}

impl ThreadLookup for Store {
    fn conversation_by_message_id(&self, id: &str) -> Option<i64> {
        self.ids.get(id).copied()
    }
    fn conversation_by_reference(&self, token: &ReferenceToken) -> Option<i64> {
        self.refs.get(&token.to_string()).copied()
    }
}

#[test]
fn a_reply_threads_by_our_message_id_before_the_subject_token() {
    let store = Store {
        ids: HashMap::from([("ccu.77.1795000000@comune.example", 77)]),
        refs: HashMap::from([("URP-2026-000123".to_owned(), 5)]),
    };
    let mail = parse("reply.eml");
    assert_eq!(mail.in_reply_to, ["ccu.77.1795000000@comune.example"]);
    assert_eq!(
        mail.references,
        ["abc123@esempio.it", "ccu.77.1795000000@comune.example"]
    );
    assert_eq!(
        thread(&mail, &store),
        Thread::ByHeader {
            conversation: 77,
            message_id: "ccu.77.1795000000@comune.example".into()
        }
    );
}

#[test]
fn without_a_known_message_id_the_subject_token_threads_then_a_new_conversation() {
    let store = Store {
        ids: HashMap::new(),
        refs: HashMap::from([("URP-2026-000123".to_owned(), 5)]),
    };
    let mail = parse("reply.eml");
    let Thread::BySubject {
        conversation,
        token,
    } = thread(&mail, &store)
    else {
        panic!("expected the subject token to match")
    };
    assert_eq!(
        (conversation, token.to_string().as_str()),
        (5, "URP-2026-000123")
    );

    let empty = Store {
        ids: HashMap::new(),
        refs: HashMap::new(),
    };
    assert_eq!(thread(&mail, &empty), Thread::New);
    assert_eq!(thread(&parse("plain.eml"), &store), Thread::New);
}
