//! SDP (RFC 4566) parsing and serialization, and the offer/answer model
//! (RFC 3264) for ccu's audio legs, sans-IO.
//!
//! ccu answers audio with G.711 (PCMU, PCMA) and RFC 4733
//! telephone-event; everything else in an offer is declined (port 0 in the
//! answer's m-line, RFC 3264 §6). [`answer`] picks the first codec of the
//! offer that we support (the offerer's preference order, §6.1), keeps the
//! offer's telephone-event payload type, and mirrors the direction
//! (`sendonly` ↔ `recvonly`, §6.1), so a hold re-INVITE is answered
//! correctly.
//!
//! ```
//! use ccu_channels::sip::sdp::{self, Codec, LocalMedia};
//!
//! let offer = sdp::parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
//! m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n").unwrap();
//! let local = LocalMedia::new("198.51.100.1".parse().unwrap(), 30000, 42);
//! let (answer, negotiated) = sdp::answer(&offer, &local).unwrap();
//! assert_eq!(negotiated.codec, Codec::pcma());
//! assert_eq!(negotiated.telephone_event, Some(101));
//! assert_eq!(negotiated.remote, "192.0.2.10:40000".parse().unwrap());
//! assert!(answer.to_string().contains("m=audio 30000 RTP/AVP 8 101\r\n"));
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Why bytes are not an SDP session description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP line {line}: expected <type>=<value>")]
    Line { line: usize },
    #[error("SDP must start with v=0")]
    Version,
    #[error("malformed SDP {field} line: {problem}")]
    Malformed {
        field: &'static str,
        problem: &'static str,
    },
    #[error("missing SDP {0} line")]
    Missing(&'static str),
    #[error("SDP of {size} bytes exceeds {limit}")]
    TooLarge { size: usize, limit: usize },
}

fn malformed(field: &'static str, problem: &'static str) -> SdpError {
    SdpError::Malformed { field, problem }
}

/// SDP bodies larger than this are refused (ours are a few hundred bytes).
pub const MAX_SDP_SIZE: usize = 16 * 1024;

/// `o=` (RFC 4566 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    pub session_id: u64,
    pub session_version: u64,
    /// `IP4` or `IP6` (network type `IN`).
    pub address_type: String,
    pub address: String,
}

/// `c=` (RFC 4566 §5.7): the address media is sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub address_type: String,
    /// As written: an IP address, possibly with `/ttl`, or a name.
    pub address: String,
}

impl Connection {
    /// The address as an IP, if it is one (no TTL, no name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

/// `a=name[:value]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// Media direction attributes (RFC 3264 §5.1); `sendrecv` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answerer uses for an offer with this one (RFC 3264
    /// §6.1).
    pub fn answer(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }
}

/// `m=` with its own lines (RFC 4566 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`...
    pub media: String,
    /// 0 means the stream is rejected or disabled.
    pub port: u16,
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`...
    pub protocol: String,
    /// Payload types for RTP, as written.
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    pub attributes: Vec<Attribute>,
    /// Other lines (`i=`, `b=`, `k=`), kept as `(type, value)`.
    pub other: Vec<(char, String)>,
}

impl MediaDescription {
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// The direction attribute of the stream, else the session's.
    pub fn direction(&self, session: &SessionDescription) -> Direction {
        self.attributes
            .iter()
            .chain(&session.attributes)
            .find_map(|a| Direction::from_attribute(&a.name))
            .unwrap_or(Direction::SendRecv)
    }

    /// `a=rtpmap:<pt> <name>/<rate>[/<channels>]` for a payload type; for
    /// static payload types without one, the RFC 3551 table.
    pub fn codec(&self, payload_type: u8) -> Option<Codec> {
        let mapped = self
            .attributes
            .iter()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| a.value.as_deref())
            .find_map(|v| {
                let (pt, encoding) = v.split_once(' ')?;
                if pt.trim().parse::<u8>().ok()? != payload_type {
                    return None;
                }
                let mut parts = encoding.trim().split('/');
                let name = parts.next()?.to_owned();
                let clock_rate = parts.next()?.parse().ok()?;
                let channels = parts.next().and_then(|c| c.parse().ok()).unwrap_or(1);
                Some(Codec {
                    payload_type,
                    name,
                    clock_rate,
                    channels,
                })
            });
        mapped.or_else(|| Codec::static_type(payload_type))
    }

    /// `a=ptime` in milliseconds.
    pub fn ptime(&self) -> Option<u32> {
        self.attribute("ptime")
            .and_then(|a| a.value.as_deref())
            .and_then(|v| v.trim().parse().ok())
    }
}

/// An RTP payload format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    /// Encoding name as written (compared case-insensitively).
    pub name: String,
    pub clock_rate: u32,
    pub channels: u8,
}

impl Codec {
    /// G.711 µ-law (RFC 3551 static type 0).
    pub fn pcmu() -> Codec {
        Codec::fixed(0, "PCMU")
    }

    /// G.711 A-law (static type 8).
    pub fn pcma() -> Codec {
        Codec::fixed(8, "PCMA")
    }

    fn fixed(payload_type: u8, name: &str) -> Codec {
        Codec {
            payload_type,
            name: name.to_owned(),
            clock_rate: 8_000,
            channels: 1,
        }
    }

    /// RFC 3551 static payload types ccu may meet in offers.
    fn static_type(payload_type: u8) -> Option<Codec> {
        let name = match payload_type {
            0 => "PCMU",
            3 => "GSM",
            8 => "PCMA",
            9 => "G722",
            18 => "G729",
            _ => return None,
        };
        Some(Codec::fixed(payload_type, name))
    }

    /// The encoding name, upper-cased.
    pub fn encoding(&self) -> String {
        self.name.to_ascii_uppercase()
    }

    /// Same format, whatever the payload type number.
    pub fn same_format(&self, other: &Codec) -> bool {
        self.encoding() == other.encoding()
            && self.clock_rate == other.clock_rate
            && self.channels == other.channels
    }
}

/// A session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin: Origin,
    pub session_name: String,
    pub connection: Option<Connection>,
    /// `t=` start and stop (0 0 for a SIP session).
    pub timing: (u64, u64),
    pub attributes: Vec<Attribute>,
    /// Other session-level lines (`i=`, `u=`, `e=`, `p=`, `b=`, `z=`,
    /// `k=`, `r=` and extra `t=`), kept in order as `(type, value)`.
    pub other: Vec<(char, String)>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// The address media of `m` is sent to: its own `c=` or the session's.
    pub fn media_address(&self, m: &MediaDescription) -> Option<IpAddr> {
        m.connection
            .as_ref()
            .or(self.connection.as_ref())
            .and_then(Connection::ip)
    }
}

fn parse_connection(value: &str) -> Result<Connection, SdpError> {
    let mut parts = value.split(' ');
    let (Some("IN"), Some(address_type), Some(address), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("c=", "expected IN <addrtype> <address>"));
    };
    if address.is_empty() {
        return Err(malformed("c=", "empty address"));
    }
    Ok(Connection {
        address_type: address_type.to_owned(),
        address: address.to_owned(),
    })
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, v)) => Attribute {
            name: name.to_owned(),
            value: Some(v.to_owned()),
        },
        None => Attribute {
            name: value.to_owned(),
            value: None,
        },
    }
}

fn parse_media(value: &str) -> Result<MediaDescription, SdpError> {
    let mut parts = value.split(' ');
    let media = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| malformed("m=", "missing media"))?;
    let port_field = parts
        .next()
        .ok_or_else(|| malformed("m=", "missing port"))?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, n)) => (p, Some(n)),
        None => (port_field, None),
    };
    let port = port
        .parse()
        .map_err(|_| malformed("m=", "port is not 0-65535"))?;
    let port_count = port_count
        .map(str::parse)
        .transpose()
        .map_err(|_| malformed("m=", "bad port count"))?;
    let protocol = parts
        .next()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| malformed("m=", "missing protocol"))?;
    let formats: Vec<String> = parts.map(str::to_owned).collect();
    if formats.is_empty() || formats.iter().any(String::is_empty) {
        return Err(malformed("m=", "missing formats"));
    }
    Ok(MediaDescription {
        media: media.to_owned(),
        port,
        port_count,
        protocol: protocol.to_owned(),
        formats,
        connection: None,
        attributes: Vec::new(),
        other: Vec::new(),
    })
}

/// Parses an SDP body. Lenient where RFC 4566 §5 allows (LF line ends, a
/// trailing empty line, unknown line types kept), strict on what ccu uses
/// (`v=0`, `o=`, `c=`, `m=`).
pub fn parse(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
    if bytes.len() > MAX_SDP_SIZE {
        return Err(SdpError::TooLarge {
            size: bytes.len(),
            limit: MAX_SDP_SIZE,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SdpError::NotUtf8)?;
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            let mut chars = l.chars();
            match (chars.next(), chars.next()) {
                (Some(kind), Some('=')) if kind.is_ascii_lowercase() => {
                    Ok((kind, l.get(2..).unwrap_or_default()))
                }
                _ => Err(SdpError::Line { line: i + 1 }),
            }
        });
    match lines.next() {
        Some(Ok(('v', "0"))) => {}
        Some(Err(e)) => return Err(e),
        _ => return Err(SdpError::Version),
    }
    let mut origin = None;
    let mut session_name = None;
    let mut connection = None;
    let mut timing = None;
    let mut attributes = Vec::new();
    let mut other = Vec::new();
    let mut media: Vec<MediaDescription> = Vec::new();
    for line in lines {
        let (kind, value) = line?;
        if let Some(m) = media.last_mut() {
            match kind {
                'm' => media.push(parse_media(value)?),
                'c' => m.connection = Some(parse_connection(value)?),
                'a' => m.attributes.push(parse_attribute(value)),
                other => m.other.push((other, value.to_owned())),
            }
            continue;
        }
        match kind {
            'o' => {
                let parts: Vec<&str> = value.split(' ').collect();
                let [username, id, version, "IN", address_type, address] = parts[..] else {
                    return Err(malformed("o=", "expected 6 fields with IN"));
                };
                origin = Some(Origin {
                    username: username.to_owned(),
                    session_id: id
                        .parse()
                        .map_err(|_| malformed("o=", "session id is not a number"))?,
                    session_version: version
                        .parse()
                        .map_err(|_| malformed("o=", "session version is not a number"))?,
                    address_type: address_type.to_owned(),
                    address: address.to_owned(),
                });
            }
            's' => session_name = Some(value.to_owned()),
            'c' => connection = Some(parse_connection(value)?),
            't' if timing.is_none() => {
                let (start, stop) = value
                    .split_once(' ')
                    .ok_or_else(|| malformed("t=", "expected <start> <stop>"))?;
                timing = Some((
                    start.parse().map_err(|_| malformed("t=", "bad start"))?,
                    stop.parse().map_err(|_| malformed("t=", "bad stop"))?,
                ));
            }
            'a' => attributes.push(parse_attribute(value)),
            'm' => media.push(parse_media(value)?),
            kind => other.push((kind, value.to_owned())),
        }
    }
    // Keep the other lines in the order they are written out (RFC 4566
    // §5), so that parse and Display round-trip exactly.
    other.sort_by_key(|(kind, _)| session_line_rank(*kind));
    for m in &mut media {
        m.other.sort_by_key(|(kind, _)| *kind != 'i');
    }
    Ok(SessionDescription {
        origin: origin.ok_or(SdpError::Missing("o="))?,
        // s= is mandatory, but some phones omit it: "-" is what it means.
        session_name: session_name.unwrap_or_else(|| "-".into()),
        connection,
        timing: timing.unwrap_or((0, 0)),
        attributes,
        other,
        media,
    })
}

/// Where a session-level line goes relative to `c=` (1) and `t=` (3).
fn session_line_rank(kind: char) -> u8 {
    match kind {
        'i' | 'u' | 'e' | 'p' => 0,
        'b' => 2,
        _ => 4,
    }
}

fn write_attributes(f: &mut fmt::Formatter<'_>, attributes: &[Attribute]) -> fmt::Result {
    for a in attributes {
        match &a.value {
            Some(v) => write!(f, "a={}:{v}\r\n", a.name)?,
            None => write!(f, "a={}\r\n", a.name)?,
        }
    }
    Ok(())
}

/// Serializes with CRLF line ends, in the order of RFC 4566 §5.
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.origin;
        write!(
            f,
            "v=0\r\no={} {} {} IN {} {}\r\ns={}\r\n",
            o.username,
            o.session_id,
            o.session_version,
            o.address_type,
            o.address,
            self.session_name
        )?;
        for (kind, value) in self
            .other
            .iter()
            .filter(|(k, _)| matches!(k, 'i' | 'u' | 'e' | 'p'))
        {
            write!(f, "{kind}={value}\r\n")?;
        }
        if let Some(c) = &self.connection {
            write!(f, "c=IN {} {}\r\n", c.address_type, c.address)?;
        }
        for (kind, value) in self.other.iter().filter(|(k, _)| *k == 'b') {
            write!(f, "{kind}={value}\r\n")?;
        }
        write!(f, "t={} {}\r\n", self.timing.0, self.timing.1)?;
        for (kind, value) in self
            .other
            .iter()
            .filter(|(k, _)| !matches!(k, 'i' | 'u' | 'e' | 'p' | 'b'))
        {
            write!(f, "{kind}={value}\r\n")?;
        }
        write_attributes(f, &self.attributes)?;
        for m in &self.media {
            write!(f, "m={} {}", m.media, m.port)?;
            if let Some(n) = m.port_count {
                write!(f, "/{n}")?;
            }
            write!(f, " {} {}\r\n", m.protocol, m.formats.join(" "))?;
            for (kind, value) in m.other.iter().filter(|(k, _)| *k == 'i') {
                write!(f, "{kind}={value}\r\n")?;
            }
            if let Some(c) = &m.connection {
                write!(f, "c=IN {} {}\r\n", c.address_type, c.address)?;
            }
            for (kind, value) in m.other.iter().filter(|(k, _)| *k != 'i') {
                write!(f, "{kind}={value}\r\n")?;
            }
            write_attributes(f, &m.attributes)?;
        }
        Ok(())
    }
}

/// What ccu offers on its side of an audio leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    pub address: IpAddr,
    pub port: u16,
    /// Codecs we accept, by preference when we are the offerer.
    pub codecs: Vec<Codec>,
    pub telephone_event: bool,
    pub session_id: u64,
    /// Incremented for each new description of the session (RFC 3264 §8).
    pub session_version: u64,
}

impl LocalMedia {
    /// PCMA and PCMU with telephone-event.
    pub fn new(address: IpAddr, port: u16, session_id: u64) -> LocalMedia {
        LocalMedia {
            address,
            port,
            codecs: vec![Codec::pcma(), Codec::pcmu()],
            telephone_event: true,
            session_id,
            session_version: session_id,
        }
    }

    fn origin_and_connection(&self) -> (Origin, Connection) {
        let address_type = if self.address.is_ipv4() { "IP4" } else { "IP6" };
        (
            Origin {
                username: "ccu".into(),
                session_id: self.session_id,
                session_version: self.session_version,
                address_type: address_type.into(),
                address: self.address.to_string(),
            },
            Connection {
                address_type: address_type.into(),
                address: self.address.to_string(),
            },
        )
    }
}

/// The outcome of an offer/answer exchange for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// Payload type of telephone-event/8000, if both sides have it.
    pub telephone_event: Option<u8>,
    /// Where to send RTP (before latching onto the real source).
    pub remote: SocketAddr,
    /// Our direction, as answered.
    pub direction: Direction,
    pub ptime: Option<u32>,
}

/// Why an offer cannot be answered (a `488 Not Acceptable Here`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("no audio stream in the offer")]
    NoAudio,
    #[error("no common audio codec")]
    NoCommonCodec,
    #[error("no usable connection address for the audio stream")]
    NoAddress,
}

fn is_telephone_event(codec: &Codec) -> bool {
    codec.name.eq_ignore_ascii_case("telephone-event") && codec.clock_rate == 8_000
}

/// Answers an offer (RFC 3264 §6): the first RTP/AVP audio stream with a
/// port gets the first offered codec we support plus telephone-event;
/// every other m-line is declined with port 0 and the offer's first format.
pub fn answer(
    offer: &SessionDescription,
    local: &LocalMedia,
) -> Result<(SessionDescription, Negotiated), NegotiationError> {
    let (origin, connection) = local.origin_and_connection();
    let mut negotiated = None;
    let mut media = Vec::with_capacity(offer.media.len());
    let mut failure = NegotiationError::NoAudio;
    for m in &offer.media {
        let usable = negotiated.is_none()
            && m.media == "audio"
            && m.port != 0
            && m.protocol.eq_ignore_ascii_case("RTP/AVP");
        let chosen = usable
            .then(|| negotiate_stream(offer, m, local))
            .transpose()
            .unwrap_or_else(|e| {
                failure = e;
                None
            })
            .flatten();
        match chosen {
            Some((description, outcome)) => {
                media.push(description);
                negotiated = Some(outcome);
            }
            None => media.push(MediaDescription {
                port: 0,
                connection: None,
                attributes: Vec::new(),
                other: Vec::new(),
                formats: m.formats.iter().take(1).cloned().collect(),
                ..m.clone()
            }),
        }
    }
    let negotiated = negotiated.ok_or(failure)?;
    Ok((
        SessionDescription {
            origin,
            session_name: "ccu".into(),
            connection: Some(connection),
            timing: (0, 0),
            attributes: Vec::new(),
            other: Vec::new(),
            media,
        },
        negotiated,
    ))
}

fn negotiate_stream(
    offer: &SessionDescription,
    m: &MediaDescription,
    local: &LocalMedia,
) -> Result<Option<(MediaDescription, Negotiated)>, NegotiationError> {
    let offered: Vec<Codec> = m
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
        .filter_map(|pt| m.codec(pt))
        .collect();
    // The offerer's order wins (RFC 3264 §6.1).
    let codec = offered
        .iter()
        .find(|c| local.codecs.iter().any(|ours| ours.same_format(c)))
        .cloned()
        .ok_or(NegotiationError::NoCommonCodec)?;
    let telephone_event = local
        .telephone_event
        .then(|| offered.iter().find(|c| is_telephone_event(c)))
        .flatten()
        .map(|c| c.payload_type);
    let ip = offer.media_address(m).ok_or(NegotiationError::NoAddress)?;
    let direction = m.direction(offer).answer();

    let mut formats = vec![codec.payload_type.to_string()];
    let mut attributes = vec![Attribute {
        name: "rtpmap".into(),
        value: Some(format!(
            "{} {}/{}",
            codec.payload_type,
            codec.encoding(),
            codec.clock_rate
        )),
    }];
    if let Some(pt) = telephone_event {
        formats.push(pt.to_string());
        attributes.push(Attribute {
            name: "rtpmap".into(),
            value: Some(format!("{pt} telephone-event/8000")),
        });
        attributes.push(Attribute {
            name: "fmtp".into(),
            value: Some(format!("{pt} 0-16")),
        });
    }
    let ptime = m.ptime();
    if let Some(ptime) = ptime {
        attributes.push(Attribute {
            name: "ptime".into(),
            value: Some(ptime.to_string()),
        });
    }
    attributes.push(Attribute {
        name: direction.as_str().into(),
        value: None,
    });
    Ok(Some((
        MediaDescription {
            media: "audio".into(),
            port: local.port,
            port_count: None,
            protocol: m.protocol.clone(),
            formats,
            connection: None,
            attributes,
            other: Vec::new(),
        },
        Negotiated {
            codec,
            telephone_event,
            remote: SocketAddr::new(ip, m.port),
            direction,
            ptime,
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n\
s=\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 97\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:97 iLBC/8000\r\n\
m=video 51372 RTP/AVP 31 32\r\n\
a=rtpmap:31 H261/90000\r\n\
a=rtpmap:32 MPV/90000\r\n";

    #[test]
    fn the_rfc_4317_offer_parses_and_round_trips() {
        let sdp = parse(OFFER.as_bytes()).unwrap();
        assert_eq!(sdp.origin.session_id, 2_890_844_526);
        assert_eq!(sdp.session_name, "");
        assert_eq!(sdp.media.len(), 2);
        let audio = &sdp.media[0];
        assert_eq!(audio.port, 49170);
        assert_eq!(audio.formats, ["0", "8", "97"]);
        assert_eq!(audio.codec(97).unwrap().name, "iLBC");
        assert_eq!(
            sdp.media_address(audio),
            Some("192.0.2.101".parse().unwrap())
        );
        assert_eq!(audio.direction(&sdp), Direction::SendRecv);
        assert_eq!(parse(sdp.to_string().as_bytes()).unwrap(), sdp);
        assert_eq!(sdp.to_string(), OFFER);
    }

    #[test]
    fn the_answer_takes_the_offerers_first_common_codec_and_declines_video() {
        let offer = parse(OFFER.as_bytes()).unwrap();
        let local = LocalMedia::new("198.51.100.7".parse().unwrap(), 20_000, 7);
        let (answer, negotiated) = super::answer(&offer, &local).unwrap();
        assert_eq!(
            negotiated.codec.payload_type, 0,
            "PCMU comes first in the offer"
        );
        assert_eq!(negotiated.telephone_event, None, "not offered");
        assert_eq!(negotiated.remote, "192.0.2.101:49170".parse().unwrap());
        let text = answer.to_string();
        assert!(text.contains("c=IN IP4 198.51.100.7\r\n"), "{text}");
        assert!(
            text.contains("m=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"),
            "{text}"
        );
        assert!(text.contains("m=video 0 RTP/AVP 31\r\n"), "{text}");
        // The answer parses back, with as many m-lines as the offer (§6).
        assert_eq!(parse(text.as_bytes()).unwrap().media.len(), 2);
    }

    #[test]
    fn hold_is_mirrored_and_static_types_need_no_rtpmap() {
        let offer = "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 18 8 101\n\
c=IN IP4 10.0.0.1\na=rtpmap:101 telephone-event/8000\na=sendonly\n";
        let offer = parse(offer.as_bytes()).unwrap();
        let local = LocalMedia::new("10.0.0.2".parse().unwrap(), 5000, 1);
        let (_, negotiated) = super::answer(&offer, &local).unwrap();
        assert_eq!(negotiated.codec.encoding(), "PCMA");
        assert_eq!(negotiated.telephone_event, Some(101));
        assert_eq!(negotiated.direction, Direction::RecvOnly);
    }

    #[test]
    fn offers_without_a_common_codec_or_audio_are_refused() {
        let g729 = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\n";
        let local = LocalMedia::new("10.0.0.2".parse().unwrap(), 5000, 1);
        assert_eq!(
            super::answer(&parse(g729.as_bytes()).unwrap(), &local).unwrap_err(),
            NegotiationError::NoCommonCodec
        );
        let video = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 4000 RTP/AVP 31\r\n";
        assert_eq!(
            super::answer(&parse(video.as_bytes()).unwrap(), &local).unwrap_err(),
            NegotiationError::NoAudio
        );
    }

    #[test]
    fn every_prefix_and_byte_corruption_of_the_offer_keeps_the_fuzz_invariants() {
        let offer = OFFER.as_bytes();
        for end in 0..=offer.len() {
            crate::sip::fuzzing::sdp(&offer[..end]);
        }
        for i in 0..offer.len() {
            for byte in [b' ', b'\r', b'\n', b'=', b'/', b':', b'0', 0xff] {
                let mut corrupt = offer.to_vec();
                corrupt[i] = byte;
                crate::sip::fuzzing::sdp(&corrupt);
            }
        }
    }

    #[test]
    fn other_lines_out_of_order_still_round_trip() {
        let text = "v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nb=AS:64\r\ni=info\r\nt=0 0\r\nk=prompt\r\n\
m=audio 4000 RTP/AVP 0\r\nb=AS:64\r\ni=voice\r\n";
        crate::sip::fuzzing::sdp(text.as_bytes());
        let sdp = parse(text.as_bytes()).unwrap();
        assert_eq!(sdp.other[0], ('i', "info".to_owned()));
        assert_eq!(sdp.media[0].other[0], ('i', "voice".to_owned()));
    }

    #[test]
    fn malformed_sdp_is_an_error_not_a_panic() {
        for bad in [
            "",
            "v=1\r\n",
            "v=0\r\nnonsense\r\n",
            "v=0\r\no=- x 1 IN IP4 a\r\n",
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 70000 RTP/AVP 0\r\n",
            "v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 4000 RTP/AVP\r\n",
            "v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4\r\n",
            "v=0\r\ns=-\r\n",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(matches!(parse(&[0xff, 0xfe]), Err(SdpError::NotUtf8)));
        assert!(matches!(
            parse(&vec![b'a'; MAX_SDP_SIZE + 1]),
            Err(SdpError::TooLarge { .. })
        ));
    }
}
