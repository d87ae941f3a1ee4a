//! Transport facts shared by the pure layers and the async shell: which
//! transport a message came over, and where a response goes (RFC 3261
//! §18.2.2 with RFC 3581 `rport`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::sip::header::Via;
use crate::sip::uri::Host;

/// The transport a message travelled over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Udp,
    Tcp,
}

impl TransportKind {
    /// The token used in Via and in `transport=` (RFC 3261 §20.42).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        }
    }

    /// Whether the transport retransmits for us (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        self == TransportKind::Tcp
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a response to a request received over UDP goes, from the top Via
/// of the request after [`crate::sip::message::Request::record_source`]:
///
/// - the address in `received` if present, else the sent-by host when it
///   is an IP address, else the source address (no DNS lookups here: a
///   sent-by name that is not the source is already covered by
///   `received`);
/// - the port in `rport` if it has a value (RFC 3581 §4: the source
///   port, which gets through NAT), else the sent-by port, else 5060
///   (RFC 3261 §18.2.2).
///
/// `maddr` (multicast) is not supported and is ignored.
pub fn response_destination(via: &Via, source: SocketAddr) -> SocketAddr {
    let ip = via
        .param("received")
        .and_then(|r| r.trim_matches(['[', ']']).parse::<IpAddr>().ok())
        .or(match via.host {
            Host::Ipv4(a) => Some(IpAddr::V4(a)),
            Host::Ipv6(a) => Some(IpAddr::V6(a)),
            Host::Domain(_) => None,
        })
        .unwrap_or(source.ip());
    let port = via
        .rport()
        .flatten()
        .or(via.port)
        .unwrap_or(crate::sip::transport::DEFAULT_PORT);
    SocketAddr::new(ip, port)
}

/// The SIP port when none is given (RFC 3261 §19.1.2).
pub const DEFAULT_PORT: u16 = 5060;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, Request};
    use crate::sip::parse::parse;

    fn request(via: &str) -> Request {
        let text = format!(
            "OPTIONS sip:ccu.example SIP/2.0\r\nVia: {via}\r\nFrom: <sip:a@b>;tag=1\r\n\
             To: <sip:ccu.example>\r\nCall-ID: d1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(text.as_bytes()).unwrap() {
            Message::Request(r) => r,
            Message::Response(_) => panic!(),
        }
    }

    fn destination(via: &str, source: &str) -> SocketAddr {
        let mut r = request(via);
        let source = source.parse().unwrap();
        r.record_source(source).unwrap();
        response_destination(&r.headers.top_via().unwrap(), source)
    }

    #[test]
    fn rport_sends_the_response_back_through_the_nat() {
        assert_eq!(
            destination(
                "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport",
                "203.0.113.4:40001"
            ),
            "203.0.113.4:40001".parse().unwrap()
        );
    }

    #[test]
    fn without_rport_the_sent_by_port_is_used_at_the_received_address() {
        assert_eq!(
            destination(
                "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1",
                "203.0.113.4:40001"
            ),
            "203.0.113.4:5070".parse().unwrap()
        );
        assert_eq!(
            destination("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", "192.0.2.1:5999"),
            "192.0.2.1:5060".parse().unwrap()
        );
        assert_eq!(
            destination(
                "SIP/2.0/UDP phone.example:5062;branch=z9hG4bK1",
                "192.0.2.9:5999"
            ),
            "192.0.2.9:5062".parse().unwrap()
        );
    }
}
