//! [`EmailAddress`]: a mailbox address parsed at the edge, so nothing past
//! the adapter handles an unchecked string.

use std::fmt;

/// Why a string is not a usable mailbox address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("address {0:?} has no '@'")]
    MissingAt(String),
    #[error("address {0:?} has an empty local part or domain")]
    EmptyPart(String),
    #[error("address {0:?} is longer than 254 octets")]
    TooLong(String),
    #[error("address {0:?} contains whitespace, control characters or angle brackets")]
    InvalidCharacter(String),
}

/// A mailbox `local@domain` (RFC 5321 §4.1.2 "Mailbox").
///
/// The domain is lower-cased (domains are case-insensitive); the local part
/// keeps its case, since RFC 5321 §2.4 lets the receiving host decide, but
/// [`EmailAddress::eq_ignore_case`] is what routing should use: every real
/// mail system treats `URP@comune.example` and `urp@comune.example` alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailAddress {
    full: String,
    at: usize,
}

impl EmailAddress {
    /// Parses `local@domain`. Quoted local parts are accepted as they come
    /// from the SMTP parser (already unquoted); only what would break a
    /// header or a log line is refused.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(AddressError::Empty);
        }
        // RFC 5321 §4.5.3.1.3: a path is at most 256 octets including the
        // angle brackets, so the address itself at most 254.
        if input.len() > 254 {
            return Err(AddressError::TooLong(input.to_owned()));
        }
        if input
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        {
            return Err(AddressError::InvalidCharacter(input.to_owned()));
        }
        let at = input
            .rfind('@')
            .ok_or_else(|| AddressError::MissingAt(input.to_owned()))?;
        let (local, domain) = (&input[..at], &input[at + 1..]);
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::EmptyPart(input.to_owned()));
        }
        let full = format!("{local}@{}", domain.to_lowercase());
        Ok(Self {
            at: local.len(),
            full,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    pub fn local_part(&self) -> &str {
        &self.full[..self.at]
    }

    pub fn domain(&self) -> &str {
        &self.full[self.at + 1..]
    }

    /// Case-insensitive comparison of the whole address, for routing.
    pub fn eq_ignore_case(&self, other: &str) -> bool {
        self.full.eq_ignore_ascii_case(other.trim())
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl std::str::FromStr for EmailAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_is_lower_cased_and_the_local_part_kept() {
        let a = EmailAddress::parse("Mario.Rossi@Esempio.IT").unwrap();
        assert_eq!(a.as_str(), "Mario.Rossi@esempio.it");
        assert_eq!(a.local_part(), "Mario.Rossi");
        assert_eq!(a.domain(), "esempio.it");
        assert!(a.eq_ignore_case("mario.rossi@ESEMPIO.it"));
    }

    #[test]
    fn broken_addresses_are_refused() {
        assert_eq!(EmailAddress::parse(""), Err(AddressError::Empty));
        assert!(matches!(
            EmailAddress::parse("nobody"),
            Err(AddressError::MissingAt(_))
        ));
        assert!(matches!(
            EmailAddress::parse("@x.it"),
            Err(AddressError::EmptyPart(_))
        ));
        assert!(matches!(
            EmailAddress::parse("a@"),
            Err(AddressError::EmptyPart(_))
        ));
        assert!(matches!(
            EmailAddress::parse("a\r\nBcc: x@y@z"),
            Err(AddressError::InvalidCharacter(_))
        ));
        let long = format!("{}@x.it", "a".repeat(260));
        assert!(matches!(
            EmailAddress::parse(&long),
            Err(AddressError::TooLong(_))
        ));
    }
}
