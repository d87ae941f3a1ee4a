//! Whole calls through the B2BUA [`Call`], sans-IO, with a fake clock and
//! fake peers: a trunk that sends the citizen's INVITE, RTP and RFC 4733
//! key presses, and operator phones that ring, answer, refuse, hold,
//! transfer and hang up. The prompts and the menu are the committed ones
//! (config/prompts, the documented menu of docs/media.md).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ccu_channels::call::callback::{
    Callback, CallbackConfig, CallbackEnd, CallbackInput, CallbackOutput, CallbackSetup, CitizenEnd,
};
use ccu_channels::call::{
    Call, CallConfig, CallInput, CallOutput, CallRecord, CallSetup, Device, HangupCause, OfferEnd,
    OfferOutcome, SipLeg, SipSend,
};
use ccu_channels::ivr::{Ivr, IvrConfig, Opening};
use ccu_channels::media::announce::QueueStatus;
use ccu_channels::media::call::{CallHangup, CallMediaConfig, CallStreams};
use ccu_channels::media::dtmf::DtmfSender;
use ccu_channels::media::player::PromptLibrary;
use ccu_channels::media::relay::{Leg, StreamStart};
use ccu_channels::media::rtp::{self, PacketBuilder};
use ccu_channels::sip::Uri;
use ccu_channels::sip::dialog::{DialogConfig, DialogEvent};
use ccu_channels::sip::message::{HeaderName, Message, Method, Request, Response, StatusCode};
use ccu_channels::sip::parse::parse;
use ccu_channels::sip::sdp::LocalMedia;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn documented_menu() -> IvrConfig {
    let doc = std::fs::read_to_string(repo().join("docs/media.md")).expect("docs/media.md");
    let section = doc.split("## IVR").nth(1).expect("an IVR section");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let value: toml::Table = toml::from_str(block).expect("TOML");
    value
        .get("ivr")
        .cloned()
        .expect("[ivr]")
        .try_into()
        .expect("an IvrConfig")
}

fn library_and_ivr() -> (Arc<PromptLibrary>, Arc<Ivr>) {
    let library = PromptLibrary::load_dir(&repo().join("config/prompts")).expect("prompts");
    let text = std::fs::read_to_string(repo().join("config/default.toml")).expect("default.toml");
    let config: toml::Table = toml::from_str(&text).expect("default.toml parses");
    let queues: BTreeSet<String> = config
        .get("queues")
        .and_then(|q| q.as_table())
        .expect("queues")
        .keys()
        .cloned()
        .collect();
    let languages = library.languages();
    let ivr = documented_menu()
        .validate(|q| queues.contains(q), |l| languages.contains(&l))
        .expect("valid menu");
    (Arc::new(library), Arc::new(ivr))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

const CALLER_RTP: &str = "203.0.113.5:30000";
const PHONE_RTP: &str = "10.0.0.9:40000";

const TRUNK_OFFER: &str = "v=0\r\no=trunk 1 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
m=audio 30000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

fn phone_answer(direction: &str) -> String {
    format!(
        "v=0\r\no=phone 5 5 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )
}

fn request(text: &str, body: &str) -> Request {
    let bytes = format!("{text}Content-Length: {}\r\n\r\n{body}", body.len());
    match parse(bytes.as_bytes()) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn invite() -> Request {
    request(
        "INVITE sip:+390200000000@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKtrunk1;received=203.0.113.5;rport=5060\r\n\
Max-Forwards: 69\r\n\
From: <sip:+393331234567@trunk.example>;tag=tr1\r\n\
To: <sip:+390200000000@ccu.example>\r\n\
Call-ID: call-1@trunk.example\r\nCSeq: 10 INVITE\r\n\
Contact: <sip:+393331234567@203.0.113.5:5060>\r\n\
Content-Type: application/sdp\r\n",
        TRUNK_OFFER,
    )
}

/// A request from the trunk inside the citizen's dialog.
fn from_trunk(method: &str, cseq: u32) -> Request {
    request(
        &format!(
            "{method} sip:ccu@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKt{method}{cseq}\r\nMax-Forwards: 70\r\n\
From: <sip:+393331234567@trunk.example>;tag=tr1\r\n\
To: <sip:+390200000000@ccu.example>;tag=ccu1\r\n\
Call-ID: call-1@trunk.example\r\nCSeq: {cseq} {method}\r\n"
        ),
        "",
    )
}

/// A request from a phone inside its dialog (our INVITE's headers turned
/// around).
fn from_phone(
    invite: &Request,
    tag: &str,
    method: &str,
    cseq: u32,
    extra: &str,
    body: &str,
) -> Request {
    let from = invite.headers.get(&HeaderName::From).expect("From");
    let to = invite.headers.get(&HeaderName::To).expect("To");
    let call_id = invite.headers.call_id().expect("Call-ID");
    request(
        &format!(
            "{method} sip:ccu@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bKp{method}{cseq}\r\nMax-Forwards: 70\r\n\
From: {to};tag={tag}\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{extra}"
        ),
        body,
    )
}

fn phone_reply(invite: &Request, status: u16, tag: &str, sdp: Option<&str>) -> Response {
    let mut response = invite.response(StatusCode::new(status).expect("status"), tag);
    response
        .headers
        .push(HeaderName::Contact, "<sip:1001@10.0.0.9:5062>");
    if let Some(sdp) = sdp {
        response
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        response.body = sdp.as_bytes().to_vec();
    }
    response
}

fn device(n: u32) -> Device {
    Device {
        target: Uri::parse(&format!("sip:100{n}@10.0.0.9:5062")).expect("uri"),
        source_ip: "10.0.0.9".parse().expect("ip"),
        call_id: format!("op-{n}@ccu"),
        local_tag: format!("ut{n}"),
    }
}

struct Harness {
    call: Call,
    t0: Instant,
    now: Instant,
    out: Vec<CallOutput>,
}

impl Harness {
    fn new() -> Harness {
        let (library, ivr) = library_and_ivr();
        let t0 = Instant::now();
        let dialog = DialogConfig::new(
            Uri::parse("sip:ccu@192.0.2.1:5060").expect("uri"),
            "192.0.2.1:5060",
        );
        let config = CallConfig {
            caller_dialog: dialog.clone(),
            phone_dialog: dialog,
            media: CallMediaConfig::default(),
            ring_timeout: Duration::from_secs(15),
        };
        let start = |ssrc| StreamStart {
            ssrc,
            sequence: 100,
            timestamp: 1000,
        };
        let setup = CallSetup {
            invite: invite(),
            local_tag: "ccu1".into(),
            source_ip: "203.0.113.5".parse().expect("ip"),
            caller_number: "+393331234567".into(),
            caller_media: LocalMedia::new("192.0.2.1".parse().expect("ip"), 20_000, 11),
            phone_media: LocalMedia::new("192.0.2.1".parse().expect("ip"), 20_002, 22),
            streams: CallStreams {
                caller: start(0xA),
                player: start(0xB),
            },
            operator_stream: start(0xC),
            opening: Opening::Open,
        };
        let call = Call::new(t0, config, setup, library, ivr).expect("a dialog");
        let mut harness = Harness {
            call,
            t0,
            now: t0,
            out: Vec::new(),
        };
        harness.drain();
        harness
    }

    fn drain(&mut self) {
        while let Some(output) = self.call.poll(self.now) {
            self.out.push(output);
        }
    }

    fn input(&mut self, input: CallInput<'_>) {
        self.call.handle(self.now, input);
        self.drain();
    }

    fn sip(&mut self, leg: SipLeg, event: DialogEvent<'_>) {
        self.input(CallInput::Sip { leg, event });
    }

    /// Moves the clock to `t0 + at`, through every deadline on the way.
    fn advance_to(&mut self, at: Duration) {
        let end = self.t0 + at;
        while let Some(deadline) = self.call.next_deadline() {
            if deadline > end {
                break;
            }
            assert!(deadline >= self.now, "a deadline in the past");
            if deadline == self.now && self.call.poll(self.now).is_none() {
                panic!("a deadline that poll does not clear");
            }
            self.now = deadline;
            self.drain();
        }
        self.now = end;
        self.drain();
    }

    fn take(&mut self) -> Vec<CallOutput> {
        std::mem::take(&mut self.out)
    }

    /// The caller presses a key by RFC 4733 at `at`.
    fn press(&mut self, key: char, at: Duration) {
        let mut dtmf = DtmfSender::new(101, 0x5151, 0);
        let packets = dtmf
            .packets(key, at.as_millis() as u32 * 8, 100)
            .expect("dtmf");
        for p in packets {
            self.advance_to(at + p.offset);
            self.input(CallInput::Rtp {
                leg: Leg::A,
                from: addr(CALLER_RTP),
                bytes: &p.bytes,
            });
        }
    }

    /// Both sides talk for `packets` × 20 ms from `at`.
    fn talk(&mut self, at: Duration, packets: u16) {
        for n in 0..packets {
            self.advance_to(at + Duration::from_millis(20 * u64::from(n)));
            let caller = PacketBuilder::new(8, n, 160 * u32::from(n), 7)
                .build(&[0xD5; 160])
                .expect("packet");
            self.input(CallInput::Rtp {
                leg: Leg::A,
                from: addr(CALLER_RTP),
                bytes: &caller,
            });
            let phone = PacketBuilder::new(0, n, 160 * u32::from(n), 8)
                .build(&[0xFF; 160])
                .expect("packet");
            self.input(CallInput::Rtp {
                leg: Leg::B,
                from: addr(PHONE_RTP),
                bytes: &phone,
            });
        }
    }

    /// Presses 1 (anagrafe) and returns once routed and given a position.
    fn routed(&mut self) {
        self.press('1', Duration::from_millis(1500));
        let outputs = self.take();
        let route = outputs
            .iter()
            .find(|o| matches!(o, CallOutput::Route { .. }))
            .expect("routed");
        let CallOutput::Route {
            queue,
            skill,
            ivr_path,
            ..
        } = route
        else {
            unreachable!()
        };
        assert_eq!(queue, "anagrafe");
        assert_eq!(skill.as_deref(), Some("anagrafe"));
        assert_eq!(ivr_path.len(), 1);
        assert_eq!(ivr_path[0].to_string(), "main:1");
        assert!(outputs.contains(&CallOutput::Record(CallRecord::IvrPath(ivr_path.clone()))));
        self.input(CallInput::QueueStatus(QueueStatus {
            position: Some(1),
            estimated_wait: Some(Duration::from_secs(60)),
        }));
    }

    /// Offers the call to an operator with these devices; returns their
    /// INVITEs.
    fn offer(&mut self, offer: u64, operator: i64, devices: Vec<Device>) -> Vec<(SipLeg, Request)> {
        self.input(CallInput::Offer {
            offer,
            operator,
            conversation: 42,
            devices,
            ring_for: None,
        });
        self.take()
            .into_iter()
            .filter_map(|o| match o {
                CallOutput::Sip {
                    leg,
                    send: SipSend::Request(r),
                } if r.method == Method::Invite => Some((leg, r)),
                _ => None,
            })
            .collect()
    }

    fn answer(&mut self, leg: SipLeg, invite: &Request, tag: &str) {
        self.sip(
            leg,
            DialogEvent::Response(&phone_reply(invite, 180, tag, None)),
        );
        let ok = phone_reply(invite, 200, tag, Some(&phone_answer("sendrecv")));
        self.sip(leg, DialogEvent::Response(&ok));
    }
}

fn sip_sends(outputs: &[CallOutput], on: SipLeg) -> Vec<&SipSend> {
    outputs
        .iter()
        .filter_map(|o| match o {
            CallOutput::Sip { leg, send } if *leg == on => Some(send),
            _ => None,
        })
        .collect()
}

fn rtp_to(outputs: &[CallOutput], to_leg: Leg) -> Vec<&Vec<u8>> {
    outputs
        .iter()
        .filter_map(|o| match o {
            CallOutput::Rtp { leg, bytes, .. } if *leg == to_leg => Some(bytes),
            _ => None,
        })
        .collect()
}

/// The trunk gets BYE, and the call's last output is its end with `cause`.
#[track_caller]
fn assert_caller_gets_bye_and_the_call_ends(outputs: &[CallOutput], cause: HangupCause) {
    assert!(is_request(
        sip_sends(outputs, SipLeg::Caller)[0],
        Method::Bye
    ));
    assert_eq!(outputs.last(), Some(&CallOutput::Ended { cause }));
}

fn is_request(send: &SipSend, method: Method) -> bool {
    matches!(send, SipSend::Request(r) if r.method == method)
}

fn response_status(send: &SipSend) -> Option<u16> {
    match send {
        SipSend::Respond(r) => Some(r.status.as_u16()),
        _ => None,
    }
}

#[test]
fn a_caller_chooses_by_dtmf_waits_is_bridged_talks_and_the_operator_hangs_up() {
    let mut h = Harness::new();
    let answered = h.take();
    let to_trunk = sip_sends(&answered, SipLeg::Caller);
    assert_eq!(
        response_status(to_trunk[0]),
        Some(200),
        "the IVR answers at once"
    );
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));

    h.routed();
    h.advance_to(Duration::from_secs(10));
    let waiting = h.take();
    assert!(
        rtp_to(&waiting, Leg::A).len() > 300,
        "announcement and music"
    );

    let invites = h.offer(7, 3, vec![device(1)]);
    assert_eq!(invites.len(), 1);
    let (leg, invite) = invites[0].clone();
    assert_eq!(leg, SipLeg::Phone(0));
    assert_eq!(invite.uri.to_string(), "sip:1001@10.0.0.9:5062");
    let from = invite.headers.from().expect("From");
    assert_eq!(from.display_name.as_deref(), Some("+393331234567 anagrafe"));
    assert_eq!(from.uri.to_string(), "sip:+393331234567@192.0.2.1");
    assert_eq!(
        invite.headers.get(&HeaderName::Other("X-CCU-Queue".into())),
        Some("anagrafe")
    );
    assert_eq!(
        invite
            .headers
            .get(&HeaderName::Other("X-CCU-Conversation".into())),
        Some("42")
    );
    assert_eq!(h.call.ringing_offer(), Some(7));

    h.answer(leg, &invite, "ph1");
    let outputs = h.take();
    let to_phone = sip_sends(&outputs, leg);
    assert!(
        matches!(to_phone[0], SipSend::Stateless(Message::Request(ack)) if ack.method == Method::Ack)
    );
    assert!(outputs.contains(&CallOutput::OfferOutcome {
        offer: 7,
        outcome: OfferOutcome::Accepted
    }));
    assert!(outputs.iter().any(|o| matches!(
        o,
        CallOutput::Record(CallRecord::Answered { offer: 7, operator: 3, waited }) if *waited > Duration::ZERO
    )));
    assert!(h.call.is_bridged());

    // Audio both ways for two seconds: every packet is relayed, PCMA ↔ PCMU.
    h.talk(Duration::from_secs(11), 100);
    let talk = h.take();
    let to_phone = rtp_to(&talk, Leg::B);
    let to_caller = rtp_to(&talk, Leg::A);
    assert_eq!(to_phone.len(), 100);
    assert_eq!(to_caller.len(), 100, "only the operator now, no music");
    let packet = rtp::parse(to_phone[0]).expect("rtp");
    assert_eq!(packet.payload_type, 0, "the phone's PCMU");
    let packet = rtp::parse(to_caller[0]).expect("rtp");
    assert_eq!(packet.payload_type, 8, "the trunk's PCMA");
    let stats = h.call.media().expect("media").relay().stats(Leg::B);
    assert_eq!(stats.relayed_packets, 100);

    // The operator hangs up: 200 to the phone, BYE to the trunk.
    let bye = from_phone(&invite, "ph1", "BYE", 1, "", "");
    h.sip(leg, DialogEvent::Request(&bye));
    let outputs = h.take();
    assert_eq!(response_status(sip_sends(&outputs, leg)[0]), Some(200));
    assert_caller_gets_bye_and_the_call_ends(&outputs, HangupCause::Operator);
    // The record counts the relayed audio: 100 packets each way.
    assert!(outputs.contains(&CallOutput::Record(CallRecord::Hangup {
        cause: HangupCause::Operator,
        relayed_to_caller: 100,
        relayed_to_operator: 100,
    })));
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, CallOutput::Abandoned { .. }))
    );
    assert!(h.call.is_done());
}

#[test]
fn a_caller_who_hangs_up_while_queued_is_an_abandon_with_its_wait() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    h.advance_to(Duration::from_secs(40));
    h.take();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("BYE", 11)));
    let outputs = h.take();
    assert_eq!(
        response_status(sip_sends(&outputs, SipLeg::Caller)[0]),
        Some(200)
    );
    // Routed by the key's first packet at 1.5 s; gone at 40 s.
    let abandoned: Vec<_> = outputs
        .iter()
        .filter(|o| matches!(o, CallOutput::Abandoned { .. }))
        .collect();
    assert_eq!(
        abandoned,
        [&CallOutput::Abandoned {
            wait: Duration::from_millis(38_500)
        }]
    );
    assert_eq!(
        outputs.last(),
        Some(&CallOutput::Ended {
            cause: HangupCause::Caller
        })
    );
    assert!(rtp_to(&outputs, Leg::A).is_empty(), "nothing after the BYE");
    h.advance_to(Duration::from_secs(45));
    assert!(rtp_to(&h.take(), Leg::A).is_empty());
    assert!(h.call.is_done());
}

#[test]
fn a_busy_operator_sends_the_call_back_and_the_next_offer_rings_another_phone() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    let invites = h.offer(1, 3, vec![device(1)]);
    let (leg, invite) = invites[0].clone();
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(&invite, 486, "ph1", None)),
    );
    let outputs = h.take();
    assert!(outputs.contains(&CallOutput::OfferOutcome {
        offer: 1,
        outcome: OfferOutcome::Declined(StatusCode::BUSY_HERE)
    }));
    assert!(
        outputs.contains(&CallOutput::Record(CallRecord::OfferEnded {
            offer: 1,
            operator: 3,
            end: OfferEnd::Busy(StatusCode::BUSY_HERE)
        }))
    );
    assert_eq!(h.call.ringing_offer(), None);
    // Music goes on while the router finds the next operator.
    h.advance_to(h.now - h.t0 + Duration::from_secs(2));
    assert!(rtp_to(&h.take(), Leg::A).len() >= 90);

    let invites = h.offer(2, 4, vec![device(2)]);
    let (leg2, invite2) = invites[0].clone();
    assert_eq!(leg2, SipLeg::Phone(1), "a new leg");
    assert_eq!(invite2.uri.to_string(), "sip:1002@10.0.0.9:5062");
    h.answer(leg2, &invite2, "ph2");
    assert!(h.take().contains(&CallOutput::OfferOutcome {
        offer: 2,
        outcome: OfferOutcome::Accepted
    }));
    assert!(h.call.is_bridged());
}

/// An offer withdrawn while its phones ring (declined in the console),
/// then the next offer rings another phone. The first offer's phones are
/// not the second's: one that answers late (it sent no 180, so our
/// CANCEL was held back, RFC 3261 §9.1) is acknowledged and hung up,
/// never taken as the answer to the second offer; one that ends busy says
/// nothing of the second offer. The second phone's answer is its answer.
#[test]
fn a_late_answer_of_a_withdrawn_offer_is_hung_up_and_not_the_next_offers() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    let invites = h.offer(1, 3, vec![device(1), device(3)]);
    let (ringing, ringing_invite) = invites[0].clone();
    let (silent, silent_invite) = invites[1].clone();
    h.sip(
        ringing,
        DialogEvent::Response(&phone_reply(&ringing_invite, 180, "ph1", None)),
    );
    h.input(CallInput::WithdrawOffer);
    let outputs = h.take();
    assert!(
        sip_sends(&outputs, ringing)
            .iter()
            .any(|s| matches!(s, SipSend::Cancel(_)))
    );
    assert_eq!(h.call.ringing_offer(), None);
    let (leg2, invite2) = h.offer(2, 4, vec![device(2)])[0].clone();
    assert_eq!(h.call.ringing_offer(), Some(2));

    // The silent phone answers now.
    let late = phone_reply(&silent_invite, 200, "ph3", Some(&phone_answer("sendrecv")));
    h.sip(silent, DialogEvent::Response(&late));
    let outputs = h.take();
    let to_silent = sip_sends(&outputs, silent);
    assert!(
        to_silent.iter().any(
            |s| matches!(s, SipSend::Stateless(Message::Request(r)) if r.method == Method::Ack)
        ),
        "{outputs:?}"
    );
    assert!(
        to_silent.iter().any(|s| is_request(s, Method::Bye)),
        "{outputs:?}"
    );
    let about_offers = |outputs: &[CallOutput]| {
        outputs.iter().any(|o| {
            matches!(
                o,
                CallOutput::OfferOutcome { .. }
                    | CallOutput::Record(CallRecord::OfferEnded { offer: 2, .. })
            )
        })
    };
    assert!(!about_offers(&outputs), "{outputs:?}");
    assert!(!h.call.is_bridged());
    assert_eq!(h.call.ringing_offer(), Some(2), "still ringing the second");
    // The ringing one was busy before it saw our CANCEL.
    h.sip(
        ringing,
        DialogEvent::Response(&phone_reply(&ringing_invite, 486, "ph1", None)),
    );
    let outputs = h.take();
    assert!(!about_offers(&outputs), "{outputs:?}");

    h.answer(leg2, &invite2, "ph2");
    let outputs = h.take();
    assert!(outputs.contains(&CallOutput::OfferOutcome {
        offer: 2,
        outcome: OfferOutcome::Accepted
    }));
    assert!(h.call.is_bridged());
}

#[test]
fn a_queue_that_closes_while_the_caller_waits_plays_the_closed_message_and_hangs_up() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    h.take();
    h.input(CallInput::QueueClosed);
    h.advance_to(h.now - h.t0 + Duration::from_secs(30));
    let outputs = h.take();
    assert!(!rtp_to(&outputs, Leg::A).is_empty(), "the closed prompts");
    assert_caller_gets_bye_and_the_call_ends(&outputs, HangupCause::Ivr(CallHangup::Closed));
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, CallOutput::Abandoned { .. })),
        "not an abandon: {outputs:?}"
    );
}

#[test]
fn a_phone_that_rings_out_is_cancelled_and_the_offer_missed() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    let offered_at = h.now - h.t0;
    let (leg, invite) = h.offer(1, 3, vec![device(1)])[0].clone();
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(&invite, 180, "ph1", None)),
    );
    h.advance_to(offered_at + Duration::from_secs(15));
    let outputs = h.take();
    let sends = sip_sends(&outputs, leg);
    let SipSend::Cancel(cancel) = sends[0] else {
        panic!("{sends:?}")
    };
    assert_eq!(cancel.headers.cseq().expect("CSeq").seq, 1);
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(&invite, 487, "ph1", None)),
    );
    let outputs = h.take();
    assert!(outputs.contains(&CallOutput::OfferOutcome {
        offer: 1,
        outcome: OfferOutcome::Missed
    }));
    assert!(
        outputs.contains(&CallOutput::Record(CallRecord::OfferEnded {
            offer: 1,
            operator: 3,
            end: OfferEnd::RingTimeout
        }))
    );
}

#[test]
fn a_caller_who_hangs_up_while_the_phone_rings_cancels_it() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    let (leg, invite) = h.offer(1, 3, vec![device(1)])[0].clone();
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(&invite, 180, "ph1", None)),
    );
    h.take();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("BYE", 11)));
    let outputs = h.take();
    assert!(matches!(sip_sends(&outputs, leg)[0], SipSend::Cancel(_)));
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, CallOutput::Abandoned { .. }))
    );
    assert_eq!(
        outputs.last(),
        Some(&CallOutput::Ended {
            cause: HangupCause::Caller
        })
    );
    assert!(!h.call.is_done(), "the phone's INVITE is still finishing");
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(&invite, 487, "ph1", None)),
    );
    assert!(
        h.take().is_empty(),
        "no outcome for an offer whose caller left"
    );
    assert!(h.call.is_done());
}

#[test]
fn the_first_device_to_answer_wins_and_the_others_are_cancelled() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    let invites = h.offer(1, 3, vec![device(1), device(2)]);
    assert_eq!(invites.len(), 2);
    let (desk, desk_invite) = invites[0].clone();
    let (softphone, soft_invite) = invites[1].clone();
    h.sip(
        desk,
        DialogEvent::Response(&phone_reply(&desk_invite, 180, "d1", None)),
    );
    h.answer(softphone, &soft_invite, "s1");
    let outputs = h.take();
    assert!(matches!(sip_sends(&outputs, desk)[0], SipSend::Cancel(_)));
    assert_eq!(
        outputs
            .iter()
            .filter(|o| matches!(o, CallOutput::OfferOutcome { .. }))
            .count(),
        1
    );
    h.sip(
        desk,
        DialogEvent::Response(&phone_reply(&desk_invite, 487, "d1", None)),
    );
    assert!(h.take().is_empty(), "the cancelled fork reports nothing");
    assert!(h.call.is_bridged());
}

#[test]
fn a_re_invite_hold_from_the_phone_plays_music_to_the_caller_until_unhold() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    let (leg, invite) = h.offer(1, 3, vec![device(1)])[0].clone();
    h.answer(leg, &invite, "ph1");
    h.take();
    let at = h.now - h.t0;
    let hold = from_phone(
        &invite,
        "ph1",
        "INVITE",
        2,
        "Contact: <sip:1001@10.0.0.9:5062>\r\nContent-Type: application/sdp\r\n",
        &phone_answer("sendonly").replace("o=phone 5 5", "o=phone 5 6"),
    );
    h.sip(leg, DialogEvent::Request(&hold));
    let outputs = h.take();
    let SipSend::Respond(ok) = sip_sends(&outputs, leg)[0] else {
        panic!("{outputs:?}")
    };
    assert_eq!(ok.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&ok.body).contains("a=recvonly"));
    assert!(outputs.contains(&CallOutput::Record(CallRecord::Hold { by_phone: true })));
    let mut ack = from_phone(&invite, "ph1", "ACK", 2, "", "");
    ack.headers.set(HeaderName::CSeq, "2 ACK");
    h.sip(leg, DialogEvent::Request(&ack));
    // While held: music to the caller, the phone's packets are not relayed.
    h.talk(at + Duration::from_secs(1), 50);
    let held = h.take();
    assert!(rtp_to(&held, Leg::A).len() >= 50, "music");
    assert!(rtp_to(&held, Leg::B).is_empty(), "the phone hears nothing");
    let unhold = from_phone(
        &invite,
        "ph1",
        "INVITE",
        3,
        "Content-Type: application/sdp\r\n",
        &phone_answer("sendrecv").replace("o=phone 5 5", "o=phone 5 7"),
    );
    h.sip(leg, DialogEvent::Request(&unhold));
    let unheld = h.take();
    assert!(
        unheld.iter().any(|o| matches!(
            o,
            CallOutput::Record(CallRecord::Unhold { by_phone: true, music_packets }) if *music_packets >= 50
        )),
        "the record counts the music the caller heard: {unheld:?}"
    );
    let mut ack = from_phone(&invite, "ph1", "ACK", 3, "", "");
    ack.headers.set(HeaderName::CSeq, "3 ACK");
    h.sip(leg, DialogEvent::Request(&ack));
    h.talk(at + Duration::from_secs(3), 50);
    let talk = h.take();
    assert_eq!(rtp_to(&talk, Leg::B).len(), 50);
    assert_eq!(
        rtp_to(&talk, Leg::A).len(),
        50,
        "the operator again, no music"
    );
}

#[test]
fn a_refer_from_the_phone_is_accepted_notified_and_the_caller_waits_again() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.routed();
    let (leg, invite) = h.offer(1, 3, vec![device(1)])[0].clone();
    h.answer(leg, &invite, "ph1");
    h.take();
    let refer = from_phone(
        &invite,
        "ph1",
        "REFER",
        2,
        "Refer-To: <sip:tributi@192.0.2.1>\r\n",
        "",
    );
    h.sip(leg, DialogEvent::Request(&refer));
    let outputs = h.take();
    let sends = sip_sends(&outputs, leg);
    assert_eq!(response_status(sends[0]), Some(202));
    let SipSend::Request(notify) = sends[1] else {
        panic!("{sends:?}")
    };
    assert_eq!(notify.method, Method::Notify);
    assert_eq!(notify.headers.get(&HeaderName::Event), Some("refer"));
    assert_eq!(notify.body, b"SIP/2.0 200 OK\r\n");
    assert!(is_request(sends[2], Method::Bye));
    assert!(outputs.contains(&CallOutput::Transfer {
        target: Uri::parse("sip:tributi@192.0.2.1").expect("uri")
    }));
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, CallOutput::Ended { .. }))
    );
    h.advance_to(h.now - h.t0 + Duration::from_secs(2));
    assert!(rtp_to(&h.take(), Leg::A).len() >= 90, "music again");
    // The next offer rings a phone again.
    assert_eq!(h.offer(2, 5, vec![device(3)]).len(), 1);
}

#[test]
fn sip_info_dtmf_chooses_in_the_ivr_and_the_console_hangs_up() {
    let mut h = Harness::new();
    h.sip(SipLeg::Caller, DialogEvent::Request(&from_trunk("ACK", 10)));
    h.advance_to(Duration::from_secs(1));
    let mut info = from_trunk("INFO", 11);
    info.headers
        .push(HeaderName::ContentType, "application/dtmf-relay");
    info.body = b"Signal=2\r\nDuration=160\r\n".to_vec();
    h.sip(SipLeg::Caller, DialogEvent::Request(&info));
    h.advance_to(Duration::from_secs(2));
    let outputs = h.take();
    assert_eq!(
        response_status(sip_sends(&outputs, SipLeg::Caller)[0]),
        Some(200)
    );
    assert!(
        outputs
            .iter()
            .any(|o| matches!(o, CallOutput::Route { queue, .. } if queue == "tributi"))
    );
    h.input(CallInput::HangUp);
    let outputs = h.take();
    assert!(is_request(
        sip_sends(&outputs, SipLeg::Caller)[0],
        Method::Bye
    ));
    assert_eq!(
        outputs.last(),
        Some(&CallOutput::Ended {
            cause: HangupCause::Console
        })
    );
}

/// A call's configuration without the harness.
fn plain_config() -> CallConfig {
    let dialog = DialogConfig::new(Uri::parse("sip:ccu@192.0.2.1").expect("uri"), "192.0.2.1");
    CallConfig {
        caller_dialog: dialog.clone(),
        phone_dialog: dialog,
        media: CallMediaConfig::default(),
        ring_timeout: Duration::from_secs(15),
    }
}

fn plain_setup(invite: Request) -> CallSetup {
    let start = StreamStart {
        ssrc: 1,
        sequence: 1,
        timestamp: 1,
    };
    CallSetup {
        invite,
        local_tag: "x".into(),
        source_ip: "203.0.113.5".parse().expect("ip"),
        caller_number: String::new(),
        caller_media: LocalMedia::new("192.0.2.1".parse().expect("ip"), 1, 1),
        phone_media: LocalMedia::new("192.0.2.1".parse().expect("ip"), 2, 2),
        streams: CallStreams {
            caller: start,
            player: start,
        },
        operator_stream: start,
        opening: Opening::Open,
    }
}

#[test]
fn an_invite_the_ivr_cannot_answer_is_refused() {
    let (library, ivr) = library_and_ivr();
    let config = plain_config();
    let mut invite = invite();
    invite.headers.remove_all(&HeaderName::Contact);
    let setup = plain_setup(invite);
    let refused = Call::new(
        Instant::now(),
        config.clone(),
        setup.clone(),
        library.clone(),
        ivr.clone(),
    )
    .err()
    .expect("no dialog without Contact");
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    let mut setup = setup;
    setup.invite = request(
        &String::from_utf8(invite_head()).expect("utf8"),
        &TRUNK_OFFER.replace("RTP/AVP 8 101", "RTP/AVP 18"),
    );
    let mut call = Call::new(Instant::now(), config, setup, library, ivr).expect("a dialog");
    let now = Instant::now();
    let outputs: Vec<CallOutput> = std::iter::from_fn(|| call.poll(now)).collect();
    assert_eq!(
        response_status(sip_sends(&outputs, SipLeg::Caller)[0]),
        Some(488)
    );
    assert_eq!(
        outputs.last(),
        Some(&CallOutput::Ended {
            cause: HangupCause::NotAcceptable
        })
    );
}

#[test]
fn an_invite_without_an_offer_gets_ours_in_the_200_and_the_ivr_starts_with_the_acks_answer() {
    let (library, ivr) = library_and_ivr();
    let config = plain_config();
    let setup = |invite| {
        let mut setup = plain_setup(invite);
        setup.local_tag = "ccu1".into();
        setup.caller_media.port = 20_000;
        setup
    };
    let offerless = || {
        let text = String::from_utf8(invite_head()).expect("utf8");
        request(&text.replace("Content-Type: application/sdp\r\n", ""), "")
    };
    let t0 = Instant::now();
    let mut call = Call::new(
        t0,
        config.clone(),
        setup(offerless()),
        library.clone(),
        ivr.clone(),
    )
    .expect("a dialog");
    let outputs: Vec<CallOutput> = std::iter::from_fn(|| call.poll(t0)).collect();
    let SipSend::Respond(ok) = sip_sends(&outputs, SipLeg::Caller)[0] else {
        panic!("{outputs:?}")
    };
    assert_eq!(ok.status, StatusCode::OK);
    let body = String::from_utf8_lossy(&ok.body);
    assert!(body.contains("m=audio 20000 RTP/AVP"), "our offer: {body}");
    assert!(
        rtp_to(&outputs, Leg::A).is_empty(),
        "no prompt before the answer"
    );
    assert!(call.media().is_none());

    // The ACK carries the answer: the IVR speaks.
    let ack_with = |body: &str| {
        let head = String::from_utf8(from_trunk("ACK", 10).to_bytes()).expect("utf8");
        let head = head
            .split("Content-Length")
            .next()
            .expect("head")
            .to_owned();
        let content_type = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        request(&format!("{head}{content_type}"), body)
    };
    let ack = ack_with(&TRUNK_OFFER.replace("RTP/AVP 8 101", "RTP/AVP 8"));
    let t1 = t0 + Duration::from_millis(10);
    call.handle(
        t1,
        CallInput::Sip {
            leg: SipLeg::Caller,
            event: DialogEvent::Request(&ack),
        },
    );
    let mut outputs = Vec::new();
    for step in 0..10 {
        let now = t1 + Duration::from_millis(20 * step);
        outputs.extend(std::iter::from_fn(|| call.poll(now)));
    }
    assert!(call.media().is_some());
    assert!(
        !rtp_to(&outputs, Leg::A).is_empty(),
        "the greeting: {outputs:?}"
    );

    // An ACK without an answer: BYE.
    let mut call = Call::new(t0, config, setup(offerless()), library, ivr).expect("a dialog");
    while call.poll(t0).is_some() {}
    let ack = ack_with("");
    call.handle(
        t1,
        CallInput::Sip {
            leg: SipLeg::Caller,
            event: DialogEvent::Request(&ack),
        },
    );
    let outputs: Vec<CallOutput> = std::iter::from_fn(|| call.poll(t1)).collect();
    assert!(
        is_request(sip_sends(&outputs, SipLeg::Caller)[0], Method::Bye),
        "{outputs:?}"
    );
    assert_eq!(
        outputs.last(),
        Some(&CallOutput::Ended {
            cause: HangupCause::NotAcceptable
        })
    );
}

fn invite_head() -> Vec<u8> {
    let bytes = invite().to_bytes();
    let text = String::from_utf8(bytes).expect("utf8");
    let head = text
        .split("Content-Length")
        .next()
        .expect("head")
        .to_owned();
    head.into_bytes()
}

// The callback call ([`Callback`]): the operator's phone first, then the
// citizen through the trunk.

struct CallbackHarness {
    callback: Callback,
    t0: Instant,
    now: Instant,
    out: Vec<CallOutput>,
    ended: Option<CallbackEnd>,
}

impl CallbackHarness {
    fn new(devices: Vec<Device>) -> CallbackHarness {
        let (library, _) = library_and_ivr();
        let t0 = Instant::now();
        let dialog = DialogConfig::new(
            Uri::parse("sip:ccu@192.0.2.1:5060").expect("uri"),
            "192.0.2.1:5060",
        );
        let config = CallbackConfig {
            phone_dialog: dialog.clone(),
            citizen_dialog: dialog,
            relay: Default::default(),
            ring_timeout: Duration::from_secs(15),
            citizen_ring_timeout: Duration::from_secs(30),
            music: "hold".into(),
        };
        let start = |ssrc| StreamStart {
            ssrc,
            sequence: 100,
            timestamp: 1000,
        };
        let setup = CallbackSetup {
            offer: 7,
            operator: 3,
            conversation: 42,
            devices,
            ring_for: None,
            display: ccu_channels::sip::header::Address::new(
                Uri::parse("sip:+393331234567@192.0.2.1").expect("uri"),
            ),
            phone_headers: vec![(HeaderName::Other("X-CCU-Callback".into()), "1".into())],
            citizen: Uri::parse("sip:+393331234567@203.0.113.5:5060;user=phone").expect("uri"),
            caller_id: ccu_channels::sip::header::Address::new(
                Uri::parse("sip:+390200000000@192.0.2.1").expect("uri"),
            ),
            citizen_call_id: "cb-1@ccu".into(),
            citizen_tag: "cbt".into(),
            trunk_ip: "203.0.113.5".parse().expect("ip"),
            trunk_credentials: None,
            phone_media: LocalMedia::new("192.0.2.1".parse().expect("ip"), 20_002, 22),
            citizen_media: LocalMedia::new("192.0.2.1".parse().expect("ip"), 20_000, 11),
            citizen_stream: start(0xA),
            operator_stream: start(0xC),
            player_stream: start(0xB),
            library,
            language: "it".into(),
        };
        let mut harness = CallbackHarness {
            callback: Callback::new(t0, config, setup),
            t0,
            now: t0,
            out: Vec::new(),
            ended: None,
        };
        harness.drain();
        harness
    }

    fn drain(&mut self) {
        while let Some(output) = self.callback.poll(self.now) {
            match output {
                CallbackOutput::Call(output) => self.out.push(output),
                CallbackOutput::Ended(end) => {
                    assert!(self.ended.is_none(), "ended twice");
                    self.ended = Some(end);
                }
            }
        }
    }

    fn input(&mut self, input: CallbackInput<'_>) {
        self.callback.handle(self.now, input);
        self.drain();
    }

    fn sip(&mut self, leg: SipLeg, event: DialogEvent<'_>) {
        self.input(CallbackInput::Sip { leg, event });
    }

    fn advance_to(&mut self, at: Duration) {
        let end = self.t0 + at;
        while let Some(deadline) = self.callback.next_deadline() {
            if deadline > end {
                break;
            }
            assert!(deadline >= self.now, "a deadline in the past");
            self.now = deadline;
            self.drain();
        }
        self.now = end;
        self.drain();
    }

    fn take(&mut self) -> Vec<CallOutput> {
        std::mem::take(&mut self.out)
    }

    /// The INVITEs sent, by leg.
    fn invites(outputs: &[CallOutput]) -> Vec<(SipLeg, Request)> {
        outputs
            .iter()
            .filter_map(|o| match o {
                CallOutput::Sip {
                    leg,
                    send: SipSend::Request(r),
                } if r.method == Method::Invite => Some((*leg, r.clone())),
                _ => None,
            })
            .collect()
    }

    /// The operator's first device answers and the router gives them the
    /// conversation; returns the phone's leg, its INVITE and the citizen's.
    fn operator_takes_it(&mut self) -> (SipLeg, Request, Request) {
        let invites = Self::invites(&self.take());
        let (leg, invite) = invites[0].clone();
        assert_eq!(
            invite
                .headers
                .get(&HeaderName::Other("X-CCU-Callback".into())),
            Some("1")
        );
        self.sip(
            leg,
            DialogEvent::Response(&phone_reply(
                &invite,
                200,
                "p1",
                Some(&phone_answer("sendrecv")),
            )),
        );
        let outputs = self.take();
        assert!(
            outputs.contains(&CallOutput::OfferOutcome {
                offer: 7,
                outcome: OfferOutcome::Accepted
            }),
            "{outputs:?}"
        );
        assert!(
            Self::invites(&outputs).is_empty(),
            "nobody calls the citizen before the router's accept"
        );
        // The operator hears the prompt while the router is asked.
        self.advance_to(Duration::from_millis(500));
        assert!(!rtp_to(&self.take(), Leg::B).is_empty());
        self.input(CallbackInput::Accepted(true));
        let outputs = self.take();
        assert!(outputs.iter().any(|o| matches!(
            o,
            CallOutput::Record(CallRecord::CallbackDialing { number }) if number.starts_with("sip:+393331234567@203.0.113.5")
        )));
        let citizen = Self::invites(&outputs);
        assert_eq!(citizen.len(), 1, "{outputs:?}");
        assert_eq!(citizen[0].0, SipLeg::Caller);
        (leg, invite, citizen[0].1.clone())
    }
}

fn citizen_reply(invite: &Request, status: u16) -> Response {
    let sdp = (status == 200).then_some(TRUNK_OFFER);
    let mut response = invite.response(StatusCode::new(status).expect("status"), "cz1");
    response
        .headers
        .push(HeaderName::Contact, "<sip:+393331234567@203.0.113.5:5060>");
    if let Some(sdp) = sdp {
        response
            .headers
            .push(HeaderName::ContentType, "application/sdp");
        response.body = sdp.as_bytes().to_vec();
    }
    response
}

/// Issue 5, point 5: the server rings the citizen back. The operator's
/// phone rings first (the other device is cancelled when one answers);
/// only after the router's accept does the INVITE to the citizen go out
/// through the trunk, from the unified number; the citizen's answer
/// bridges the two, audio flows both ways, and the citizen's BYE ends the
/// operator's leg too.
#[test]
fn a_callback_rings_the_operator_then_calls_the_citizen_and_bridges_them() {
    let mut h = CallbackHarness::new(vec![device(1), device(2)]);
    assert_eq!(CallbackHarness::invites(&h.out).len(), 2);
    let second = CallbackHarness::invites(&h.out)[1].clone();
    h.sip(
        second.0,
        DialogEvent::Response(&phone_reply(&second.1, 180, "p2", None)),
    );
    let (phone, _, invite) = h.operator_takes_it();
    assert!(
        invite
            .uri
            .to_string()
            .starts_with("sip:+393331234567@203.0.113.5:5060")
    );
    assert!(
        invite
            .headers
            .get(&HeaderName::From)
            .is_some_and(|f| f.contains("+390200000000")),
        "{invite:?}"
    );
    assert!(h.out.is_empty());
    h.sip(
        SipLeg::Caller,
        DialogEvent::Response(&citizen_reply(&invite, 180)),
    );
    h.sip(
        SipLeg::Caller,
        DialogEvent::Response(&citizen_reply(&invite, 200)),
    );
    let outputs = h.take();
    assert!(
        sip_sends(&outputs, SipLeg::Caller).iter().any(
            |s| matches!(s, SipSend::Stateless(Message::Request(r)) if r.method == Method::Ack)
        ),
        "the citizen's 200 is acknowledged: {outputs:?}"
    );
    assert!(
        outputs.contains(&CallOutput::Record(CallRecord::CallbackAttempt {
            end: None
        }))
    );
    // 50 packets each way: all relayed.
    for n in 0..50u16 {
        h.advance_to(Duration::from_millis(1000 + 20 * u64::from(n)));
        let citizen = PacketBuilder::new(8, n, 160 * u32::from(n), 7)
            .build(&[0xD5; 160])
            .expect("packet");
        h.input(CallbackInput::Rtp {
            leg: Leg::A,
            from: addr(CALLER_RTP),
            bytes: &citizen,
        });
        let operator = PacketBuilder::new(0, n, 160 * u32::from(n), 8)
            .build(&[0xFF; 160])
            .expect("packet");
        h.input(CallbackInput::Rtp {
            leg: Leg::B,
            from: addr(PHONE_RTP),
            bytes: &operator,
        });
    }
    let talked = h.take();
    assert_eq!(rtp_to(&talked, Leg::A).len(), 50);
    assert_eq!(rtp_to(&talked, Leg::B).len(), 50);
    assert_eq!(h.callback.relay().stats(Leg::A).relayed_packets, 50);
    let bye = request(
        "BYE sip:ccu@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bKcbye\r\nMax-Forwards: 70\r\n\
From: <sip:+393331234567@203.0.113.5:5060;user=phone>;tag=cz1\r\n\
To: <sip:+390200000000@192.0.2.1>;tag=cbt\r\n\
Call-ID: cb-1@ccu\r\nCSeq: 1 BYE\r\n",
        "",
    );
    h.sip(SipLeg::Caller, DialogEvent::Request(&bye));
    let outputs = h.take();
    assert_eq!(
        response_status(sip_sends(&outputs, SipLeg::Caller)[0]),
        Some(200)
    );
    assert!(is_request(sip_sends(&outputs, phone)[0], Method::Bye));
    assert!(outputs.contains(&CallOutput::Record(CallRecord::Hangup {
        cause: HangupCause::Caller,
        relayed_to_caller: 50,
        relayed_to_operator: 50,
    })));
    assert_eq!(h.ended, Some(CallbackEnd::Talked(HangupCause::Caller)));
}

/// A busy citizen is an attempt: the operator hears that the citizen did
/// not answer, then the server hangs the phone up.
#[test]
fn a_busy_citizen_is_an_attempt_and_the_operator_is_told_then_hung_up() {
    let mut h = CallbackHarness::new(vec![device(1)]);
    let (phone, _, invite) = h.operator_takes_it();
    h.sip(
        SipLeg::Caller,
        DialogEvent::Response(&citizen_reply(&invite, 486)),
    );
    let outputs = h.take();
    let busy = StatusCode::new(486).expect("status");
    assert!(
        outputs.contains(&CallOutput::Record(CallRecord::CallbackAttempt {
            end: Some(CitizenEnd::Busy(busy))
        }))
    );
    assert!(sip_sends(&outputs, phone).is_empty(), "told first");
    h.advance_to(Duration::from_secs(10));
    let outputs = h.take();
    assert!(
        rtp_to(&outputs, Leg::B).len() > 50,
        "the prompt reached the operator"
    );
    assert!(is_request(sip_sends(&outputs, phone)[0], Method::Bye));
    assert_eq!(
        h.ended,
        Some(CallbackEnd::NotReached(CitizenEnd::Busy(busy)))
    );
}

/// A citizen who lets it ring is CANCELled at the ring timeout: no answer.
#[test]
fn a_citizen_who_does_not_answer_is_cancelled_at_the_ring_timeout() {
    let mut h = CallbackHarness::new(vec![device(1)]);
    let (_, _, invite) = h.operator_takes_it();
    h.sip(
        SipLeg::Caller,
        DialogEvent::Response(&citizen_reply(&invite, 180)),
    );
    h.advance_to(Duration::from_secs(29));
    assert!(
        !sip_sends(&h.take(), SipLeg::Caller)
            .iter()
            .any(|s| matches!(s, SipSend::Cancel(_)))
    );
    h.advance_to(Duration::from_secs(31));
    let outputs = h.take();
    assert!(
        sip_sends(&outputs, SipLeg::Caller)
            .iter()
            .any(|s| matches!(s, SipSend::Cancel(_))),
        "{outputs:?}"
    );
    h.sip(
        SipLeg::Caller,
        DialogEvent::Response(&citizen_reply(&invite, 487)),
    );
    assert!(
        h.take()
            .contains(&CallOutput::Record(CallRecord::CallbackAttempt {
                end: Some(CitizenEnd::NoAnswer)
            }))
    );
    h.advance_to(Duration::from_secs(45));
    assert_eq!(h.ended, Some(CallbackEnd::NotReached(CitizenEnd::NoAnswer)));
}

/// The router gave the conversation to someone else (the offer expired a
/// moment before the phone answered): the operator is hung up and the
/// citizen is never called.
#[test]
fn a_refused_accept_hangs_the_operator_up_and_calls_nobody() {
    let mut h = CallbackHarness::new(vec![device(1)]);
    let (leg, invite) = CallbackHarness::invites(&h.take())[0].clone();
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(
            &invite,
            200,
            "p1",
            Some(&phone_answer("sendrecv")),
        )),
    );
    h.input(CallbackInput::Accepted(false));
    let outputs = h.take();
    assert!(CallbackHarness::invites(&outputs).is_empty());
    assert!(
        sip_sends(&outputs, leg)
            .iter()
            .any(|s| is_request(s, Method::Bye))
    );
    assert_eq!(h.ended, Some(CallbackEnd::Refused));
}

/// The operator's phone refuses (486): a declined offer, nobody called;
/// no device at all: a missed offer.
#[test]
fn a_busy_phone_or_no_device_leaves_the_callback_untouched() {
    let mut h = CallbackHarness::new(vec![device(1)]);
    let (leg, invite) = CallbackHarness::invites(&h.take())[0].clone();
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(&invite, 486, "p1", None)),
    );
    let outputs = h.take();
    assert!(outputs.contains(&CallOutput::OfferOutcome {
        offer: 7,
        outcome: OfferOutcome::Declined(StatusCode::new(486).expect("status"))
    }));
    assert!(CallbackHarness::invites(&outputs).is_empty());
    assert_eq!(h.ended, Some(CallbackEnd::NotTaken));
    assert!(h.callback.is_done());

    let h = CallbackHarness::new(Vec::new());
    assert!(h.out.contains(&CallOutput::OfferOutcome {
        offer: 7,
        outcome: OfferOutcome::Missed
    }));
    assert_eq!(h.ended, Some(CallbackEnd::NotTaken));
}

/// The operator hangs up while the citizen's phone rings: the citizen's
/// INVITE is CANCELled and the attempt does not count.
#[test]
fn the_operator_hanging_up_while_the_citizen_rings_cancels_the_call() {
    let mut h = CallbackHarness::new(vec![device(1)]);
    let (phone, phone_invite, invite) = h.operator_takes_it();
    h.sip(
        SipLeg::Caller,
        DialogEvent::Response(&citizen_reply(&invite, 180)),
    );
    let bye = from_phone(&phone_invite, "p1", "BYE", 1, "", "");
    h.sip(phone, DialogEvent::Request(&bye));
    let outputs = h.take();
    assert!(
        sip_sends(&outputs, SipLeg::Caller)
            .iter()
            .any(|s| matches!(s, SipSend::Cancel(_))),
        "{outputs:?}"
    );
    assert_eq!(
        h.ended,
        Some(CallbackEnd::Interrupted(HangupCause::Operator))
    );
}

/// The router takes a ringing callback offer back: the phones are
/// CANCELled after their 180 and nobody is called.
#[test]
fn a_withdrawn_callback_offer_cancels_the_phones_and_calls_nobody() {
    let mut h = CallbackHarness::new(vec![device(1)]);
    let (leg, invite) = CallbackHarness::invites(&h.take())[0].clone();
    h.sip(
        leg,
        DialogEvent::Response(&phone_reply(&invite, 180, "p1", None)),
    );
    h.input(CallbackInput::WithdrawOffer);
    let outputs = h.take();
    assert!(
        matches!(sip_sends(&outputs, leg)[0], SipSend::Cancel(_)),
        "{outputs:?}"
    );
    assert!(
        outputs.contains(&CallOutput::Record(CallRecord::OfferEnded {
            offer: 7,
            operator: 3,
            end: OfferEnd::Withdrawn
        }))
    );
    assert_eq!(h.ended, Some(CallbackEnd::NotTaken));
    assert!(
        !outputs
            .iter()
            .any(|o| matches!(o, CallOutput::OfferOutcome { .. })),
        "the router took it back: no outcome to report"
    );
}

/// The conversation is moved away while the citizen's phone rings (the
/// console transferred it): the citizen's INVITE is CANCELled and the
/// operator hung up.
#[test]
fn a_callback_taken_away_while_dialing_cancels_the_citizen_and_hangs_up_the_operator() {
    let mut h = CallbackHarness::new(vec![device(1)]);
    let (phone, _, invite) = h.operator_takes_it();
    h.sip(
        SipLeg::Caller,
        DialogEvent::Response(&citizen_reply(&invite, 180)),
    );
    h.input(CallbackInput::TakenAway);
    let outputs = h.take();
    assert!(
        sip_sends(&outputs, SipLeg::Caller)
            .iter()
            .any(|s| matches!(s, SipSend::Cancel(_))),
        "{outputs:?}"
    );
    assert!(is_request(sip_sends(&outputs, phone)[0], Method::Bye));
    assert_eq!(
        h.ended,
        Some(CallbackEnd::Interrupted(HangupCause::Console))
    );
}

/// A trunk that fails (503) is not the citizen's attempt; a number that
/// does not exist (404) is.
#[test]
fn a_trunk_failure_is_not_the_citizens_attempt_but_an_unknown_number_is() {
    for (status, end) in [
        (
            503,
            CitizenEnd::TrunkFailed(StatusCode::new(503).expect("status")),
        ),
        (
            404,
            CitizenEnd::Failed(StatusCode::new(404).expect("status")),
        ),
        (
            603,
            CitizenEnd::Declined(StatusCode::new(603).expect("status")),
        ),
    ] {
        let mut h = CallbackHarness::new(vec![device(1)]);
        let (_, _, invite) = h.operator_takes_it();
        h.sip(
            SipLeg::Caller,
            DialogEvent::Response(&citizen_reply(&invite, status)),
        );
        assert!(
            h.take()
                .contains(&CallOutput::Record(CallRecord::CallbackAttempt {
                    end: Some(end)
                })),
            "{status}"
        );
        h.advance_to(Duration::from_secs(10));
        assert_eq!(h.ended, Some(CallbackEnd::NotReached(end)));
        assert_eq!(end.is_citizens(), status != 503);
    }
}
