//! Live statistics per queue: since local midnight and over a sliding
//! window. Counters are updated in O(1) per event; the window keeps compact
//! samples and subtracts them as they age out, so a snapshot never rescans
//! history.

use std::collections::VecDeque;

use serde::Serialize;

use crate::model::{QueueId, ServiceLevelFormula};

/// One thing that happened, as the window stores it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sample {
    /// A conversation arrived in the queue.
    Offered,
    /// Answered after waiting `wait_ms`; `in_target` against the queue target.
    Answered {
        wait_ms: i64,
        in_target: bool,
    },
    /// Abandoned after waiting `wait_ms`.
    Abandoned {
        wait_ms: i64,
        short: bool,
        in_target: bool,
    },
    /// A conversation was handled for `ms` (talk plus after-contact work).
    Handled {
        ms: i64,
    },
    /// Part of a handling time added later (the wrap-up of a conversation
    /// already counted in `Handled`).
    ExtraHandle {
        ms: i64,
    },
    MaxWaitExit,
    OverflowedOut,
    Closed,
    /// Operator-milliseconds staffed for the queue (for occupancy).
    Staffed {
        ms: i64,
    },
}

/// Additive counters, for a day or a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    offered: i64,
    answered: i64,
    answered_in_target: i64,
    abandoned: i64,
    short_abandoned: i64,
    abandoned_in_target: i64,
    answer_wait_ms: i64,
    abandon_wait_ms: i64,
    handled: i64,
    handle_ms: i64,
    max_wait_exits: i64,
    overflowed_out: i64,
    closed: i64,
    staffed_ms: i64,
}

impl Counters {
    fn apply(&mut self, s: Sample, sign: i64) {
        match s {
            Sample::Offered => self.offered += sign,
            Sample::Answered { wait_ms, in_target } => {
                self.answered += sign;
                self.answered_in_target += sign * i64::from(in_target);
                self.answer_wait_ms += sign * wait_ms;
            }
            Sample::Abandoned {
                wait_ms,
                short,
                in_target,
            } => {
                self.abandoned += sign;
                self.abandon_wait_ms += sign * wait_ms;
                self.short_abandoned += sign * i64::from(short);
                self.abandoned_in_target += sign * i64::from(in_target);
            }
            Sample::Handled { ms } => {
                self.handled += sign;
                self.handle_ms += sign * ms;
            }
            Sample::ExtraHandle { ms } => self.handle_ms += sign * ms,
            Sample::MaxWaitExit => self.max_wait_exits += sign,
            Sample::OverflowedOut => self.overflowed_out += sign,
            Sample::Closed => self.closed += sign,
            Sample::Staffed { ms } => self.staffed_ms += sign * ms,
        }
    }

    fn period(&self, formula: ServiceLevelFormula, open_staffed_ms: i64) -> PeriodStats {
        let ratio = |num: i64, den: i64| (den > 0).then(|| num as f64 / den as f64);
        let service_level = match formula {
            ServiceLevelFormula::ExcludeShortAbandons => ratio(
                self.answered_in_target,
                self.answered + self.abandoned - self.short_abandoned,
            ),
            ServiceLevelFormula::AllAbandonsCount => {
                ratio(self.answered_in_target, self.answered + self.abandoned)
            }
            ServiceLevelFormula::AnsweredOnly => ratio(self.answered_in_target, self.answered),
            ServiceLevelFormula::AbandonsWithinTargetPositive => ratio(
                self.answered_in_target + self.abandoned_in_target,
                self.answered + self.abandoned,
            ),
        };
        PeriodStats {
            offered: self.offered,
            answered: self.answered,
            answered_in_target: self.answered_in_target,
            abandoned: self.abandoned,
            short_abandoned: self.short_abandoned,
            handled: self.handled,
            max_wait_exits: self.max_wait_exits,
            overflowed_out: self.overflowed_out,
            closed: self.closed,
            service_level,
            asa_secs: ratio(self.answer_wait_ms, self.answered * 1000),
            avg_abandon_wait_secs: ratio(self.abandon_wait_ms, self.abandoned * 1000),
            aht_secs: ratio(self.handle_ms, self.handled * 1000),
            occupancy: ratio(self.handle_ms, self.staffed_ms + open_staffed_ms),
        }
    }
}

/// Figures for one period (today, or the sliding window).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodStats {
    /// Conversations that arrived in the queue.
    pub offered: i64,
    pub answered: i64,
    pub answered_in_target: i64,
    pub abandoned: i64,
    /// Abandoned before the short-abandon threshold.
    pub short_abandoned: i64,
    /// Conversations completed (their handle time is known).
    pub handled: i64,
    pub max_wait_exits: i64,
    pub overflowed_out: i64,
    /// Turned away because the queue was closed.
    pub closed: i64,
    /// Per the configured [`ServiceLevelFormula`]; `None` before any data.
    pub service_level: Option<f64>,
    /// Average speed of answer.
    pub asa_secs: Option<f64>,
    /// Average wait of abandoned conversations (their wait is recorded).
    pub avg_abandon_wait_secs: Option<f64>,
    /// Average handle time (talk plus wrap-up).
    pub aht_secs: Option<f64>,
    /// Handle time over staffed time of the operators eligible for the
    /// queue. An operator staffed for several queues counts in each, so
    /// per-queue occupancies do not add up to the operator's.
    pub occupancy: Option<f64>,
}

/// Operators eligible for a queue, by what they are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OperatorsByStatus {
    pub idle: u32,
    pub busy: u32,
    pub wrap_up: u32,
    pub on_break: u32,
    pub not_ready: u32,
    pub offline: u32,
}

/// A snapshot of one queue's live statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    pub queue: QueueId,
    pub waiting: u32,
    /// Of the longest-waiting conversation, from its original enqueue time.
    pub longest_wait_secs: f64,
    pub today: PeriodStats,
    pub window: PeriodStats,
    pub window_secs: u32,
    pub operators: OperatorsByStatus,
}

/// The running state behind [`QueueStats`].
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueCounters {
    today: Counters,
    window: Counters,
    samples: VecDeque<(i64, Sample)>,
    /// Logged-in operators statically eligible for the queue, and since when
    /// that count holds (staffed time is integrated piecewise).
    staffed: i64,
    staffed_since: i64,
}

impl QueueCounters {
    pub(crate) fn record(&mut self, now: i64, window_ms: i64, s: Sample) {
        self.today.apply(s, 1);
        self.window.apply(s, 1);
        self.samples.push_back((now, s));
        self.expire(now, window_ms);
    }

    fn expire(&mut self, now: i64, window_ms: i64) {
        while let Some(&(t, s)) = self.samples.front() {
            if t > now - window_ms {
                break;
            }
            self.window.apply(s, -1);
            self.samples.pop_front();
        }
    }

    /// The staffed count changes by `delta` at `now`.
    pub(crate) fn staffed_change(&mut self, now: i64, window_ms: i64, delta: i64) {
        self.close_staffed_chunk(now, window_ms);
        self.staffed = (self.staffed + delta).max(0);
    }

    fn close_staffed_chunk(&mut self, now: i64, window_ms: i64) {
        let ms = (now - self.staffed_since).max(0) * self.staffed;
        self.staffed_since = now;
        if ms > 0 {
            self.record(now, window_ms, Sample::Staffed { ms });
        }
    }

    pub(crate) fn staffed(&self) -> i64 {
        self.staffed
    }

    /// Midnight: the daily counters start again.
    pub(crate) fn new_day(&mut self, now: i64, window_ms: i64) {
        self.close_staffed_chunk(now, window_ms);
        self.today = Counters::default();
    }

    /// Average handle time over the window, else today, in seconds.
    pub(crate) fn recent_aht_secs(&self) -> Option<f64> {
        let c = if self.window.handled > 0 {
            &self.window
        } else {
            &self.today
        };
        (c.handled > 0).then(|| c.handle_ms as f64 / c.handled as f64 / 1000.0)
    }

    pub(crate) fn snapshot(
        &mut self,
        now: i64,
        window_ms: i64,
        formula: ServiceLevelFormula,
    ) -> (PeriodStats, PeriodStats) {
        self.expire(now, window_ms);
        let open = (now - self.staffed_since).max(0) * self.staffed;
        let open_in_window = (now - self.staffed_since.max(now - window_ms)).max(0) * self.staffed;
        (
            self.today.period(formula, open),
            self.window.period(formula, open_in_window),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counters_forget_samples_older_than_the_window() {
        let mut q = QueueCounters::default();
        q.record(0, 1000, Sample::Offered);
        q.record(500, 1000, Sample::Offered);
        q.record(1200, 1000, Sample::Offered);
        let (today, window) = q.snapshot(1200, 1000, ServiceLevelFormula::default());
        assert_eq!(today.offered, 3);
        assert_eq!(window.offered, 2);
    }

    #[test]
    fn service_level_variants_follow_their_formulas() {
        let mut c = Counters::default();
        c.apply(
            Sample::Answered {
                wait_ms: 1000,
                in_target: true,
            },
            1,
        );
        c.apply(
            Sample::Answered {
                wait_ms: 60_000,
                in_target: false,
            },
            1,
        );
        c.apply(
            Sample::Abandoned {
                wait_ms: 2000,
                short: true,
                in_target: true,
            },
            1,
        );
        c.apply(
            Sample::Abandoned {
                wait_ms: 90_000,
                short: false,
                in_target: false,
            },
            1,
        );
        let sl = |f| c.period(f, 0).service_level;
        assert_eq!(
            sl(ServiceLevelFormula::ExcludeShortAbandons),
            Some(1.0 / 3.0)
        );
        assert_eq!(sl(ServiceLevelFormula::AllAbandonsCount), Some(0.25));
        assert_eq!(sl(ServiceLevelFormula::AnsweredOnly), Some(0.5));
        assert_eq!(
            sl(ServiceLevelFormula::AbandonsWithinTargetPositive),
            Some(0.5)
        );
        assert_eq!(
            c.period(ServiceLevelFormula::default(), 0).asa_secs,
            Some(30.5)
        );
    }
}
