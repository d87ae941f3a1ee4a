//! The IMAP client's response parser on arbitrary server bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((_, used))) = ccu_email::imap::proto::parse_response(rest) {
        rest = &rest[used..];
    }
});
