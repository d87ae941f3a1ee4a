//! Arbitrary bytes into the SDP parser and the offer/answer logic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ccu_channels::sip::fuzzing::sdp(data);
});
