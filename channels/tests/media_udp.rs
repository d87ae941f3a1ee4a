//! The relay over real UDP sockets, with the smallest shell the server
//! needs: one socket per leg, `handle` on every datagram, `send_to` on every
//! `Send`. The caller's phone sends from another port than its SDP says
//! (NAT), a stranger on another address sends too; the relay latches,
//! ignores the stranger, answers symmetrically and transcodes PCMU ↔ PCMA.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ccu_channels::media::g711::Law;
use ccu_channels::media::relay::{
    DropReason, Leg, LegMedia, Relay, RelayAction, RelayConfig, RelayEvent, StreamStart,
};
use ccu_channels::media::rtp::{self, PacketBuilder};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const PACKETS: u16 = 50;
const WAIT: Duration = Duration::from_secs(10);

/// The shell: both legs' sockets, until `stop` fires; returns the relay.
async fn run(
    mut relay: Relay,
    a: UdpSocket,
    b: UdpSocket,
    mut stop: oneshot::Receiver<()>,
) -> Relay {
    let mut buf_a = [0u8; 2048];
    let mut buf_b = [0u8; 2048];
    loop {
        let (leg, n, from) = tokio::select! {
            r = a.recv_from(&mut buf_a) => { let (n, from) = r.expect("recv"); (Leg::A, n, from) }
            r = b.recv_from(&mut buf_b) => { let (n, from) = r.expect("recv"); (Leg::B, n, from) }
            _ = &mut stop => return relay,
        };
        let bytes = if leg == Leg::A {
            &buf_a[..n]
        } else {
            &buf_b[..n]
        };
        let now = Instant::now();
        relay.handle(now, RelayEvent::Received { leg, from, bytes });
        while let Some(action) = relay.poll(now) {
            if let RelayAction::Send { leg, to, bytes } = action {
                let socket = if leg == Leg::A { &a } else { &b };
                socket.send_to(&bytes, to).await.expect("send");
            }
        }
    }
}

async fn bind(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.expect("bind")
}

async fn receive(socket: &UdpSocket, count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while out.len() < count {
        let (n, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("a packet within the wait")
            .expect("recv");
        out.push((from, buf[..n].to_vec()));
    }
    out
}

#[tokio::test]
async fn a_bridged_call_over_udp_latches_and_relays_both_ways() {
    let relay_a = bind("127.0.0.1").await;
    let relay_b = bind("127.0.0.1").await;
    let relay_a_addr = relay_a.local_addr().expect("addr");
    let relay_b_addr = relay_b.local_addr().expect("addr");
    // The caller's SDP names one port; its packets come from another.
    let sdp_port = bind("127.0.0.1").await;
    let caller = bind("127.0.0.1").await;
    let operator = bind("127.0.0.1").await;
    // Another loopback address: not the caller's IP.
    let stranger = bind("127.0.0.2").await;

    let t0 = Instant::now();
    let start = StreamStart {
        ssrc: 0xCA11,
        sequence: 1,
        timestamp: 1,
    };
    let mut relay = Relay::new(
        RelayConfig::default(),
        t0,
        LegMedia {
            remote: sdp_port.local_addr().expect("addr"),
            signalling_ip: None,
            law: Law::Ulaw,
            payload_type: 0,
            telephone_event: Some(101),
        },
        start,
    );
    relay.attach(
        t0,
        Leg::B,
        LegMedia {
            remote: operator.local_addr().expect("addr"),
            signalling_ip: None,
            law: Law::Alaw,
            payload_type: 8,
            telephone_event: Some(101),
        },
        StreamStart {
            ssrc: 0x0B0B,
            sequence: 1,
            timestamp: 1,
        },
    );
    relay.bridge();
    let (stop, stopped) = oneshot::channel();
    let shell = tokio::spawn(run(relay, relay_a, relay_b, stopped));

    // The stranger first: nothing may come of it.
    for i in 0..5 {
        let p = PacketBuilder::new(0, i, 0, 66)
            .build(&[0; 160])
            .expect("packet");
        stranger.send_to(&p, relay_a_addr).await.expect("send");
    }
    for i in 0..PACKETS {
        let p = PacketBuilder::new(0, 100 + i, 160 * u32::from(i), 7)
            .build(&[0xFF; 160])
            .expect("packet");
        caller.send_to(&p, relay_a_addr).await.expect("send");
    }
    let at_operator = receive(&operator, usize::from(PACKETS)).await;
    assert!(
        at_operator.iter().all(|(from, _)| *from == relay_b_addr),
        "sent from leg B's socket"
    );
    let parsed: Vec<_> = at_operator
        .iter()
        .map(|(_, b)| rtp::parse(b).expect("RTP"))
        .collect();
    assert!(
        parsed
            .iter()
            .all(|p| p.payload_type == 8 && p.ssrc == 0x0B0B)
    );
    assert!(
        parsed.iter().all(|p| p.payload.iter().all(|&b| b == 0xD5)),
        "transcoded to A-law"
    );

    for i in 0..PACKETS {
        let p = PacketBuilder::new(8, i, 160 * u32::from(i), 9)
            .build(&[0xD5; 160])
            .expect("packet");
        operator.send_to(&p, relay_b_addr).await.expect("send");
    }
    // Symmetric: to the port the caller sent from, not the SDP's, from the
    // socket it sent to.
    let at_caller = receive(&caller, usize::from(PACKETS)).await;
    assert!(at_caller.iter().all(|(from, _)| *from == relay_a_addr));
    let parsed: Vec<_> = at_caller
        .iter()
        .map(|(_, b)| rtp::parse(b).expect("RTP"))
        .collect();
    assert!(
        parsed
            .iter()
            .all(|p| p.payload_type == 0 && p.ssrc == 0xCA11)
    );

    stop.send(()).expect("the shell runs");
    let relay = shell.await.expect("the shell ends");
    // Nothing went to the SDP port or the stranger.
    let mut buf = [0u8; 16];
    assert!(sdp_port.try_recv_from(&mut buf).is_err());
    assert!(stranger.try_recv_from(&mut buf).is_err());
    let a = relay.stats(Leg::A);
    assert_eq!(a.dropped(DropReason::Stranger), 5);
    assert_eq!(relay.stats(Leg::B).relayed_packets, u64::from(PACKETS));
    assert_eq!(a.relayed_packets, u64::from(PACKETS));
    assert_eq!(
        relay.latched(Leg::A),
        Some(caller.local_addr().expect("addr"))
    );
}
