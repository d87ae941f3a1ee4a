//! Telephone numbers as ccu stores and compares them: E.164 (ITU-T E.164,
//! `+` country code and national number, at most 15 digits).
//!
//! Callers reach ccu through trunks that write numbers in many ways: a
//! national `0612345678`, an international `0039 06 1234 5678`, a
//! `+39 06…` with spaces, or a whole URI (`sip:+390612345678@carrier;user=phone`,
//! `tel:+39-06-1234-5678`). [`PhoneNumber::parse`] turns all of them into
//! one form, so that a caller's history is found whatever the trunk wrote,
//! and refuses what is not a number (`anonymous`, a user name, too few or
//! too many digits).
//!
//! ```
//! use ccu_channels::sip::phone::PhoneNumber;
//!
//! let n = PhoneNumber::parse("0612345678").unwrap();
//! assert_eq!(n.as_str(), "+390612345678");
//! assert_eq!(PhoneNumber::parse("sip:+39 06 1234 5678@trunk.example").unwrap(), n);
//! assert!(PhoneNumber::parse("anonymous").is_none());
//! ```

use std::fmt;

/// The country code assumed for numbers written without one: Italy.
pub const DEFAULT_COUNTRY_CODE: &str = "39";

/// Fewest digits (country code included) accepted: short service numbers
/// (112, 1500) are not callers' identities.
const MIN_DIGITS: usize = 7;
/// E.164 §6.1: at most 15 digits.
const MAX_DIGITS: usize = 15;

/// A telephone number in E.164 form, e.g. `+390612345678`. Only
/// [`PhoneNumber::parse`] makes one, so every value is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    /// Parses a number as a caller or a trunk writes it, with Italy (`+39`)
    /// as the country of national numbers. See [`PhoneNumber::parse_in`].
    pub fn parse(input: &str) -> Option<PhoneNumber> {
        PhoneNumber::parse_in(input, DEFAULT_COUNTRY_CODE)
    }

    /// Parses `input`, taking national numbers (no `+`, no `00`) to be in
    /// the country with calling code `country_code` (digits, e.g. `"39"`).
    ///
    /// - a `sip:`, `sips:` or `tel:` URI is reduced to its user part
    ///   (before `@` and before any `;parameter`);
    /// - visual separators (space, `-`, `.`, `(`, `)`, RFC 3966 §5.1.1) are
    ///   dropped;
    /// - `+` then digits is already international; `00` is the
    ///   international prefix used in Italy and most of Europe;
    /// - any other string of digits is national. Italy keeps the leading
    ///   `0` of geographic numbers in international form (`06…` →
    ///   `+3906…`); elsewhere a single leading `0` is the trunk prefix and
    ///   is dropped (`0201…` in the UK → `+44201…`).
    pub fn parse_in(input: &str, country_code: &str) -> Option<PhoneNumber> {
        if country_code.is_empty()
            || country_code.len() > 3
            || !country_code.bytes().all(|b| b.is_ascii_digit())
            || country_code.starts_with('0')
        {
            return None;
        }
        let number = user_part(input.trim());
        let mut cleaned = String::with_capacity(number.len());
        for (i, c) in number.chars().enumerate() {
            match c {
                '0'..='9' => cleaned.push(c),
                '+' if i == 0 => cleaned.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return None,
            }
        }
        let digits = if let Some(international) = cleaned.strip_prefix('+') {
            international.to_owned()
        } else if let Some(international) = cleaned.strip_prefix("00") {
            international.to_owned()
        } else if country_code == "39" {
            format!("{country_code}{cleaned}")
        } else {
            let national = cleaned.strip_prefix('0').unwrap_or(&cleaned);
            format!("{country_code}{national}")
        };
        // A country code never starts with 0; "+" alone or "+0…" is not a number.
        if digits.starts_with('0')
            || !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(PhoneNumber(format!("+{digits}")))
    }

    /// `+` and the digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the `+`.
    pub fn digits(&self) -> &str {
        self.0.get(1..).unwrap_or_default()
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The user part of a `sip:`/`sips:`/`tel:` URI (percent-escapes of
/// visual separators decoded), or the input itself.
fn user_part(input: &str) -> std::borrow::Cow<'_, str> {
    let lower = input.get(..5).unwrap_or(input).to_ascii_lowercase();
    let rest = if lower.starts_with("sips:") {
        input.get(5..)
    } else if lower.starts_with("sip:") || lower.starts_with("tel:") {
        input.get(4..)
    } else {
        return input.into();
    };
    let rest = rest.unwrap_or_default();
    let user = rest.split(['@', ';']).next().unwrap_or_default();
    if user.contains('%') {
        // Only the escapes a number may carry: %20 (space) and %2B (+).
        user.replace("%20", " ")
            .replace("%2B", "+")
            .replace("%2b", "+")
            .into()
    } else {
        user.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(input: &str) -> Option<String> {
        PhoneNumber::parse(input).map(|n| n.as_str().to_owned())
    }

    #[test]
    fn italian_national_numbers_keep_their_leading_zero() {
        assert_eq!(e164("0612345678").as_deref(), Some("+390612345678"));
        assert_eq!(e164("06 1234 5678").as_deref(), Some("+390612345678"));
        // Mobile numbers start with 3.
        assert_eq!(e164("333 123 4567").as_deref(), Some("+393331234567"));
    }

    #[test]
    fn international_forms_are_the_same_number() {
        for input in [
            "+390612345678",
            "+39 06 1234 5678",
            "+39-06-1234-5678",
            "+39 (06) 1234.5678",
            "0039 06 12345678",
            "00390612345678",
            "sip:+390612345678@trunk.example",
            "sip:+39%2006%2012345678@trunk.example",
            "sips:00390612345678@trunk.example:5061;transport=tls",
            "sip:0612345678@10.0.0.1;user=phone",
            "tel:+39-06-1234-5678",
            "tel:+390612345678;phone-context=+39",
            "  +390612345678  ",
        ] {
            assert_eq!(e164(input).as_deref(), Some("+390612345678"), "{input}");
        }
        assert_eq!(e164("+4915112345678").as_deref(), Some("+4915112345678"));
        assert_eq!(e164("0049 151 12345678").as_deref(), Some("+4915112345678"));
    }

    #[test]
    fn other_countries_drop_the_trunk_prefix() {
        let n = PhoneNumber::parse_in("020 7946 0018", "44").unwrap();
        assert_eq!(n.as_str(), "+442079460018");
        assert_eq!(n.digits(), "442079460018");
        let n = PhoneNumber::parse_in("01 23 45 67 89", "33").unwrap();
        assert_eq!(n.as_str(), "+33123456789");
        assert!(PhoneNumber::parse_in("0612345678", "").is_none());
        assert!(PhoneNumber::parse_in("0612345678", "0039").is_none());
        assert!(PhoneNumber::parse_in("0612345678", "x9").is_none());
    }

    #[test]
    fn what_is_not_a_number_is_refused() {
        for input in [
            "",
            "+",
            "00",
            "anonymous",
            "sip:anonymous@anonymous.invalid",
            "sip:operatore.rossi@ccu.example",
            "06-1234-567x",
            "+39 06 1234 5678 ext 5",
            "06+12345678",
            "++390612345678",
            "+0612345678",
            "112",
            "1234",
            // 16 digits: over E.164's 15.
            "+3906123456789012",
            "tel:",
            "sip:@host",
            "٠٦١٢٣٤٥٦٧٨",
        ] {
            assert_eq!(e164(input), None, "{input:?}");
        }
    }

    #[test]
    fn display_and_digits() {
        let n = PhoneNumber::parse("0039 06 12345678").unwrap();
        assert_eq!(n.to_string(), "+390612345678");
        assert_eq!(n.digits(), "390612345678");
    }
}
