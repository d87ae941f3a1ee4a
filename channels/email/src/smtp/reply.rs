//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463,
//! advertised through ENHANCEDSTATUSCODES, RFC 2034).

use std::fmt;

/// One reply, possibly multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// `class.subject.detail`, e.g. `"5.1.1"`. RFC 2034 §3 puts it on every
    /// reply except the greeting and the answers to HELO/EHLO (and we also
    /// leave it off the 354 intermediate reply, as common servers do).
    pub enhanced: Option<&'static str>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// A reply without an enhanced code (greeting, HELO/EHLO, 354).
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, enhanced: Option<&'static str>, lines: Vec<String>) -> Self {
        Self {
            code,
            enhanced,
            lines,
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_permanent_failure(&self) -> bool {
        self.code >= 500
    }

    /// The wire form: `code-text` on every line but the last, `code text` on
    /// the last, each ended by CRLF (RFC 5321 §4.2.1).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
            return;
        }
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            // Never let reply text (which may echo client input) break the
            // framing of the reply.
            let line: String = line.chars().filter(|c| !c.is_control()).collect();
            let text = match self.enhanced {
                Some(e) => format!("{}{sep}{e} {line}\r\n", self.code),
                None => format!("{}{sep}{line}\r\n", self.code),
            };
            out.extend_from_slice(text.as_bytes());
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_use_a_dash_on_all_but_the_last_line() {
        let r = Reply::multi(250, None, vec!["mx greets you".into(), "SIZE 10".into()]);
        assert_eq!(r.to_bytes(), b"250-mx greets you\r\n250 SIZE 10\r\n");
        let r = Reply::new(550, "5.1.1", "No such mailbox\r\ninjected");
        assert_eq!(r.to_bytes(), b"550 5.1.1 No such mailboxinjected\r\n");
    }
}
