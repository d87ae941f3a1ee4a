//! Building responses from requests (RFC 3261 §8.2.6) and stamping the
//! source address on a received request's Via (RFC 3261 §18.2.1, RFC 3581).

use std::net::SocketAddr;

use crate::sip::header::HeaderError;
use crate::sip::message::{HeaderName, Headers, Request, Response, StatusCode};
use crate::sip::uri::Host;

impl Request {
    /// A response to this request with the default reason phrase.
    ///
    /// Copies Via (all, in order), From, To, Call-ID and CSeq (RFC 3261
    /// §8.2.6.2). If the To has no tag and the response is not a `100`, adds
    /// `to_tag`: the caller supplies it (it must be random, and this crate
    /// draws no randomness), and must use the same tag for every response
    /// of a dialog.
    pub fn response(&self, status: StatusCode, to_tag: &str) -> Response {
        response_for(&self.headers, status, status.default_reason(), Some(to_tag))
    }

    /// `100 Trying`: no To tag, and the Timestamp copied (RFC 3261 §8.2.6.1).
    pub fn trying(&self) -> Response {
        response_for(&self.headers, StatusCode::TRYING, "Trying", None)
    }

    /// Records where the request came from in its top Via: `received` when
    /// the sent-by host is not the source address (RFC 3261 §18.2.1), and
    /// `received` plus `rport=<port>` when the client asked with a bare
    /// `rport` (RFC 3581 §4). Responses then go back to the real source,
    /// through NAT.
    pub fn record_source(&mut self, source: SocketAddr) -> Result<(), HeaderError> {
        let mut via = self.headers.top_via()?;
        let source_host = match source.ip() {
            std::net::IpAddr::V4(a) => Host::Ipv4(a),
            std::net::IpAddr::V6(a) => Host::Ipv6(a),
        };
        let wants_rport = via.rport().is_some();
        if via.host != source_host || wants_rport {
            via.set_param("received", Some(source.ip().to_string()));
        }
        if wants_rport {
            via.set_param("rport", Some(source.port().to_string()));
        }
        // The top Via may share its line with others ("Via: a, b"): replace
        // only the first value of that line.
        if let Some(line) = self.headers.first_mut(&HeaderName::Via) {
            let rest = split_first_value(&line.value).map(str::to_owned);
            line.value = match rest {
                Some(rest) => format!("{via}, {rest}"),
                None => via.to_string(),
            };
        }
        Ok(())
    }
}

/// What follows the first comma-separated value of a header line, outside
/// quoted strings and angle brackets.
fn split_first_value(value: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut depth = 0_u32;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => depth += 1,
            '>' if !in_quotes => depth = depth.saturating_sub(1),
            ',' if !in_quotes && depth == 0 => return value.get(i + 1..).map(str::trim_start),
            _ => {}
        }
    }
    None
}

/// A response built from the headers of a request (RFC 3261 §8.2.6.2).
///
/// Works on raw header values so that it also serves requests that failed
/// validation: a malformed header is copied as it came, which is the best
/// a `400` can do. The To tag is only added to a To that parses.
pub fn response_for(
    request: &Headers,
    status: StatusCode,
    reason: &str,
    to_tag: Option<&str>,
) -> Response {
    let mut response = Response::new(status);
    response.reason = reason.to_owned();
    let h = &mut response.headers;
    for via in request.get_all(&HeaderName::Via) {
        h.push(HeaderName::Via, via);
    }
    for name in [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        let Some(value) = request.get(&name) else {
            continue;
        };
        let mut value = value.to_owned();
        if name == HeaderName::To
            && status != StatusCode::TRYING
            && let Some(tag) = to_tag
            && let Ok(to) = request.to()
            && to.tag().is_none()
        {
            value.push_str(";tag=");
            value.push_str(tag);
        }
        h.push(name, value);
    }
    if status == StatusCode::TRYING
        && let Some(timestamp) = request.get(&HeaderName::Timestamp)
    {
        h.push(HeaderName::Timestamp, timestamp);
    }
    response
}

#[cfg(test)]
mod tests {
    use crate::sip::message::{Message, StatusCode};
    use crate::sip::parse::parse;

    const INVITE: &[u8] = b"INVITE sip:1000@ccu.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK74bf9;rport, SIP/2.0/UDP proxy.example;branch=z9hG4bKx\r\n\
Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKy\r\n\
Max-Forwards: 70\r\n\
From: \"Caller, A\" <sip:a@example.net>;tag=9fxced76sl\r\n\
To: <sip:1000@ccu.example>\r\n\
Call-ID: 3848276298220188511@example.net\r\n\
CSeq: 1 INVITE\r\n\
Timestamp: 54\r\n\
Content-Length: 0\r\n\r\n";

    fn invite() -> crate::sip::message::Request {
        match parse(INVITE).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!("not a request"),
        }
    }

    #[test]
    fn a_final_response_copies_the_dialog_headers_and_tags_the_to() {
        let ok = invite().response(StatusCode::OK, "ccu1");
        let h = &ok.headers;
        assert_eq!(h.vias().unwrap().len(), 3);
        assert_eq!(h.to().unwrap().tag(), Some("ccu1"));
        assert_eq!(h.from().unwrap().tag(), Some("9fxced76sl"));
        assert_eq!(h.call_id().unwrap(), "3848276298220188511@example.net");
        assert_eq!(h.cseq().unwrap().seq, 1);
        assert!(h.get(&crate::sip::message::HeaderName::Timestamp).is_none());
        let text = String::from_utf8(ok.to_bytes()).unwrap();
        assert!(text.starts_with("SIP/2.0 200 OK\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }

    #[test]
    fn trying_has_no_to_tag_and_echoes_the_timestamp() {
        let trying = invite().trying();
        assert_eq!(trying.headers.to().unwrap().tag(), None);
        assert_eq!(
            trying
                .headers
                .get(&crate::sip::message::HeaderName::Timestamp),
            Some("54")
        );
    }

    #[test]
    fn record_source_fills_received_and_rport_of_the_top_via_only() {
        let mut request = invite();
        request
            .record_source("203.0.113.9:40123".parse().unwrap())
            .unwrap();
        let vias = request.headers.vias().unwrap();
        assert_eq!(vias[0].param("received"), Some("203.0.113.9"));
        assert_eq!(vias[0].rport(), Some(Some(40123)));
        assert_eq!(vias[1].param("received"), None);
        assert_eq!(vias.len(), 3);
    }

    #[test]
    fn record_source_leaves_a_matching_sent_by_alone() {
        let mut request = invite();
        request.headers.set(
            crate::sip::message::HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK74bf9",
        );
        request
            .record_source("10.0.0.7:5060".parse().unwrap())
            .unwrap();
        assert_eq!(request.headers.top_via().unwrap().param("received"), None);
    }
}
