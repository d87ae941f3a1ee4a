//! SIP and SIPS URIs (RFC 3261 §19.1, §25.1) and, opaquely, any other
//! absolute URI.
//!
//! Components are kept in their escaped form, exactly as received, so a URI
//! is written back byte for byte; [`SipUri::user_bytes`] and friends decode
//! `%HH` escapes when the value is needed (RFC 3261 §19.1.4 compares URIs
//! after unescaping).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::sip::scan::unescape;

/// Why a URI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("missing or invalid URI scheme")]
    Scheme,
    #[error("invalid user part")]
    User,
    #[error("invalid password")]
    Password,
    #[error("invalid host")]
    Host,
    #[error("invalid port")]
    Port,
    #[error("invalid URI parameter")]
    Param,
    #[error("invalid URI header")]
    Header,
    #[error("unexpected character {0:?} in URI")]
    Trailing(char),
    #[error("invalid character in URI")]
    Opaque,
}

/// A URI as it appears in a Request-URI or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    Sip(SipUri),
    /// Any other scheme (`tel:`, `http:`, `isbn:` ...), kept opaque.
    Other {
        scheme: String,
        rest: String,
    },
}

impl Uri {
    /// Parses exactly `s` (nothing may follow).
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        let colon = s.find(':').ok_or(UriError::Scheme)?;
        let (scheme, rest) = (&s[..colon], &s[colon + 1..]);
        if !is_scheme(scheme) {
            return Err(UriError::Scheme);
        }
        if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
            let secure = scheme.eq_ignore_ascii_case("sips");
            return SipUri::parse_after_scheme(rest, secure).map(Uri::Sip);
        }
        // absoluteURI (RFC 2396 as RFC 3261 §25.1 cites it): 1*uric after
        // the colon; escapes must be well formed.
        if rest.is_empty() || !rest.bytes().all(is_uric) || unescape(rest).is_none() {
            return Err(UriError::Opaque);
        }
        Ok(Uri::Other {
            scheme: scheme.to_owned(),
            rest: rest.to_owned(),
        })
    }

    /// The scheme, in the case it was received.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            Uri::Other { .. } => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

/// The host part of a SIP URI or a Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A hostname, as received (compare case-insensitively).
    Domain(String),
    Ipv4(Ipv4Addr),
    /// Written as an IPv6 reference, `[...]`.
    Ipv6(Ipv6Addr),
}

impl Host {
    /// Parses a `host` (hostname / IPv4address / IPv6reference).
    pub fn parse(s: &str) -> Result<Host, UriError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(UriError::Host)?;
            return inner.parse().map(Host::Ipv6).map_err(|_| UriError::Host);
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s.parse().map(Host::Ipv4).map_err(|_| UriError::Host);
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        if trimmed.is_empty() {
            return Err(UriError::Host);
        }
        let mut labels = trimmed.split('.').peekable();
        while let Some(label) = labels.next() {
            let bytes = label.as_bytes();
            let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
                return Err(UriError::Host);
            };
            let ok = first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-');
            // toplabel = ALPHA / ALPHA *( alphanum / "-" ) alphanum
            let top_ok = labels.peek().is_some() || first.is_ascii_alphabetic();
            if !ok || !top_ok {
                return Err(UriError::Host);
            }
        }
        Ok(Host::Domain(s.to_owned()))
    }

    /// An IPv6 address without brackets, as in Via `received` (RFC 3261
    /// §20.42), or anything [`Host::parse`] takes.
    pub fn parse_address(s: &str) -> Result<Host, UriError> {
        if s.contains(':') && !s.starts_with('[') {
            return s.parse().map(Host::Ipv6).map_err(|_| UriError::Host);
        }
        Host::parse(s)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A `name[=value]` parameter, escaped as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

impl Param {
    pub fn new(name: impl Into<String>, value: Option<String>) -> Param {
        Param {
            name: name.into(),
            value,
        }
    }
}

/// Finds a parameter by name, case-insensitively (parameter names are
/// case-insensitive, RFC 3261 §19.1.4 and §7.3.1).
pub fn find_param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub secure: bool,
    /// The user part, escaped as received.
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
    /// `?name=value&...`, escaped as received.
    pub headers: Vec<(String, String)>,
}

impl SipUri {
    /// A `sip:user@host` URI with no port or parameters.
    pub fn new(user: Option<&str>, host: Host) -> SipUri {
        SipUri {
            secure: false,
            user: user.map(str::to_owned),
            password: None,
            host,
            port: None,
            params: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn parse_after_scheme(s: &str, secure: bool) -> Result<SipUri, UriError> {
        let bytes = s.as_bytes();
        // userinfo = ( user / telephone-subscriber ) [ ":" password ] "@".
        // Every character allowed in host, port and parameters is also
        // allowed in userinfo, so scan as far as userinfo characters go:
        // only an '@' there means a userinfo was present (RFC 4475
        // §3.1.1.9: "sip:user;par=u%40example.net@example.com").
        let userinfo_len = bytes.iter().take_while(|b| is_userinfo_char(**b)).count();
        let (user, password, rest) = if bytes.get(userinfo_len) == Some(&b'@') {
            let userinfo = &s[..userinfo_len];
            let (user, password) = match userinfo.find(':') {
                Some(i) => (&userinfo[..i], Some(&userinfo[i + 1..])),
                None => (userinfo, None),
            };
            if user.is_empty() || !user.bytes().all(is_user_char) || unescape(user).is_none() {
                return Err(UriError::User);
            }
            if let Some(p) = password
                && (!p.bytes().all(is_password_char) || unescape(p).is_none())
            {
                return Err(UriError::Password);
            }
            (
                Some(user.to_owned()),
                password.map(str::to_owned),
                &s[userinfo_len + 1..],
            )
        } else {
            (None, None, s)
        };

        // hostport
        let host_len = if rest.starts_with('[') {
            rest.find(']').map(|i| i + 1).ok_or(UriError::Host)?
        } else {
            rest.bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.')
                .count()
        };
        let host = Host::parse(&rest[..host_len])?;
        let mut rest = &rest[host_len..];
        let mut port = None;
        if let Some(after) = rest.strip_prefix(':') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            port = Some(after[..digits].parse::<u16>().map_err(|_| UriError::Port)?);
            rest = &after[digits..];
        }

        // uri-parameters = *( ";" uri-parameter )
        let mut params = Vec::new();
        while let Some(after) = rest.strip_prefix(';') {
            let name_len = after.bytes().take_while(|b| is_param_char(*b)).count();
            if name_len == 0 {
                return Err(UriError::Param);
            }
            let name = &after[..name_len];
            rest = &after[name_len..];
            let mut value = None;
            if let Some(after) = rest.strip_prefix('=') {
                let value_len = after.bytes().take_while(|b| is_param_char(*b)).count();
                if value_len == 0 {
                    return Err(UriError::Param);
                }
                value = Some(after[..value_len].to_owned());
                rest = &after[value_len..];
            }
            if unescape(name).is_none() || value.as_deref().is_some_and(|v| unescape(v).is_none()) {
                return Err(UriError::Param);
            }
            params.push(Param::new(name, value));
        }

        // headers = "?" header *( "&" header ); header = hname "=" hvalue
        let mut headers = Vec::new();
        if let Some(after) = rest.strip_prefix('?') {
            for pair in after.split('&') {
                let (name, value) = pair.split_once('=').ok_or(UriError::Header)?;
                let valid = !name.is_empty()
                    && name.bytes().all(is_hnv_char)
                    && value.bytes().all(is_hnv_char)
                    && unescape(name).is_some()
                    && unescape(value).is_some();
                if !valid {
                    return Err(UriError::Header);
                }
                headers.push((name.to_owned(), value.to_owned()));
            }
            rest = "";
        }
        if let Some(c) = rest.chars().next() {
            return Err(UriError::Trailing(c));
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// The user part with escapes decoded (it may hold any octet, RFC 4475
    /// §3.1.1.4).
    pub fn user_bytes(&self) -> Option<Vec<u8>> {
        self.user.as_deref().and_then(unescape)
    }

    /// A URI parameter by name, unescaped; `Some(None)` for a parameter
    /// without a value.
    pub fn param(&self, name: &str) -> Option<Option<String>> {
        self.params
            .iter()
            .find(|p| unescape(&p.name).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes())))
            .map(|p| {
                p.value
                    .as_deref()
                    .and_then(unescape)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            })
    }

    /// An embedded header by name, unescaped.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| unescape(n).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes())))
            .and_then(|(_, v)| unescape(v))
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            f.write_str(user)?;
            if let Some(password) = &self.password {
                write!(f, ":{password}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        for p in &self.params {
            write!(f, ";{}", p.name)?;
            if let Some(v) = &p.value {
                write!(f, "={v}")?;
            }
        }
        for (i, (name, value)) in self.headers.iter().enumerate() {
            let sep = if i == 0 { '?' } else { '&' };
            write!(f, "{sep}{name}={value}")?;
        }
        Ok(())
    }
}

/// scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
fn is_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// user = 1*( unreserved / escaped / user-unreserved )
fn is_user_char(b: u8) -> bool {
    is_unreserved(b)
        || b == b'%'
        || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

/// password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || b == b'%' || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_userinfo_char(b: u8) -> bool {
    is_user_char(b) || b == b':'
}

/// paramchar = param-unreserved / unreserved / escaped
fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || b == b'%' || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

/// hname / hvalue characters
fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || b == b'%' || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// uric = reserved / unreserved / escaped
fn is_uric(b: u8) -> bool {
    is_unreserved(b)
        || b == b'%'
        || matches!(
            b,
            b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_sip_uri_round_trips() {
        let text =
            "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&Priority=urgent";
        let uri = Uri::parse(text).unwrap();
        let Uri::Sip(sip) = &uri else {
            panic!("not sip")
        };
        assert!(sip.secure);
        assert_eq!(sip.user.as_deref(), Some("alice"));
        assert_eq!(sip.password.as_deref(), Some("secret"));
        assert_eq!(sip.host, Host::Ipv6("2001:db8::1".parse().unwrap()));
        assert_eq!(sip.port, Some(5061));
        assert_eq!(sip.param("transport"), Some(Some("tcp".into())));
        assert_eq!(sip.param("lr"), Some(None));
        assert_eq!(sip.header("subject").as_deref(), Some("hi"));
        assert_eq!(uri.to_string(), text);
    }

    #[test]
    fn hosts_are_checked() {
        assert!(Uri::parse("sip:192.0.2.1:5060").is_ok());
        assert!(Uri::parse("sip:user@example.com.").is_ok());
        assert_eq!(
            Uri::parse("sip:user@exa_mple.com"),
            Err(UriError::Trailing('_'))
        );
        assert_eq!(Uri::parse("sip:user@-bad.com"), Err(UriError::Host));
        assert_eq!(Uri::parse("sip:user@300.1.1.1"), Err(UriError::Host));
        assert_eq!(Uri::parse("sip:user@host:99999"), Err(UriError::Port));
        assert_eq!(Uri::parse("sip:user@[::1"), Err(UriError::Host));
    }

    #[test]
    fn spaces_and_brackets_are_not_uris() {
        assert!(Uri::parse("<sip:user@example.com>").is_err());
        assert!(Uri::parse("sip:user@example.com; lr").is_err());
        assert!(Uri::parse("sip:user@example.com;").is_err());
    }

    #[test]
    fn other_schemes_are_kept_opaque() {
        let uri = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(uri.scheme(), "soap.beep");
        assert_eq!(uri.to_string(), "soap.beep://192.0.2.103:3002");
        assert!(Uri::parse("tel:+390612345678").is_ok());
        assert!(Uri::parse("1tel:+39").is_err());
    }
}
