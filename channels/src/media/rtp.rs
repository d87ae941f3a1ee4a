//! RTP packets (RFC 3550 §5.1, §5.3.1): parsing and building the fixed
//! header, the CSRC list, the header extension and padding.
//!
//! [`parse`] is a total function over bytes: any input gives a packet view
//! or an [`RtpError`] saying what is wrong, never a panic. The view borrows
//! the datagram, so the relay can check a packet and patch the few header
//! bytes it rewrites (sequence number, timestamp, SSRC, payload type) in a
//! copy without building a new packet.
//!
//! ```
//! use ccu_channels::media::rtp::{parse, PacketBuilder};
//!
//! let bytes = PacketBuilder::new(0, 1000, 160_000, 0x1234_5678).build(&[0xFF; 160]).unwrap();
//! let packet = parse(&bytes).unwrap();
//! assert_eq!((packet.payload_type, packet.sequence, packet.payload.len()), (0, 1000, 160));
//! ```

/// The only RTP version (RFC 3550 §5.1).
pub const VERSION: u8 = 2;
/// The fixed header: V/P/X/CC, M/PT, sequence, timestamp, SSRC.
pub const FIXED_HEADER_LEN: usize = 12;
/// At most 15 contributing sources (the CC field is four bits).
pub const MAX_CSRC: usize = 15;

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet too short for the RTP fixed header ({0} bytes)")]
    TooShort(usize),
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("an RTCP packet (packet type {0}) on the RTP path")]
    Rtcp(u8),
    #[error("CSRC list of {count} entries does not fit in {len} bytes")]
    TruncatedCsrc { count: usize, len: usize },
    #[error("header extension does not fit in the packet")]
    TruncatedExtension,
    #[error("padding count {count} larger than the {available} bytes after the header")]
    BadPadding { count: usize, available: usize },
    #[error("padding bit set with a zero padding count")]
    ZeroPadding,
}

/// Why a packet cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("payload type {0} does not fit in 7 bits")]
    PayloadType(u8),
    #[error("{0} CSRCs, at most 15")]
    TooManyCsrc(usize),
    #[error("header extension of {0} bytes is not a whole number of 32-bit words")]
    ExtensionNotAligned(usize),
    #[error("header extension of {0} bytes is longer than 65535 words")]
    ExtensionTooLong(usize),
}

/// A header extension (RFC 3550 §5.3.1): a 16-bit profile-defined value and
/// data in whole 32-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extension<'a> {
    pub profile: u16,
    pub data: &'a [u8],
}

/// A parsed RTP packet, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// The CSRC list, 4 bytes each (see [`RtpPacket::csrcs`]).
    csrc: &'a [u8],
    pub extension: Option<Extension<'a>>,
    pub payload: &'a [u8],
    /// Padding octets at the end, the count octet included (0: no padding).
    pub padding: u8,
}

impl<'a> RtpPacket<'a> {
    /// The contributing sources.
    pub fn csrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.csrc
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// The number of contributing sources.
    pub fn csrc_count(&self) -> usize {
        self.csrc.len() / 4
    }

    /// An owned builder that rebuilds this packet (with its payload).
    pub fn to_builder(&self) -> PacketBuilder {
        PacketBuilder {
            marker: self.marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            csrc: self.csrcs().collect(),
            extension: self.extension.map(|e| (e.profile, e.data.to_vec())),
            padding: self.padding,
        }
    }
}

/// True when the second octet says RTCP (RFC 5761 §4: packet types 192–223
/// would be RTP payload types 64–95 with the marker set; RTCP uses 200–204
/// and the ones around them).
pub fn looks_like_rtcp(bytes: &[u8]) -> bool {
    matches!(bytes.get(1), Some(192..=223))
}

/// Parses one RTP packet.
pub fn parse(bytes: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    if bytes.len() < FIXED_HEADER_LEN {
        return Err(RtpError::TooShort(bytes.len()));
    }
    let first = bytes[0];
    let version = first >> 6;
    if version != VERSION {
        return Err(RtpError::Version(version));
    }
    if looks_like_rtcp(bytes) {
        return Err(RtpError::Rtcp(bytes[1]));
    }
    let has_padding = first & 0x20 != 0;
    let has_extension = first & 0x10 != 0;
    let csrc_count = usize::from(first & 0x0F);
    let second = bytes[1];

    let mut offset = FIXED_HEADER_LEN;
    let csrc_end = offset + 4 * csrc_count;
    let csrc = bytes.get(offset..csrc_end).ok_or(RtpError::TruncatedCsrc {
        count: csrc_count,
        len: bytes.len(),
    })?;
    offset = csrc_end;

    let extension = if has_extension {
        let head = bytes
            .get(offset..offset + 4)
            .ok_or(RtpError::TruncatedExtension)?;
        let profile = u16::from_be_bytes([head[0], head[1]]);
        let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let start = offset + 4;
        let end = start + 4 * words;
        let data = bytes.get(start..end).ok_or(RtpError::TruncatedExtension)?;
        offset = end;
        Some(Extension { profile, data })
    } else {
        None
    };

    let rest = &bytes[offset..];
    let padding = if has_padding {
        // RFC 3550 §5.1: the last octet counts the padding, itself included.
        let count = usize::from(*rest.last().ok_or(RtpError::BadPadding {
            count: 1,
            available: 0,
        })?);
        if count == 0 {
            return Err(RtpError::ZeroPadding);
        }
        if count > rest.len() {
            return Err(RtpError::BadPadding {
                count,
                available: rest.len(),
            });
        }
        count
    } else {
        0
    };
    let payload = &rest[..rest.len() - padding];

    Ok(RtpPacket {
        marker: second & 0x80 != 0,
        payload_type: second & 0x7F,
        sequence: u16::from_be_bytes([bytes[2], bytes[3]]),
        timestamp: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        ssrc: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        csrc,
        extension,
        payload,
        // `count` came from one octet.
        padding: padding as u8,
    })
}

/// Rewrites the fixed-header fields the relay changes, in place. `bytes`
/// must be a packet [`parse`] accepted (at least the fixed header).
pub(crate) fn rewrite_header(
    bytes: &mut [u8],
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
) {
    if bytes.len() < FIXED_HEADER_LEN {
        return;
    }
    bytes[1] = (u8::from(marker) << 7) | (payload_type & 0x7F);
    bytes[2..4].copy_from_slice(&sequence.to_be_bytes());
    bytes[4..8].copy_from_slice(&timestamp.to_be_bytes());
    bytes[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// Everything needed to write an RTP packet but its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketBuilder {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub csrc: Vec<u32>,
    /// Profile-defined value and data (a whole number of 32-bit words).
    pub extension: Option<(u16, Vec<u8>)>,
    /// Padding octets to append, the count octet included (0: none).
    pub padding: u8,
}

impl PacketBuilder {
    /// A packet with no CSRC, extension or padding.
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) -> PacketBuilder {
        PacketBuilder {
            marker: false,
            payload_type,
            sequence,
            timestamp,
            ssrc,
            csrc: Vec::new(),
            extension: None,
            padding: 0,
        }
    }

    /// Sets the marker bit.
    pub fn marker(mut self, marker: bool) -> PacketBuilder {
        self.marker = marker;
        self
    }

    /// The packet's length with `payload_len` payload octets.
    pub fn len(&self, payload_len: usize) -> usize {
        FIXED_HEADER_LEN
            + 4 * self.csrc.len()
            + self.extension.as_ref().map_or(0, |(_, d)| 4 + d.len())
            + payload_len
            + usize::from(self.padding)
    }

    /// Writes the packet onto the end of `out`.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), BuildError> {
        if self.payload_type > 0x7F {
            return Err(BuildError::PayloadType(self.payload_type));
        }
        if self.csrc.len() > MAX_CSRC {
            return Err(BuildError::TooManyCsrc(self.csrc.len()));
        }
        if let Some((_, data)) = &self.extension {
            if data.len() % 4 != 0 {
                return Err(BuildError::ExtensionNotAligned(data.len()));
            }
            if data.len() / 4 > usize::from(u16::MAX) {
                return Err(BuildError::ExtensionTooLong(data.len()));
            }
        }
        out.reserve(self.len(payload.len()));
        out.push(
            (VERSION << 6)
                | (u8::from(self.padding > 0) << 5)
                | (u8::from(self.extension.is_some()) << 4)
                // At most 15, checked above.
                | self.csrc.len() as u8,
        );
        out.push((u8::from(self.marker) << 7) | self.payload_type);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        for csrc in &self.csrc {
            out.extend_from_slice(&csrc.to_be_bytes());
        }
        if let Some((profile, data)) = &self.extension {
            out.extend_from_slice(&profile.to_be_bytes());
            // At most 65535 words, checked above.
            out.extend_from_slice(&((data.len() / 4) as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(payload);
        if self.padding > 0 {
            out.extend(std::iter::repeat_n(0, usize::from(self.padding) - 1));
            out.push(self.padding);
        }
        Ok(())
    }

    /// The packet as a new buffer.
    pub fn build(&self, payload: &[u8]) -> Result<Vec<u8>, BuildError> {
        let mut out = Vec::new();
        self.write(payload, &mut out)?;
        Ok(out)
    }
}

/// `a` is after `b` in RTP sequence-number order (RFC 3550 Appendix A.1:
/// differences taken modulo 2^16).
pub fn sequence_after(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// `a` is after `b` in RTP timestamp order (modulo 2^32).
pub fn timestamp_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000_0000
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet() -> Vec<u8> {
        vec![
            0x80, 0x00, 0x12, 0x34, // V=2, PT 0, seq 0x1234
            0x00, 0x00, 0x10, 0x00, // timestamp 4096
            0xDE, 0xAD, 0xBE, 0xEF, // SSRC
            0xFF, 0xFE, 0xFD, // payload
        ]
    }

    #[test]
    fn parses_the_fixed_header() {
        let bytes = packet();
        let p = parse(&bytes).unwrap();
        assert!(!p.marker);
        assert_eq!(p.payload_type, 0);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.timestamp, 4096);
        assert_eq!(p.ssrc, 0xDEAD_BEEF);
        assert_eq!(p.csrc_count(), 0);
        assert_eq!(p.extension, None);
        assert_eq!(p.payload, &[0xFF, 0xFE, 0xFD]);
        assert_eq!(p.padding, 0);
    }

    #[test]
    fn parses_marker_csrc_extension_and_padding() {
        let mut bytes = vec![0xB2, 0x88]; // V=2 P X CC=2, M, PT 8
        bytes.extend_from_slice(&[0, 1, 0, 0, 0, 160, 0, 0, 0, 7]);
        bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]); // CSRCs 1, 2
        bytes.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]); // one-word extension
        bytes.extend_from_slice(&[0xD5, 0xD5]); // payload
        bytes.extend_from_slice(&[0, 0, 3]); // three padding octets
        let p = parse(&bytes).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.sequence, 1);
        assert_eq!(p.timestamp, 160);
        assert_eq!(p.ssrc, 7);
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(
            p.extension,
            Some(Extension {
                profile: 0xBEDE,
                data: &[0x10, 0xAA, 0, 0]
            })
        );
        assert_eq!(p.payload, &[0xD5, 0xD5]);
        assert_eq!(p.padding, 3);
        assert_eq!(p.to_builder().build(p.payload).unwrap(), bytes);
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert_eq!(parse(&[]), Err(RtpError::TooShort(0)));
        assert_eq!(parse(&[0x80; 11]), Err(RtpError::TooShort(11)));
        let mut v1 = packet();
        v1[0] = 0x40;
        assert_eq!(parse(&v1), Err(RtpError::Version(1)));
        let mut rtcp = packet();
        rtcp[1] = 200; // sender report
        assert_eq!(parse(&rtcp), Err(RtpError::Rtcp(200)));
        let mut csrc = packet();
        csrc[0] = 0x81; // one CSRC, only 3 bytes after the header
        assert_eq!(
            parse(&csrc),
            Err(RtpError::TruncatedCsrc { count: 1, len: 15 })
        );
        let mut ext = packet();
        ext[0] = 0x90;
        assert_eq!(parse(&ext), Err(RtpError::TruncatedExtension));
        let mut ext_len = packet();
        ext_len[0] = 0x90;
        ext_len.extend_from_slice(&[0]); // profile 0xFFFE, length 0xFD00 words
        assert_eq!(parse(&ext_len), Err(RtpError::TruncatedExtension));
        let mut pad = packet();
        pad[0] = 0xA0;
        *pad.last_mut().unwrap() = 9; // more than the 3 bytes after the header
        assert_eq!(
            parse(&pad),
            Err(RtpError::BadPadding {
                count: 9,
                available: 3
            })
        );
        *pad.last_mut().unwrap() = 0;
        assert_eq!(parse(&pad), Err(RtpError::ZeroPadding));
        let mut pad_empty = packet();
        pad_empty.truncate(12);
        pad_empty[0] = 0xA0;
        assert_eq!(
            parse(&pad_empty),
            Err(RtpError::BadPadding {
                count: 1,
                available: 0
            })
        );
    }

    #[test]
    fn an_empty_payload_is_a_packet() {
        let bytes = PacketBuilder::new(13, 1, 2, 3).build(&[]).unwrap();
        assert_eq!(bytes.len(), 12);
        assert_eq!(parse(&bytes).unwrap().payload, &[] as &[u8]);
    }

    #[test]
    fn building_refuses_what_the_header_cannot_say() {
        let mut b = PacketBuilder::new(128, 0, 0, 0);
        assert_eq!(b.build(&[]), Err(BuildError::PayloadType(128)));
        b.payload_type = 0;
        b.csrc = vec![0; 16];
        assert_eq!(b.build(&[]), Err(BuildError::TooManyCsrc(16)));
        b.csrc.clear();
        b.extension = Some((1, vec![0; 3]));
        assert_eq!(b.build(&[]), Err(BuildError::ExtensionNotAligned(3)));
        b.extension = Some((1, vec![0; 4 * 65536]));
        assert_eq!(b.build(&[]), Err(BuildError::ExtensionTooLong(4 * 65536)));
    }

    #[test]
    fn header_rewrite_changes_only_the_rewritten_fields() {
        let mut bytes = packet();
        rewrite_header(&mut bytes, true, 8, 7, 9, 11);
        let p = parse(&bytes).unwrap();
        assert_eq!(
            (p.marker, p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (true, 8, 7, 9, 11)
        );
        assert_eq!(p.payload, &[0xFF, 0xFE, 0xFD]);
        let mut short = vec![0x80; 4];
        rewrite_header(&mut short, true, 8, 7, 9, 11);
        assert_eq!(short, vec![0x80; 4]);
    }

    #[test]
    fn sequence_order_wraps() {
        assert!(sequence_after(1, 0));
        assert!(sequence_after(0, 0xFFFF));
        assert!(!sequence_after(0xFFFF, 0));
        assert!(!sequence_after(5, 5));
        assert!(timestamp_after(10, u32::MAX - 10));
        assert!(!timestamp_after(u32::MAX - 10, 10));
    }

    fn builder() -> impl Strategy<Value = PacketBuilder> {
        (
            any::<bool>(),
            0u8..128,
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u32>(), 0..=15),
            proptest::option::of((
                any::<u16>(),
                proptest::collection::vec(any::<[u8; 4]>(), 0..8),
            )),
            any::<u8>(),
        )
            .prop_map(
                |(marker, payload_type, sequence, timestamp, ssrc, csrc, ext, padding)| {
                    PacketBuilder {
                        marker,
                        payload_type,
                        sequence,
                        timestamp,
                        ssrc,
                        csrc,
                        extension: ext.map(|(p, words)| (p, words.concat())),
                        padding,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn build_then_parse_gives_the_same_packet(
            b in builder(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            // A packet whose payload type would read as RTCP is not RTP on
            // a multiplexed port (RFC 5761 §4); skip those.
            prop_assume!(!(b.marker && (64..96).contains(&b.payload_type)));
            let bytes = b.build(&payload).unwrap();
            prop_assert_eq!(bytes.len(), b.len(payload.len()));
            let p = parse(&bytes).unwrap();
            prop_assert_eq!(p.payload, &payload[..]);
            prop_assert_eq!(p.to_builder(), b);
        }

        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = parse(&bytes) {
                // Whatever parses rebuilds to the same bytes (padding octets
                // other than the count aside).
                let rebuilt = p.to_builder().build(p.payload).unwrap();
                prop_assert_eq!(rebuilt.len(), bytes.len());
                let padding = usize::from(p.padding);
                let keep = bytes.len() - padding;
                prop_assert_eq!(&rebuilt[..keep], &bytes[..keep]);
            }
        }
    }
}
