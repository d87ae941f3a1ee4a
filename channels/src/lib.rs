//! ccu-channels: the adapters between the outside world and the ccu
//! conversation hub.
//!
//! Each channel turns its protocol into hub calls (a new conversation, a
//! message, a hang-up, a DTMF choice) and carries out what the hub decides
//! (ring an operator, bridge, deliver a chat line). The protocol cores are
//! sans-IO: they take bytes and `now` and return what to do, and the server
//! crate owns the sockets and the clock.
//!
//! So far: [`sip`], the voice channel's SIP layer: parsing, validation,
//! digest authentication, transactions, the registrar, SDP offer/answer,
//! and the endpoint that runs them on UDP and TCP sockets
//! ([`sip::endpoint::SipEndpoint`]); [`media`], the voice channel's RTP
//! relay, G.711, DTMF, prompts and announcements; and [`ivr`], the menu
//! tree and the session that walks a caller through it.
//!
//! ```
//! use ccu_channels::sip::validate::{Inbound, Policy, receive_datagram};
//!
//! // A datagram with no Via cannot be answered: it is dropped.
//! let inbound = receive_datagram(b"INVITE sip:alan@jasomi.com\r\n\r\n", &Policy::default(), "t");
//! assert!(matches!(inbound, Inbound::Drop(_)));
//! ```

pub mod call;
pub mod ivr;
pub mod media;
pub mod sip;
