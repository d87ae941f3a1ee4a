//! Arbitrary bytes into the RTP parser and the relay of a bridged call.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ccu_channels::media::fuzzing::rtp(data);
});
