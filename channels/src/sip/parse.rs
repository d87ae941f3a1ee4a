//! Parsing SIP messages from bytes (RFC 3261 §7, §18.3, §25).
//!
//! Two framings:
//! - [`parse`] takes one UDP datagram. The body is `Content-Length` octets;
//!   extra octets are ignored (RFC 4475 §3.1.1.8) and a missing
//!   `Content-Length` means "the rest of the datagram" (RFC 3261 §18.3).
//! - [`parse_stream`] takes the front of a TCP/TLS byte stream and returns
//!   the message and how many bytes it used, or
//!   [`ParseError::Incomplete`] when more bytes are needed. Over a stream
//!   `Content-Length` is mandatory and decides where the next message
//!   starts.
//!
//! The parser checks what framing depends on: the start line, header line
//! syntax (a token name, a colon, a UTF-8 value, folding), and
//! `Content-Length`. Header *values* are checked by the typed accessors in
//! [`crate::sip::header`], so that a request with a bad From still parses
//! far enough to be answered with a `400` naming the problem.

use crate::sip::message::{
    Header, HeaderName, Headers, Message, Method, Request, Response, StatusCode, Version,
};
use crate::sip::scan::{is_token, is_token_char, is_wsp};
use crate::sip::uri::Uri;

/// Size limits. A message over `max_message_size` is refused with
/// [`ParseError::TooLarge`], which a server answers with `513`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Start line + headers + body, in bytes.
    pub max_message_size: usize,
    /// Header lines (after unfolding).
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        // 64 KiB is the largest UDP payload; no SIP message ccu handles
        // comes near it (RFC 3261 §18.1.1 already moves anything over ~1300
        // bytes to TCP).
        Limits {
            max_message_size: 65_535,
            max_headers: 256,
        }
    }
}

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Stream framing only: the message is not complete yet.
    #[error("incomplete message")]
    Incomplete,
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("too many header lines (limit {limit})")]
    TooManyHeaders { limit: usize },
    #[error("empty message")]
    Empty,
    #[error("Malformed Request-Line: {0}")]
    RequestLine(&'static str),
    #[error("Malformed Status-Line: {0}")]
    StatusLine(&'static str),
    #[error("Malformed header line {line}: {problem}")]
    HeaderLine { line: usize, problem: &'static str },
    #[error("Malformed Content-Length")]
    ContentLength,
    #[error("Multiple Content-Length")]
    MultipleContentLength,
    #[error("Content-Length exceeds the datagram")]
    ContentLengthExceedsDatagram,
    #[error("Missing Content-Length on a stream transport")]
    MissingContentLength,
}

/// Parses one datagram with default [`Limits`].
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    parse_datagram(bytes, &Limits::default())
}

/// Parses one datagram.
pub fn parse_datagram(bytes: &[u8], limits: &Limits) -> Result<Message, ParseError> {
    if bytes.len() > limits.max_message_size {
        return Err(ParseError::TooLarge {
            size: bytes.len(),
            limit: limits.max_message_size,
        });
    }
    let start = skip_crlfs(bytes);
    let bytes = bytes.get(start..).unwrap_or_default();
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    let (head_len, body_start) = match find_head_end(bytes) {
        Some(end) => end,
        // A datagram ending right after a header line's CRLF without the
        // empty line: tolerated as "no body" (the datagram boundary frames
        // it), so the real problem in the message gets reported.
        None if bytes.ends_with(b"\r\n") => (bytes.len() - 2, bytes.len()),
        None => {
            return Err(ParseError::HeaderLine {
                line: 0,
                problem: "headers not terminated by CRLF",
            });
        }
    };
    let head = parse_head(bytes.get(..head_len).unwrap_or_default(), limits)?;
    let available = bytes.get(body_start..).unwrap_or_default();
    let body = match content_length(&head.headers)? {
        Some(len) if len > available.len() => return Err(ParseError::ContentLengthExceedsDatagram),
        Some(len) => available.get(..len).unwrap_or_default(),
        None => available,
    };
    Ok(head.into_message(body.to_vec()))
}

/// Parses the message at the front of a stream with default [`Limits`]:
/// `Ok((message, consumed))`, or [`ParseError::Incomplete`].
pub fn parse_stream(bytes: &[u8]) -> Result<(Message, usize), ParseError> {
    parse_stream_with(bytes, &Limits::default())
}

/// Parses the message at the front of a stream. Leading CRLFs (keep-alives,
/// RFC 5626 §3.5.1, and the "ignore CRLF before the start line" rule of RFC
/// 3261 §7.5) are skipped and counted in `consumed`.
///
/// Any error other than `Incomplete` means the stream cannot be re-framed:
/// the connection should be closed after answering, if an answer is
/// possible.
pub fn parse_stream_with(bytes: &[u8], limits: &Limits) -> Result<(Message, usize), ParseError> {
    let start = skip_crlfs(bytes);
    let rest = bytes.get(start..).unwrap_or_default();
    let Some((head_len, body_start)) = find_head_end(rest) else {
        if rest.len() > limits.max_message_size {
            return Err(ParseError::TooLarge {
                size: rest.len(),
                limit: limits.max_message_size,
            });
        }
        return Err(ParseError::Incomplete);
    };
    let head = parse_head(rest.get(..head_len).unwrap_or_default(), limits)?;
    let len = content_length(&head.headers)?.ok_or(ParseError::MissingContentLength)?;
    let total = body_start.saturating_add(len);
    if total > limits.max_message_size {
        return Err(ParseError::TooLarge {
            size: total,
            limit: limits.max_message_size,
        });
    }
    let Some(body) = rest.get(body_start..total) else {
        return Err(ParseError::Incomplete);
    };
    Ok((head.into_message(body.to_vec()), start + total))
}

/// How many leading CRLF (or bare LF) octets a stream buffer starts with.
/// A connection answers a double-CRLF "ping" with a CRLF "pong" (RFC 5626
/// §4.4.1) and drops these bytes.
pub fn skip_crlfs(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// The end of the head: (index of the CRLFCRLF, index of the body).
fn find_head_end(bytes: &[u8]) -> Option<(usize, usize)> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
}

pub(crate) struct Head {
    start: StartLine,
    pub(crate) headers: Headers,
}

enum StartLine {
    Request {
        method: Method,
        uri: Uri,
        version: Version,
    },
    Response {
        version: Version,
        status: StatusCode,
        reason: String,
    },
}

impl Head {
    fn into_message(self, body: Vec<u8>) -> Message {
        match self.start {
            StartLine::Request {
                method,
                uri,
                version,
            } => Message::Request(Request {
                method,
                uri,
                version,
                headers: self.headers,
                body,
            }),
            StartLine::Response {
                version,
                status,
                reason,
            } => Message::Response(Response {
                version,
                status,
                reason,
                headers: self.headers,
                body,
            }),
        }
    }
}

/// Splits a head (without its final CRLFCRLF) into lines and unfolds them.
/// Returns the start line and the header lines as (name, value) slices of
/// the unfolded text.
pub(crate) fn unfold_lines(head: &[u8]) -> (&[u8], Vec<Vec<u8>>) {
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next().unwrap_or_default();
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for line in lines {
        match (line.first(), headers.last_mut()) {
            // LWS = [*WSP CRLF] 1*WSP: a continuation line joins the
            // previous one; the line break becomes nothing and the leading
            // white space stays (RFC 3261 §7.3.1).
            (Some(b), Some(previous)) if is_wsp(*b) => previous.extend_from_slice(line),
            _ => headers.push(line.to_vec()),
        }
    }
    (start, headers)
}

fn parse_head(head: &[u8], limits: &Limits) -> Result<Head, ParseError> {
    let (start_line, lines) = unfold_lines(head);
    if lines.len() > limits.max_headers {
        return Err(ParseError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    let start = parse_start_line(start_line)?;
    let mut headers = Headers::new();
    for (index, line) in lines.iter().enumerate() {
        let line_no = index + 2;
        let bad = |problem| ParseError::HeaderLine {
            line: line_no,
            problem,
        };
        if line.first().is_some_and(|b| is_wsp(*b)) {
            return Err(bad("continuation line without a header"));
        }
        let text = std::str::from_utf8(line).map_err(|_| bad("not UTF-8"))?;
        // A bare CR cannot be in a header value. NUL can, as a quoted-pair
        // inside a quoted string (RFC 4475 §3.1.1.2), so it is left to the
        // typed parsers.
        if text.bytes().any(|b| b == b'\r') {
            return Err(bad("bare CR"));
        }
        // header = header-name HCOLON header-value; HCOLON = *(SP/HTAB) ":" SWS
        let name_len = text.bytes().take_while(|b| is_token_char(*b)).count();
        let (name, rest) = text.split_at(name_len);
        if name.is_empty() {
            return Err(bad("missing header name"));
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let Some(value) = rest.strip_prefix(':') else {
            return Err(bad("missing colon"));
        };
        let value = value.trim_matches([' ', '\t']);
        headers.push(HeaderName::parse(name), value);
    }
    Ok(Head { start, headers })
}

fn parse_start_line(line: &[u8]) -> Result<StartLine, ParseError> {
    if line.starts_with(b"SIP/") {
        return parse_status_line(line);
    }
    const BAD: fn(&'static str) -> ParseError = ParseError::RequestLine;
    let text = std::str::from_utf8(line).map_err(|_| BAD("not UTF-8"))?;
    // Request-Line = Method SP Request-URI SP SIP-Version CRLF, with exactly
    // one SP between elements and none at the end: RFC 4475 §3.1.2.9 and
    // §3.1.2.10 allow rejecting extra SP, and §3.1.2.8 (LWS inside the URI)
    // requires it. We reject all three the same way.
    let (method, rest) = text
        .split_once(' ')
        .ok_or(BAD("expected SP after method"))?;
    let (uri, version) = rest
        .rsplit_once(' ')
        .ok_or(BAD("expected SP before version"))?;
    if !is_token(method) {
        return Err(BAD("method is not a token"));
    }
    if uri.is_empty()
        || uri
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(BAD("white space in Request-URI"));
    }
    let uri = Uri::parse(uri).map_err(|_| BAD("invalid Request-URI"))?;
    let version = parse_version(version).ok_or(BAD("invalid SIP-Version"))?;
    Ok(StartLine::Request {
        method: Method::from_token(method),
        uri,
        version,
    })
}

/// Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
fn parse_status_line(line: &[u8]) -> Result<StartLine, ParseError> {
    const BAD: fn(&'static str) -> ParseError = ParseError::StatusLine;
    let text = std::str::from_utf8(line).map_err(|_| BAD("not UTF-8"))?;
    let mut parts = text.splitn(3, ' ');
    let version = parts
        .next()
        .and_then(parse_version)
        .ok_or(BAD("invalid SIP-Version"))?;
    let code = parts.next().ok_or(BAD("missing Status-Code"))?;
    // Status-Code is exactly three digits; 4294967301 must not wrap into
    // something plausible (RFC 4475 §3.1.2.19).
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD("Status-Code is not three digits"));
    }
    let status = code
        .parse()
        .ok()
        .and_then(StatusCode::new)
        .ok_or(BAD("Status-Code out of range"))?;
    // An empty reason phrase is valid (RFC 4475 §3.1.1.13), but the SP
    // before it is not optional.
    let reason = parts.next().ok_or(BAD("missing SP before Reason-Phrase"))?;
    if reason.chars().any(|c| c.is_control() && c != '\t') {
        return Err(BAD("control character in Reason-Phrase"));
    }
    Ok(StartLine::Response {
        version,
        status,
        reason: reason.to_owned(),
    })
}

/// SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT ("SIP" is case-insensitive).
fn parse_version(s: &str) -> Option<Version> {
    let rest = s
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and(s.get(4..))?;
    let (major, minor) = rest.split_once('.')?;
    let number = |n: &str| {
        (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .then(|| n.parse().ok())
            .flatten()
    };
    Some(Version {
        major: number(major)?,
        minor: number(minor)?,
    })
}

/// The one Content-Length, if present. Several are a framing error (RFC
/// 4475 §3.3.9), as is anything but digits (§3.1.2.3).
fn content_length(headers: &Headers) -> Result<Option<usize>, ParseError> {
    let mut values = headers
        .iter()
        .filter(|h: &&Header| h.name == HeaderName::ContentLength);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ParseError::MultipleContentLength);
    }
    let v = first.value.as_str();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::ContentLength);
    }
    // Saturate: anything this large is over the size limit anyway.
    Ok(Some(v.parse().unwrap_or(usize::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:ccu@example.org SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.4:5060;branch=z9hG4bKnashds7\r\n\
Max-Forwards: 70\r\n\
To: <sip:ccu@example.org>\r\n\
From: <sip:probe@example.net>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 63104 OPTIONS\r\n\
Content-Length: 4\r\n\
\r\n\
body";

    #[test]
    fn a_stream_yields_each_message_and_its_length() {
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(OPTIONS);
        stream.extend_from_slice(OPTIONS);
        let (first, used) = parse_stream(&stream).unwrap();
        assert_eq!(used, 4 + OPTIONS.len());
        assert_eq!(first.body(), b"body");
        let (_, used_again) = parse_stream(&stream[used..]).unwrap();
        assert_eq!(used_again, OPTIONS.len());
    }

    #[test]
    fn a_stream_asks_for_more_until_the_body_is_there() {
        for cut in [0, 10, OPTIONS.len() - 5, OPTIONS.len() - 1] {
            assert_eq!(
                parse_stream(&OPTIONS[..cut]),
                Err(ParseError::Incomplete),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_stream_without_content_length_cannot_be_framed() {
        let text = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n";
        assert_eq!(parse_stream(text), Err(ParseError::MissingContentLength));
    }

    #[test]
    fn oversized_messages_are_refused_in_both_framings() {
        let limits = Limits {
            max_message_size: 100,
            max_headers: 10,
        };
        assert!(matches!(
            parse_datagram(OPTIONS, &limits),
            Err(ParseError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_stream_with(OPTIONS, &limits),
            Err(ParseError::TooLarge { .. })
        ));
        // A head that never ends is refused once it passes the limit, not
        // buffered forever.
        let endless = vec![b'a'; 101];
        assert!(matches!(
            parse_stream_with(&endless, &limits),
            Err(ParseError::TooLarge { .. })
        ));
        // A huge Content-Length is refused before its body arrives.
        let huge = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert!(matches!(
            parse_stream(huge),
            Err(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn serialization_round_trips() {
        let message = parse(OPTIONS).unwrap();
        let bytes = message.to_bytes();
        assert_eq!(parse(&bytes).unwrap(), message);
        assert_eq!(bytes, OPTIONS);
    }

    #[test]
    fn status_lines() {
        let ok = parse(b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n").unwrap();
        let Message::Response(r) = ok else { panic!() };
        assert_eq!(r.status, StatusCode::RINGING);
        assert_eq!(r.reason, "Ringing");
        for bad in [
            &b"SIP/2.0 099 Low\r\n\r\n"[..],
            b"SIP/2.0 700 High\r\n\r\n",
            b"SIP/2.0 20 Short\r\n\r\n",
            b"SIP/2.0 200\r\n\r\n",
            b"SIP/2 200 OK\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::StatusLine(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_lines_need_a_token_and_a_colon() {
        let no_colon = b"OPTIONS sip:a@b SIP/2.0\r\nFoobar roobar\r\n\r\n";
        assert!(matches!(
            parse(no_colon),
            Err(ParseError::HeaderLine { line: 2, .. })
        ));
        let not_utf8 = b"OPTIONS sip:a@b SIP/2.0\r\nSubject: \xff\r\n\r\n";
        assert!(matches!(
            parse(not_utf8),
            Err(ParseError::HeaderLine { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        const ALPHABET: &[u8] = b"SIP/2.0 \r\n:;<>\"@%x1";
        let mut seed: u32 = 7;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    ALPHABET[(seed >> 16) as usize % ALPHABET.len()]
                })
                .collect();
            let _ = parse(&bytes);
            let _ = parse_stream(&bytes);
        }
    }
}
