//! Arbitrary bytes into the RFC 4733 payload parser, the DTMF receiver,
//! the SIP INFO DTMF bodies and the WAV reader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ccu_channels::media::fuzzing::telephone_event(data);
});
