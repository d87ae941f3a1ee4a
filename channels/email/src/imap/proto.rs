//! IMAP4rev1 responses (RFC 3501 §7, grammar §9), sans-IO: the few a
//! polling client needs. [`parse_response`] takes the bytes read so far and
//! returns one complete response and how many bytes it used, or `None`
//! when more input is needed (a line or a literal not yet complete).
//!
//! A response is a line ending in CRLF, except that a line ending in a
//! literal announcement `{n}` continues, after the CRLF, with `n` raw bytes
//! and then the rest of the line (§4.3). The raw message of `BODY[]` comes
//! as such a literal, so its bytes are never scanned for CRLF or parentheses.

/// The most bytes one response may take (a fetched message included).
pub const MAX_RESPONSE: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("response larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// The outcome of a tagged command (§7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    No,
    Bad,
}

/// One message's data from a FETCH response (§7.4.2); only the items a
/// poller asks for are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fetch {
    /// The message sequence number.
    pub seq: u32,
    pub uid: Option<u32>,
    /// `BODY[]`: the whole message, raw.
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `+ ...`: the server waits for a literal's bytes (§7.5).
    Continuation,
    /// `tag OK|NO|BAD text`.
    Tagged {
        tag: String,
        status: Status,
        text: String,
    },
    /// `* SEARCH 4 8 15` (§7.2.5): with `UID SEARCH`, UIDs.
    Search(Vec<u32>),
    Fetch(Fetch),
    /// `* CAPABILITY ...` (§7.2.1), upper case.
    Capabilities(Vec<String>),
    /// `* OK [UIDVALIDITY 3857529045]` and friends: only UIDVALIDITY is kept.
    UidValidity(u32),
    /// `* BYE ...`: the server closes the connection (§7.1.5).
    Bye(String),
    /// Any other untagged response (EXISTS, FLAGS, OK ...), unused here.
    Other,
}

/// One complete response from the front of `input`: `Ok(Some((response,
/// bytes used)))`, or `Ok(None)` if more input is needed.
pub fn parse_response(input: &[u8]) -> Result<Option<(Response, usize)>, ParseError> {
    let Some(end) = response_end(input)? else {
        return Ok(None);
    };
    let raw = &input[..end - 2];
    Ok(Some((interpret(raw)?, end)))
}

/// The end (after the final CRLF) of the first complete response, if any.
fn response_end(input: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut from = 0;
    loop {
        let Some(lf) = input[from..].iter().position(|&b| b == b'\n') else {
            return if input.len() > MAX_RESPONSE {
                Err(ParseError::TooLarge)
            } else {
                Ok(None)
            };
        };
        let line_end = from + lf + 1;
        let line = &input[from..line_end];
        if line.len() < 2 || line[line.len() - 2] != b'\r' {
            return Err(ParseError::Malformed("line not ended by CRLF"));
        }
        match literal_length(&line[..line.len() - 2]) {
            Some(n) => {
                let after = line_end
                    .checked_add(n)
                    .filter(|&a| a <= MAX_RESPONSE)
                    .ok_or(ParseError::TooLarge)?;
                if input.len() < after {
                    return Ok(None);
                }
                from = after;
            }
            None => return Ok(Some(line_end)),
        }
    }
}

/// `n` when the line ends in a literal announcement `{n}` (or `{n+}`).
fn literal_length(line: &[u8]) -> Option<usize> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = body[open + 1..]
        .strip_suffix(b"+")
        .unwrap_or(&body[open + 1..]);
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn interpret(raw: &[u8]) -> Result<Response, ParseError> {
    if raw.starts_with(b"+") {
        return Ok(Response::Continuation);
    }
    if let Some(rest) = raw.strip_prefix(b"* ") {
        return untagged(rest);
    }
    let space = raw
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ParseError::Malformed("no space after the tag"))?;
    let tag = text(&raw[..space]);
    let rest = &raw[space + 1..];
    let (word, text_part) = split_word(rest);
    let status = match word.to_ascii_uppercase().as_slice() {
        b"OK" => Status::Ok,
        b"NO" => Status::No,
        b"BAD" => Status::Bad,
        _ => return Err(ParseError::Malformed("tagged response without OK/NO/BAD")),
    };
    Ok(Response::Tagged {
        tag,
        status,
        text: text(text_part),
    })
}

fn untagged(rest: &[u8]) -> Result<Response, ParseError> {
    let (word, after) = split_word(rest);
    let upper = word.to_ascii_uppercase();
    match upper.as_slice() {
        b"SEARCH" => {
            let mut ids = Vec::new();
            for n in after.split(|&b| b == b' ').filter(|w| !w.is_empty()) {
                // RFC 4731/7162 extensions may append "(MODSEQ ...)": stop there.
                if !n.iter().all(u8::is_ascii_digit) {
                    break;
                }
                ids.push(number(n)?);
            }
            Ok(Response::Search(ids))
        }
        b"CAPABILITY" => Ok(Response::Capabilities(
            text(after)
                .split_whitespace()
                .map(str::to_ascii_uppercase)
                .collect(),
        )),
        b"BYE" => Ok(Response::Bye(text(after))),
        b"OK" => {
            let t = text(after);
            let code = t
                .strip_prefix('[')
                .and_then(|c| c.split_once(']'))
                .map(|(c, _)| c.to_owned());
            match code.as_deref().and_then(|c| c.split_once(' ')) {
                Some((name, value)) if name.eq_ignore_ascii_case("UIDVALIDITY") => value
                    .trim()
                    .parse()
                    .map(Response::UidValidity)
                    .map_err(|_| ParseError::Malformed("UIDVALIDITY")),
                _ => match code.as_deref().and_then(|c| c.split_once(' ')) {
                    Some((name, caps)) if name.eq_ignore_ascii_case("CAPABILITY") => {
                        Ok(Response::Capabilities(
                            caps.split_whitespace()
                                .map(str::to_ascii_uppercase)
                                .collect(),
                        ))
                    }
                    _ => Ok(Response::Other),
                },
            }
        }
        _ if !word.is_empty() && word.iter().all(u8::is_ascii_digit) => {
            let seq = number(word)?;
            let (kind, data) = split_word(after);
            if kind.eq_ignore_ascii_case(b"FETCH") {
                fetch(seq, data).map(Response::Fetch)
            } else {
                Ok(Response::Other)
            }
        }
        _ => Ok(Response::Other),
    }
}

/// `(UID 42 FLAGS (\Seen) BODY[] {n}\r\n...)`, items in any order.
fn fetch(seq: u32, data: &[u8]) -> Result<Fetch, ParseError> {
    let mut out = Fetch {
        seq,
        ..Fetch::default()
    };
    let inner = data
        .strip_prefix(b"(")
        .and_then(|d| d.strip_suffix(b")"))
        .ok_or(ParseError::Malformed("FETCH data not in parentheses"))?;
    let mut at = 0;
    while at < inner.len() {
        if inner[at] == b' ' {
            at += 1;
            continue;
        }
        // The item name: an atom, with a [section] and <partial> for BODY.
        let start = at;
        while at < inner.len() && !matches!(inner[at], b' ' | b'(' | b'[') {
            at += 1;
        }
        let mut name = inner[start..at].to_ascii_uppercase();
        if inner.get(at) == Some(&b'[') {
            let close = inner[at..]
                .iter()
                .position(|&b| b == b']')
                .ok_or(ParseError::Malformed("unclosed section"))?;
            name.extend_from_slice(&inner[at..at + close + 1].to_ascii_uppercase());
            at += close + 1;
            while at < inner.len() && inner[at] != b' ' {
                at += 1;
            }
        }
        while inner.get(at) == Some(&b' ') {
            at += 1;
        }
        let (value, next) = value(inner, at)?;
        at = next;
        match name.as_slice() {
            b"UID" => out.uid = Some(number(value.bytes().ok_or(ParseError::Malformed("UID"))?)?),
            b"BODY[]" | b"RFC822" => out.body = value.bytes().map(<[u8]>::to_vec),
            _ => {}
        }
    }
    Ok(out)
}

/// A value in FETCH data: an atom or number, a quoted string, a literal,
/// NIL or a parenthesised list (skipped whole).
enum Value<'a> {
    Bytes(&'a [u8]),
    Owned(Vec<u8>),
    Nil,
    List,
}

impl Value<'_> {
    fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Owned(b) => Some(b),
            Value::Nil | Value::List => None,
        }
    }
}

fn value(data: &[u8], at: usize) -> Result<(Value<'_>, usize), ParseError> {
    match data.get(at) {
        None => Err(ParseError::Malformed("missing value")),
        Some(b'"') => {
            let mut out = Vec::new();
            let mut i = at + 1;
            while i < data.len() {
                match data[i] {
                    b'\\' if i + 1 < data.len() => {
                        out.push(data[i + 1]);
                        i += 2;
                    }
                    b'"' => return Ok((Value::Owned(out), i + 1)),
                    b => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            Err(ParseError::Malformed("unclosed quoted string"))
        }
        Some(b'{') => {
            let close = data[at..]
                .iter()
                .position(|&b| b == b'}')
                .ok_or(ParseError::Malformed("unclosed literal length"))?;
            let n = literal_length(&data[at..at + close + 1])
                .ok_or(ParseError::Malformed("literal length"))?;
            let start = at + close + 1 + 2;
            let end = start
                .checked_add(n)
                .filter(|&e| e <= data.len())
                .ok_or(ParseError::Malformed("literal shorter than announced"))?;
            if data.get(at + close + 1..start) != Some(b"\r\n".as_slice()) {
                return Err(ParseError::Malformed("literal without CRLF"));
            }
            Ok((Value::Bytes(&data[start..end]), end))
        }
        Some(b'(') => {
            let mut depth = 0usize;
            let mut i = at;
            while i < data.len() {
                match data[i] {
                    b'(' => depth += 1,
                    b')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok((Value::List, i + 1));
                        }
                    }
                    b'"' => {
                        let (_, next) = value(data, i)?;
                        i = next;
                        continue;
                    }
                    b'{' => {
                        let (_, next) = value(data, i)?;
                        i = next;
                        continue;
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(ParseError::Malformed("unclosed list"))
        }
        Some(_) => {
            let mut end = at;
            while end < data.len() && !matches!(data[end], b' ' | b')') {
                end += 1;
            }
            let atom = &data[at..end];
            if atom.eq_ignore_ascii_case(b"NIL") {
                Ok((Value::Nil, end))
            } else {
                Ok((Value::Bytes(atom), end))
            }
        }
    }
}

fn split_word(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == b' ') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[]),
    }
}

fn number(digits: &[u8]) -> Result<u32, ParseError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or(ParseError::Malformed("number"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An `astring` argument (§9): an atom when it is one, a quoted string for
/// other printable ASCII, else `None`: send it as a literal.
pub fn quoted(value: &str) -> Option<String> {
    if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return if value.is_empty() {
            Some("\"\"".into())
        } else {
            None
        };
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &[u8]) -> Response {
        let (response, used) = parse_response(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        response
    }

    #[test]
    fn tagged_and_untagged_status_lines() {
        assert_eq!(
            one(b"a1 OK LOGIN completed\r\n"),
            Response::Tagged {
                tag: "a1".into(),
                status: Status::Ok,
                text: "LOGIN completed".into()
            }
        );
        assert!(matches!(
            one(b"a2 no [AUTHENTICATIONFAILED] bad\r\n"),
            Response::Tagged {
                status: Status::No,
                ..
            }
        ));
        assert_eq!(
            one(b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"),
            Response::UidValidity(1_700_000_000)
        );
        assert_eq!(one(b"+ go ahead\r\n"), Response::Continuation);
        assert_eq!(one(b"* 3 EXISTS\r\n"), Response::Other);
        assert_eq!(
            one(b"* OK [CAPABILITY IMAP4rev1 MOVE] ready\r\n"),
            Response::Capabilities(vec!["IMAP4REV1".into(), "MOVE".into()])
        );
    }

    #[test]
    fn search_lists_the_ids_and_may_be_empty() {
        assert_eq!(
            one(b"* SEARCH 4 8 15\r\n"),
            Response::Search(vec![4, 8, 15])
        );
        assert_eq!(one(b"* SEARCH\r\n"), Response::Search(vec![]));
    }

    #[test]
    fn a_fetched_message_is_taken_from_its_literal_whatever_it_contains() {
        let body = b"Subject: (x)\r\n\r\n* 9 FETCH {3}\r\n)\r\n";
        let mut input = format!(
            "* 2 FETCH (UID 42 FLAGS (\\Seen \\Answered) BODY[] {{{}}}\r\n",
            body.len()
        )
        .into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b")\r\n");
        match one(&input) {
            Response::Fetch(f) => {
                assert_eq!((f.seq, f.uid), (2, Some(42)));
                assert_eq!(f.body.as_deref(), Some(body.as_slice()));
            }
            other => panic!("{other:?}"),
        }
        // Items in another order.
        let input = b"* 5 FETCH (BODY[] {2}\r\nhi UID 7)\r\n";
        match one(input) {
            Response::Fetch(f) => {
                assert_eq!((f.uid, f.body.as_deref()), (Some(7), Some(&b"hi"[..])))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        assert_eq!(parse_response(b"a1 OK").unwrap(), None);
        assert_eq!(
            parse_response(b"* 1 FETCH (UID 1 BODY[] {10}\r\nabc").unwrap(),
            None
        );
        // Two responses: the first one only.
        let (r, used) = parse_response(b"* SEARCH 1\r\na1 OK done\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((r, used), (Response::Search(vec![1]), 12));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_response(b"a1 MAYBE\r\n").is_err());
        assert!(parse_response(b"nospace\r\n").is_err());
        assert!(parse_response(b"* 1 FETCH UID 1\r\n").is_err());
        assert!(parse_response(b"* 1 FETCH (UID\r\n").is_err());
        assert!(parse_response(b"bare lf\n").is_err());
        assert!(parse_response(b"* 1 FETCH (BODY[] {4294967296999}\r\n").is_err());
        assert_eq!(
            parse_response(b"* 1 FETCH (BODY[] {99999999}\r\n"),
            Err(ParseError::TooLarge)
        );
    }

    #[test]
    fn arguments_are_quoted_or_left_for_a_literal() {
        assert_eq!(quoted("urp").as_deref(), Some("\"urp\""));
        assert_eq!(quoted("a\"b\\c").as_deref(), Some("\"a\\\"b\\\\c\""));
        assert_eq!(quoted("pässword"), None);
        assert_eq!(quoted("line\r\nbreak"), None);
    }
}
