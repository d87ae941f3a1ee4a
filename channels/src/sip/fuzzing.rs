//! Entry points for the fuzz targets in `channels/fuzz/`.
//!
//! They live in the library, not in the fuzz crate, so that they are
//! compiled, linted and run by the ordinary test suite (on the RFC 4475
//! messages and their corruptions) even where cargo-fuzz and a nightly
//! toolchain are not available. Each one panics only when an invariant is
//! broken, which is what the fuzzer looks for.

use crate::sip::message::{HeaderName, Message};
use crate::sip::parse::{parse, parse_stream};
use crate::sip::sdp;
use crate::sip::validate::{Inbound, Policy, StreamInbound, receive_datagram, receive_stream};

/// Feeds `data` to every entry point of the SIP message layer and checks:
/// - what parses serializes to bytes that parse back to the same message
///   (up to the `Content-Length` that serialization always writes);
/// - a stream parse never claims more bytes than it was given;
/// - every reply the server would send is itself a parseable response.
pub fn sip_message(data: &[u8]) {
    if let Ok(message) = parse(data) {
        let again = parse(&message.to_bytes());
        assert_eq!(
            again.map(without_length),
            Ok(without_length(message)),
            "serialization does not round-trip"
        );
    }
    if let Ok((_, consumed)) = parse_stream(data) {
        assert!(
            consumed <= data.len(),
            "stream parse consumed more than it had"
        );
    }
    let policy = Policy::default();
    if let Inbound::Reply(reply) = receive_datagram(data, &policy, "fuzz") {
        assert!(
            matches!(parse(&reply.to_bytes()), Ok(Message::Response(_))),
            "unparseable reply: {reply:?}"
        );
    }
    match receive_stream(data, &policy, "fuzz") {
        StreamInbound::Message { consumed, .. } => assert!(consumed <= data.len()),
        StreamInbound::Close {
            reply: Some(reply), ..
        } => {
            assert!(matches!(parse(&reply.to_bytes()), Ok(Message::Response(_))));
        }
        _ => {}
    }
}

fn without_length(mut message: Message) -> Message {
    match &mut message {
        Message::Request(r) => r.headers.remove_all(&HeaderName::ContentLength),
        Message::Response(r) => r.headers.remove_all(&HeaderName::ContentLength),
    }
    message
}

/// Feeds `data` to the SDP parser and checks: what parses serializes to
/// text that parses back to the same description, and answering it never
/// panics and yields an answer that parses, with one m-line per offered
/// one (RFC 3264 §6).
pub fn sdp(data: &[u8]) {
    let Ok(offer) = sdp::parse(data) else {
        return;
    };
    let text = offer.to_string();
    assert_eq!(
        sdp::parse(text.as_bytes()).as_ref(),
        Ok(&offer),
        "SDP does not round-trip: {text:?}"
    );
    let local = sdp::LocalMedia::new(std::net::Ipv4Addr::LOCALHOST.into(), 40_000, 1);
    if let Ok((answer, _)) = sdp::answer(&offer, &local) {
        let parsed = sdp::parse(answer.to_string().as_bytes());
        assert_eq!(parsed.map(|a| a.media.len()), Ok(offer.media.len()));
    }
}
