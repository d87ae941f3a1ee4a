//! What a server does with bytes that arrive: parse, then check a request
//! the way a UAS must before acting on it (RFC 3261 §8.2), and answer what
//! it cannot accept with the right status, or drop it when no answer can
//! be formed.
//!
//! ```
//! use ccu_channels::sip::validate::{Inbound, Policy, receive_datagram};
//!
//! let bytes = b"OPTIONS sip:ccu.example SIP/7.0\r\n\
//! Via: SIP/7.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
//! From: <sip:probe@example.net>;tag=1\r\nTo: <sip:ccu.example>\r\n\
//! Call-ID: x1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
//! match receive_datagram(bytes, &Policy::default(), "t1") {
//!     Inbound::Reply(response) => assert_eq!(response.status.as_u16(), 505),
//!     other => panic!("{other:?}"),
//! }
//! ```

use crate::sip::header::{HeaderError, MAGIC_COOKIE};
use crate::sip::message::{
    Header, HeaderName, Headers, Message, Method, Request, Response, StatusCode, Version,
};
use crate::sip::parse::{self, Limits, ParseError};
use crate::sip::reply::response_for;
use crate::sip::uri::Uri;

/// What this server accepts. Comes from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Methods handled; a known method outside this list gets `405`, an
    /// unknown one `501` (RFC 3261 §8.2.1), both with `Allow`.
    pub allowed_methods: Vec<Method>,
    /// Option tags understood in `Require` (RFC 3261 §8.2.2.3).
    pub supported_extensions: Vec<String>,
    /// Request-URI schemes accepted; others get `416` (RFC 3261 §8.2.2.1).
    pub uri_schemes: Vec<String>,
    /// Body types understood; others get `415` with `Accept` (§8.2.3).
    pub accepted_body_types: Vec<String>,
    /// Methods that ccu, as a B2BUA, re-originates on another leg. For
    /// these `Max-Forwards: 0` means a loop and gets `483`; other requests
    /// are answered as an endpoint would (RFC 4475 §3.3.11).
    pub relayed_methods: Vec<Method>,
    /// The `warn-agent` written in Warning headers (RFC 3261 §20.43).
    pub warn_agent: String,
    pub limits: Limits,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            allowed_methods: vec![
                Method::Invite,
                Method::Ack,
                Method::Bye,
                Method::Cancel,
                Method::Options,
                Method::Register,
                Method::Info,
                Method::Refer,
                Method::Notify,
            ],
            supported_extensions: Vec::new(),
            uri_schemes: vec!["sip".into(), "sips".into()],
            accepted_body_types: vec![
                "application/sdp".into(),
                // DTMF over SIP INFO
                "application/dtmf-relay".into(),
                "application/dtmf".into(),
                // NOTIFY for REFER progress (RFC 3515)
                "message/sipfrag".into(),
            ],
            relayed_methods: vec![Method::Invite],
            warn_agent: "ccu".into(),
            limits: Limits::default(),
        }
    }
}

/// A request refused: the status, a reason phrase naming the problem, and
/// headers the status calls for (`Allow`, `Unsupported`, `Accept` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: StatusCode,
    pub reason: String,
    pub headers: Vec<Header>,
}

impl Rejection {
    fn new(status: StatusCode, reason: impl Into<String>) -> Rejection {
        Rejection {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    fn bad_request(reason: impl Into<String>) -> Rejection {
        Rejection::new(StatusCode::BAD_REQUEST, reason)
    }

    fn with(mut self, name: HeaderName, value: impl Into<String>) -> Rejection {
        self.headers.push(Header::new(name, value));
        self
    }

    /// The response for a request with these headers.
    pub fn to_response(&self, request: &Headers, to_tag: &str) -> Response {
        let mut response = response_for(request, self.status, &self.reason, Some(to_tag));
        for h in &self.headers {
            response.headers.push(h.name.clone(), h.value.clone());
        }
        response
    }
}

impl From<HeaderError> for Rejection {
    fn from(e: HeaderError) -> Rejection {
        Rejection::bad_request(e.to_string())
    }
}

/// Checks a parsed request in the order of RFC 3261 §8.2: syntax of the
/// headers the stack relies on, method, Request-URI, extensions, body.
pub fn validate_request(request: &Request, policy: &Policy) -> Result<(), Rejection> {
    if request.version != Version::SIP_2_0 {
        return Err(Rejection::new(
            StatusCode::VERSION_NOT_SUPPORTED,
            "Version Not Supported",
        ));
    }
    let h = &request.headers;

    // The headers every request needs (RFC 3261 §8.1.1; RFC 4475 §3.3.1),
    // each exactly once where it is single-valued (§3.3.8).
    let vias = h.vias()?;
    h.from()?;
    h.to()?;
    h.call_id()?;
    let cseq = h.cseq()?;
    let max_forwards = h.max_forwards()?;
    // Other headers with a syntax we act on.
    h.contacts()?;
    h.expires()?;
    h.routes(&HeaderName::Route)?;
    h.routes(&HeaderName::RecordRoute)?;
    let content_type = h.content_type()?;
    let accept = h.accept()?;
    let require = h.option_tags(&HeaderName::Require)?;
    h.option_tags(&HeaderName::ProxyRequire)?;
    h.option_tags(&HeaderName::Supported)?;

    // "z9hG4bK" alone claims an RFC 3261 transaction id and gives none
    // (RFC 4475 §3.2.1): refuse it rather than match on it.
    if vias.first().and_then(|v| v.branch()) == Some(MAGIC_COOKIE) {
        return Err(Rejection::bad_request(
            "Missing transaction identifier in Via branch",
        ));
    }

    // §8.2.1 method inspection. An unknown method is 501 even when the
    // CSeq disagrees (RFC 4475 §3.1.2.18 prefers it to 400).
    let allow = || {
        policy
            .allowed_methods
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !request.method.is_known() {
        return Err(
            Rejection::new(StatusCode::NOT_IMPLEMENTED, "Not Implemented")
                .with(HeaderName::Allow, allow()),
        );
    }
    if !policy.allowed_methods.contains(&request.method) {
        return Err(
            Rejection::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
                .with(HeaderName::Allow, allow()),
        );
    }
    if cseq.method != request.method {
        return Err(Rejection::bad_request(
            "CSeq method does not match the Request-Line",
        ));
    }

    // §8.2.2.1 Request-URI. Headers are not allowed in a Request-URI (RFC
    // 3261 §19.1.1 table; RFC 4475 §3.1.2.11).
    let scheme_ok = policy
        .uri_schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(request.uri.scheme()));
    if !scheme_ok {
        return Err(Rejection::new(
            StatusCode::UNSUPPORTED_URI_SCHEME,
            "Unsupported URI Scheme",
        ));
    }
    if let Uri::Sip(uri) = &request.uri
        && !uri.headers.is_empty()
    {
        return Err(Rejection::bad_request(
            "Headers not allowed in the Request-URI",
        ));
    }
    if request.method == Method::Register && h.to()?.uri.as_sip().is_none() {
        // The To of a REGISTER is the address-of-record, which must be a
        // SIP or SIPS URI (RFC 3261 §10.2; RFC 4475 §3.3.4).
        return Err(Rejection::bad_request(
            "To of a REGISTER must be a SIP or SIPS URI",
        ));
    }

    if max_forwards == Some(0) && policy.relayed_methods.contains(&request.method) {
        return Err(Rejection::new(StatusCode::TOO_MANY_HOPS, "Too Many Hops"));
    }

    // §8.2.2.3 Require. Not for ACK and CANCEL: they cannot be refused
    // separately from their INVITE.
    if !matches!(request.method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<&str> = require
            .iter()
            .map(String::as_str)
            .filter(|tag| {
                !policy
                    .supported_extensions
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(tag))
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(Rejection::new(StatusCode::BAD_EXTENSION, "Bad Extension")
                .with(HeaderName::Unsupported, unsupported.join(", ")));
        }
    }

    // §8.2.3 content processing.
    if !request.body.is_empty() {
        let Some(media) = content_type else {
            return Err(Rejection::bad_request("Missing Content-Type for a body"));
        };
        let essence = media.essence();
        if !policy
            .accepted_body_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&essence))
        {
            return Err(Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
            )
            .with(HeaderName::Accept, policy.accepted_body_types.join(", ")));
        }
    }

    // An INVITE whose Accept rules out SDP cannot be answered with a
    // session description (RFC 4475 §3.3.15).
    if request.method == Method::Invite
        && let Some(ranges) = accept
        && !ranges.iter().any(|r| r.covers("application/sdp"))
    {
        return Err(
            Rejection::new(StatusCode::NOT_ACCEPTABLE, "Not Acceptable").with(
                HeaderName::Warning,
                format!(
                    "399 {} \"Only application/sdp bodies can be sent\"",
                    policy.warn_agent
                ),
            ),
        );
    }
    Ok(())
}

/// Checks a parsed response before it is matched to a transaction.
/// Responses are never answered, so a bad one is simply dropped (RFC 4475
/// §3.1.2.5).
pub fn validate_response(response: &Response) -> Result<(), DropReason> {
    if response.version != Version::SIP_2_0 {
        return Err(DropReason::ResponseVersion(response.version));
    }
    let h = &response.headers;
    let check = || -> Result<(), HeaderError> {
        h.vias()?;
        h.from()?;
        h.to()?;
        h.call_id()?;
        h.cseq()?;
        Ok(())
    };
    check().map_err(DropReason::InvalidResponse)
}

/// Why a message is dropped without an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("unanswerable request: {0}")]
    Unanswerable(ParseError),
    #[error("unparseable response: {0}")]
    UnparseableResponse(ParseError),
    #[error("invalid response: {0}")]
    InvalidResponse(HeaderError),
    #[error("response with version {0}")]
    ResponseVersion(Version),
    /// ACK is never answered (RFC 3261 §17.2.1), even when invalid.
    #[error("invalid ACK: {status} {reason}")]
    InvalidAck { status: StatusCode, reason: String },
    #[error("empty datagram")]
    Empty,
}

/// What to do with what arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A valid request, for the transaction layer.
    Request(Request),
    /// A well-formed response, for the transaction layer.
    Response(Response),
    /// Send this response back (statelessly) and forget the request.
    Reply(Response),
    /// Nothing to do.
    Drop(DropReason),
}

/// Handles one UDP datagram.
pub fn receive_datagram(bytes: &[u8], policy: &Policy, to_tag: &str) -> Inbound {
    match parse::parse_datagram(bytes, &policy.limits) {
        Ok(message) => check(message, policy, to_tag),
        Err(ParseError::Empty) => Inbound::Drop(DropReason::Empty),
        Err(e) => reply_to_unparseable(bytes, e, to_tag),
    }
}

/// What a stream connection does next.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamInbound {
    /// Keep the buffer and read more.
    NeedMore,
    /// Act on `inbound` and drop `consumed` bytes from the buffer.
    Message { inbound: Inbound, consumed: usize },
    /// The stream cannot be re-framed: send `reply` if any, then close.
    Close {
        reply: Option<Response>,
        error: ParseError,
    },
}

/// Handles the front of a TCP/TLS stream buffer.
pub fn receive_stream(buffer: &[u8], policy: &Policy, to_tag: &str) -> StreamInbound {
    match parse::parse_stream_with(buffer, &policy.limits) {
        Ok((message, consumed)) => StreamInbound::Message {
            inbound: check(message, policy, to_tag),
            consumed,
        },
        Err(ParseError::Incomplete) => StreamInbound::NeedMore,
        Err(error) => {
            let reply = match reply_to_unparseable(buffer, error.clone(), to_tag) {
                Inbound::Reply(r) => Some(r),
                _ => None,
            };
            StreamInbound::Close { reply, error }
        }
    }
}

fn check(message: Message, policy: &Policy, to_tag: &str) -> Inbound {
    match message {
        Message::Response(response) => match validate_response(&response) {
            Ok(()) => Inbound::Response(response),
            Err(reason) => Inbound::Drop(reason),
        },
        Message::Request(request) => match validate_request(&request, policy) {
            Ok(()) => Inbound::Request(request),
            Err(rejection) if request.method == Method::Ack => {
                Inbound::Drop(DropReason::InvalidAck {
                    status: rejection.status,
                    reason: rejection.reason,
                })
            }
            Err(rejection) => Inbound::Reply(rejection.to_response(&request.headers, to_tag)),
        },
    }
}

/// A message that did not parse still gets a `400` (or `513`) when it
/// looks like a request and has a Via to send the answer along; headers
/// are recovered leniently for that purpose only.
fn reply_to_unparseable(bytes: &[u8], error: ParseError, to_tag: &str) -> Inbound {
    let start = parse::skip_crlfs(bytes);
    let bytes = bytes.get(start..).unwrap_or_default();
    if bytes.starts_with(b"SIP/") {
        return Inbound::Drop(DropReason::UnparseableResponse(error));
    }
    if bytes.starts_with(b"ACK ") {
        return Inbound::Drop(DropReason::Unanswerable(error));
    }
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    let (_, lines) = parse::unfold_lines(bytes.get(..head_end).unwrap_or_default());
    let mut headers = Headers::new();
    for line in lines {
        let text = String::from_utf8_lossy(&line);
        let Some((name, value)) = text.split_once(':') else {
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !crate::sip::header::is_valid_token(name) || value.contains(['\r', '\n']) {
            continue;
        }
        headers.push(HeaderName::parse(name), value.trim_matches([' ', '\t']));
    }
    if headers.get(&HeaderName::Via).is_none() {
        return Inbound::Drop(DropReason::Unanswerable(error));
    }
    let (status, reason) = match &error {
        ParseError::TooLarge { .. } => (
            StatusCode::MESSAGE_TOO_LARGE,
            "Message Too Large".to_owned(),
        ),
        other => (StatusCode::BAD_REQUEST, other.to_string()),
    };
    Inbound::Reply(Rejection::new(status, reason).to_response(&headers, to_tag))
}
