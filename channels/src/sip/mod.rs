//! SIP for the voice channel of ccu (issue 5): messages, parsing,
//! validation, digest, transactions, the registrar and SDP, all sans-IO,
//! and [`endpoint`], the async shell that runs them over UDP and TCP.
//!
//! # Where it sits
//!
//! ```text
//!  UDP/TCP socket ──bytes──▶ validate::receive_datagram / receive_stream
//!                                 │ Inbound::Request / Response   → transactions → dialogs, registrar, B2BUA
//!                                 │ Inbound::Reply(400/505/513…)  → straight back to the socket
//!                                 └ Inbound::Drop                 → counted, logged, forgotten
//! ```
//!
//! Nothing here but [`endpoint`] opens a socket, spawns a task or reads
//! the clock: the shell does the IO and passes `now` in. That keeps
//! every behaviour testable byte for byte and deterministic.
//!
//! # Why our own SIP layer
//!
//! DEPENDENCIES.md points at `rsipstack`. We write this layer ourselves
//! because:
//! - our style (STYLE.md §2–3) wants parsers that are functions over bytes,
//!   `parse(&[u8]) -> Result<Message, ParseError>` with an `Incomplete`
//!   outcome for streams, and transaction state machines that take `now`
//!   and return actions; rsipstack's transport, transaction and timer
//!   layers are tokio-bound and not usable that way;
//! - the RFC 4475 torture messages must produce exact outcomes (which
//!   message is a `400`, a `505`, a `416`, which one is dropped, which one is
//!   valid); that needs control of every parsing decision;
//! - rsipstack's API changes between minor releases, and the parts we need
//!   (RFC 3261 §7/§25 grammar, §8.2 validation, §17 transactions, digest)
//!   are a bounded, well-specified amount of code.
//!
//! # Example
//!
//! ```
//! use ccu_channels::sip::{message::{Message, StatusCode}, parse::parse};
//!
//! let bytes = b"OPTIONS sip:ccu.example SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK776asdhds\r\n\
//! Max-Forwards: 70\r\nFrom: <sip:probe@example.net>;tag=1928301774\r\n\
//! To: <sip:ccu.example>\r\nCall-ID: a84b4c76e66710\r\nCSeq: 63104 OPTIONS\r\n\
//! Content-Length: 0\r\n\r\n";
//! let Ok(Message::Request(request)) = parse(bytes) else { panic!() };
//! let ok = request.response(StatusCode::OK, "f3a9");
//! assert!(ok.to_bytes().starts_with(b"SIP/2.0 200 OK\r\n"));
//! ```

pub mod dialog;
pub mod digest;
pub mod endpoint;
pub mod fuzzing;
pub mod header;
pub mod message;
pub mod parse;
pub mod phone;
pub mod rate;
pub mod registrar;
pub mod reply;
pub(crate) mod scan;
pub mod sdp;
pub mod transaction;
pub mod transport;
pub mod trunk;
pub mod uri;
pub mod validate;

pub use message::{
    Header, HeaderName, Headers, Message, Method, Request, Response, StatusCode, Version,
};
pub use parse::{Limits, ParseError, parse, parse_stream};
pub use uri::{Host, Param, SipUri, Uri};
