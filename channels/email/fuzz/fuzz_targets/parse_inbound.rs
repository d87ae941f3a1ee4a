#![no_main]
//! Any bytes through the inbound path: parse, classify, thread. Must never
//! panic, and the attachment limits must hold.

use ccu_email::inbound::{ParseLimits, parse_inbound};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let limits = ParseLimits {
        max_attachments: 3,
        max_attachment_size: 4096,
        ..ParseLimits::default()
    };
    let mail = parse_inbound(raw, &limits);
    assert!(mail.attachments.len() <= 3);
    assert!(mail.attachments.iter().all(|a| a.size <= 4096));
    let _ = ccu_email::noise::classify(&mail, false, Some("ccu@comune.example"));
    let _ = ccu_email::threading::ReferenceToken::find_in_subject(&mail.subject);
});
