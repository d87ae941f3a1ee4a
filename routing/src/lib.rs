//! # ccu-routing: who answers which conversation, and when
//!
//! The routing engine of ccu (Contact Center Unico). Calls, chats, e-mails
//! and web forms wait in queues; operators with skills, languages and
//! per-channel capacity take them. This crate decides every offer.
//!
//! ## Where it sits
//!
//! ```text
//! channel adapters -> hub (persists first) -> router actor -> ccu-routing
//!                                                  ^  |
//!                     store, bus, consoles  <------+  +-- Commands
//! ```
//!
//! The server's router actor is the single writer of routing state: it feeds
//! [`Event`]s to an [`Engine`] with the current time, executes the
//! [`Command`]s that come out (ring an operator, connect, withdraw, announce
//! a position, play the closed message...) and sleeps until
//! [`Engine::next_deadline`], when it sends [`Event::Tick`].
//!
//! The crate is *pure* ("sans-IO"): no async runtime, no sockets, no clock.
//! `now` is an argument, so the same events always give the same commands;
//! tests move a fake clock by hand and the simulator runs days of traffic in
//! a second.
//!
//! ## Example
//!
//! ```
//! use ccu_routing::*;
//!
//! let mut engine = Engine::new(EngineConfig::default());
//! // Queue "anagrafe" (registry office) needs skill 1 at level 5 or more.
//! let anagrafe = QueueId(1);
//! engine
//!     .add_queue(QueueConfig::new(
//!         anagrafe,
//!         OrgId(1),
//!         vec![SkillRequirement { skill: SkillId(1), min_level: 5 }],
//!     ))
//!     .unwrap();
//! let anna = OperatorId(7);
//! engine
//!     .upsert_operator(OperatorProfile::new(
//!         anna,
//!         OrgId(1),
//!         vec![SkillLevel { skill: SkillId(1), level: 8 }],
//!     ))
//!     .unwrap();
//!
//! let t0 = Timestamp::from_secs(1_795_507_200);
//! engine.handle(t0, Event::OperatorLogin { operator: anna }).unwrap();
//! engine
//!     .handle(
//!         t0.plus_secs(2),
//!         Event::ConversationQueued {
//!             conversation: ConversationId(100),
//!             queue: anagrafe,
//!             channel: Channel::Voice,
//!             language: None,
//!             enqueued_at: None,
//!         },
//!     )
//!     .unwrap();
//! let Some(Command::Offer { offer, operator, .. }) = engine.poll() else {
//!     panic!("Anna is free and skilled: she is offered the call");
//! };
//! assert_eq!(operator, anna);
//!
//! engine.handle(t0.plus_secs(5), Event::OfferAccepted { offer }).unwrap();
//! assert!(matches!(
//!     engine.poll(),
//!     Some(Command::Assign { waited_ms: 3000, .. })
//! ));
//! ```
//!
//! ## The API the server uses
//!
//! * Configuration: [`Engine::new`] with [`EngineConfig`] (aging,
//!   autopause, reoffer delay, short-abandon threshold, service-level
//!   formula, statistics window, time zone); [`Engine::add_queue`] with
//!   [`QueueConfig`] (organization and sharing, skills, priority,
//!   [`Strategy`], offer timeout, wrap-up, target, [`OverflowStep`]s,
//!   maximum wait, [`calendar::OpeningHours`], closed action, announcement
//!   period) and [`Engine::update_queue`] on a reload;
//!   [`Engine::upsert_operator`] with [`OperatorProfile`] (skills
//!   1-10, languages, [`Capacity`] per channel and the call-with-chats rule).
//! * Driving: [`Engine::handle`]`(now, event)`, then [`Engine::poll`] or
//!   [`Engine::drain`] for commands, and [`Engine::next_deadline`] for the
//!   next [`Event::Tick`]. Errors ([`RoutingError`]) leave state unchanged.
//! * Start-up: [`Engine::restore`] with presences and
//!   [`RestoredConversation`]s from the store; waiting conversations keep
//!   their enqueue time and order, offers in flight are made again.
//! * Reading: [`Engine::queue_stats`] ([`QueueStats`]: waiting, longest
//!   wait, offered, answered, abandoned and short abandons, service level,
//!   ASA, AHT, occupancy, operators by status, for today and a sliding
//!   window), [`Engine::estimated_wait`], [`Engine::position`],
//!   [`Engine::conversation`], [`Engine::operator`].
//! * Planning: [`erlang`] (Erlang B, C and A; [`erlang::staffing`] for
//!   `ccu erlang`) and [`sim`] ([`sim::simulate`] for `ccu simulate`, taking
//!   [`sim::SimParams`] and returning a serialisable [`sim::SimReport`]).
//!
//! How a decision stays fast with tens of thousands waiting is explained in
//! [`engine`]; figures are in `docs/performance.md`.

pub mod calendar;
pub mod engine;
pub mod erlang;
pub mod event;
pub mod model;
pub mod sim;
pub mod stats;

pub use engine::{
    ConversationStatus, ConversationView, Engine, InvariantViolation, OperatorView,
    RestoredConversation, RoutingError,
};
pub use event::{Command, EndReason, Event, RequeueReason, TransferTarget, WithdrawReason};
pub use model::*;
pub use stats::{OperatorsByStatus, PeriodStats, QueueStats};
