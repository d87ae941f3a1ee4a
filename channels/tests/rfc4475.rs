//! The RFC 4475 torture messages, each with the outcome the RFC gives.
//!
//! The messages live in `../shared/testdata/sip-rfc4475/` beside the
//! repository (override with `CCU_SHARED_DIR`, the `shared` directory).
//! A missing directory fails the test: it must never pass by skipping.
//!
//! Where RFC 4475 leaves a choice, the table records ours and why.

// The field checks are plain functions called from tests, which clippy's
// allow-unwrap-in-tests does not see as tests.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use ccu_channels::sip::fuzzing::sip_message;
use ccu_channels::sip::header::Contacts;
use ccu_channels::sip::message::{HeaderName, Message, Method, Request, Response};
use ccu_channels::sip::parse::{parse, parse_stream};
use ccu_channels::sip::uri::{Host, Uri};
use ccu_channels::sip::validate::{Inbound, Policy, receive_datagram};

fn torture_dir() -> PathBuf {
    let dir = match std::env::var_os("CCU_SHARED_DIR") {
        Some(shared) => PathBuf::from(shared).join("testdata/sip-rfc4475"),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/sip-rfc4475"
        )),
    };
    assert!(
        dir.is_dir(),
        "RFC 4475 messages not found at {} (set CCU_SHARED_DIR to the shared directory)",
        dir.display()
    );
    dir
}

fn read(name: &str) -> Vec<u8> {
    let path = torture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Valid: passed on to the transaction layer.
    Accept,
    /// Answered statelessly with this status; the reason phrase contains
    /// the given text.
    Reply(u16, &'static str),
    /// Dropped without an answer.
    Drop,
}

struct Case {
    file: &'static str,
    /// RFC 4475 section.
    section: &'static str,
    outcome: Outcome,
    /// Field checks on the parsed message, for messages that parse.
    check: Option<fn(&Message)>,
}

use Outcome::{Accept, Drop, Reply};

const CASES: &[Case] = &[
    // §3.1.1 valid messages
    Case {
        file: "wsinv.dat",
        section: "3.1.1.1",
        outcome: Accept,
        check: Some(wsinv),
    },
    // An endpoint answers an unknown method with 501 and Allow.
    Case {
        file: "intmeth.dat",
        section: "3.1.1.2",
        outcome: Reply(501, "Not Implemented"),
        check: Some(intmeth),
    },
    Case {
        file: "esc01.dat",
        section: "3.1.1.3",
        outcome: Accept,
        check: Some(esc01),
    },
    Case {
        file: "escnull.dat",
        section: "3.1.1.4",
        outcome: Accept,
        check: Some(escnull),
    },
    Case {
        file: "esc02.dat",
        section: "3.1.1.5",
        outcome: Reply(501, "Not Implemented"),
        check: Some(esc02),
    },
    Case {
        file: "lwsdisp.dat",
        section: "3.1.1.6",
        outcome: Accept,
        check: Some(lwsdisp),
    },
    Case {
        file: "longreq.dat",
        section: "3.1.1.7",
        outcome: Accept,
        check: Some(longreq),
    },
    Case {
        file: "dblreq.dat",
        section: "3.1.1.8",
        outcome: Accept,
        check: Some(dblreq),
    },
    Case {
        file: "semiuri.dat",
        section: "3.1.1.9",
        outcome: Accept,
        check: Some(semiuri),
    },
    Case {
        file: "transports.dat",
        section: "3.1.1.10",
        outcome: Accept,
        check: Some(transports),
    },
    // Valid, but MESSAGE is not a method ccu handles: 405 with Allow.
    Case {
        file: "mpart01.dat",
        section: "3.1.1.11",
        outcome: Reply(405, "Method Not Allowed"),
        check: Some(mpart01),
    },
    Case {
        file: "unreason.dat",
        section: "3.1.1.12",
        outcome: Accept,
        check: Some(unreason),
    },
    Case {
        file: "noreason.dat",
        section: "3.1.1.13",
        outcome: Accept,
        check: Some(noreason),
    },
    // §3.1.2 invalid messages
    Case {
        file: "badinv01.dat",
        section: "3.1.2.1",
        outcome: Reply(400, "Malformed Via"),
        check: None,
    },
    Case {
        file: "clerr.dat",
        section: "3.1.2.2",
        outcome: Reply(400, "Content-Length exceeds the datagram"),
        check: None,
    },
    Case {
        file: "ncl.dat",
        section: "3.1.2.3",
        outcome: Reply(400, "Malformed Content-Length"),
        check: None,
    },
    Case {
        file: "scalar02.dat",
        section: "3.1.2.4",
        outcome: Reply(400, "Malformed CSeq"),
        check: None,
    },
    Case {
        file: "scalarlg.dat",
        section: "3.1.2.5",
        outcome: Drop,
        check: None,
    },
    Case {
        file: "quotbal.dat",
        section: "3.1.2.6",
        outcome: Reply(400, "Malformed To"),
        check: None,
    },
    Case {
        file: "ltgtruri.dat",
        section: "3.1.2.7",
        outcome: Reply(400, "Malformed Request-Line"),
        check: None,
    },
    Case {
        file: "lwsruri.dat",
        section: "3.1.2.8",
        outcome: Reply(400, "Malformed Request-Line"),
        check: None,
    },
    // §3.1.2.9/10 allow rejecting or tolerating extra SP; we reject.
    Case {
        file: "lwsstart.dat",
        section: "3.1.2.9",
        outcome: Reply(400, "Malformed Request-Line"),
        check: None,
    },
    Case {
        file: "trws.dat",
        section: "3.1.2.10",
        outcome: Reply(400, "Malformed Request-Line"),
        check: None,
    },
    Case {
        file: "escruri.dat",
        section: "3.1.2.11",
        outcome: Reply(400, "Request-URI"),
        check: None,
    },
    // "shouldn't [reject] unless the contents of the Date header field
    // were actually important": ccu does not use Date.
    Case {
        file: "baddate.dat",
        section: "3.1.2.12",
        outcome: Accept,
        check: Some(baddate),
    },
    Case {
        file: "regbadct.dat",
        section: "3.1.2.13",
        outcome: Reply(400, "Malformed Contact"),
        check: None,
    },
    Case {
        file: "badaspec.dat",
        section: "3.1.2.14",
        outcome: Reply(400, "Malformed To"),
        check: None,
    },
    Case {
        file: "baddn.dat",
        section: "3.1.2.15",
        outcome: Reply(400, "Malformed From"),
        check: None,
    },
    Case {
        file: "badvers.dat",
        section: "3.1.2.16",
        outcome: Reply(505, "Version Not Supported"),
        check: None,
    },
    Case {
        file: "mismatch01.dat",
        section: "3.1.2.17",
        outcome: Reply(400, "CSeq method"),
        check: None,
    },
    // 501 rather than 400: "better future-proof characteristics".
    Case {
        file: "mismatch02.dat",
        section: "3.1.2.18",
        outcome: Reply(501, "Not Implemented"),
        check: None,
    },
    Case {
        file: "bigcode.dat",
        section: "3.1.2.19",
        outcome: Drop,
        check: None,
    },
    // §3.2 transaction layer: refuse rather than fall back to RFC 2543
    // matching.
    Case {
        file: "badbranch.dat",
        section: "3.2.1",
        outcome: Reply(400, "branch"),
        check: None,
    },
    // §3.3 application layer
    Case {
        file: "insuf.dat",
        section: "3.3.1",
        outcome: Reply(400, "Missing"),
        check: None,
    },
    Case {
        file: "unkscm.dat",
        section: "3.3.2",
        outcome: Reply(416, "Unsupported URI Scheme"),
        check: Some(unkscm),
    },
    Case {
        file: "novelsc.dat",
        section: "3.3.3",
        outcome: Reply(416, "Unsupported URI Scheme"),
        check: None,
    },
    // "A registrar would reject this request with a 400".
    Case {
        file: "unksm2.dat",
        section: "3.3.4",
        outcome: Reply(400, "REGISTER"),
        check: Some(unksm2),
    },
    Case {
        file: "bext01.dat",
        section: "3.3.5",
        outcome: Reply(420, "Bad Extension"),
        check: None,
    },
    Case {
        file: "invut.dat",
        section: "3.3.6",
        outcome: Reply(415, "Unsupported Media Type"),
        check: None,
    },
    // Well formed; the registrar answers it with a 401 challenge.
    Case {
        file: "regaut01.dat",
        section: "3.3.7",
        outcome: Accept,
        check: Some(regaut01),
    },
    Case {
        file: "multi01.dat",
        section: "3.3.8",
        outcome: Reply(400, "Multiple"),
        check: None,
    },
    Case {
        file: "mcl01.dat",
        section: "3.3.9",
        outcome: Reply(400, "Multiple Content-Length"),
        check: None,
    },
    // Well formed; it matches no transaction of ours, so the transaction
    // layer discards it.
    Case {
        file: "bcast.dat",
        section: "3.3.10",
        outcome: Accept,
        check: Some(bcast),
    },
    // An endpoint processes Max-Forwards: 0 (only relayed INVITEs get 483).
    Case {
        file: "zeromf.dat",
        section: "3.3.11",
        outcome: Accept,
        check: Some(zeromf),
    },
    Case {
        file: "cparam01.dat",
        section: "3.3.12",
        outcome: Accept,
        check: Some(cparam01),
    },
    Case {
        file: "cparam02.dat",
        section: "3.3.13",
        outcome: Accept,
        check: Some(cparam02),
    },
    Case {
        file: "regescrt.dat",
        section: "3.3.14",
        outcome: Accept,
        check: Some(regescrt),
    },
    Case {
        file: "sdp01.dat",
        section: "3.3.15",
        outcome: Reply(406, "Not Acceptable"),
        check: None,
    },
    // §3.4 backward compatibility
    Case {
        file: "inv2543.dat",
        section: "3.4.1",
        outcome: Accept,
        check: Some(inv2543),
    },
    // Not an RFC 4475 message: an RFC 2543-era sample with no SIP-Version
    // and no Via, so no answer can be routed.
    Case {
        file: "test.dat",
        section: "-",
        outcome: Drop,
        check: None,
    },
];

#[test]
fn every_torture_message_gets_the_outcome_rfc_4475_gives() {
    let policy = Policy::default();
    let mut failures = Vec::new();
    for case in CASES {
        let bytes = read(case.file);
        let inbound = receive_datagram(&bytes, &policy, "ccu-tag");
        let ok = match (case.outcome, &inbound) {
            (Accept, Inbound::Request(_) | Inbound::Response(_)) => true,
            (Reply(code, fragment), Inbound::Reply(r)) => {
                r.status.as_u16() == code && r.reason.contains(fragment)
            }
            (Drop, Inbound::Drop(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{} (§{}): expected {:?}, got {}",
                case.file,
                case.section,
                case.outcome,
                describe(&inbound)
            ));
        }
        if let Some(check) = case.check {
            let message =
                parse(&bytes).unwrap_or_else(|e| panic!("{} should parse: {e}", case.file));
            check(&message);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn describe(inbound: &Inbound) -> String {
    match inbound {
        Inbound::Request(r) => format!("accepted {} request", r.method),
        Inbound::Response(r) => format!("accepted {} response", r.status),
        Inbound::Reply(r) => format!("reply {} {:?}", r.status, r.reason),
        Inbound::Drop(reason) => format!("drop ({reason})"),
    }
}

#[test]
fn the_table_covers_every_file_in_the_directory() {
    let mut files: Vec<String> = std::fs::read_dir(torture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dat"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.file.to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn replies_to_torture_messages_copy_the_transaction_headers() {
    // The 420 to bext01 lists exactly the unsupported Require tags, and
    // carries the request's Via so the client can match it.
    let inbound = receive_datagram(&read("bext01.dat"), &Policy::default(), "t9");
    let Inbound::Reply(reply) = inbound else {
        panic!("{inbound:?}")
    };
    assert_eq!(
        reply.headers.get(&HeaderName::Unsupported),
        Some("nothingSupportsThis, nothingSupportsThisEither")
    );
    assert_eq!(
        reply.headers.top_via().unwrap().branch(),
        Some("z9hG4bKkdjuw")
    );
    assert_eq!(reply.headers.to().unwrap().tag(), Some("t9"));
    assert_eq!(reply.headers.cseq().unwrap().seq, 8);

    // The 415 says what is accepted.
    let Inbound::Reply(reply) = receive_datagram(&read("invut.dat"), &Policy::default(), "t")
    else {
        panic!()
    };
    assert!(
        reply
            .headers
            .get(&HeaderName::Accept)
            .unwrap()
            .contains("application/sdp")
    );

    // The 400 for a request that did not parse still echoes its Via.
    let Inbound::Reply(reply) = receive_datagram(&read("lwsstart.dat"), &Policy::default(), "t")
    else {
        panic!()
    };
    assert_eq!(
        reply.headers.top_via().unwrap().branch(),
        Some("z9hG4bKkdjuw3923")
    );
    let text = String::from_utf8(reply.to_bytes()).unwrap();
    assert!(
        text.starts_with("SIP/2.0 400 Malformed Request-Line"),
        "{text}"
    );
}

#[test]
fn a_relayed_invite_with_max_forwards_zero_gets_483() {
    let bytes = String::from_utf8(read("zeromf.dat"))
        .unwrap()
        .replace("OPTIONS", "INVITE");
    let inbound = receive_datagram(bytes.as_bytes(), &Policy::default(), "t");
    let Inbound::Reply(reply) = inbound else {
        panic!("{inbound:?}")
    };
    assert_eq!(reply.status.as_u16(), 483);
}

#[test]
fn extra_octets_after_a_udp_message_become_the_next_message_on_a_stream() {
    let bytes = read("dblreq.dat");
    let (first, used) = parse_stream(&bytes).unwrap();
    assert!(matches!(first, Message::Request(ref r) if r.method == Method::Register));
    let (second, _) = parse_stream(&bytes[used..]).unwrap();
    let Message::Request(invite) = second else {
        panic!()
    };
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(invite.body.len(), 150);
}

#[test]
fn every_accepted_torture_message_survives_a_round_trip() {
    for case in CASES.iter().filter(|c| matches!(c.outcome, Accept)) {
        let message = parse(&read(case.file)).unwrap();
        let again = parse(&message.to_bytes()).unwrap_or_else(|e| panic!("{}: {e}", case.file));
        // Serialization always writes a Content-Length matching the body
        // (inv2543 has none); everything else must come back unchanged.
        assert_eq!(
            without_length(again),
            without_length(message),
            "{}",
            case.file
        );
    }
}

/// The fuzz target's invariants (no panic, round-trip, parseable replies)
/// over every prefix and a spread of one-byte corruptions of each message.
#[test]
fn the_fuzz_invariants_hold_for_prefixes_and_corruptions_of_every_message() {
    for case in CASES {
        let bytes = read(case.file);
        for cut in 0..=bytes.len() {
            sip_message(&bytes[..cut]);
        }
        for i in (0..bytes.len()).step_by(5) {
            let mut corrupt = bytes.clone();
            corrupt[i] = [b'"', b'<', b'\\', b';', b',', 0xff, b'%', b' ', b'\n', 0][i % 10];
            sip_message(&corrupt);
        }
    }
}

fn without_length(mut message: Message) -> Message {
    match &mut message {
        Message::Request(r) => r.headers.remove_all(&HeaderName::ContentLength),
        Message::Response(r) => r.headers.remove_all(&HeaderName::ContentLength),
    }
    message
}

// ---- field checks ---------------------------------------------------------

fn request(message: &Message) -> &Request {
    match message {
        Message::Request(r) => r,
        Message::Response(_) => panic!("expected a request"),
    }
}

fn response(message: &Message) -> &Response {
    match message {
        Message::Response(r) => r,
        Message::Request(_) => panic!("expected a response"),
    }
}

fn wsinv(m: &Message) {
    let r = request(m);
    let h = &r.headers;
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.as_sip().unwrap().param("unknownparam"), Some(None));
    assert_eq!(h.to().unwrap().tag(), Some("1918181833n"));
    let from = h.from().unwrap();
    assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
    assert_eq!(from.tag(), Some("98asjd8"));
    assert_eq!(h.max_forwards().unwrap(), Some(68));
    let cseq = h.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (9, Method::Invite));
    let vias = h.vias().unwrap();
    let transports: Vec<_> = vias.iter().map(|v| v.transport.as_str()).collect();
    assert_eq!(transports, ["UDP", "TCP", "UDP"]);
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(vias[1].host, Host::Domain("spindle.example.com".into()));
    assert_eq!(vias[2].branch(), Some("z9hG4bK30239"));
    assert_eq!(h.get(&HeaderName::Subject), Some(""));
    assert_eq!(
        h.get(&HeaderName::parse("newfangledheader")),
        Some("newfangled value continued newfangled value")
    );
    assert_eq!(
        h.get(&HeaderName::parse("UnknownHeaderWithUnusualValue")),
        Some(";;,,;;,;")
    );
    let Contacts::List(contacts) = h.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        contacts[0].display_name.as_deref(),
        Some("Quoted string \"\"")
    );
    assert_eq!(contacts[0].param("newparam"), Some("newvalue"));
    assert_eq!(contacts[0].param("secondparam"), Some(""));
    assert_eq!(contacts[0].param("q"), Some("0.33"));
    let routes = h.routes(&HeaderName::Route).unwrap();
    assert_eq!(
        routes[0].uri.as_sip().unwrap().param("unknown-no-value"),
        Some(None)
    );
    assert_eq!(r.body.len(), 150);
}

fn intmeth(m: &Message) {
    let r = request(m);
    assert_eq!(
        r.method,
        Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into())
    );
    let uri = r.uri.as_sip().unwrap();
    assert_eq!(
        uri.user.as_deref(),
        Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
    );
    assert_eq!(
        uri.password.as_deref(),
        Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
    );
    assert_eq!(
        r.headers.to().unwrap().display_name.as_deref(),
        Some("BEL:\u{7} NUL:\0 DEL:\u{7f}")
    );
    let from = r.headers.from().unwrap();
    assert_eq!(
        from.display_name.as_deref(),
        Some("token1~` token2'+_ token3*%!.-")
    );
    assert_eq!(from.tag(), Some("_token~1'+`*%!-."));
    assert_eq!(
        from.param("fromParam''~+*_!.-%"),
        Some("\"\u{440}\u{430}\u{431}\u{43e}\u{442}\u{430}\u{44e}\u{449}\u{438}\u{439}\"")
    );
    assert_eq!(
        r.headers.call_id().unwrap(),
        "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    );
    assert_eq!(r.headers.max_forwards().unwrap(), Some(255));
}

fn esc01(m: &Message) {
    let r = request(m);
    let uri = r.uri.as_sip().unwrap();
    assert_eq!(uri.user_bytes().unwrap(), b"sips:user@example.com");
    assert_eq!(uri.host, Host::Domain("example.net".into()));
    let to = r.headers.to().unwrap();
    assert_eq!(to.uri.as_sip().unwrap().user_bytes().unwrap(), b"user");
    let from = r.headers.from().unwrap();
    assert_eq!(
        from.uri.as_sip().unwrap().user_bytes().unwrap(),
        b"I have spaces"
    );
    let Contacts::List(contacts) = r.headers.contacts().unwrap() else {
        panic!()
    };
    let contact = contacts[0].uri.as_sip().unwrap();
    assert_eq!(contact.user_bytes().unwrap(), b"caller");
    assert_eq!(contact.param("lr"), Some(None));
    assert_eq!(contact.param("name"), Some(Some("value%41".into())));
    assert_eq!(
        r.headers.content_type().unwrap().unwrap().essence(),
        "application/sdp"
    );
}

fn escnull(m: &Message) {
    let r = request(m);
    let user = |uri: &Uri| uri.as_sip().unwrap().user_bytes().unwrap();
    assert_eq!(user(&r.headers.to().unwrap().uri), b"null-\0-null");
    assert_eq!(user(&r.headers.from().unwrap().uri), b"null-\0-null");
    let Contacts::List(contacts) = r.headers.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(user(&contacts[0].uri), b"\0");
    assert_eq!(user(&contacts[1].uri), b"\0\0");
}

fn esc02(m: &Message) {
    let r = request(m);
    assert_eq!(r.method, Method::Extension("RE%47IST%45R".into()));
    assert_eq!(
        r.headers.to().unwrap().display_name.as_deref(),
        Some("%Z%45")
    );
    assert_eq!(
        r.headers.from().unwrap().display_name.as_deref(),
        Some("%Z%45")
    );
    let Contacts::List(contacts) = r.headers.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(contacts.len(), 2, "C%6Fntact is not Contact");
    assert_eq!(
        r.headers.top_via().unwrap().branch(),
        Some("z9hG4bK209%fzsnel234")
    );
}

fn lwsdisp(m: &Message) {
    assert_eq!(
        request(m).headers.from().unwrap().display_name.as_deref(),
        Some("caller")
    );
}

fn longreq(m: &Message) {
    let h = &request(m).headers;
    let to = h.to().unwrap();
    assert_eq!(
        to.display_name.unwrap(),
        format!("I have a user name of {} proportion", "extreme".repeat(10))
    );
    let to_uri = to.uri.as_sip().unwrap();
    assert_eq!(to_uri.port, Some(6000));
    assert_eq!(
        to_uri.param("unknownparam1"),
        Some(Some(format!("very{}value", "long".repeat(20))))
    );
    let from = h.from().unwrap();
    assert_eq!(
        from.uri.as_sip().unwrap().user.as_deref(),
        Some("amazinglylongcallername".repeat(5).as_str())
    );
    assert_eq!(from.tag().unwrap(), format!("12{}424", "982".repeat(50)));
    assert_eq!(
        h.call_id().unwrap(),
        format!("longreq.one{}longcallid", "really".repeat(20))
    );
    let vias = h.vias().unwrap();
    assert_eq!(vias.len(), 34);
    for (i, via) in vias.iter().take(33).enumerate() {
        assert_eq!(via.host, Host::Domain(format!("sip{}.example.com", 33 - i)));
    }
    assert_eq!(
        vias[33].branch().unwrap(),
        format!("very{}branchvalue", "long".repeat(50))
    );
}

fn dblreq(m: &Message) {
    let r = request(m);
    assert_eq!(r.method, Method::Register);
    assert!(r.body.is_empty());
}

fn semiuri(m: &Message) {
    let uri = request(m).uri.as_sip().unwrap().clone();
    assert_eq!(uri.user_bytes().unwrap(), b"user;par=u@example.net");
    assert_eq!(uri.host, Host::Domain("example.com".into()));
    assert!(uri.params.is_empty());
}

fn transports(m: &Message) {
    let vias = request(m).headers.vias().unwrap();
    let transports: Vec<_> = vias.iter().map(|v| v.transport.as_str()).collect();
    assert_eq!(transports, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
}

fn mpart01(m: &Message) {
    let r = request(m);
    assert_eq!(r.method, Method::Message);
    assert_eq!(r.body.len(), 553);
    assert_eq!(
        r.headers.content_type().unwrap().unwrap().essence(),
        "multipart/mixed"
    );
}

fn unreason(m: &Message) {
    let r = response(m);
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.reason, "= 2**3 * 5**2 но сто девяносто девять - простое");
    assert_eq!(r.body.len(), 154);
}

fn noreason(m: &Message) {
    let r = response(m);
    assert_eq!(r.status.as_u16(), 100);
    assert_eq!(r.reason, "");
}

fn baddate(m: &Message) {
    assert_eq!(
        request(m).headers.get(&HeaderName::Date),
        Some("Fri, 01 Jan 2010 16:00:00 EST")
    );
}

fn unkscm(m: &Message) {
    assert_eq!(request(m).uri.scheme(), "nobodyKnowsThisScheme");
}

fn unksm2(m: &Message) {
    let h = &request(m).headers;
    assert_eq!(h.to().unwrap().uri.scheme(), "isbn");
    assert_eq!(h.from().unwrap().uri.scheme(), "http");
    let Contacts::List(contacts) = h.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(contacts[0].uri.scheme(), "name");
}

fn regaut01(m: &Message) {
    let auth = request(m)
        .headers
        .auth_values(&HeaderName::Authorization)
        .unwrap();
    assert_eq!(auth[0].scheme, "NoOneKnowsThisScheme");
    assert_eq!(auth[0].param("opaque-data"), Some("here"));
}

fn bcast(m: &Message) {
    let vias = response(m).headers.vias().unwrap();
    assert_eq!(vias[1].host, Host::Ipv4("255.255.255.255".parse().unwrap()));
}

fn zeromf(m: &Message) {
    assert_eq!(request(m).headers.max_forwards().unwrap(), Some(0));
}

fn cparam01(m: &Message) {
    let Contacts::List(c) = request(m).headers.contacts().unwrap() else {
        panic!()
    };
    assert!(c[0].uri.as_sip().unwrap().params.is_empty());
    assert_eq!(c[0].param("unknownparam"), Some(""));
}

fn cparam02(m: &Message) {
    let Contacts::List(c) = request(m).headers.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(c[0].uri.as_sip().unwrap().param("unknownparam"), Some(None));
    assert!(c[0].params.is_empty());
}

fn regescrt(m: &Message) {
    let Contacts::List(c) = request(m).headers.contacts().unwrap() else {
        panic!()
    };
    assert_eq!(
        c[0].uri.as_sip().unwrap().header("Route").as_deref(),
        Some("<sip:sip.example.com>")
    );
}

fn inv2543(m: &Message) {
    let r = request(m);
    let h = &r.headers;
    assert_eq!(h.top_via().unwrap().branch(), None);
    assert_eq!(h.from().unwrap().tag(), None);
    assert_eq!(h.max_forwards().unwrap(), None);
    assert_eq!(h.get(&HeaderName::ContentLength), None);
    assert!(r.body.starts_with(b"v=0\r\n"));
    assert!(r.body.ends_with(b"m=audio 49217 RTP/AVP 0\r\n"));
}
