//! Invariants the fuzz targets (`channels/fuzz`: `rtp`, `telephone_event`)
//! check on arbitrary bytes, also run by the test suite. Each panics only
//! when an invariant breaks, which is what the fuzzer looks for.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dtmf::{self, DtmfReceiver, TelephoneEvent};
use super::g711::Law;
use super::relay::{Leg, LegMedia, Relay, RelayAction, RelayConfig, RelayEvent, StreamStart};
use super::{rtp, wav};

/// RTP parsing and the relay: what parses rebuilds to the same bytes; the
/// relay never panics, only sends packets that parse, and counts every
/// packet as sent or dropped.
pub fn rtp(data: &[u8]) {
    if let Ok(packet) = rtp::parse(data) {
        let rebuilt = packet
            .to_builder()
            .build(packet.payload)
            .unwrap_or_else(|e| panic!("a parsed packet does not rebuild: {e}"));
        let keep = data.len() - usize::from(packet.padding);
        assert_eq!(rebuilt.len(), data.len());
        assert_eq!(&rebuilt[..keep], &data[..keep]);
    }
    let remote: SocketAddr = SocketAddr::from(([192, 0, 2, 1], 4000));
    let media = |law, payload_type| LegMedia {
        remote,
        signalling_ip: None,
        law,
        payload_type,
        telephone_event: Some(101),
    };
    let start = StreamStart {
        ssrc: 1,
        sequence: 2,
        timestamp: 3,
    };
    let t0 = Instant::now();
    let mut relay = Relay::new(RelayConfig::default(), t0, media(Law::Ulaw, 0), start);
    relay.attach(t0, Leg::B, media(Law::Alaw, 8), start);
    relay.bridge();
    // The datagram split in chunks, each a packet, at 20 ms intervals.
    let mut now = t0;
    for chunk in data.chunks(172).chain(std::iter::once(data)) {
        relay.handle(
            now,
            RelayEvent::Received {
                leg: Leg::A,
                from: remote,
                bytes: chunk,
            },
        );
        while let Some(action) = relay.poll(now) {
            if let RelayAction::Send { bytes, .. } = action {
                assert!(
                    rtp::parse(&bytes).is_ok(),
                    "the relay sent a packet that does not parse"
                );
            }
        }
        now += Duration::from_millis(20);
    }
    let a = relay.stats(Leg::A);
    assert_eq!(
        a.received_packets,
        a.dropped_total() + relay.stats(Leg::B).relayed_packets
    );
}

/// Telephone-event payloads, the DTMF receiver on arbitrary packets, SIP
/// INFO bodies and WAV files: errors, never panics; payloads round-trip.
pub fn telephone_event(data: &[u8]) {
    if let Ok(event) = TelephoneEvent::parse(data) {
        let bytes = event.to_bytes();
        assert_eq!(TelephoneEvent::parse(&bytes), Ok(event));
        assert_eq!(bytes[0], data[0]);
        assert_eq!(&bytes[2..4], &data[2..4]);
    }
    let mut receiver = DtmfReceiver::new();
    let mut digits = 0;
    for chunk in data.chunks(16) {
        if let Ok(packet) = rtp::parse(chunk)
            && let Ok(Some(_)) = receiver.receive(&packet)
        {
            digits += 1;
        }
    }
    assert!(digits <= data.len() / 16 + 1);
    let _ = dtmf::parse_info("application/dtmf-relay", data);
    let _ = dtmf::parse_info("application/dtmf", data);
    let _ = wav::parse(data);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_fuzz_invariants_hold_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::rtp(&data);
            super::telephone_event(&data);
        }

        #[test]
        fn the_fuzz_invariants_hold_on_mutated_packets(
            seq in any::<u16>(),
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
        ) {
            let mut data = super::rtp::PacketBuilder::new(0, seq, 0, 9).build(&[0xFF; 160]).unwrap_or_default();
            for (at, byte) in flips {
                if let Some(b) = data.get_mut(at) {
                    *b ^= byte;
                }
            }
            super::rtp(&data);
            super::telephone_event(&data);
        }
    }
}
