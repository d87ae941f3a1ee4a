//! The RTP relay of one call: the citizen's leg (A) and the operator's leg
//! (B), sans-IO.
//!
//! The server owns one UDP socket per leg and passes what it receives as
//! [`RelayEvent::Received`]; what it must send comes back from
//! [`Relay::poll`] as [`RelayAction::Send`] (always from the leg's own
//! socket, which is what makes RTP symmetric, RFC 4961).
//!
//! What the relay does:
//!
//! - **Latching.** A leg's peer is where its SDP says until the first
//!   valid packet (well-formed RTP with a negotiated payload type) arrives
//!   from an allowed IP, the SDP's or the signalling source's (a phone
//!   behind NAT writes its private address in the SDP); from then on the
//!   relay sends to that packet's source address and port. Packets from
//!   any other address are strangers and dropped. After the latched
//!   address has been silent for [`RelayConfig::relatch_after`] an allowed
//!   IP may take over (a NAT that rebound the port).
//! - **One continuous stream per receiver.** What a leg hears comes from a
//!   [`Source`]: the other leg (bridged), local packets (prompts, hold
//!   music from a [`super::player::Player`]) or nothing. Each leg receives
//!   one SSRC of ours for the whole call; sequence numbers and timestamps
//!   are rewritten with an offset per input stream, re-based whenever the
//!   input changes (another source, another SSRC, a jump) so that the
//!   sequence goes on by one and the timestamp by the wall-clock time that
//!   passed (RFC 3550 §5.1), with the marker bit set on the first packet
//!   after a change (RFC 3551 §4.1) so jitter buffers re-sync. Acting as a
//!   translator that hides its sources (RFC 3550 §7.1), it keeps CSRCs and
//!   extensions as they are.
//! - **Payload types.** Each leg's negotiated audio and telephone-event
//!   numbers are mapped to the other leg's; PCMU ↔ PCMA is transcoded
//!   (one table look-up per byte). Telephone-events pass through, and are
//!   also turned into [`RelayAction::Digit`]s (the IVR and the queue's
//!   callback key listen to them).
//! - **Counters** per leg: received, sent, relayed, local, and drops by
//!   [`DropReason`].
//! - **Media timeout**: a leg that sends nothing for
//!   [`RelayConfig::media_timeout`] gives one [`RelayAction::MediaTimeout`]
//!   (a dead phone or a lost BYE), unless told not to expect media (hold).

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::dtmf::{Digit, DtmfReceiver};
use super::g711::Law;
use super::rtp::{self, RtpPacket};
use crate::sip::sdp::Negotiated;

/// Samples per second of every stream the relay handles (G.711 and
/// telephone-event/8000).
const CLOCK_RATE: u64 = 8_000;
/// An input sequence number this far from the last one is a new stream,
/// not reordering.
const MAX_SEQUENCE_JUMP: u16 = 100;
/// An input timestamp this far (10 s) from the last one is a new stream.
const MAX_TIMESTAMP_JUMP: u32 = 10 * CLOCK_RATE as u32;

/// One side of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The citizen's leg (the trunk or the caller's phone).
    A,
    /// The operator's phone.
    B,
}

impl Leg {
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
}

/// What was negotiated for a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegMedia {
    /// Where the SDP says to send RTP.
    pub remote: SocketAddr,
    /// Another IP media may come from: the leg's signalling source, for
    /// phones behind NAT whose SDP shows a private address.
    pub signalling_ip: Option<IpAddr>,
    pub law: Law,
    /// The audio payload type this leg uses.
    pub payload_type: u8,
    /// The telephone-event payload type, if negotiated.
    pub telephone_event: Option<u8>,
}

impl LegMedia {
    /// From the SDP answer; `None` when the codec is not G.711.
    pub fn from_negotiated(
        negotiated: &Negotiated,
        signalling_ip: Option<IpAddr>,
    ) -> Option<LegMedia> {
        Some(LegMedia {
            remote: negotiated.remote,
            signalling_ip,
            law: Law::from_encoding(&negotiated.codec.name)?,
            payload_type: negotiated.codec.payload_type,
            telephone_event: negotiated.telephone_event,
        })
    }

    fn allows(&self, ip: IpAddr) -> bool {
        self.remote.ip() == ip || self.signalling_ip == Some(ip)
    }
}

/// The first SSRC, sequence number and timestamp of the stream we send to
/// a leg. RFC 3550 §5.1 wants them random: the server draws them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamStart {
    pub ssrc: u32,
    pub sequence: u16,
    pub timestamp: u32,
}

/// What a leg hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The other leg.
    Peer,
    /// [`RelayEvent::Local`] packets: prompts, announcements, hold music.
    Local,
    /// Nothing (the leg is on hold without music, or answered sendonly).
    Silent,
}

/// Timers and rules; serde for the server's `[voice]` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// A latched peer silent this long may be replaced by another address
    /// of an allowed IP (NAT rebinding).
    #[serde(with = "millis")]
    pub relatch_after: Duration,
    /// No packet from a leg for this long: [`RelayAction::MediaTimeout`].
    #[serde(with = "opt_millis")]
    pub media_timeout: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            relatch_after: Duration::from_secs(2),
            media_timeout: Some(Duration::from_secs(60)),
        }
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

mod opt_millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis().try_into().unwrap_or(u64::MAX)),
            None => s.serialize_u64(0),
        }
    }

    /// 0 turns the timer off.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms)))
    }
}

/// Input to the relay.
#[derive(Debug, Clone, Copy)]
pub enum RelayEvent<'a> {
    /// A datagram arrived on the leg's socket.
    Received {
        leg: Leg,
        from: SocketAddr,
        bytes: &'a [u8],
    },
    /// A packet of ours (PCMU payload type 0 or PCMA 8) for the leg, played
    /// when the leg's source is [`Source::Local`].
    Local { leg: Leg, bytes: &'a [u8] },
}

/// What the server must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayAction {
    /// Send from the leg's socket.
    Send {
        leg: Leg,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// The leg's peer is (now) at this address.
    Latched { leg: Leg, address: SocketAddr },
    /// A key press on the leg (RFC 4733).
    Digit { leg: Leg, digit: Digit },
    /// The leg sent nothing for the configured time.
    MediaTimeout { leg: Leg },
    /// Audio from the leg's peer, while [`Relay::listen`] is on (a voice
    /// message): the payload in the leg's law, in arrival order, with the
    /// stream and RTP timestamp that place it (RFC 3550 §5.1).
    Heard {
        leg: Leg,
        law: Law,
        ssrc: u32,
        timestamp: u32,
        payload: Vec<u8>,
    },
}

/// Why a packet was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not RTP (too short, not version 2, inconsistent lengths).
    Malformed,
    /// RTCP on the RTP port.
    Rtcp,
    /// From an address that is not the leg's peer.
    Stranger,
    /// For a leg the relay does not have (yet).
    NoLeg,
    /// A payload type not negotiated on the leg.
    UnknownPayloadType,
    /// The receiving leg hears another source (hold, prompts) or is absent.
    NotBridged,
    /// A telephone-event for a leg that did not negotiate them.
    NoTelephoneEvent,
    /// A local packet for a leg that is not listening to local packets, or
    /// not PCMU/PCMA.
    NotSelected,
    /// The receiving leg has nowhere to send to yet: its SDP said
    /// `0.0.0.0` or port 0 (RFC 3264 §8.4 hold, old style) and it has not
    /// been latched.
    NoDestination,
}

impl DropReason {
    pub const ALL: [DropReason; 9] = [
        DropReason::Malformed,
        DropReason::Rtcp,
        DropReason::Stranger,
        DropReason::NoLeg,
        DropReason::UnknownPayloadType,
        DropReason::NotBridged,
        DropReason::NoTelephoneEvent,
        DropReason::NotSelected,
        DropReason::NoDestination,
    ];

    /// A stable name for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Rtcp => "rtcp",
            DropReason::Stranger => "stranger",
            DropReason::NoLeg => "no_leg",
            DropReason::UnknownPayloadType => "unknown_payload_type",
            DropReason::NotBridged => "not_bridged",
            DropReason::NoTelephoneEvent => "no_telephone_event",
            DropReason::NotSelected => "not_selected",
            DropReason::NoDestination => "no_destination",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one leg.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegStats {
    /// Datagrams that arrived on the leg's socket.
    pub received_packets: u64,
    pub received_bytes: u64,
    /// Packets sent to the leg, relayed and local.
    pub sent_packets: u64,
    pub sent_bytes: u64,
    /// Of those sent, relayed from the other leg.
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    /// Of those sent, local (prompts, music).
    pub local_packets: u64,
    dropped: [u64; DropReason::ALL.len()],
}

impl LegStats {
    /// Packets arriving on this leg (or local ones for it) dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The other leg, in the n-th attachment of that leg (a transfer
    /// brings another phone whose SSRC may happen to be the same).
    Peer(u32),
    Local,
}

#[derive(Debug, Clone, Copy)]
struct InputMap {
    origin: Origin,
    ssrc: u32,
    last_sequence: u16,
    last_timestamp: u32,
    sequence_delta: u16,
    timestamp_delta: u32,
}

/// The stream we send to one leg.
#[derive(Debug, Clone)]
struct OutStream {
    ssrc: u32,
    /// Sequence number, timestamp and length (in samples) of the newest
    /// packet sent, and when; `None` before the first.
    last: Option<(u16, u32, u32, Instant)>,
    start: StreamStart,
    input: Option<InputMap>,
}

impl OutStream {
    fn new(start: StreamStart) -> OutStream {
        OutStream {
            ssrc: start.ssrc,
            last: None,
            start,
            input: None,
        }
    }

    /// Maps an input packet's sequence number and timestamp into ours;
    /// returns them and whether the marker must be set (a new input).
    fn map(
        &mut self,
        now: Instant,
        origin: Origin,
        packet: &RtpPacket<'_>,
        samples: u32,
    ) -> (u16, u32, bool) {
        let same_input = self.input.is_some_and(|input| {
            input.origin == origin
                && input.ssrc == packet.ssrc
                && packet
                    .sequence
                    .wrapping_sub(input.last_sequence)
                    .wrapping_add(MAX_SEQUENCE_JUMP)
                    <= 2 * MAX_SEQUENCE_JUMP
                && packet
                    .timestamp
                    .wrapping_sub(input.last_timestamp)
                    .wrapping_add(MAX_TIMESTAMP_JUMP)
                    <= 2 * MAX_TIMESTAMP_JUMP
        });
        let rebased = !same_input;
        if rebased {
            let (sequence, timestamp) = match self.last {
                None => (self.start.sequence, self.start.timestamp),
                Some((sequence, timestamp, length, at)) => {
                    // Time passed since our last packet, in samples, but at
                    // least the length of that packet so the two do not
                    // overlap (RFC 3550 §5.1: the timestamp follows the
                    // sampling clock).
                    let elapsed = now.saturating_duration_since(at);
                    let ticks = (elapsed.as_micros() as u64 * CLOCK_RATE / 1_000_000)
                        .min(u64::from(u32::MAX / 2)) as u32;
                    (
                        sequence.wrapping_add(1),
                        timestamp.wrapping_add(ticks.max(length)),
                    )
                }
            };
            self.input = Some(InputMap {
                origin,
                ssrc: packet.ssrc,
                last_sequence: packet.sequence,
                last_timestamp: packet.timestamp,
                sequence_delta: sequence.wrapping_sub(packet.sequence),
                timestamp_delta: timestamp.wrapping_sub(packet.timestamp),
            });
        }
        let Some(input) = &mut self.input else {
            // Set just above.
            return (packet.sequence, packet.timestamp, packet.marker);
        };
        if rtp::sequence_after(packet.sequence, input.last_sequence) {
            input.last_sequence = packet.sequence;
        }
        if rtp::timestamp_after(packet.timestamp, input.last_timestamp) {
            input.last_timestamp = packet.timestamp;
        }
        let sequence = packet.sequence.wrapping_add(input.sequence_delta);
        let timestamp = packet.timestamp.wrapping_add(input.timestamp_delta);
        let newest = match self.last {
            None => true,
            Some((last_sequence, ..)) => rtp::sequence_after(sequence, last_sequence),
        };
        if newest {
            self.last = Some((sequence, timestamp, samples, now));
        }
        // The marker starts a talkspurt after a change of input (RFC 3551
        // §4.1). Not on a telephone-event (no samples): there it means the
        // start of an event (RFC 4733 §2.5.1.2), which only the sender knows.
        (
            sequence,
            timestamp,
            packet.marker || (rebased && samples > 0),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Latch {
    /// Sending to the SDP address, waiting for the first packet.
    Waiting,
    Latched(SocketAddr),
}

#[derive(Debug, Clone)]
struct LegState {
    media: LegMedia,
    latch: Latch,
    source: Source,
    out: OutStream,
    dtmf: DtmfReceiver,
    attachment: u32,
    /// The last valid packet from the peer (or the attachment).
    last_heard: Instant,
    expect_media: bool,
    timeout_reported: bool,
    /// Hand the peer's audio to the owner ([`RelayAction::Heard`]).
    listen: bool,
}

impl LegState {
    /// Where to send to the leg, if anywhere.
    fn destination(&self) -> Option<SocketAddr> {
        let address = match self.latch {
            Latch::Waiting => self.media.remote,
            Latch::Latched(address) => address,
        };
        (!address.ip().is_unspecified() && address.port() != 0).then_some(address)
    }
}

/// The relay of one call. See the module documentation.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    legs: [Option<LegState>; 2],
    stats: [LegStats; 2],
    attachments: u32,
    actions: VecDeque<RelayAction>,
}

/// How a received packet's payload type reads on its leg.
enum Kind {
    Audio,
    Event,
}

impl Relay {
    /// A relay for a call whose citizen's leg is known; it hears local
    /// packets (the IVR) until [`Relay::bridge`].
    pub fn new(config: RelayConfig, now: Instant, a: LegMedia, start: StreamStart) -> Relay {
        let mut relay = Relay::empty(config);
        relay.attach(now, Leg::A, a, start);
        relay
    }

    /// A relay with no leg yet (a callback: the operator's leg comes
    /// first, the citizen's when they answer).
    pub fn empty(config: RelayConfig) -> Relay {
        Relay {
            config,
            legs: [None, None],
            stats: [LegStats::default(), LegStats::default()],
            attachments: 0,
            actions: VecDeque::new(),
        }
    }

    /// Attaches a leg (the operator's phone answered) or updates one (a
    /// re-INVITE brought new SDP). An update keeps the stream we send to
    /// the leg and its latch, unless the SDP moved to another IP.
    pub fn attach(&mut self, now: Instant, leg: Leg, media: LegMedia, start: StreamStart) {
        if self.update(now, leg, media.clone()) {
            return;
        }
        self.attachments += 1;
        self.legs[leg.index()] = Some(LegState {
            media,
            latch: Latch::Waiting,
            source: if leg == Leg::A {
                Source::Local
            } else {
                Source::Peer
            },
            out: OutStream::new(start),
            dtmf: DtmfReceiver::new(),
            attachment: self.attachments,
            last_heard: now,
            expect_media: true,
            timeout_reported: false,
            listen: false,
        });
    }

    /// New SDP for an attached leg (a re-INVITE): the stream we send to it
    /// and its latch stay, unless the SDP moved to an IP the latched
    /// address is not on. Returns whether the leg was attached.
    pub fn update(&mut self, now: Instant, leg: Leg, media: LegMedia) -> bool {
        let Some(state) = &mut self.legs[leg.index()] else {
            return false;
        };
        if let Latch::Latched(address) = state.latch
            && !media.allows(address.ip())
        {
            state.latch = Latch::Waiting;
        }
        state.media = media;
        state.last_heard = now;
        state.timeout_reported = false;
        true
    }

    /// Detaches a leg (the operator hung up, or a transfer takes the call
    /// elsewhere). The other leg keeps its stream; with no peer it hears
    /// nothing until told otherwise.
    pub fn detach(&mut self, leg: Leg) {
        self.legs[leg.index()] = None;
    }

    /// Whether the leg is attached.
    pub fn has_leg(&self, leg: Leg) -> bool {
        self.legs[leg.index()].is_some()
    }

    /// Chooses what `leg` hears.
    pub fn set_source(&mut self, leg: Leg, source: Source) {
        if let Some(state) = &mut self.legs[leg.index()] {
            state.source = source;
        }
    }

    /// What `leg` hears.
    pub fn source(&self, leg: Leg) -> Option<Source> {
        self.legs[leg.index()].as_ref().map(|s| s.source)
    }

    /// Both legs hear each other.
    pub fn bridge(&mut self) {
        self.set_source(Leg::A, Source::Peer);
        self.set_source(Leg::B, Source::Peer);
    }

    /// Whether the peer's audio on `leg` is handed out as
    /// [`RelayAction::Heard`] (after the same checks as relayed audio:
    /// latched peer, negotiated payload type).
    pub fn listen(&mut self, leg: Leg, listen: bool) {
        if let Some(state) = &mut self.legs[leg.index()] {
            state.listen = listen;
        }
    }

    /// Whether silence from `leg` is a media timeout (not while it is on
    /// hold and may legitimately send nothing).
    pub fn expect_media(&mut self, now: Instant, leg: Leg, expect: bool) {
        if let Some(state) = &mut self.legs[leg.index()] {
            state.expect_media = expect;
            state.last_heard = now;
            state.timeout_reported = false;
        }
    }

    /// Where the leg's peer was latched, if it was.
    pub fn latched(&self, leg: Leg) -> Option<SocketAddr> {
        match self.legs[leg.index()].as_ref()?.latch {
            Latch::Latched(address) => Some(address),
            Latch::Waiting => None,
        }
    }

    /// The leg's counters (they outlive a detached leg).
    pub fn stats(&self, leg: Leg) -> &LegStats {
        &self.stats[leg.index()]
    }

    pub fn handle(&mut self, now: Instant, event: RelayEvent<'_>) {
        match event {
            RelayEvent::Received { leg, from, bytes } => self.received(now, leg, from, bytes),
            RelayEvent::Local { leg, bytes } => self.local(now, leg, bytes),
        }
    }

    pub fn poll(&mut self, now: Instant) -> Option<RelayAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        let timeout = self.config.media_timeout?;
        for leg in [Leg::A, Leg::B] {
            if let Some(state) = &mut self.legs[leg.index()]
                && state.expect_media
                && !state.timeout_reported
                && now >= state.last_heard + timeout
            {
                state.timeout_reported = true;
                return Some(RelayAction::MediaTimeout { leg });
            }
        }
        None
    }

    /// When [`Relay::poll`] has something to say without new input.
    pub fn next_deadline(&self) -> Option<Instant> {
        let timeout = self.config.media_timeout?;
        self.legs
            .iter()
            .flatten()
            .filter(|s| s.expect_media && !s.timeout_reported)
            .map(|s| s.last_heard + timeout)
            .min()
    }

    fn drop_packet(&mut self, leg: Leg, reason: DropReason) {
        self.stats[leg.index()].dropped[reason.index()] += 1;
    }

    fn received(&mut self, now: Instant, leg: Leg, from: SocketAddr, bytes: &[u8]) {
        let stats = &mut self.stats[leg.index()];
        stats.received_packets += 1;
        stats.received_bytes += bytes.len() as u64;
        let Some(state) = &mut self.legs[leg.index()] else {
            return self.drop_packet(leg, DropReason::NoLeg);
        };
        // RTCP and payloads we do not relay (comfort noise from a phone
        // with voice activity detection, RFC 3389) still show the latched
        // peer is alive: no media timeout for a caller who is silent.
        let from_peer = state.latch == Latch::Latched(from);
        let alive = |state: &mut LegState| {
            if from_peer {
                state.last_heard = now;
                state.timeout_reported = false;
            }
        };
        let packet = match rtp::parse(bytes) {
            Ok(packet) => packet,
            Err(rtp::RtpError::Rtcp(_)) => {
                alive(state);
                return self.drop_packet(leg, DropReason::Rtcp);
            }
            Err(_) => return self.drop_packet(leg, DropReason::Malformed),
        };
        let kind = if packet.payload_type == state.media.payload_type {
            Kind::Audio
        } else if Some(packet.payload_type) == state.media.telephone_event {
            Kind::Event
        } else {
            alive(state);
            return self.drop_packet(leg, DropReason::UnknownPayloadType);
        };

        // Latching (RFC 4961 §3 asks the peer to be symmetric; we learn its
        // address from what it sends, as RFC 7362 §4.2 describes).
        match state.latch {
            Latch::Latched(address) if address == from => {}
            Latch::Latched(_)
                if state.media.allows(from.ip())
                    && now.saturating_duration_since(state.last_heard)
                        >= self.config.relatch_after =>
            {
                state.latch = Latch::Latched(from);
                self.actions
                    .push_back(RelayAction::Latched { leg, address: from });
            }
            Latch::Waiting if state.media.allows(from.ip()) => {
                state.latch = Latch::Latched(from);
                self.actions
                    .push_back(RelayAction::Latched { leg, address: from });
            }
            _ => return self.drop_packet(leg, DropReason::Stranger),
        }
        state.last_heard = now;
        state.timeout_reported = false;
        let law = state.media.law;

        if let Kind::Audio = kind
            && state.listen
        {
            self.actions.push_back(RelayAction::Heard {
                leg,
                law,
                ssrc: packet.ssrc,
                timestamp: packet.timestamp,
                payload: packet.payload.to_vec(),
            });
        }
        if let Kind::Event = kind {
            match state.dtmf.receive(&packet) {
                Ok(Some(digit)) => self.actions.push_back(RelayAction::Digit { leg, digit }),
                Ok(None) => {}
                // A payload too short for an event: not relayed either.
                Err(_) => return self.drop_packet(leg, DropReason::Malformed),
            }
        }

        let origin = Origin::Peer(state.attachment);
        let other = leg.other();
        let Some(target) = &mut self.legs[other.index()] else {
            return self.drop_packet(leg, DropReason::NotBridged);
        };
        if target.source != Source::Peer {
            return self.drop_packet(leg, DropReason::NotBridged);
        }
        let (payload_type, to_law) = match kind {
            Kind::Audio => (target.media.payload_type, Some(target.media.law)),
            Kind::Event => match target.media.telephone_event {
                Some(pt) => (pt, None),
                None => return self.drop_packet(leg, DropReason::NoTelephoneEvent),
            },
        };
        let Some(to) = target.destination() else {
            return self.drop_packet(leg, DropReason::NoDestination);
        };
        let samples = match kind {
            Kind::Audio => packet.payload.len() as u32,
            Kind::Event => 0,
        };
        let (sequence, timestamp, marker) = target.out.map(now, origin, &packet, samples);
        let mut out = bytes.to_vec();
        if let Some(to_law) = to_law {
            let end = bytes.len() - usize::from(packet.padding);
            let start = end - packet.payload.len();
            law.transcode_in_place(to_law, &mut out[start..end]);
        }
        rtp::rewrite_header(
            &mut out,
            marker,
            payload_type,
            sequence,
            timestamp,
            target.out.ssrc,
        );
        let stats = &mut self.stats[other.index()];
        stats.sent_packets += 1;
        stats.sent_bytes += out.len() as u64;
        stats.relayed_packets += 1;
        stats.relayed_bytes += out.len() as u64;
        self.actions.push_back(RelayAction::Send {
            leg: other,
            to,
            bytes: out,
        });
    }

    fn local(&mut self, now: Instant, leg: Leg, bytes: &[u8]) {
        let Some(state) = &mut self.legs[leg.index()] else {
            return self.drop_packet(leg, DropReason::NoLeg);
        };
        let Ok(packet) = rtp::parse(bytes) else {
            return self.drop_packet(leg, DropReason::Malformed);
        };
        let from_law = match packet.payload_type {
            0 => Law::Ulaw,
            8 => Law::Alaw,
            _ => return self.drop_packet(leg, DropReason::NotSelected),
        };
        if state.source != Source::Local {
            return self.drop_packet(leg, DropReason::NotSelected);
        }
        let Some(to) = state.destination() else {
            return self.drop_packet(leg, DropReason::NoDestination);
        };
        let (sequence, timestamp, marker) =
            state
                .out
                .map(now, Origin::Local, &packet, packet.payload.len() as u32);
        let mut out = bytes.to_vec();
        let end = bytes.len() - usize::from(packet.padding);
        let start = end - packet.payload.len();
        from_law.transcode_in_place(state.media.law, &mut out[start..end]);
        rtp::rewrite_header(
            &mut out,
            marker,
            state.media.payload_type,
            sequence,
            timestamp,
            state.out.ssrc,
        );
        let stats = &mut self.stats[leg.index()];
        stats.sent_packets += 1;
        stats.sent_bytes += out.len() as u64;
        stats.local_packets += 1;
        self.actions.push_back(RelayAction::Send {
            leg,
            to,
            bytes: out,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::PacketBuilder;
    use proptest::prelude::*;

    const CALLER_SDP: &str = "192.0.2.10:4000";
    const CALLER_NAT: &str = "198.51.100.7:31000";
    const PHONE_SDP: &str = "10.0.0.20:5004";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn caller() -> LegMedia {
        LegMedia {
            remote: addr(CALLER_SDP),
            signalling_ip: None,
            law: Law::Ulaw,
            payload_type: 0,
            telephone_event: Some(101),
        }
    }

    fn phone() -> LegMedia {
        LegMedia {
            remote: addr(PHONE_SDP),
            // Behind NAT: the REGISTER/INVITE came from here.
            signalling_ip: Some("198.51.100.7".parse().unwrap()),
            law: Law::Alaw,
            payload_type: 8,
            telephone_event: Some(96),
        }
    }

    fn start(ssrc: u32) -> StreamStart {
        StreamStart {
            ssrc,
            sequence: 1000,
            timestamp: 50_000,
        }
    }

    fn audio(pt: u8, seq: u16, ts: u32, ssrc: u32, byte: u8) -> Vec<u8> {
        PacketBuilder::new(pt, seq, ts, ssrc)
            .build(&[byte; 160])
            .unwrap()
    }

    fn drain(relay: &mut Relay, now: Instant) -> Vec<RelayAction> {
        std::iter::from_fn(|| relay.poll(now)).collect()
    }

    fn sends(actions: &[RelayAction]) -> Vec<(Leg, SocketAddr, RtpPacket<'_>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                RelayAction::Send { leg, to, bytes } => {
                    Some((*leg, *to, rtp::parse(bytes).unwrap()))
                }
                _ => None,
            })
            .collect()
    }

    fn bridged(t0: Instant) -> Relay {
        let mut relay = Relay::new(RelayConfig::default(), t0, caller(), start(0xAAAA));
        relay.attach(t0, Leg::B, phone(), start(0xBBBB));
        relay.bridge();
        relay
    }

    #[test]
    fn latches_on_the_first_packet_from_the_expected_ip_and_relays_with_mapping() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        // The caller's packet comes from the SDP IP but another port.
        let from = addr("192.0.2.10:4002");
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &audio(0, 7, 1234, 0x5555, 0xFF),
            },
        );
        let actions = drain(&mut relay, t0);
        assert_eq!(
            actions[0],
            RelayAction::Latched {
                leg: Leg::A,
                address: from
            }
        );
        let sent = sends(&actions);
        assert_eq!(sent.len(), 1);
        let (leg, to, p) = &sent[0];
        // To the phone's SDP address (not latched yet), as PCMA with our SSRC.
        assert_eq!((*leg, *to), (Leg::B, addr(PHONE_SDP)));
        assert_eq!(
            (p.payload_type, p.ssrc, p.sequence, p.timestamp),
            (8, 0xBBBB, 1000, 50_000)
        );
        assert!(p.marker, "first packet of the stream");
        assert!(
            p.payload.iter().all(|&b| b == 0xD5),
            "µ-law silence became A-law silence"
        );
        assert_eq!(relay.latched(Leg::A), Some(from));

        // The phone answers from its NAT address (its signalling IP): latched,
        // and the caller gets it at the latched address, as PCMU.
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::B,
                from: addr(CALLER_NAT),
                bytes: &audio(8, 40, 9, 0x7777, 0xD5),
            },
        );
        let actions = drain(&mut relay, t0);
        assert_eq!(
            actions[0],
            RelayAction::Latched {
                leg: Leg::B,
                address: addr(CALLER_NAT)
            }
        );
        let sent = sends(&actions);
        assert_eq!((sent[0].0, sent[0].1), (Leg::A, from));
        assert_eq!((sent[0].2.payload_type, sent[0].2.ssrc), (0, 0xAAAA));
        // A-law has no zero level: its quietest code (+8) is µ-law 0xFE.
        assert!(sent[0].2.payload.iter().all(|&b| b == 0xFE));
        // Now the phone receives at its latched address.
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &audio(0, 8, 1394, 0x5555, 0xFF),
            },
        );
        let sent_actions = drain(&mut relay, t0);
        let sent = sends(&sent_actions);
        assert_eq!(sent[0].1, addr(CALLER_NAT));
        assert_eq!(
            (sent[0].2.sequence, sent[0].2.timestamp, sent[0].2.marker),
            (1001, 50_160, false)
        );
        assert_eq!(relay.stats(Leg::B).relayed_packets, 2);
        assert_eq!(relay.stats(Leg::B).relayed_bytes, 2 * 172);
        assert_eq!(relay.stats(Leg::A).received_packets, 2);
    }

    #[test]
    fn strangers_are_ignored_before_and_after_latching() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        let stranger = addr("203.0.113.66:4000");
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from: stranger,
                bytes: &audio(0, 1, 1, 1, 0),
            },
        );
        assert!(drain(&mut relay, t0).is_empty());
        let from = addr(CALLER_SDP);
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &audio(0, 2, 2, 1, 0),
            },
        );
        assert_eq!(sends(&drain(&mut relay, t0)).len(), 1);
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from: stranger,
                bytes: &audio(0, 3, 3, 1, 0),
            },
        );
        assert!(drain(&mut relay, t0).is_empty());
        // Same IP, other port, while the latched one is alive: a stranger too.
        let t1 = t0 + Duration::from_millis(500);
        relay.handle(
            t1,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr("192.0.2.10:9999"),
                bytes: &audio(0, 4, 4, 1, 0),
            },
        );
        assert!(drain(&mut relay, t1).is_empty());
        assert_eq!(relay.stats(Leg::A).dropped(DropReason::Stranger), 3);
        assert_eq!(relay.latched(Leg::A), Some(from));
    }

    #[test]
    fn relatches_after_the_latched_address_went_silent() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr(CALLER_SDP),
                bytes: &audio(0, 1, 1, 1, 0),
            },
        );
        drain(&mut relay, t0);
        let t1 = t0 + Duration::from_secs(3);
        let rebound = addr("192.0.2.10:4010");
        relay.handle(
            t1,
            RelayEvent::Received {
                leg: Leg::A,
                from: rebound,
                bytes: &audio(0, 2, 161, 1, 0),
            },
        );
        let actions = drain(&mut relay, t1);
        assert_eq!(
            actions[0],
            RelayAction::Latched {
                leg: Leg::A,
                address: rebound
            }
        );
        assert_eq!(relay.latched(Leg::A), Some(rebound));
        // A packet with an unknown payload type does not latch.
        let mut other = Relay::new(RelayConfig::default(), t0, caller(), start(1));
        other.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr(CALLER_SDP),
                bytes: &audio(13, 1, 1, 1, 0),
            },
        );
        assert_eq!(other.latched(Leg::A), None);
        assert_eq!(
            other.stats(Leg::A).dropped(DropReason::UnknownPayloadType),
            1
        );
    }

    #[test]
    fn malformed_rtcp_and_unattached_legs_are_counted() {
        let t0 = Instant::now();
        let mut relay = Relay::new(RelayConfig::default(), t0, caller(), start(1));
        let from = addr(CALLER_SDP);
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &[0x80, 0],
            },
        );
        let mut rtcp = audio(0, 1, 1, 1, 0);
        rtcp[1] = 201;
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &rtcp,
            },
        );
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::B,
                from,
                bytes: &audio(0, 1, 1, 1, 0),
            },
        );
        // No B yet: the caller's audio goes nowhere.
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &audio(0, 1, 1, 1, 0),
            },
        );
        assert!(sends(&drain(&mut relay, t0)).is_empty());
        let a = relay.stats(Leg::A);
        assert_eq!(a.dropped(DropReason::Malformed), 1);
        assert_eq!(a.dropped(DropReason::Rtcp), 1);
        assert_eq!(a.dropped(DropReason::NotBridged), 1);
        assert_eq!(relay.stats(Leg::B).dropped(DropReason::NoLeg), 1);
        assert_eq!(a.dropped_total(), 3);
        assert_eq!(a.received_packets, 3);
    }

    #[test]
    fn the_receiver_sees_one_stream_across_prompt_bridge_and_hold_music() {
        let t0 = Instant::now();
        let mut relay = Relay::new(RelayConfig::default(), t0, caller(), start(0xAAAA));
        let mut out = Vec::new();
        let mut now = t0;
        // IVR prompt: local packets (a player's own SSRC and numbers), PCMA
        // transcoded to the caller's PCMU.
        for i in 0..5u16 {
            relay.handle(
                now,
                RelayEvent::Local {
                    leg: Leg::A,
                    bytes: &audio(8, 300 + i, 8000 + 160 * u32::from(i), 0x1111, 0xD5),
                },
            );
            out.extend(drain(&mut relay, now));
            now += Duration::from_millis(20);
        }
        // The operator answers 100 ms later (silence in between).
        now += Duration::from_millis(100);
        relay.attach(now, Leg::B, phone(), start(0xBBBB));
        relay.bridge();
        let phone_nat = addr(CALLER_NAT);
        for i in 0..5u16 {
            relay.handle(
                now,
                RelayEvent::Received {
                    leg: Leg::B,
                    from: phone_nat,
                    bytes: &audio(
                        8,
                        60000 + i,
                        4_000_000_000 + 160 * u32::from(i),
                        0x2222,
                        0xD5,
                    ),
                },
            );
            out.extend(drain(&mut relay, now));
            now += Duration::from_millis(20);
        }
        // Hold: music again, from a new player.
        relay.set_source(Leg::A, Source::Local);
        // The phone keeps sending for a moment: not relayed.
        relay.handle(
            now,
            RelayEvent::Received {
                leg: Leg::B,
                from: phone_nat,
                bytes: &audio(8, 60005, 4_000_000_800, 0x2222, 0xD5),
            },
        );
        for i in 0..5u16 {
            relay.handle(
                now,
                RelayEvent::Local {
                    leg: Leg::A,
                    bytes: &audio(0, 7 + i, 160 * u32::from(i), 0x3333, 0xFF),
                },
            );
            out.extend(drain(&mut relay, now));
            now += Duration::from_millis(20);
        }
        let sent = sends(&out);
        assert_eq!(sent.len(), 15);
        assert!(
            sent.iter()
                .all(|(leg, _, p)| *leg == Leg::A && p.ssrc == 0xAAAA && p.payload_type == 0)
        );
        let seqs: Vec<u16> = sent.iter().map(|(_, _, p)| p.sequence).collect();
        assert_eq!(seqs, (1000..1015).collect::<Vec<u16>>());
        let ts: Vec<u32> = sent.iter().map(|(_, _, p)| p.timestamp).collect();
        // 20 ms apart within a source; across the gap, the time that passed.
        assert_eq!(&ts[..5], &[50_000, 50_160, 50_320, 50_480, 50_640]);
        assert_eq!(
            ts[5],
            50_640 + 160 + 800,
            "20 ms of the last frame plus 100 ms of silence"
        );
        assert_eq!(ts[10], ts[9] + 160);
        let markers: Vec<usize> = sent
            .iter()
            .enumerate()
            .filter(|(_, (_, _, p))| p.marker)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(markers, vec![0, 5, 10]);
        assert_eq!(relay.stats(Leg::A).local_packets, 10);
        assert_eq!(relay.stats(Leg::A).relayed_packets, 5);
        assert_eq!(relay.stats(Leg::B).dropped(DropReason::NotBridged), 1);
        // Local packets while bridged are not played.
        relay.bridge();
        relay.handle(
            now,
            RelayEvent::Local {
                leg: Leg::A,
                bytes: &audio(0, 12, 800, 0x3333, 0xFF),
            },
        );
        assert!(drain(&mut relay, now).is_empty());
        assert_eq!(relay.stats(Leg::A).dropped(DropReason::NotSelected), 1);
    }

    #[test]
    fn reordered_packets_keep_their_relative_numbers() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        let from = addr(CALLER_SDP);
        let mut seqs = Vec::new();
        for seq in [10u16, 12, 11, 13] {
            relay.handle(
                t0,
                RelayEvent::Received {
                    leg: Leg::A,
                    from,
                    bytes: &audio(0, seq, u32::from(seq) * 160, 5, 0xFF),
                },
            );
            for (_, _, p) in sends(&drain(&mut relay, t0)) {
                seqs.push((p.sequence, p.timestamp));
            }
        }
        assert_eq!(
            seqs,
            vec![
                (1000, 50_000),
                (1002, 50_320),
                (1001, 50_160),
                (1003, 50_480)
            ]
        );
    }

    #[test]
    fn a_new_ssrc_on_the_same_leg_rebases() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        let from = addr(CALLER_SDP);
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &audio(0, 10, 1600, 5, 0xFF),
            },
        );
        let t1 = t0 + Duration::from_millis(20);
        relay.handle(
            t1,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &audio(0, 40000, 99, 6, 0xFF),
            },
        );
        let actions = drain(&mut relay, t1);
        let sent = sends(&actions);
        let p = &sent[1].2;
        assert_eq!(
            (p.sequence, p.timestamp, p.marker, p.ssrc),
            (1001, 50_160, true, 0xBBBB)
        );
    }

    #[test]
    fn telephone_events_are_mapped_reported_and_dropped_when_not_negotiated() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        let from = addr(CALLER_SDP);
        let event = PacketBuilder::new(101, 20, 3200, 5)
            .marker(true)
            .build(&[5, 10, 0, 160])
            .unwrap();
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &event,
            },
        );
        let actions = drain(&mut relay, t0);
        assert!(actions.contains(&RelayAction::Digit {
            leg: Leg::A,
            digit: Digit {
                digit: '5',
                timestamp: 3200
            }
        }));
        let sent = sends(&actions);
        assert_eq!(sent[0].2.payload_type, 96);
        assert_eq!(
            sent[0].2.payload,
            &[5, 10, 0, 160],
            "the event is not transcoded"
        );
        // The same event's update: relayed, no second digit.
        let update = PacketBuilder::new(101, 21, 3200, 5)
            .build(&[5, 10, 1, 64])
            .unwrap();
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &update,
            },
        );
        let actions = drain(&mut relay, t0);
        assert_eq!(sends(&actions).len(), 1);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, RelayAction::Digit { .. }))
        );
        // A phone without telephone-event: the event is dropped, still reported.
        let mut plain = phone();
        plain.telephone_event = None;
        let mut relay = Relay::new(RelayConfig::default(), t0, caller(), start(1));
        relay.attach(t0, Leg::B, plain, start(2));
        relay.bridge();
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &event,
            },
        );
        let actions = drain(&mut relay, t0);
        assert!(sends(&actions).is_empty());
        assert!(
            actions
                .iter()
                .any(|a| matches!(a, RelayAction::Digit { .. }))
        );
        assert_eq!(relay.stats(Leg::A).dropped(DropReason::NoTelephoneEvent), 1);
        // A short event payload is malformed and not relayed.
        let short = PacketBuilder::new(101, 22, 3360, 5).build(&[5]).unwrap();
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from,
                bytes: &short,
            },
        );
        assert!(sends(&drain(&mut relay, t0)).is_empty());
        assert_eq!(relay.stats(Leg::A).dropped(DropReason::Malformed), 1);
    }

    #[test]
    fn padding_and_extensions_survive_transcoding() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        let mut b = PacketBuilder::new(0, 1, 1, 5);
        b.csrc = vec![9];
        b.extension = Some((0xBEDE, vec![1, 2, 3, 4]));
        b.padding = 4;
        let bytes = b.build(&[0xFF; 160]).unwrap();
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr(CALLER_SDP),
                bytes: &bytes,
            },
        );
        let actions = drain(&mut relay, t0);
        let sent = sends(&actions);
        let p = &sent[0].2;
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![9]);
        assert_eq!(p.extension.unwrap().data, &[1, 2, 3, 4]);
        assert_eq!(p.padding, 4);
        assert!(p.payload.iter().all(|&b| b == 0xD5));
    }

    #[test]
    fn media_timeout_once_per_silence_and_not_on_hold() {
        let t0 = Instant::now();
        let config = RelayConfig {
            media_timeout: Some(Duration::from_secs(30)),
            ..RelayConfig::default()
        };
        let mut relay = Relay::new(config, t0, caller(), start(1));
        assert_eq!(relay.next_deadline(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(relay.poll(t0 + Duration::from_secs(29)), None);
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(
            relay.poll(t1),
            Some(RelayAction::MediaTimeout { leg: Leg::A })
        );
        assert_eq!(relay.poll(t1), None);
        assert_eq!(relay.next_deadline(), None);
        // Media again re-arms it.
        relay.handle(
            t1,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr(CALLER_SDP),
                bytes: &audio(0, 1, 1, 1, 0),
            },
        );
        drain(&mut relay, t1);
        assert_eq!(relay.next_deadline(), Some(t1 + Duration::from_secs(30)));
        // Comfort noise (not relayed) from the latched peer keeps it alive;
        // from anyone else it does not.
        let t2 = t1 + Duration::from_secs(20);
        relay.handle(
            t2,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr(CALLER_SDP),
                bytes: &audio(13, 2, 161, 1, 0),
            },
        );
        assert_eq!(relay.next_deadline(), Some(t2 + Duration::from_secs(30)));
        relay.handle(
            t2 + Duration::from_secs(1),
            RelayEvent::Received {
                leg: Leg::A,
                from: addr("203.0.113.9:4000"),
                bytes: &audio(13, 3, 321, 1, 0),
            },
        );
        assert_eq!(relay.next_deadline(), Some(t2 + Duration::from_secs(30)));
        relay.expect_media(t1, Leg::A, false);
        assert_eq!(relay.next_deadline(), None);
        assert_eq!(relay.poll(t1 + Duration::from_secs(100)), None);
    }

    #[test]
    fn a_reinvite_to_another_ip_unlatches_and_a_transfer_keeps_the_callers_stream() {
        let t0 = Instant::now();
        let mut relay = bridged(t0);
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::B,
                from: addr(CALLER_NAT),
                bytes: &audio(8, 1, 1, 1, 0),
            },
        );
        drain(&mut relay, t0);
        let mut moved = phone();
        moved.remote = addr("10.0.0.99:6000");
        moved.signalling_ip = None;
        relay.attach(t0, Leg::B, moved.clone(), start(0xBBBB));
        assert_eq!(relay.latched(Leg::B), None);
        // Transfer: B goes, another phone comes; the caller's stream goes on.
        relay.detach(Leg::B);
        assert!(!relay.has_leg(Leg::B));
        relay.attach(t0, Leg::B, moved, start(0xCCCC));
        relay.bridge();
        let t1 = t0 + Duration::from_millis(20);
        relay.handle(
            t1,
            RelayEvent::Received {
                leg: Leg::B,
                from: addr("10.0.0.99:6000"),
                bytes: &audio(8, 1, 1, 1, 0),
            },
        );
        let actions = drain(&mut relay, t1);
        let sent = sends(&actions);
        assert_eq!(
            (sent[0].2.sequence, sent[0].2.ssrc, sent[0].2.marker),
            (1001, 0xAAAA, true)
        );
    }

    #[test]
    fn an_unspecified_sdp_address_sends_nothing_until_latched() {
        let t0 = Instant::now();
        let mut held = phone();
        held.remote = addr("0.0.0.0:5004");
        let mut relay = Relay::new(RelayConfig::default(), t0, caller(), start(1));
        relay.attach(t0, Leg::B, held, start(2));
        relay.bridge();
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr(CALLER_SDP),
                bytes: &audio(0, 1, 1, 1, 0xFF),
            },
        );
        assert!(sends(&drain(&mut relay, t0)).is_empty());
        assert_eq!(relay.stats(Leg::A).dropped(DropReason::NoDestination), 1);
        // The phone sends from its signalling IP: latched, and reachable.
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::B,
                from: addr(CALLER_NAT),
                bytes: &audio(8, 1, 1, 1, 0xD5),
            },
        );
        drain(&mut relay, t0);
        relay.handle(
            t0,
            RelayEvent::Received {
                leg: Leg::A,
                from: addr(CALLER_SDP),
                bytes: &audio(0, 2, 161, 1, 0xFF),
            },
        );
        let actions = drain(&mut relay, t0);
        let sent = sends(&actions);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1, addr(CALLER_NAT));
        // The first packet the phone gets starts our stream where it should.
        assert_eq!(sent[0].2.sequence, 1000);
    }

    #[test]
    fn from_negotiated_takes_g711_only() {
        let negotiated = Negotiated {
            codec: crate::sip::sdp::Codec::pcma(),
            telephone_event: Some(101),
            remote: addr(CALLER_SDP),
            direction: crate::sip::sdp::Direction::SendRecv,
            ptime: None,
        };
        let media = LegMedia::from_negotiated(&negotiated, None).unwrap();
        assert_eq!(
            (media.law, media.payload_type, media.telephone_event),
            (Law::Alaw, 8, Some(101))
        );
        let mut g722 = negotiated.clone();
        g722.codec.name = "G722".into();
        assert_eq!(LegMedia::from_negotiated(&g722, None), None);
    }

    #[test]
    fn config_reads_milliseconds_and_zero_turns_the_timeout_off() {
        let config: RelayConfig =
            serde_json::from_str(r#"{"relatch_after": 500, "media_timeout": 0}"#).unwrap();
        assert_eq!(config.relatch_after, Duration::from_millis(500));
        assert_eq!(config.media_timeout, None);
        assert!(serde_json::from_str::<RelayConfig>(r#"{"relatch": 1}"#).is_err());
    }

    proptest! {
        /// Whatever arrives on a bridged leg, in any order and from
        /// anywhere, the relay neither panics nor sends what it cannot
        /// parse, and every packet is either sent on or counted as dropped.
        #[test]
        fn every_received_packet_is_relayed_or_counted(
            packets in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40), any::<u16>(), 0u8..3),
                1..60),
        ) {
            let t0 = Instant::now();
            let mut relay = bridged(t0);
            let mut sent = 0u64;
            for (i, (from_caller, junk, seq, kind)) in packets.iter().enumerate() {
                let now = t0 + Duration::from_millis(20 * i as u64);
                let bytes = match kind {
                    0 => junk.clone(),
                    1 => audio(0, *seq, u32::from(*seq) * 160, 3, 0xFF),
                    _ => PacketBuilder::new(101, *seq, 0, 3).build(&[1, 0x80, 0, 160]).unwrap(),
                };
                let from = if *from_caller { addr(CALLER_SDP) } else { addr("203.0.113.1:1") };
                relay.handle(now, RelayEvent::Received { leg: Leg::A, from, bytes: &bytes });
                for action in drain(&mut relay, now) {
                    if let RelayAction::Send { bytes, .. } = action {
                        prop_assert!(rtp::parse(&bytes).is_ok());
                        sent += 1;
                    }
                }
            }
            let a = relay.stats(Leg::A);
            prop_assert_eq!(a.received_packets, packets.len() as u64);
            prop_assert_eq!(a.received_packets, sent + a.dropped_total());
            prop_assert_eq!(relay.stats(Leg::B).relayed_packets, sent);
        }

        /// Prompts, bridged audio, hold music and silences in any order:
        /// the caller sees one stream, sequence numbers one apart, timestamps
        /// at least a frame apart and never more than the wall clock allows,
        /// one SSRC, and a marker exactly where the source changed.
        #[test]
        fn the_caller_sees_one_stream_whatever_the_sources(
            steps in proptest::collection::vec((0u8..4, 1u16..6), 1..40),
        ) {
            let t0 = Instant::now();
            let mut relay = bridged(t0);
            let mut now = t0;
            let mut peer = (500u16, 9000u32);
            let mut local = (7u16, 0u32, 0x3000u32);
            let mut sent: Vec<(Instant, Vec<u8>)> = Vec::new();
            let mut last_source = None;
            let mut expected_markers = Vec::new();
            for (what, n) in steps {
                match what {
                    0 => relay.set_source(Leg::A, Source::Peer),
                    1 => {
                        relay.set_source(Leg::A, Source::Local);
                        // A new player (a new SSRC) now and then.
                        local.2 += u32::from(n % 2);
                    }
                    _ => {}
                }
                for _ in 0..n {
                    let source = relay.source(Leg::A);
                    let bytes = if what == 3 {
                        None
                    } else if source == Some(Source::Peer) {
                        peer = (peer.0.wrapping_add(1), peer.1.wrapping_add(160));
                        Some((Leg::B, audio(8, peer.0, peer.1, 0x2222, 0xD5)))
                    } else {
                        local = (local.0.wrapping_add(1), local.1.wrapping_add(160), local.2);
                        Some((Leg::A, audio(0, local.0, local.1, local.2, 0xFF)))
                    };
                    if let Some((leg, bytes)) = bytes {
                        let event = if leg == Leg::B {
                            RelayEvent::Received { leg, from: addr(CALLER_NAT), bytes: &bytes }
                        } else {
                            RelayEvent::Local { leg, bytes: &bytes }
                        };
                        relay.handle(now, event);
                        let input = (source, if leg == Leg::A { local.2 } else { 0 });
                        expected_markers.push(last_source != Some(input));
                        last_source = Some(input);
                    }
                    for action in drain(&mut relay, now) {
                        if let RelayAction::Send { leg: Leg::A, bytes, .. } = action {
                            sent.push((now, bytes));
                        }
                    }
                    now += Duration::from_millis(20);
                }
            }
            let out: Vec<(Instant, RtpPacket<'_>)> =
                sent.iter().map(|(t, b)| (*t, rtp::parse(b).unwrap())).collect();
            prop_assert_eq!(out.len(), expected_markers.len());
            for (i, (_, p)) in out.iter().enumerate() {
                prop_assert_eq!(p.ssrc, 0xAAAA);
                prop_assert_eq!(p.payload_type, 0);
                prop_assert_eq!(p.marker, expected_markers[i], "packet {}", i);
            }
            for pair in out.windows(2) {
                let ((t0, a), (t1, b)) = (&pair[0], &pair[1]);
                prop_assert_eq!(b.sequence, a.sequence.wrapping_add(1));
                let ticks = b.timestamp.wrapping_sub(a.timestamp);
                let wall = (t1.duration_since(*t0).as_micros() / 125) as u32;
                prop_assert!(ticks >= 160, "timestamps {} apart", ticks);
                prop_assert!(ticks <= wall.max(160), "{} ticks in {} of wall clock", ticks, wall);
            }
        }

        /// A long stream through the relay comes out with consecutive
        /// sequence numbers and timestamps 160 apart, across the 16-bit
        /// and 32-bit wrap of the input.
        #[test]
        fn an_in_order_stream_stays_consecutive(seq0 in any::<u16>(), ts0 in any::<u32>(), n in 1usize..300) {
            let t0 = Instant::now();
            let mut relay = bridged(t0);
            let mut last: Option<(u16, u32)> = None;
            for i in 0..n {
                let now = t0 + Duration::from_millis(20 * i as u64);
                let seq = seq0.wrapping_add(i as u16);
                let ts = ts0.wrapping_add(160 * i as u32);
                relay.handle(now, RelayEvent::Received { leg: Leg::A, from: addr(CALLER_SDP), bytes: &audio(0, seq, ts, 3, 0xFF) });
                let actions = drain(&mut relay, now);
                let sent = sends(&actions);
                prop_assert_eq!(sent.len(), 1);
                let p = &sent[0].2;
                if let Some((s, t)) = last {
                    prop_assert_eq!(p.sequence, s.wrapping_add(1));
                    prop_assert_eq!(p.timestamp, t.wrapping_add(160));
                    prop_assert!(!p.marker);
                }
                last = Some((p.sequence, p.timestamp));
            }
        }
    }
}
