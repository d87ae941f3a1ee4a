//! The voice channel's media layer, sans-IO: RTP, G.711, DTMF, prompts and
//! music, and the relay that bridges a call's two legs.
//!
//! Nothing here opens a socket, reads the clock or spawns a task. The
//! server's voice shell owns one UDP socket per call leg and a timer; it
//! passes datagrams and `now` in and carries out the actions that come back:
//!
//! ```text
//!  UDP socket (leg A: citizen)          UDP socket (leg B: operator's phone)
//!        │ datagram                               ▲ Send { leg: B, to, bytes }
//!        ▼                                        │
//!   relay::Relay  handle(now, Received{..}) · poll(now) · next_deadline()
//!        ▲ Local{..}          │ Digit{..}
//!        │                    ▼
//!   player::Player       ivr::IvrSession / announce::QueueAnnouncer
//!   (prompts, music)     (menu choices, callback key)
//! ```
//!
//! | module | what | reference |
//! | --- | --- | --- |
//! | [`rtp`] | packet parse/build: fixed header, CSRC, extension, padding | RFC 3550 §5.1, §5.3.1 |
//! | [`relay`] | latching, SSRC/sequence/timestamp rewriting, payload-type mapping, counters | RFC 3550 §5.1, §7; RFC 4961 |
//! | [`g711`] | PCMU/PCMA encode/decode and transcoding | ITU-T G.711 |
//! | [`dtmf`] | telephone-event payload, receiver, sender; SIP INFO bodies | RFC 4733 §2 |
//! | [`wav`] | 8 kHz mono WAV: 16-bit PCM, µ-law, A-law | RIFF WAVE |
//! | [`player`] | prompts in 20 ms frames; the sans-IO player of playlists | RFC 3551 §4.5.14 |
//! | [`announce`] | "you are number 3…": prompts for numbers; the queue announcer | |
//! | [`call`] | one call's media from answer to hang-up: relay, player, IVR, announcer joined | |
//! | [`fuzzing`] | invariants the fuzz targets and tests check | |
//!
//! The IVR menu logic ([`crate::ivr`]) speaks in prompt names that
//! [`player::PromptLibrary`] resolves. docs/media.md shows how the server
//! puts the pieces together for a call.

pub mod announce;
pub mod call;
pub mod dtmf;
pub mod fuzzing;
pub mod g711;
pub mod player;
pub mod relay;
pub mod rtp;
pub mod wav;
