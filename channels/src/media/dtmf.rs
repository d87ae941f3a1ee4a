//! DTMF: RFC 4733 telephone-events in RTP, and SIP INFO bodies.
//!
//! - [`TelephoneEvent`]: the 4-octet payload (RFC 4733 §2.3): event code,
//!   end bit, volume, duration in timestamp units.
//! - [`DtmfReceiver`]: turns the packets of a key press into one digit. A
//!   press is sent as a first packet (marker set), updates with a growing
//!   duration, and the end packet three times (§2.5.1); all of them carry
//!   the timestamp of the event's start, which is what identifies the event
//!   (§2.5.2.1). The digit is reported on the first packet seen of an event,
//!   so a lost start or a lost end still gives exactly one digit; a new
//!   timestamp is a new press, even of the same key.
//! - [`DtmfSender`]: the packets for one key press, with their send offsets.
//! - SIP INFO bodies, as phones without RFC 4733 send them, read by
//!   [`parse_info`]: `application/dtmf-relay` (`Signal=5\r\nDuration=160`)
//!   and `application/dtmf` (`5`).
//!
//! ```
//! use ccu_channels::media::dtmf::{DtmfReceiver, DtmfSender};
//! use ccu_channels::media::rtp;
//!
//! let mut sender = DtmfSender::new(101, 0x4242, 7);
//! let mut receiver = DtmfReceiver::new();
//! let mut digits = Vec::new();
//! for packet in sender.packets('5', 8000, 100).unwrap() {
//!     let parsed = rtp::parse(&packet.bytes).unwrap();
//!     digits.extend(receiver.receive(&parsed).unwrap());
//! }
//! assert_eq!(digits.len(), 1);
//! assert_eq!(digits[0].digit, '5');
//! ```

use std::time::Duration;

use super::rtp::{self, PacketBuilder, RtpPacket};

/// Timestamp units per 20 ms packet at 8 kHz.
const TICKS_PER_PACKET: u32 = 160;
/// How often the end packet is sent (RFC 4733 §2.5.1.4 recommends three).
const END_REPETITIONS: usize = 3;

/// Why a telephone-event payload or INFO body is not a DTMF digit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("telephone-event payload of {0} bytes, expected at least 4")]
    ShortPayload(usize),
    #[error("{0:?} is not a DTMF key (0-9, *, #, A-D)")]
    NotAKey(char),
    #[error("a key press of {0} ms is longer than one event can say (8191 ms)")]
    TooLong(u32),
    #[error("payload type {0} does not fit in 7 bits")]
    PayloadType(u8),
    #[error("content type {0:?} is not a DTMF body")]
    UnsupportedType(String),
    #[error("DTMF body is not text")]
    NotText,
    #[error("DTMF body has no Signal")]
    MissingSignal,
    #[error("DTMF signal {0:?} is not a key")]
    BadSignal(String),
    #[error("DTMF duration {0:?} is not a number of milliseconds")]
    BadDuration(String),
}

/// The RFC 4733 event code of a DTMF key (§3.2, Table 7).
pub fn event_code(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        _ => None,
    }
}

/// The DTMF key of an event code; `None` for other events (flash, tones).
pub fn event_digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some(char::from(b'0' + code)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + code - 12)),
        _ => None,
    }
}

/// The telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    pub event: u8,
    /// The E bit: this packet ends the event.
    pub end: bool,
    /// Power level in −dBm0, 0–63 (R bit and volume share the octet).
    pub volume: u8,
    /// Duration so far, in timestamp units.
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first four octets. Longer payloads (several events in
    /// one packet) are read for their first event only.
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, DtmfError> {
        let [event, flags, d0, d1, ..] = *payload else {
            return Err(DtmfError::ShortPayload(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The four payload octets (the reserved bit is zero, §2.3).
    pub fn to_bytes(self) -> [u8; 4] {
        let [d0, d1] = self.duration.to_be_bytes();
        [
            self.event,
            (u8::from(self.end) << 7) | (self.volume & 0x3F),
            d0,
            d1,
        ]
    }

    /// The DTMF key, if this event is one.
    pub fn digit(self) -> Option<char> {
        event_digit(self.event)
    }
}

/// A key press recognised by the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    pub digit: char,
    /// The RTP timestamp of the press (its start).
    pub timestamp: u32,
}

#[derive(Debug, Clone, Copy)]
struct CurrentEvent {
    ssrc: u32,
    timestamp: u32,
    event: u8,
    duration: u16,
    ended: bool,
}

/// Digits from a stream of telephone-event packets (one RTP source).
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    current: Option<CurrentEvent>,
}

impl DtmfReceiver {
    pub fn new() -> DtmfReceiver {
        DtmfReceiver::default()
    }

    /// Takes one telephone-event packet; returns the digit when the packet
    /// is the first one seen of a new key press.
    pub fn receive(&mut self, packet: &RtpPacket<'_>) -> Result<Option<Digit>, DtmfError> {
        let event = TelephoneEvent::parse(packet.payload)?;
        if let Some(current) = &mut self.current
            && current.ssrc == packet.ssrc
        {
            if current.timestamp == packet.timestamp {
                // An update or a retransmitted end of the current event.
                // A different code under the same timestamp is a broken
                // sender; ignoring it keeps "one digit per press".
                if current.event == event.event {
                    current.duration = current.duration.max(event.duration);
                    current.ended |= event.end;
                }
                return Ok(None);
            }
            if rtp::timestamp_after(current.timestamp, packet.timestamp) {
                // A late packet of an earlier event (reordering).
                return Ok(None);
            }
            // RFC 4733 §2.5.1.3: an event longer than the duration field
            // can say goes on in a new segment with a new timestamp, no
            // marker, and the previous segment never ended.
            let next_segment = !current.ended
                && current.event == event.event
                && !packet.marker
                && current.duration == u16::MAX
                && packet.timestamp == current.timestamp.wrapping_add(u32::from(u16::MAX));
            if next_segment {
                current.timestamp = packet.timestamp;
                current.duration = event.duration;
                current.ended = event.end;
                return Ok(None);
            }
        }
        self.current = Some(CurrentEvent {
            ssrc: packet.ssrc,
            timestamp: packet.timestamp,
            event: event.event,
            duration: event.duration,
            ended: event.end,
        });
        Ok(event.digit().map(|digit| Digit {
            digit,
            timestamp: packet.timestamp,
        }))
    }
}

/// One packet of a key press and when to send it, from the press's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedPacket {
    pub offset: Duration,
    pub bytes: Vec<u8>,
}

/// Builds the RFC 4733 packets of key presses, one RTP source.
#[derive(Debug, Clone)]
pub struct DtmfSender {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    /// Volume in −dBm0 (10 is a typical keypad level).
    pub volume: u8,
}

impl DtmfSender {
    /// A sender with the negotiated telephone-event payload type, the SSRC
    /// of the stream it goes in and its next sequence number.
    pub fn new(payload_type: u8, ssrc: u32, sequence: u16) -> DtmfSender {
        DtmfSender {
            payload_type,
            ssrc,
            sequence,
            volume: 10,
        }
    }

    /// The next sequence number the sender will use.
    pub fn next_sequence(&self) -> u16 {
        self.sequence
    }

    /// The packets of one press of `digit` starting at RTP `timestamp`,
    /// lasting `duration_ms`: one every 20 ms with the duration so far,
    /// the first with the marker bit (§2.5.1.2), then the end packet three
    /// times (§2.5.1.4).
    pub fn packets(
        &mut self,
        digit: char,
        timestamp: u32,
        duration_ms: u32,
    ) -> Result<Vec<TimedPacket>, DtmfError> {
        let event = event_code(digit).ok_or(DtmfError::NotAKey(digit))?;
        let total = duration_ms
            .checked_mul(8)
            .filter(|&t| t <= u32::from(u16::MAX))
            .ok_or(DtmfError::TooLong(duration_ms))?
            .max(TICKS_PER_PACKET);
        let updates = total.div_ceil(TICKS_PER_PACKET);
        let mut out = Vec::new();
        for k in 0..updates + END_REPETITIONS as u32 - 1 {
            let duration = ((k + 1) * TICKS_PER_PACKET).min(total);
            let payload = TelephoneEvent {
                event,
                end: k + 1 >= updates,
                volume: self.volume,
                // At most `total`, which fits (checked above).
                duration: duration as u16,
            }
            .to_bytes();
            let bytes = PacketBuilder::new(self.payload_type, self.sequence, timestamp, self.ssrc)
                .marker(k == 0)
                .build(&payload)
                .map_err(|_| DtmfError::PayloadType(self.payload_type))?;
            self.sequence = self.sequence.wrapping_add(1);
            out.push(TimedPacket {
                offset: Duration::from_millis(20 * u64::from(k)),
                bytes,
            });
        }
        Ok(out)
    }
}

/// A key press from a SIP INFO body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDigit {
    pub digit: char,
    pub duration_ms: Option<u32>,
}

/// Parses the body of a SIP INFO carrying DTMF. `content_type` is the
/// Content-Type header value (parameters and case are ignored).
pub fn parse_info(content_type: &str, body: &[u8]) -> Result<InfoDigit, DtmfError> {
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let text = std::str::from_utf8(body).map_err(|_| DtmfError::NotText)?;
    match media_type.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration_ms = None;
            for line in text.lines() {
                let Some((key, value)) = line.split_once('=') else {
                    continue;
                };
                let value = value.trim();
                match key.trim().to_ascii_lowercase().as_str() {
                    "signal" => digit = Some(signal(value)?),
                    "duration" => {
                        duration_ms = Some(
                            value
                                .parse::<u32>()
                                .map_err(|_| DtmfError::BadDuration(value.to_owned()))?,
                        )
                    }
                    _ => {}
                }
            }
            Ok(InfoDigit {
                digit: digit.ok_or(DtmfError::MissingSignal)?,
                duration_ms,
            })
        }
        "application/dtmf" => {
            let value = text.trim();
            if value.is_empty() {
                return Err(DtmfError::MissingSignal);
            }
            Ok(InfoDigit {
                digit: signal(value)?,
                duration_ms: None,
            })
        }
        _ => Err(DtmfError::UnsupportedType(content_type.to_owned())),
    }
}

/// A signal value: the key itself, or its RFC 4733 event code (some phones
/// send `Signal=10` for `*` and `Signal=11` for `#`).
fn signal(value: &str) -> Result<char, DtmfError> {
    let bad = || DtmfError::BadSignal(value.to_owned());
    let mut chars = value.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => event_code(c).and_then(event_digit).ok_or_else(bad),
        _ => value
            .parse::<u8>()
            .ok()
            .and_then(event_digit)
            .ok_or_else(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event_packet(ssrc: u32, seq: u16, ts: u32, marker: bool, event: TelephoneEvent) -> Vec<u8> {
        PacketBuilder::new(101, seq, ts, ssrc)
            .marker(marker)
            .build(&event.to_bytes())
            .unwrap()
    }

    fn ev(code: u8, end: bool, duration: u16) -> TelephoneEvent {
        TelephoneEvent {
            event: code,
            end,
            volume: 10,
            duration,
        }
    }

    fn feed(receiver: &mut DtmfReceiver, bytes: &[u8]) -> Option<char> {
        receiver
            .receive(&rtp::parse(bytes).unwrap())
            .unwrap()
            .map(|d| d.digit)
    }

    #[test]
    fn payload_round_trip_and_known_bytes() {
        // RFC 4733 §2.3 layout: event 5, E set, volume 10, duration 800.
        let e = TelephoneEvent::parse(&[5, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(e, ev(5, true, 800));
        assert_eq!(e.to_bytes(), [5, 0x8A, 0x03, 0x20]);
        // The R bit is ignored on reception.
        assert_eq!(TelephoneEvent::parse(&[11, 0x40, 0, 0]).unwrap().volume, 0);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::ShortPayload(3))
        );
        assert_eq!(e.digit(), Some('5'));
        assert_eq!(ev(16, false, 0).digit(), None);
    }

    #[test]
    fn codes_and_keys() {
        for (key, code) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('D', 15),
        ] {
            assert_eq!(event_code(key), Some(code));
            assert_eq!(event_digit(code), Some(key));
        }
        assert_eq!(event_code('d'), Some(15));
        assert_eq!(event_code('E'), None);
        assert_eq!(event_digit(16), None);
    }

    #[test]
    fn one_press_gives_one_digit_despite_updates_and_three_ends() {
        let mut r = DtmfReceiver::new();
        let mut digits = Vec::new();
        digits.extend(feed(
            &mut r,
            &event_packet(1, 10, 800, true, ev(1, false, 160)),
        ));
        digits.extend(feed(
            &mut r,
            &event_packet(1, 11, 800, false, ev(1, false, 320)),
        ));
        digits.extend(feed(
            &mut r,
            &event_packet(1, 12, 800, false, ev(1, false, 480)),
        ));
        for seq in 13..16 {
            digits.extend(feed(
                &mut r,
                &event_packet(1, seq, 800, false, ev(1, true, 640)),
            ));
        }
        assert_eq!(digits, vec!['1']);
    }

    #[test]
    fn a_lost_start_still_gives_the_digit_once() {
        let mut r = DtmfReceiver::new();
        assert_eq!(
            feed(&mut r, &event_packet(1, 11, 800, false, ev(2, false, 320))),
            Some('2')
        );
        assert_eq!(
            feed(&mut r, &event_packet(1, 12, 800, false, ev(2, true, 480))),
            None
        );
    }

    #[test]
    fn a_lost_end_then_the_same_key_again_gives_two_digits() {
        let mut r = DtmfReceiver::new();
        assert_eq!(
            feed(&mut r, &event_packet(1, 1, 800, true, ev(3, false, 160))),
            Some('3')
        );
        // The end packets are all lost; the next press has a new timestamp.
        assert_eq!(
            feed(&mut r, &event_packet(1, 9, 4000, true, ev(3, false, 160))),
            Some('3')
        );
        assert_eq!(
            feed(&mut r, &event_packet(1, 10, 4000, false, ev(3, true, 320))),
            None
        );
    }

    #[test]
    fn a_late_end_of_the_previous_press_is_ignored() {
        let mut r = DtmfReceiver::new();
        assert_eq!(
            feed(&mut r, &event_packet(1, 1, 800, true, ev(4, false, 160))),
            Some('4')
        );
        assert_eq!(
            feed(&mut r, &event_packet(1, 5, 2400, true, ev(7, false, 160))),
            Some('7')
        );
        assert_eq!(
            feed(&mut r, &event_packet(1, 2, 800, false, ev(4, true, 320))),
            None
        );
        assert_eq!(
            feed(&mut r, &event_packet(1, 6, 2400, false, ev(7, true, 320))),
            None
        );
    }

    #[test]
    fn a_long_press_split_in_segments_is_one_digit() {
        let mut r = DtmfReceiver::new();
        assert_eq!(
            feed(
                &mut r,
                &event_packet(1, 1, 1000, true, ev(0, false, u16::MAX))
            ),
            Some('0')
        );
        let next = 1000 + u32::from(u16::MAX);
        assert_eq!(
            feed(&mut r, &event_packet(1, 2, next, false, ev(0, false, 160))),
            None
        );
        assert_eq!(
            feed(&mut r, &event_packet(1, 3, next, false, ev(0, true, 320))),
            None
        );
    }

    #[test]
    fn a_new_source_starts_afresh() {
        let mut r = DtmfReceiver::new();
        assert_eq!(
            feed(&mut r, &event_packet(1, 1, 800, true, ev(5, false, 160))),
            Some('5')
        );
        // Another SSRC (the phone restarted its stream) with an older timestamp.
        assert_eq!(
            feed(&mut r, &event_packet(2, 1, 100, true, ev(5, false, 160))),
            Some('5')
        );
    }

    #[test]
    fn non_digit_events_and_bad_payloads() {
        let mut r = DtmfReceiver::new();
        assert_eq!(
            feed(&mut r, &event_packet(1, 1, 800, true, ev(16, false, 160))),
            None
        );
        let short = PacketBuilder::new(101, 2, 900, 1).build(&[1, 2]).unwrap();
        assert_eq!(
            r.receive(&rtp::parse(&short).unwrap()),
            Err(DtmfError::ShortPayload(2))
        );
        // A different code under the current timestamp is not a new press.
        assert_eq!(
            feed(&mut r, &event_packet(1, 3, 800, false, ev(6, false, 320))),
            None
        );
    }

    #[test]
    fn the_sender_follows_rfc_4733() {
        let mut s = DtmfSender::new(101, 77, 65534);
        let packets = s.packets('#', 16000, 100).unwrap();
        // 100 ms = 800 ticks = 5 updates (the fifth is the first end), then
        // two more ends.
        assert_eq!(packets.len(), 7);
        let parsed: Vec<_> = packets
            .iter()
            .map(|p| rtp::parse(&p.bytes).unwrap())
            .collect();
        assert!(parsed[0].marker);
        assert!(parsed[1..].iter().all(|p| !p.marker));
        assert!(
            parsed
                .iter()
                .all(|p| p.timestamp == 16000 && p.ssrc == 77 && p.payload_type == 101)
        );
        let seqs: Vec<u16> = parsed.iter().map(|p| p.sequence).collect();
        assert_eq!(seqs, vec![65534, 65535, 0, 1, 2, 3, 4]);
        let events: Vec<_> = parsed
            .iter()
            .map(|p| TelephoneEvent::parse(p.payload).unwrap())
            .collect();
        assert_eq!(
            events.iter().map(|e| e.duration).collect::<Vec<_>>(),
            vec![160, 320, 480, 640, 800, 800, 800]
        );
        assert_eq!(events.iter().filter(|e| e.end).count(), 3);
        assert!(events.iter().all(|e| e.event == 11 && e.volume == 10));
        assert_eq!(packets[6].offset, Duration::from_millis(120));
        assert_eq!(s.next_sequence(), 5);
        assert_eq!(s.packets('x', 0, 100), Err(DtmfError::NotAKey('x')));
        assert_eq!(s.packets('1', 0, 9000), Err(DtmfError::TooLong(9000)));
    }

    #[test]
    fn sip_info_bodies() {
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n"),
            Ok(InfoDigit {
                digit: '5',
                duration_ms: Some(160)
            })
        );
        assert_eq!(
            parse_info(
                "Application/DTMF-Relay; charset=utf-8",
                b"signal = *\nduration= 250"
            ),
            Ok(InfoDigit {
                digit: '*',
                duration_ms: Some(250)
            })
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=11\r\n").map(|d| d.digit),
            Ok('#')
        );
        assert_eq!(
            parse_info("application/dtmf", b"5\r\n"),
            Ok(InfoDigit {
                digit: '5',
                duration_ms: None
            })
        );
        assert_eq!(
            parse_info("application/dtmf", b"  "),
            Err(DtmfError::MissingSignal)
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Duration=160"),
            Err(DtmfError::MissingSignal)
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=X"),
            Err(DtmfError::BadSignal("X".into()))
        );
        assert_eq!(
            parse_info("application/dtmf-relay", b"Signal=1\nDuration=long"),
            Err(DtmfError::BadDuration("long".into()))
        );
        assert_eq!(
            parse_info("text/plain", b"5"),
            Err(DtmfError::UnsupportedType("text/plain".into()))
        );
        assert_eq!(
            parse_info("application/dtmf", &[0xFF]),
            Err(DtmfError::NotText)
        );
    }

    fn keys() -> impl Strategy<Value = char> {
        proptest::sample::select(vec!['0', '1', '5', '9', '*', '#', 'A', 'D'])
    }

    proptest! {
        /// Whatever subset of a press's packets arrives, duplicated and in
        /// whatever order, the receiver reports the key exactly once (or not
        /// at all when nothing arrives).
        #[test]
        fn any_subset_duplicated_and_reordered_gives_at_most_one_digit(
            key in keys(),
            duration_ms in 40u32..2000,
            keep in proptest::collection::vec(any::<bool>(), 128),
            dup in proptest::collection::vec(0usize..3, 128),
            order in proptest::collection::vec(any::<u16>(), 128),
        ) {
            let mut sender = DtmfSender::new(101, 9, 100);
            let packets = sender.packets(key, 12345, duration_ms).unwrap();
            let mut arriving: Vec<(u16, &TimedPacket)> = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                if keep[i % keep.len()] {
                    for _ in 0..=dup[i % dup.len()] {
                        arriving.push((order[arriving.len() % order.len()], p));
                    }
                }
            }
            arriving.sort_by_key(|(k, _)| *k);
            let mut r = DtmfReceiver::new();
            let mut digits = Vec::new();
            for (_, p) in &arriving {
                digits.extend(r.receive(&rtp::parse(&p.bytes).unwrap()).unwrap());
            }
            let expected = if arriving.is_empty() { 0 } else { 1 };
            prop_assert_eq!(digits.len(), expected);
            prop_assert!(digits.iter().all(|d| d.digit == key && d.timestamp == 12345));
        }

        /// A sequence of presses, each with its own timestamp, gives the
        /// sequence of keys, even with every end packet lost.
        #[test]
        fn presses_in_sequence_give_their_keys(
            presses in proptest::collection::vec((keys(), 40u32..500), 1..8),
            lose_ends in any::<bool>(),
        ) {
            let mut sender = DtmfSender::new(101, 9, 0);
            let mut r = DtmfReceiver::new();
            let mut digits = Vec::new();
            let mut ts = 0u32;
            for (key, ms) in &presses {
                for p in sender.packets(*key, ts, *ms).unwrap() {
                    let parsed = rtp::parse(&p.bytes).unwrap();
                    if lose_ends && TelephoneEvent::parse(parsed.payload).unwrap().end {
                        continue;
                    }
                    digits.extend(r.receive(&parsed).unwrap().map(|d| d.digit));
                }
                ts = ts.wrapping_add(ms * 8 + 800);
            }
            let expected: Vec<char> = presses.iter().map(|(k, _)| *k).collect();
            prop_assert_eq!(digits, expected);
        }

        #[test]
        fn info_parsing_never_panics(ct in "[a-z/;= -]{0,30}", body in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_info(&ct, &body);
            let _ = parse_info("application/dtmf-relay", &body);
            let _ = parse_info("application/dtmf", &body);
        }
    }
}
