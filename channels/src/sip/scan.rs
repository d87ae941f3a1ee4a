//! A tiny cursor over an unfolded header value, with the RFC 3261 §25.1
//! building blocks (token, quoted-string, SWS-separated punctuation).
//!
//! Header values reach here after unfolding, so linear white space is just
//! SP / HTAB: `LWS = 1*WSP`, `SWS = *WSP`.

/// RFC 3261 §25.1 `token` characters.
pub(crate) fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// RFC 3261 §25.1 `word` characters (Call-ID).
pub(crate) fn is_word_char(b: u8) -> bool {
    is_token_char(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

#[derive(Debug, Clone)]
pub(crate) struct Scanner<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(s: &'a str) -> Scanner<'a> {
        Scanner { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.s.len());
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a str {
        self.s.get(from..to).unwrap_or("")
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Consumes `b` if it is next.
    pub(crate) fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Skips white space; true if there was any.
    pub(crate) fn ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_wsp) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// `SWS c SWS`: consumes the separator with the white space around it,
    /// or nothing.
    pub(crate) fn sep(&mut self, c: u8) -> bool {
        let start = self.pos;
        self.ws();
        if self.eat(c) {
            self.ws();
            true
        } else {
            self.pos = start;
            false
        }
    }

    /// Consumes bytes while `pred` holds (ASCII predicates only, so the
    /// result always ends on a char boundary).
    pub(crate) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        self.slice(start, self.pos)
    }

    pub(crate) fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(is_token_char);
        (!t.is_empty()).then_some(t)
    }

    /// A `quoted-string` starting at the current `"`; returns its content
    /// with the quoted-pairs resolved, or `None` if it is not one
    /// (unterminated, raw control characters).
    pub(crate) fn quoted_string(&mut self) -> Option<String> {
        let start = self.pos;
        if !self.eat(b'"') {
            return None;
        }
        let mut out = String::new();
        let rest = self.rest();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Some(out);
                }
                '\\' => match chars.next() {
                    // quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
                    Some((_, q)) if q.is_ascii() && q != '\n' && q != '\r' => out.push(q),
                    _ => break,
                },
                // qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
                c if c == ' ' || c == '\t' || (c as u32 >= 0x21 && c as u32 != 0x7f) => out.push(c),
                _ => break,
            }
        }
        self.pos = start;
        None
    }
}

/// Writes `s` as a `quoted-string`, escaping `"` and `\`.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Decodes `%HH` escapes. `None` for a malformed escape.
pub(crate) fn unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|h| (*h as char).to_digit(16))?;
            let lo = bytes.get(i + 2).and_then(|h| (*h as char).to_digit(16))?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings_resolve_their_pairs_and_reject_an_open_quote() {
        let mut s = Scanner::new(r#""J Rosenberg \\\"" <sip:x@y>"#);
        assert_eq!(s.quoted_string().as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(s.rest(), " <sip:x@y>");
        let mut open = Scanner::new(r#""Mr. J. User <sip:j.user@example.com>"#);
        assert_eq!(open.quoted_string(), None);
        assert_eq!(open.pos(), 0);
    }

    #[test]
    fn unescape_decodes_and_refuses_bad_escapes() {
        assert_eq!(
            unescape("null-%00-null").as_deref(),
            Some(&b"null-\0-null"[..])
        );
        assert_eq!(unescape("%Z%45"), None);
        assert_eq!(unescape("50%"), None);
    }
}
