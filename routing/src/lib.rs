//! ccu-routing: the routing engine of ccu, pure and deterministic.
//!
//! (Crate docs are completed below once the pub API settles.)
pub mod calendar;
pub mod engine;
pub mod event;
pub mod model;
pub mod stats;

pub use engine::{
    ConversationStatus, ConversationView, Engine, InvariantViolation, OperatorView,
    RestoredConversation, RoutingError,
};
pub use event::{Command, EndReason, Event, RequeueReason, TransferTarget, WithdrawReason};
pub use model::*;
pub use stats::{OperatorsByStatus, PeriodStats, QueueStats};
