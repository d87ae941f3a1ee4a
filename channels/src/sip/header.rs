//! Typed views of the headers ccu acts on (RFC 3261 §20, grammar in §25.1).
//!
//! Each accessor on [`Headers`] parses the raw values on demand and says
//! precisely what is wrong when it cannot: validation turns that into the
//! reason phrase of a `400`.

use std::fmt;

use crate::sip::message::{HeaderName, Headers, Method};
use crate::sip::scan::{Scanner, is_token, is_token_char, is_word_char, quote};
use crate::sip::uri::{Host, Param, Uri, find_param};

/// What is wrong with a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("Missing {0}")]
    Missing(&'static str),
    #[error("Multiple {0}")]
    Multiple(&'static str),
    #[error("Malformed {header}: {problem}")]
    Malformed {
        header: &'static str,
        problem: &'static str,
    },
}

fn malformed(header: &'static str, problem: &'static str) -> HeaderError {
    HeaderError::Malformed { header, problem }
}

/// A `name-addr` or `addr-spec` with its header parameters: the value of
/// From, To, Contact, Route, Record-Route, P-Asserted-Identity ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The display name, unquoted.
    pub display_name: Option<String>,
    pub uri: Uri,
    /// Header parameters (after the `>` or, for an addr-spec, after the
    /// URI); values as received, quoted strings with their quotes.
    pub params: Vec<Param>,
}

impl Address {
    pub fn new(uri: Uri) -> Address {
        Address {
            display_name: None,
            uri,
            params: Vec::new(),
        }
    }

    /// The `tag` parameter (RFC 3261 §19.3).
    pub fn tag(&self) -> Option<&str> {
        self.param("tag")
    }

    /// A header parameter's value; `Some("")` for one without a value.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name).map(|p| p.value.as_deref().unwrap_or(""))
    }

    /// Sets (or replaces) a parameter.
    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.params.push(Param::new(name, value)),
        }
    }

    /// Parses one address starting at the scanner; stops before a `,` or
    /// the end.
    fn scan(s: &mut Scanner<'_>, header: &'static str) -> Result<Address, HeaderError> {
        s.ws();
        let mut display_name = None;
        let uri;
        if s.peek() == Some(b'"') {
            let name = s
                .quoted_string()
                .ok_or_else(|| malformed(header, "unterminated quoted display name"))?;
            display_name = Some(name);
            s.ws();
            uri = scan_bracketed_uri(s, header)?;
        } else if let Some(name) = scan_token_display_name(s) {
            // display-name = *(token LWS): tokens separated by white space,
            // then "<" (RFC 4475 §3.1.1.6 allows no space before it).
            display_name = (!name.is_empty()).then_some(name);
            uri = scan_bracketed_uri(s, header)?;
        } else {
            // addr-spec: the URI may not contain ",", "?" or ";" here, they
            // would be ambiguous (RFC 3261 §20.10); what follows is header
            // parameters.
            let start = s.pos();
            s.take_while(|b| !matches!(b, b';' | b',' | b'?' | b' ' | b'\t' | b'<' | b'>' | b'"'));
            let text = s.slice(start, s.pos());
            uri = Uri::parse(text).map_err(|_| malformed(header, "invalid URI"))?;
            if matches!(s.peek(), Some(b'?' | b'<' | b'>' | b'"')) {
                return Err(malformed(header, "URI with headers must be in <>"));
            }
        }
        let params = scan_params(s, header)?;
        Ok(Address {
            display_name,
            uri,
            params,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.display_name {
            write!(f, "{} ", quote(name))?;
        }
        write!(f, "<{}>", self.uri)?;
        write_params(f, &self.params)
    }
}

fn write_params(f: &mut fmt::Formatter<'_>, params: &[Param]) -> fmt::Result {
    for p in params {
        write!(f, ";{}", p.name)?;
        if let Some(v) = &p.value {
            write!(f, "={v}")?;
        }
    }
    Ok(())
}

/// `*(token LWS)` followed by `<`. Returns the display name (possibly
/// empty) and leaves the scanner on the `<`; restores it and returns
/// `None` when the input is not of that shape.
fn scan_token_display_name(s: &mut Scanner<'_>) -> Option<String> {
    let start = s.pos();
    let mut words: Vec<&str> = Vec::new();
    loop {
        s.ws();
        if s.peek() == Some(b'<') {
            return Some(words.join(" "));
        }
        match s.token() {
            Some(word) => words.push(word),
            None => {
                s.set_pos(start);
                return None;
            }
        }
    }
}

fn scan_bracketed_uri(s: &mut Scanner<'_>, header: &'static str) -> Result<Uri, HeaderError> {
    if !s.eat(b'<') {
        return Err(malformed(header, "expected <"));
    }
    let start = s.pos();
    s.take_while(|b| b != b'>');
    let text = s.slice(start, s.pos());
    if !s.eat(b'>') {
        return Err(malformed(header, "missing >"));
    }
    // No white space inside the brackets (RFC 4475 §3.1.2.14).
    Uri::parse(text).map_err(|_| malformed(header, "invalid URI"))
}

/// `*( SEMI generic-param )`; generic-param = token [ EQUAL gen-value ],
/// gen-value = token / host / quoted-string.
fn scan_params(s: &mut Scanner<'_>, header: &'static str) -> Result<Vec<Param>, HeaderError> {
    let mut params = Vec::new();
    while s.sep(b';') {
        let name = s
            .token()
            .ok_or_else(|| malformed(header, "empty parameter"))?;
        let mut value = None;
        if s.sep(b'=') {
            if s.peek() == Some(b'"') {
                let start = s.pos();
                s.quoted_string()
                    .ok_or_else(|| malformed(header, "unterminated quoted parameter"))?;
                value = Some(s.slice(start, s.pos()).to_owned());
            } else {
                // token or host (an IPv6 reference has ':', '[' and ']').
                let v = s.take_while(|b| is_token_char(b) || matches!(b, b':' | b'[' | b']'));
                if v.is_empty() {
                    return Err(malformed(header, "empty parameter value"));
                }
                value = Some(v.to_owned());
            }
        }
        params.push(Param::new(name, value));
    }
    Ok(params)
}

/// Runs `one` over a comma-separated list (`x *(COMMA x)`); an empty
/// element is an error (RFC 4475 §3.1.2.1).
fn scan_list<T>(
    value: &str,
    header: &'static str,
    mut one: impl FnMut(&mut Scanner<'_>) -> Result<T, HeaderError>,
) -> Result<Vec<T>, HeaderError> {
    let mut s = Scanner::new(value);
    let mut out = Vec::new();
    loop {
        s.ws();
        out.push(one(&mut s)?);
        s.ws();
        if s.at_end() {
            return Ok(out);
        }
        if !s.eat(b',') {
            return Err(malformed(header, "unexpected character after value"));
        }
    }
}

/// One Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `SIP`
    pub protocol: String,
    /// `2.0`
    pub version: String,
    /// `UDP`, `TCP`, `TLS`, `SCTP`, `WS` ... or an extension.
    pub transport: String,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Vec<Param>,
}

/// The RFC 3261 branch prefix (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

impl Via {
    pub fn branch(&self) -> Option<&str> {
        self.param("branch")
    }

    /// `Some("")` for a valueless parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        find_param(&self.params, name).map(|p| p.value.as_deref().unwrap_or(""))
    }

    /// `rport` (RFC 3581): `None` if absent, `Some(None)` if present
    /// without a value.
    pub fn rport(&self) -> Option<Option<u16>> {
        find_param(&self.params, "rport").map(|p| p.value.as_deref().and_then(|v| v.parse().ok()))
    }

    pub fn set_param(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.params.push(Param::new(name, value)),
        }
    }

    /// Whether the branch is an RFC 3261 one (starts with the magic cookie).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    fn scan(s: &mut Scanner<'_>) -> Result<Via, HeaderError> {
        const H: &str = "Via";
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport
        let protocol = s
            .token()
            .ok_or_else(|| malformed(H, "missing protocol"))?
            .to_owned();
        if !s.sep(b'/') {
            return Err(malformed(H, "expected /"));
        }
        let version = s
            .token()
            .ok_or_else(|| malformed(H, "missing version"))?
            .to_owned();
        if !s.sep(b'/') {
            return Err(malformed(H, "expected /"));
        }
        let transport = s
            .token()
            .ok_or_else(|| malformed(H, "missing transport"))?
            .to_owned();
        if !s.ws() {
            return Err(malformed(H, "expected white space before sent-by"));
        }
        // sent-by = host [ COLON port ]
        let start = s.pos();
        if s.peek() == Some(b'[') {
            s.take_while(|b| b != b']');
            s.eat(b']');
        } else {
            s.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        }
        let host = Host::parse(s.slice(start, s.pos()))
            .map_err(|_| malformed(H, "invalid sent-by host"))?;
        let mut port = None;
        if s.sep(b':') {
            let digits = s.take_while(|b| b.is_ascii_digit());
            port = Some(
                digits
                    .parse()
                    .map_err(|_| malformed(H, "invalid sent-by port"))?,
            );
        }
        let params = scan_params(s, H)?;
        let via = Via {
            protocol,
            version,
            transport,
            host,
            port,
            params,
        };
        via.check_params()?;
        Ok(via)
    }

    /// via-params with a defined syntax (RFC 3261 §20.42, RFC 3581).
    fn check_params(&self) -> Result<(), HeaderError> {
        const H: &str = "Via";
        if let Some(received) = self.param("received")
            && Host::parse_address(received).map_or(true, |h| matches!(h, Host::Domain(_)))
        {
            return Err(malformed(H, "received is not an IP address"));
        }
        if let Some(maddr) = self.param("maddr")
            && Host::parse(maddr).is_err()
        {
            return Err(malformed(H, "invalid maddr"));
        }
        if let Some(ttl) = self.param("ttl")
            && ttl.parse::<u8>().is_err()
        {
            return Err(malformed(H, "invalid ttl"));
        }
        if let Some(Some(rport)) = find_param(&self.params, "rport").map(|p| p.value.as_deref())
            && rport.parse::<u16>().is_err()
        {
            return Err(malformed(H, "invalid rport"));
        }
        if self.branch() == Some("") {
            return Err(malformed(H, "empty branch"));
        }
        Ok(())
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.host
        )?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write_params(f, &self.params)
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// A 32-bit unsigned integer (RFC 3261 §8.1.1.5).
    pub seq: u32,
    pub method: Method,
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// The Contact header field values of a message (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *`, only valid in a REGISTER that removes all bindings.
    Wildcard,
    List(Vec<Address>),
}

/// A media type with parameters (Content-Type, Accept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    pub kind: String,
    pub subtype: String,
    pub params: Vec<Param>,
}

impl MediaType {
    fn scan(s: &mut Scanner<'_>, header: &'static str) -> Result<MediaType, HeaderError> {
        let kind = s.token().ok_or_else(|| malformed(header, "missing type"))?;
        if !s.sep(b'/') {
            return Err(malformed(header, "expected /"));
        }
        let subtype = s
            .token()
            .ok_or_else(|| malformed(header, "missing subtype"))?;
        let params = scan_params(s, header)?;
        Ok(MediaType {
            kind: kind.to_owned(),
            subtype: subtype.to_owned(),
            params,
        })
    }

    /// `type/subtype`, lower-cased (media types compare case-insensitively).
    pub fn essence(&self) -> String {
        format!("{}/{}", self.kind, self.subtype).to_ascii_lowercase()
    }

    /// Whether this media range (as in Accept, possibly `*/*` or
    /// `type/*`) covers `essence`.
    pub fn covers(&self, essence: &str) -> bool {
        let (kind, subtype) = essence.split_once('/').unwrap_or((essence, ""));
        (self.kind == "*" || self.kind.eq_ignore_ascii_case(kind))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }
}

/// A credentials or challenge value (Authorization, Proxy-Authorization,
/// WWW-Authenticate, Proxy-Authenticate; RFC 3261 §25.1, RFC 7616 §3):
/// a scheme and `name=value` parameters with quoted strings unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthValue {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl AuthValue {
    /// A parameter by name, case-insensitively.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses one header value: `scheme LWS auth-param *(COMMA auth-param)`.
    pub fn parse(value: &str, header: &'static str) -> Result<AuthValue, HeaderError> {
        let mut s = Scanner::new(value);
        s.ws();
        let scheme = s
            .token()
            .ok_or_else(|| malformed(header, "missing scheme"))?
            .to_owned();
        let mut params = Vec::new();
        if !s.ws() && !s.at_end() {
            return Err(malformed(header, "expected white space after scheme"));
        }
        if s.at_end() {
            return Ok(AuthValue { scheme, params });
        }
        loop {
            s.ws();
            let name = s
                .token()
                .ok_or_else(|| malformed(header, "missing parameter name"))?;
            if !s.sep(b'=') {
                return Err(malformed(header, "expected ="));
            }
            let value = if s.peek() == Some(b'"') {
                s.quoted_string()
                    .ok_or_else(|| malformed(header, "unterminated quoted string"))?
            } else {
                // Some clients send unquoted values with '/' or ':'
                // (e.g. uri); accept any run up to a comma or white space.
                let v = s.take_while(|b| b != b',' && b != b' ' && b != b'\t' && b != b'"');
                if v.is_empty() {
                    return Err(malformed(header, "empty parameter value"));
                }
                v.to_owned()
            };
            params.push((name.to_owned(), value));
            s.ws();
            if s.at_end() {
                return Ok(AuthValue { scheme, params });
            }
            if !s.eat(b',') {
                return Err(malformed(header, "expected ,"));
            }
        }
    }
}

fn parse_u32(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// delta-seconds, saturating: RFC 4475 §3.1.2.4 lets an element treat an
/// absurd expiry as a default; the registrar clamps any large value to its
/// maximum anyway, so saturating keeps the request usable.
pub(crate) fn parse_delta_seconds(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u32::MAX))
}

impl Headers {
    /// The single value of a header that may appear once.
    fn single(&self, name: &HeaderName, label: &'static str) -> Result<Option<&str>, HeaderError> {
        let mut values = self.get_all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(HeaderError::Multiple(label));
        }
        Ok(first)
    }

    fn required(&self, name: &HeaderName, label: &'static str) -> Result<&str, HeaderError> {
        self.single(name, label)?.ok_or(HeaderError::Missing(label))
    }

    fn address(&self, name: &HeaderName, label: &'static str) -> Result<Address, HeaderError> {
        let value = self.required(name, label)?;
        let mut s = Scanner::new(value);
        let address = Address::scan(&mut s, label)?;
        s.ws();
        if !s.at_end() {
            // A comma here means several values in a single-value header
            // (RFC 4475 §3.3.8).
            return Err(malformed(label, "unexpected character after value"));
        }
        Ok(address)
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> Result<Vec<Via>, HeaderError> {
        let mut out = Vec::new();
        for value in self.get_all(&HeaderName::Via) {
            out.extend(scan_list(value, "Via", Via::scan)?);
        }
        if out.is_empty() {
            return Err(HeaderError::Missing("Via"));
        }
        Ok(out)
    }

    /// The top Via value.
    pub fn top_via(&self) -> Result<Via, HeaderError> {
        let value = self
            .get(&HeaderName::Via)
            .ok_or(HeaderError::Missing("Via"))?;
        let mut s = Scanner::new(value);
        s.ws();
        Via::scan(&mut s)
    }

    pub fn from(&self) -> Result<Address, HeaderError> {
        self.address(&HeaderName::From, "From")
    }

    pub fn to(&self) -> Result<Address, HeaderError> {
        self.address(&HeaderName::To, "To")
    }

    /// Call-ID = word [ "@" word ] (RFC 3261 §25.1).
    pub fn call_id(&self) -> Result<&str, HeaderError> {
        let value = self.required(&HeaderName::CallId, "Call-ID")?;
        let (left, right) = match value.split_once('@') {
            Some((l, r)) => (l, Some(r)),
            None => (value, None),
        };
        let is_word = |w: &str| !w.is_empty() && w.bytes().all(is_word_char);
        if !is_word(left) || right.is_some_and(|r| !is_word(r)) {
            return Err(malformed("Call-ID", "not word[@word]"));
        }
        Ok(value)
    }

    pub fn cseq(&self) -> Result<CSeq, HeaderError> {
        const H: &str = "CSeq";
        let value = self.required(&HeaderName::CSeq, H)?;
        let mut s = Scanner::new(value);
        let digits = s.take_while(|b| b.is_ascii_digit());
        let seq = parse_u32(digits)
            .ok_or_else(|| malformed(H, "sequence number is not a 32-bit integer"))?;
        if !s.ws() {
            return Err(malformed(H, "expected white space after the number"));
        }
        let method = s.token().ok_or_else(|| malformed(H, "missing method"))?;
        s.ws();
        if !s.at_end() {
            return Err(malformed(H, "unexpected character after method"));
        }
        Ok(CSeq {
            seq,
            method: Method::from_token(method),
        })
    }

    /// Max-Forwards, 0 to 255 (RFC 3261 §20.22); `None` when absent
    /// (RFC 2543 peers, RFC 4475 §3.4.1).
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        let Some(value) = self.single(&HeaderName::MaxForwards, "Max-Forwards")? else {
            return Ok(None);
        };
        parse_u32(value)
            .and_then(|v| u8::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| malformed("Max-Forwards", "not an integer from 0 to 255"))
    }

    /// Expires in seconds (saturating at 2^32-1), `None` when absent.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        let Some(value) = self.single(&HeaderName::Expires, "Expires")? else {
            return Ok(None);
        };
        parse_delta_seconds(value)
            .map(Some)
            .ok_or_else(|| malformed("Expires", "not delta-seconds"))
    }

    /// Every Contact value; an empty list when there is none.
    pub fn contacts(&self) -> Result<Contacts, HeaderError> {
        const H: &str = "Contact";
        let mut list = Vec::new();
        let mut wildcard = false;
        for value in self.get_all(&HeaderName::Contact) {
            if value.trim() == "*" {
                wildcard = true;
                continue;
            }
            list.extend(scan_list(value, H, |s| Address::scan(s, H))?);
        }
        for contact in &list {
            if let Some(expires) = contact.param("expires")
                && parse_delta_seconds(expires).is_none()
            {
                return Err(malformed(H, "invalid expires parameter"));
            }
            if let Some(q) = contact.param("q")
                && !is_qvalue(q)
            {
                return Err(malformed(H, "invalid q parameter"));
            }
        }
        match (wildcard, list.is_empty()) {
            (true, true) => Ok(Contacts::Wildcard),
            (true, false) => Err(malformed(H, "* mixed with addresses")),
            (false, _) => Ok(Contacts::List(list)),
        }
    }

    /// Route or Record-Route values, in order.
    pub fn routes(&self, name: &HeaderName) -> Result<Vec<Address>, HeaderError> {
        let label = if *name == HeaderName::RecordRoute {
            "Record-Route"
        } else {
            "Route"
        };
        let mut out = Vec::new();
        for value in self.get_all(name) {
            out.extend(scan_list(value, label, |s| Address::scan(s, label))?);
        }
        Ok(out)
    }

    /// Every P-Asserted-Identity value (RFC 3325 §9.1), in order: a trunk
    /// may send a SIP URI and a `tel:` URI for the same caller.
    pub fn asserted_identities(&self) -> Result<Vec<Address>, HeaderError> {
        const H: &str = "P-Asserted-Identity";
        let mut out = Vec::new();
        for value in self.get_all(&HeaderName::PAssertedIdentity) {
            out.extend(scan_list(value, H, |s| Address::scan(s, H))?);
        }
        Ok(out)
    }

    /// The option tags of Require, Proxy-Require, Supported or
    /// Unsupported, in order.
    pub fn option_tags(&self, name: &HeaderName) -> Result<Vec<String>, HeaderError> {
        let mut out = Vec::new();
        for value in self.get_all(name) {
            if value.trim().is_empty() {
                // Supported may be empty (RFC 3261 §20.37).
                continue;
            }
            out.extend(scan_list(value, "option-tag list", |s| {
                s.token()
                    .map(str::to_owned)
                    .ok_or_else(|| malformed("option-tag list", "not a token"))
            })?);
        }
        Ok(out)
    }

    /// The method names of Allow.
    pub fn allow(&self) -> Result<Vec<Method>, HeaderError> {
        Ok(self
            .option_tags(&HeaderName::Allow)?
            .iter()
            .map(|m| Method::from_token(m))
            .collect())
    }

    pub fn content_type(&self) -> Result<Option<MediaType>, HeaderError> {
        const H: &str = "Content-Type";
        let Some(value) = self.single(&HeaderName::ContentType, H)? else {
            return Ok(None);
        };
        let mut s = Scanner::new(value);
        let media = MediaType::scan(&mut s, H)?;
        s.ws();
        if !s.at_end() {
            return Err(malformed(H, "unexpected character after value"));
        }
        Ok(Some(media))
    }

    /// Accept media ranges; `None` when there is no Accept header (RFC
    /// 3261 §20.1: then `application/sdp` is assumed), `Some(empty)` when
    /// an empty one says nothing is acceptable.
    pub fn accept(&self) -> Result<Option<Vec<MediaType>>, HeaderError> {
        const H: &str = "Accept";
        let mut any = false;
        let mut out = Vec::new();
        for value in self.get_all(&HeaderName::Accept) {
            any = true;
            if value.trim().is_empty() {
                continue;
            }
            out.extend(scan_list(value, H, |s| MediaType::scan(s, H))?);
        }
        Ok(any.then_some(out))
    }

    /// Authorization / Proxy-Authorization / WWW-Authenticate /
    /// Proxy-Authenticate values, in order.
    pub fn auth_values(&self, name: &HeaderName) -> Result<Vec<AuthValue>, HeaderError> {
        let label = match name {
            HeaderName::Authorization => "Authorization",
            HeaderName::ProxyAuthorization => "Proxy-Authorization",
            HeaderName::WwwAuthenticate => "WWW-Authenticate",
            _ => "Proxy-Authenticate",
        };
        self.get_all(name)
            .map(|v| AuthValue::parse(v, label))
            .collect()
    }

    /// Content-Length as a number (the parser has already checked it).
    pub fn content_length(&self) -> Option<usize> {
        self.get(&HeaderName::ContentLength)
            .and_then(|v| v.trim().parse().ok())
    }
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
fn is_qvalue(q: &str) -> bool {
    let (int, frac) = q.split_once('.').unwrap_or((q, ""));
    frac.len() <= 3
        && frac.bytes().all(|b| b.is_ascii_digit())
        && match int {
            "0" => true,
            "1" => frac.bytes().all(|b| b == b'0'),
            _ => false,
        }
}

/// Whether `s` is a valid `token` (e.g. for a tag or a branch we generate).
pub fn is_valid_token(s: &str) -> bool {
    is_token(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in lines {
            h.push(HeaderName::parse(n), *v);
        }
        h
    }

    #[test]
    fn display_names_quoted_tokens_and_none() {
        let h = headers(&[("From", "\"A. G. Bell\" <sip:agb@bell.example>;tag=a48s")]);
        let from = h.from().unwrap();
        assert_eq!(from.display_name.as_deref(), Some("A. G. Bell"));
        assert_eq!(from.tag(), Some("a48s"));

        let h = headers(&[("To", "token1~` token2'+_ <sip:x@example.com>")]);
        assert_eq!(
            h.to().unwrap().display_name.as_deref(),
            Some("token1~` token2'+_")
        );

        let h = headers(&[("To", "sip:x@example.com;tag=1")]);
        let to = h.to().unwrap();
        assert_eq!(to.display_name, None);
        assert_eq!(to.tag(), Some("1"));
    }

    #[test]
    fn unquoted_display_names_with_commas_are_refused() {
        let h = headers(&[("From", "Bell, Alexander <sip:a.g.bell@example.com>;tag=43")]);
        assert!(matches!(
            h.from(),
            Err(HeaderError::Malformed { header: "From", .. })
        ));
    }

    #[test]
    fn via_parameters_are_read_and_checked() {
        let h = headers(&[(
            "Via",
            "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK776;received=2001:db8::10;rport=5071, SIP/2.0/TCP b.example;maddr=192.0.2.9",
        )]);
        let vias = h.vias().unwrap();
        assert_eq!(vias.len(), 2);
        assert_eq!(vias[0].port, Some(5070));
        assert_eq!(vias[0].branch(), Some("z9hG4bK776"));
        assert_eq!(vias[0].rport(), Some(Some(5071)));
        assert_eq!(vias[1].param("maddr"), Some("192.0.2.9"));
        assert_eq!(
            vias[0].to_string(),
            "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bK776;received=2001:db8::10;rport=5071"
        );

        let bad = headers(&[("Via", "SIP/2.0/UDP host;received=not-an-ip")]);
        assert!(bad.vias().is_err());
        let bad = headers(&[("Via", "SIP/2.0/UDP host;rport=99999")]);
        assert!(bad.vias().is_err());
    }

    #[test]
    fn cseq_and_max_forwards_ranges() {
        let h = headers(&[("CSeq", "4294967295 OPTIONS"), ("Max-Forwards", "255")]);
        assert_eq!(h.cseq().unwrap().seq, u32::MAX);
        assert_eq!(h.max_forwards().unwrap(), Some(255));
        let h = headers(&[("CSeq", "4294967296 OPTIONS"), ("Max-Forwards", "256")]);
        assert!(h.cseq().is_err());
        assert!(h.max_forwards().is_err());
    }

    #[test]
    fn contact_star_and_lists() {
        let h = headers(&[("Contact", "*")]);
        assert_eq!(h.contacts().unwrap(), Contacts::Wildcard);
        let h = headers(&[("Contact", "<sip:a@x>;expires=60, \"B\" <sip:b@y>;q=0.5")]);
        let Contacts::List(list) = h.contacts().unwrap() else {
            panic!("expected a list")
        };
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].param("expires"), Some("60"));
        let h = headers(&[("Contact", "*"), ("Contact", "<sip:a@x>")]);
        assert!(h.contacts().is_err());
        let h = headers(&[("Contact", "<sip:a@x>;q=2")]);
        assert!(h.contacts().is_err());
    }

    #[test]
    fn digest_credentials_parse_with_quoted_and_bare_values() {
        let v = AuthValue::parse(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=MD5, nc=00000001, qop=auth"#,
            "Authorization",
        )
        .unwrap();
        assert_eq!(v.scheme, "Digest");
        assert_eq!(v.param("USERNAME"), Some("Mufasa"));
        assert_eq!(v.param("nc"), Some("00000001"));
        assert!(AuthValue::parse("Digest username=\"open", "Authorization").is_err());
    }

    #[test]
    fn accept_ranges_cover_types() {
        let h = headers(&[("Accept", "application/*;q=0.5, text/plain")]);
        let ranges = h.accept().unwrap().unwrap();
        assert!(ranges[0].covers("application/sdp"));
        assert!(!ranges[1].covers("application/sdp"));
        assert_eq!(headers(&[]).accept().unwrap(), None);
    }
}
