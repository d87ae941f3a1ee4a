//! What goes into the engine ([`Event`]) and what comes out ([`Command`]).

use serde::{Deserialize, Serialize};

use crate::model::{
    Channel, ClosedAction, ConversationId, Language, MaxWaitAction, OfferId, OperatorId, Presence,
    QueueId, Timestamp,
};

/// Something that happened, fed to [`crate::Engine::handle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A conversation asks for an operator.
    ConversationQueued {
        conversation: ConversationId,
        queue: QueueId,
        channel: Channel,
        /// `None`: any operator will do.
        language: Option<Language>,
        /// When the citizen started waiting, if earlier than `now` (e.g. the
        /// time spent in the IVR counts). `None`: now.
        enqueued_at: Option<Timestamp>,
    },
    /// The operator logs in and becomes available.
    OperatorLogin {
        operator: OperatorId,
    },
    /// The operator logs out; pending offers are withdrawn, conversations in
    /// hand stay assigned until they end.
    OperatorLogout {
        operator: OperatorId,
    },
    /// The operator (or a supervisor) changes presence.
    OperatorPresence {
        operator: OperatorId,
        presence: Presence,
    },
    OfferAccepted {
        offer: OfferId,
    },
    OfferRejected {
        offer: OfferId,
    },
    /// The channel adapter saw the offer go unanswered (e.g. the phone rang
    /// out). The engine also times offers out by itself.
    OfferTimedOut {
        offer: OfferId,
    },
    /// The citizen hung up or left (`Abandoned` while waiting or offered;
    /// `Completed` once assigned).
    ConversationEnded {
        conversation: ConversationId,
        reason: EndReason,
    },
    /// Move a conversation to another queue (it keeps its age) or to a named
    /// operator (it waits for that operator only).
    Transfer {
        conversation: ConversationId,
        target: TransferTarget,
    },
    /// The citizen asked to be called back (a caller's key while waiting):
    /// the conversation keeps its place, no longer waits for a maximum
    /// wait, and its offers say `callback`. A call is still on the line
    /// (the confirmation): it is offered once [`Event::CallerLeft`] says
    /// the caller hung up.
    CallbackRequested {
        conversation: ConversationId,
    },
    /// The caller of a callback kept while they were on the line (the
    /// callback key, a maximum wait with `callback` or `voicemail`) hung
    /// up: the conversation is offered from its place. Nothing for any
    /// other conversation.
    CallerLeft {
        conversation: ConversationId,
    },
    /// A callback did not reach the citizen (no answer, busy, failed) or
    /// was cut before they answered: the conversation leaves `operator`,
    /// who held it (no wrap-up: nobody talked; an error if it is not theirs
    /// any more), stays a callback in its place, and is offered again from
    /// `not_before` (the retry delay; now or earlier: at once), to this
    /// operator only after the re-offer delay.
    CallbackRetry {
        conversation: ConversationId,
        operator: OperatorId,
        not_before: Timestamp,
    },
    /// The operator finished after-contact work, with a disposition code.
    WrapUpDone {
        operator: OperatorId,
        /// `None`: every pending wrap-up of the operator.
        conversation: Option<ConversationId>,
        disposition: Option<String>,
    },
    /// Time passes: fires due timers (offer timeouts, overflow, maximum
    /// wait, wrap-up end, announcements, opening hours).
    Tick,
}

/// How a conversation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Abandoned,
    Completed,
}

/// Where a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTarget {
    Queue(QueueId),
    Operator(OperatorId),
}

/// Why an offer is taken back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawReason {
    /// Ring-all: another operator accepted first.
    AnsweredElsewhere,
    /// The citizen left.
    Abandoned,
    /// The operator logged out or changed presence.
    OperatorUnavailable,
    /// The offer's accept timeout passed (the operator missed it).
    TimedOut,
    /// The conversation was transferred.
    Transferred,
}

/// Why a conversation went back in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequeueReason {
    Rejected,
    Missed,
    OperatorUnavailable,
    /// A callback to try again ([`Event::CallbackRetry`]): offered from its
    /// `not_before` on.
    CallbackRetry,
}

/// Something the server must do, returned by [`crate::Engine::poll`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Ring / show the conversation to the operator until `expires_at`.
    Offer {
        offer: OfferId,
        conversation: ConversationId,
        operator: OperatorId,
        queue: QueueId,
        channel: Channel,
        expires_at: Timestamp,
        /// The citizen asked to be called back: on accept, dial them.
        callback: bool,
    },
    /// Stop ringing / hide the offer.
    Withdraw {
        offer: OfferId,
        conversation: ConversationId,
        operator: OperatorId,
        reason: WithdrawReason,
    },
    /// Connect the conversation to the operator.
    Assign {
        conversation: ConversationId,
        operator: OperatorId,
        queue: QueueId,
        /// Milliseconds from the original enqueue time to the answer.
        waited_ms: i64,
    },
    /// The conversation is back in line at its original position.
    Requeued {
        conversation: ConversationId,
        queue: QueueId,
        reason: RequeueReason,
    },
    /// Overflow moved the conversation to another queue.
    Overflow {
        conversation: ConversationId,
        from: QueueId,
        to: QueueId,
    },
    /// Tell the citizen where they are in line. `estimated_wait_secs` is
    /// `None` when nobody is staffed for the queue.
    Announce {
        conversation: ConversationId,
        queue: QueueId,
        position: u32,
        estimated_wait_secs: Option<u32>,
    },
    /// The conversation reached the queue's maximum wait. For `Callback` it
    /// stays in line; otherwise it left the engine.
    MaxWaitReached {
        conversation: ConversationId,
        queue: QueueId,
        action: MaxWaitAction,
    },
    /// The queue is closed: the conversation gets the closed action and
    /// (unless the action is `Queue`) left the engine.
    QueueClosed {
        conversation: ConversationId,
        queue: QueueId,
        action: ClosedAction,
    },
    /// The operator missed `missed` offers in a row and is now not ready.
    OperatorAutoPaused { operator: OperatorId, missed: u32 },
    /// After-contact work began; it ends at `until` unless done earlier.
    WrapUpStarted {
        operator: OperatorId,
        conversation: ConversationId,
        until: Timestamp,
    },
    /// After-contact work ended (to record the disposition).
    WrapUpEnded {
        operator: OperatorId,
        conversation: ConversationId,
        disposition: Option<String>,
        timed_out: bool,
    },
}
