//! The relay's cost per packet, without sockets: 500 bridged calls, G.711
//! both ways every 20 ms, one leg PCMU and the other PCMA (so every packet
//! is also transcoded). Not a pass/fail test (no timed tests in the suite):
//! it prints medians. Run it in release on an idle machine:
//!
//!     cargo test -p ccu-channels --release --test media_relay_bench -- --ignored --nocapture
//!
//! The figure it gives is the relay's share of the issue's "500 concurrent
//! bridged calls" benchmark; the server adds two system calls per packet.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ccu_channels::media::g711::Law;
use ccu_channels::media::relay::{
    Leg, LegMedia, Relay, RelayAction, RelayConfig, RelayEvent, StreamStart,
};
use ccu_channels::media::rtp::PacketBuilder;

const CALLS: usize = 500;
const SECONDS: usize = 10;
const RUNS: usize = 7;

fn leg(port: u16, law: Law) -> LegMedia {
    LegMedia {
        remote: SocketAddr::from(([192, 0, 2, 1], port)),
        signalling_ip: None,
        law,
        payload_type: law.static_payload_type(),
        telephone_event: Some(101),
    }
}

fn run_once() -> (Duration, u64) {
    let t0 = Instant::now();
    let mut relays: Vec<Relay> = (0..CALLS)
        .map(|i| {
            let start = StreamStart {
                ssrc: i as u32,
                sequence: 0,
                timestamp: 0,
            };
            let mut relay = Relay::new(
                RelayConfig::default(),
                t0,
                leg(10_000 + i as u16, Law::Ulaw),
                start,
            );
            relay.attach(t0, Leg::B, leg(30_000 + i as u16, Law::Alaw), start);
            relay.bridge();
            relay
        })
        .collect();
    let mut a = PacketBuilder::new(0, 0, 0, 1)
        .build(&[0x55; 160])
        .unwrap_or_default();
    let mut b = PacketBuilder::new(8, 0, 0, 2)
        .build(&[0x55; 160])
        .unwrap_or_default();
    let started = Instant::now();
    let mut sent = 0u64;
    for tick in 0..SECONDS * 50 {
        let now = t0 + Duration::from_millis(20 * tick as u64);
        let seq = (tick as u16).to_be_bytes();
        let ts = (160 * tick as u32).to_be_bytes();
        for packet in [&mut a, &mut b] {
            packet[2..4].copy_from_slice(&seq);
            packet[4..8].copy_from_slice(&ts);
        }
        for (i, relay) in relays.iter_mut().enumerate() {
            let from_a = SocketAddr::from(([192, 0, 2, 1], 10_000 + i as u16));
            let from_b = SocketAddr::from(([192, 0, 2, 1], 30_000 + i as u16));
            relay.handle(
                now,
                RelayEvent::Received {
                    leg: Leg::A,
                    from: from_a,
                    bytes: &a,
                },
            );
            relay.handle(
                now,
                RelayEvent::Received {
                    leg: Leg::B,
                    from: from_b,
                    bytes: &b,
                },
            );
            while let Some(action) = relay.poll(now) {
                if let RelayAction::Send { bytes, .. } = action {
                    sent += 1;
                    std::hint::black_box(bytes);
                }
            }
        }
    }
    (started.elapsed(), sent)
}

#[test]
#[ignore = "a benchmark: run with --release --ignored --nocapture"]
fn relay_cost_for_500_bridged_calls() {
    let mut times = Vec::new();
    let mut sent = 0;
    for _ in 0..RUNS {
        let (elapsed, n) = run_once();
        times.push(elapsed);
        sent = n;
    }
    times.sort();
    let median = times[RUNS / 2];
    let expected = (CALLS * 2 * 50 * SECONDS) as u64;
    assert_eq!(sent, expected, "every packet relayed");
    let per_packet = median.as_nanos() as f64 / sent as f64;
    let simulated = Duration::from_secs(SECONDS as u64);
    println!(
        "{CALLS} calls x 2 directions x 50 packets/s for {SECONDS} s = {sent} packets: \
         median {median:?} of {RUNS} runs, {per_packet:.0} ns/packet, \
         {:.2}% of one core for the relay alone",
        100.0 * median.as_secs_f64() / simulated.as_secs_f64()
    );
}
