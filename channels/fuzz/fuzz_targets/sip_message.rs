//! Arbitrary bytes into the SIP message layer: datagram and stream
//! parsing, validation, stateless replies, serialization round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ccu_channels::sip::fuzzing::sip_message(data);
});
