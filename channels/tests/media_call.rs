//! A whole call through the media layer, sans-IO, with a fake clock: the
//! caller hears the IVR from the committed prompts, chooses by RFC 4733
//! DTMF, waits with announcements and music, and is bridged to an
//! operator's phone on another codec. The shell loop below is what the
//! server's voice task does with sockets and a timer.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccu_channels::ivr::{
    Input, Ivr, IvrAction, IvrConfig, IvrEvent, IvrSession, Opening, PathStep,
};
use ccu_channels::media::announce::{
    AnnouncerAction, AnnouncerConfig, AnnouncerEvent, QueueAnnouncer, QueueStatus,
};
use ccu_channels::media::dtmf::DtmfSender;
use ccu_channels::media::g711::Law;
use ccu_channels::media::player::{MUSIC, PlayItem, Player, PlayerOutput, PromptLibrary};
use ccu_channels::media::relay::{
    DropReason, Leg, LegMedia, Relay, RelayAction, RelayConfig, RelayEvent, StreamStart,
};
use ccu_channels::media::rtp::{self, PacketBuilder};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `toml` block of docs/media.md's IVR section.
fn documented_menu() -> IvrConfig {
    let doc = std::fs::read_to_string(repo().join("docs/media.md")).expect("docs/media.md");
    let section = doc.split("## IVR").nth(1).expect("an IVR section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let value: toml::Table = toml::from_str(block).expect("the documented menu is TOML");
    value
        .get("ivr")
        .cloned()
        .expect("an [ivr] table")
        .try_into()
        .expect("the documented menu is an IvrConfig")
}

fn demo_queues() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("config/default.toml")).expect("default.toml");
    let config: toml::Table = toml::from_str(&text).expect("default.toml parses");
    config
        .get("queues")
        .and_then(|q| q.as_table())
        .expect("queues")
        .keys()
        .cloned()
        .collect()
}

fn library() -> PromptLibrary {
    PromptLibrary::load_dir(&repo().join("config/prompts")).expect("prompts load")
}

fn demo_ivr(library: &PromptLibrary) -> Arc<Ivr> {
    let queues = demo_queues();
    let languages = library.languages();
    let ivr = documented_menu()
        .validate(|q| queues.contains(q), |l| languages.contains(&l))
        .expect("the documented menu is valid for the demo city");
    ivr.check_prompts(|l, n| library.get(l, n).is_some())
        .expect("every prompt of the menu is committed");
    Arc::new(ivr)
}

#[test]
fn the_documented_menu_matches_the_demo_city_and_the_prompts() {
    let library = library();
    let ivr = demo_ivr(&library);
    // Every voice queue of the demo city is reachable from the menu.
    let mut reachable = BTreeSet::new();
    for menu in ivr.menus.values() {
        for choice in menu.choices.values().chain([&menu.default]) {
            if let ccu_channels::ivr::Target::Queue { queue, .. } = &choice.target {
                reachable.insert(queue.clone());
            }
        }
    }
    assert_eq!(reachable, demo_queues());
}

const CALLER: &str = "192.0.2.10:4000";
const PHONE: &str = "10.1.2.3:5004";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

enum Stage {
    Ivr(IvrSession),
    Queue(QueueAnnouncer),
    Bridged,
}

#[derive(Default)]
struct Seen {
    to_caller: Vec<Vec<u8>>,
    to_phone: Vec<Vec<u8>>,
    route: Option<IvrAction>,
    digits: Vec<char>,
}

#[test]
fn a_call_hears_the_ivr_chooses_by_dtmf_waits_and_is_bridged() {
    let library = library();
    let ivr = demo_ivr(&library);
    let t0 = Instant::now();
    let leg_a = LegMedia {
        remote: addr(CALLER),
        signalling_ip: None,
        law: Law::Ulaw,
        payload_type: 0,
        telephone_event: Some(101),
    };
    let leg_b = LegMedia {
        remote: addr(PHONE),
        signalling_ip: None,
        law: Law::Alaw,
        payload_type: 8,
        telephone_event: Some(96),
    };
    let mut relay = Relay::new(
        RelayConfig::default(),
        t0,
        leg_a,
        StreamStart {
            ssrc: 0xCA11,
            sequence: 40_000,
            timestamp: 7,
        },
    );
    let mut player = Player::new(Law::Ulaw, 0x9999, 0, 0);
    let mut stage = Stage::Ivr(IvrSession::new(t0, ivr, Opening::Open));
    let mut language = "it".to_owned();
    let mut seen = Seen::default();

    // The caller's phone: audio every 20 ms, "8" at 1 s and "1" at 2.5 s.
    let mut dtmf = DtmfSender::new(101, 0x5151, 0);
    let mut caller_packets: Vec<(Duration, Vec<u8>)> = Vec::new();
    for (key, at) in [('8', 1000u64), ('1', 2500)] {
        for p in dtmf.packets(key, at as u32 * 8, 120).expect("dtmf packets") {
            caller_packets.push((Duration::from_millis(at) + p.offset, p.bytes));
        }
    }
    let answer_at = Duration::from_secs(20);
    let end = Duration::from_secs(22);
    let mut caller_audio_after_bridge = 0u64;
    let mut tick = Duration::ZERO;
    while tick <= end {
        let now = t0 + tick;
        // The operator answers: bridge, stop the music.
        if tick == answer_at {
            relay.attach(
                now,
                Leg::B,
                leg_b.clone(),
                StreamStart {
                    ssrc: 0x0B0B,
                    sequence: 1,
                    timestamp: 1,
                },
            );
            relay.bridge();
            player.stop();
            if let Stage::Queue(announcer) = &mut stage {
                announcer.handle(now, AnnouncerEvent::Stop);
            }
            stage = Stage::Bridged;
        }
        // Datagrams arriving this tick.
        let mut inbound: Vec<(Leg, SocketAddr, Vec<u8>)> = Vec::new();
        if tick.as_millis().is_multiple_of(20) {
            let n = (tick.as_millis() / 20) as u16;
            // The caller's audio (a DTMF-capable phone keeps its audio going).
            inbound.push((
                Leg::A,
                addr(CALLER),
                PacketBuilder::new(0, 100 + n, 160 * u32::from(n), 0x5151)
                    .build(&[0xFF; 160])
                    .expect("packet"),
            ));
            if tick >= answer_at {
                caller_audio_after_bridge += 1;
                inbound.push((
                    Leg::B,
                    addr(PHONE),
                    PacketBuilder::new(8, n, 160 * u32::from(n), 0x0707)
                        .build(&[0xD5; 160])
                        .expect("packet"),
                ));
            }
        }
        inbound.extend(
            caller_packets
                .iter()
                .filter(|(at, _)| *at == tick)
                .map(|(_, b)| (Leg::A, addr(CALLER), b.clone())),
        );
        for (leg, from, bytes) in inbound {
            relay.handle(
                now,
                RelayEvent::Received {
                    leg,
                    from,
                    bytes: &bytes,
                },
            );
        }
        // Run the engines until they are quiet at this instant.
        loop {
            let mut progressed = false;
            while let Some(action) = relay.poll(now) {
                progressed = true;
                match action {
                    RelayAction::Send {
                        leg: Leg::A,
                        to,
                        bytes,
                    } => {
                        assert_eq!(to, addr(CALLER));
                        seen.to_caller.push(bytes);
                    }
                    RelayAction::Send {
                        leg: Leg::B,
                        to,
                        bytes,
                    } => {
                        assert_eq!(to, addr(PHONE));
                        seen.to_phone.push(bytes);
                    }
                    RelayAction::Digit { leg: Leg::A, digit } => {
                        seen.digits.push(digit.digit);
                        match &mut stage {
                            Stage::Ivr(ivr) => ivr.handle(now, IvrEvent::Digit(digit.digit)),
                            Stage::Queue(a) => a.handle(now, AnnouncerEvent::Digit(digit.digit)),
                            Stage::Bridged => {}
                        }
                    }
                    RelayAction::Latched { .. } | RelayAction::Digit { .. } => {}
                    RelayAction::MediaTimeout { leg } => panic!("media timeout on {leg:?}"),
                    RelayAction::Heard { .. } => panic!("nobody listens in this call"),
                }
            }
            while let Some(output) = player.poll(now) {
                progressed = true;
                match output {
                    PlayerOutput::Packet(bytes) => relay.handle(
                        now,
                        RelayEvent::Local {
                            leg: Leg::A,
                            bytes: &bytes,
                        },
                    ),
                    PlayerOutput::Finished => match &mut stage {
                        Stage::Ivr(ivr) => ivr.handle(now, IvrEvent::PromptFinished),
                        Stage::Queue(a) => a.handle(now, AnnouncerEvent::PromptFinished),
                        Stage::Bridged => {}
                    },
                }
            }
            let mut next_stage = None;
            match &mut stage {
                Stage::Ivr(ivr) => {
                    while let Some(action) = ivr.poll(now) {
                        progressed = true;
                        match action {
                            IvrAction::Play {
                                language: l,
                                prompts,
                            } => {
                                let prompts =
                                    library.resolve(&l, &prompts).expect("prompts resolve");
                                language = l;
                                player.play(now, prompts.into_iter().map(PlayItem::Prompt));
                            }
                            route @ IvrAction::Route { .. } => {
                                seen.route = Some(route);
                                let status = QueueStatus {
                                    position: Some(2),
                                    estimated_wait: Some(Duration::from_secs(150)),
                                };
                                next_stage = Some(Stage::Queue(QueueAnnouncer::new(
                                    AnnouncerConfig::default(),
                                    status,
                                )));
                            }
                            IvrAction::Hangup { .. } => panic!("the IVR hung up"),
                        }
                    }
                }
                Stage::Queue(announcer) => {
                    while let Some(action) = announcer.poll(now) {
                        progressed = true;
                        match action {
                            AnnouncerAction::Play(prompts) => {
                                let prompts = library
                                    .resolve(&language, &prompts)
                                    .expect("prompts resolve");
                                player.play(now, prompts.into_iter().map(PlayItem::Prompt));
                            }
                            AnnouncerAction::Music(name) => {
                                let music = library.get(MUSIC, &name).expect("hold music");
                                player.play(now, [PlayItem::Loop(music)]);
                            }
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                }
                Stage::Bridged => {}
            }
            if let Some(s) = next_stage {
                stage = s;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        tick += Duration::from_millis(10);
    }

    // The choice: "8" (companies) then "1" (water and waste), once each.
    assert_eq!(seen.digits, vec!['8', '1']);
    assert_eq!(
        seen.route,
        Some(IvrAction::Route {
            queue: "acqua_rifiuti".into(),
            skill: Some("acqua".into()),
            language: "it".into(),
            path: vec![
                PathStep {
                    menu: "main".into(),
                    input: Input::Digit('8')
                },
                PathStep {
                    menu: "aziende".into(),
                    input: Input::Digit('1')
                },
            ],
        })
    );

    // The caller heard one continuous PCMU stream: prompts, announcement,
    // music, then the operator, with one SSRC and consecutive numbers.
    let to_caller: Vec<_> = seen
        .to_caller
        .iter()
        .map(|b| rtp::parse(b).expect("parses"))
        .collect();
    // 20 s of prompts and music, then 2 s of the operator, all at 50 packets/s.
    assert_eq!(to_caller.len(), 1100 + 1);
    for pair in to_caller.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
        assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 160);
        assert_eq!((pair[1].ssrc, pair[1].payload_type), (0xCA11, 0));
    }
    assert_eq!(to_caller[0].sequence, 40_000);
    let from_operator = &to_caller[to_caller.len() - 101..];
    assert!(
        from_operator
            .iter()
            .all(|p| p.payload.iter().all(|&b| b == 0xFE)),
        "A-law silence as µ-law"
    );
    // Markers where the source changed: the start, and the bridge.
    assert!(to_caller[0].marker);
    assert!(from_operator[0].marker);

    // The operator's phone got the caller's audio after the bridge, in PCMA,
    // and none of the DTMF (it was not bridged then).
    let to_phone: Vec<_> = seen
        .to_phone
        .iter()
        .map(|b| rtp::parse(b).expect("parses"))
        .collect();
    assert_eq!(to_phone.len() as u64, caller_audio_after_bridge);
    assert!(
        to_phone.iter().all(|p| p.payload_type == 8
            && p.ssrc == 0x0B0B
            && p.payload.iter().all(|&b| b == 0xD5))
    );

    let a = relay.stats(Leg::A);
    let b = relay.stats(Leg::B);
    assert_eq!(b.relayed_packets, caller_audio_after_bridge);
    assert_eq!(a.relayed_packets, caller_audio_after_bridge);
    assert_eq!(a.local_packets, 1000);
    assert_eq!(a.dropped(DropReason::Stranger), 0);
    // Before the bridge the caller's audio and DTMF went nowhere, counted.
    assert_eq!(
        a.dropped(DropReason::NotBridged),
        a.received_packets - caller_audio_after_bridge
    );
    assert_eq!(b.dropped_total(), 0);
}

/// The same call through `media::call::CallMedia`, the joined engine the
/// server uses: only datagrams and SIP-level events go in.
#[test]
fn the_same_call_through_call_media() {
    use ccu_channels::media::call::{
        CallAction, CallEvent, CallMedia, CallMediaConfig, CallStreams,
    };

    let library = Arc::new(library());
    let ivr = demo_ivr(&library);
    let t0 = Instant::now();
    let caller_leg = LegMedia {
        remote: addr(CALLER),
        signalling_ip: None,
        law: Law::Alaw,
        payload_type: 8,
        telephone_event: Some(101),
    };
    let phone_leg = LegMedia {
        remote: addr(PHONE),
        signalling_ip: None,
        law: Law::Ulaw,
        payload_type: 0,
        telephone_event: Some(101),
    };
    let streams = CallStreams {
        caller: StreamStart {
            ssrc: 0xCA11,
            sequence: 65_000,
            timestamp: u32::MAX - 1000,
        },
        player: StreamStart {
            ssrc: 1,
            sequence: 0,
            timestamp: 0,
        },
    };
    let mut call = CallMedia::new(
        t0,
        CallMediaConfig::default(),
        library,
        ivr,
        Opening::Open,
        caller_leg,
        streams,
    );
    let mut dtmf = DtmfSender::new(101, 0x5151, 0);
    let mut scheduled: Vec<(Duration, Vec<u8>)> = Vec::new();
    for (key, at) in [('8', 1500u64), ('2', 3000)] {
        for p in dtmf.packets(key, at as u32 * 8, 100).expect("dtmf packets") {
            scheduled.push((Duration::from_millis(at) + p.offset, p.bytes));
        }
    }
    let mut to_caller = Vec::new();
    let mut to_phone = 0usize;
    let mut route = None;
    let mut tick = Duration::ZERO;
    while tick <= Duration::from_secs(25) {
        let now = t0 + tick;
        if tick == Duration::from_secs(20) {
            let start = StreamStart {
                ssrc: 0x0B0B,
                sequence: 1,
                timestamp: 1,
            };
            call.handle(
                now,
                CallEvent::OperatorAnswered {
                    media: &phone_leg,
                    start,
                },
            );
        }
        for (_, bytes) in scheduled.iter().filter(|(at, _)| *at == tick) {
            call.handle(
                now,
                CallEvent::Received {
                    leg: Leg::A,
                    from: addr(CALLER),
                    bytes,
                },
            );
        }
        if tick >= Duration::from_secs(20) && tick.as_millis().is_multiple_of(20) {
            let n = (tick.as_millis() / 20) as u16;
            let from_caller = PacketBuilder::new(8, n, 160 * u32::from(n), 7)
                .build(&[0xD5; 160])
                .expect("packet");
            call.handle(
                now,
                CallEvent::Received {
                    leg: Leg::A,
                    from: addr(CALLER),
                    bytes: &from_caller,
                },
            );
            let from_phone = PacketBuilder::new(0, n, 160 * u32::from(n), 8)
                .build(&[0xFF; 160])
                .expect("packet");
            call.handle(
                now,
                CallEvent::Received {
                    leg: Leg::B,
                    from: addr(PHONE),
                    bytes: &from_phone,
                },
            );
        }
        while let Some(action) = call.poll(now) {
            match action {
                CallAction::Send {
                    leg: Leg::A, bytes, ..
                } => to_caller.push(bytes),
                CallAction::Send { leg: Leg::B, .. } => to_phone += 1,
                r @ CallAction::Route { .. } => {
                    route = Some(r);
                    call.handle(
                        now,
                        CallEvent::QueueStatus(QueueStatus {
                            position: Some(4),
                            estimated_wait: Some(Duration::from_secs(400)),
                        }),
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        tick += Duration::from_millis(10);
    }
    let Some(CallAction::Route { queue, path, .. }) = route else {
        panic!("no route")
    };
    assert_eq!(queue, "trasporti");
    assert_eq!(
        path.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec!["main:8", "aziende:2"]
    );
    // 20 s of IVR and queue, then 5 s bridged: 50 packets a second, one stream
    // across the wrap of both the sequence number and the timestamp.
    assert_eq!(to_caller.len(), 1000 + 251);
    let parsed: Vec<_> = to_caller
        .iter()
        .map(|b| rtp::parse(b).expect("parses"))
        .collect();
    for pair in parsed.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
        assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 160);
        assert_eq!((pair[1].ssrc, pair[1].payload_type), (0xCA11, 8));
    }
    assert_eq!(to_phone, 251);
}
