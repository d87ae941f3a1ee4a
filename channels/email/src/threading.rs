//! Threading: which conversation an inbound mail belongs to.
//!
//! Order (issue 6, point 4): the ids in `In-Reply-To:` then `References:`
//! (newest first) matched against the Message-IDs of mail we sent; then a
//! reference token in the subject such as `[URP-2026-000123]`; else a new
//! conversation. Headers win over the subject because clients keep them
//! exactly while people edit subjects (and a forged token in a subject
//! typed by a stranger must not outrank a real reply chain).

use crate::inbound::InboundMail;

/// A conversation reference shown to citizens: `PREFIX-YYYY-NNNNNN`, e.g.
/// `URP-2026-000123` (prefix: 2–10 ASCII letters or digits, starting with
/// a letter; the year four digits; the number six).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReferenceToken {
    pub prefix: String,
    pub year: u16,
    pub number: u32,
}

impl ReferenceToken {
    /// Parses `PREFIX-YYYY-NNNNNN` (without brackets). Case-insensitive
    /// prefix, returned upper case.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split('-');
        let (prefix, year, number) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let prefix_ok = (2..=10).contains(&prefix.len())
            && prefix.starts_with(|c: char| c.is_ascii_alphabetic())
            && prefix.chars().all(|c| c.is_ascii_alphanumeric());
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        if !prefix_ok || !digits(year, 4) || !digits(number, 6) {
            return None;
        }
        Some(Self {
            prefix: prefix.to_ascii_uppercase(),
            year: year.parse().ok()?,
            number: number.parse().ok()?,
        })
    }

    /// Every bracketed token in a subject, left to right:
    /// `"Re: [URP-2026-000123] TARI"` gives one.
    pub fn find_in_subject(subject: &str) -> Vec<Self> {
        let mut found = Vec::new();
        let mut rest = subject;
        while let Some(open) = rest.find('[') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find(']') else { break };
            if let Some(token) = Self::parse(rest[..close].trim()) {
                found.push(token);
            }
            rest = &rest[close + 1..];
        }
        found
    }
}

impl std::fmt::Display for ReferenceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{:04}-{:06}", self.prefix, self.year, self.number)
    }
}

/// What the store knows, as the threading decision needs it.
pub trait ThreadLookup {
    /// The conversation of a Message-ID we sent (without angle brackets).
    fn conversation_by_message_id(&self, message_id: &str) -> Option<i64>;
    /// The conversation a reference token names.
    fn conversation_by_reference(&self, token: &ReferenceToken) -> Option<i64>;
}

/// The threading decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Thread {
    /// The mail answers one of our messages.
    ByHeader {
        conversation: i64,
        message_id: String,
    },
    /// The subject names a conversation.
    BySubject {
        conversation: i64,
        token: ReferenceToken,
    },
    /// Nothing matched: open a new conversation.
    New,
}

/// Decides the conversation of `mail`. Pure: all knowledge comes through
/// `lookup`.
pub fn thread(mail: &InboundMail, lookup: &impl ThreadLookup) -> Thread {
    // In-Reply-To names the direct parent; References lists the chain
    // oldest first, so the newest ancestors are tried first.
    let candidates = mail.in_reply_to.iter().chain(mail.references.iter().rev());
    for id in candidates.take(100) {
        if let Some(conversation) = lookup.conversation_by_message_id(id) {
            return Thread::ByHeader {
                conversation,
                message_id: id.clone(),
            };
        }
    }
    for token in ReferenceToken::find_in_subject(&mail.subject) {
        if let Some(conversation) = lookup.conversation_by_reference(&token) {
            return Thread::BySubject {
                conversation,
                token,
            };
        }
    }
    Thread::New
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_tokens_are_parsed_without_a_regex() {
        let t = ReferenceToken::parse("urp-2026-000123").unwrap();
        assert_eq!(t.to_string(), "URP-2026-000123");
        for bad in [
            "URP-26-000123",
            "URP-2026-123",
            "U-2026-000123",
            "1RP-2026-000123",
            "URP-2026-000123-1",
            "URP_2026_000123",
            "URP-2026-00012x",
            "",
        ] {
            assert_eq!(ReferenceToken::parse(bad), None, "{bad}");
        }
        let found = ReferenceToken::find_in_subject(
            "R: Re: [URP-2026-000123] [nota] [TRIB-2025-000007 ] [",
        );
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].to_string(), "TRIB-2025-000007");
    }
}
