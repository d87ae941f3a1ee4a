//! Simulation of the real [`Engine`] in virtual time, for `ccu simulate`.
//!
//! Calls arrive as a Poisson process, operators accept offers at once and
//! talk for an exponential time; with a patience, each waiting caller hangs
//! up after an exponential time unless answered first (Erlang A). Every
//! decision is the engine's own, so the simulator checks the engine against
//! queueing theory ([`crate::erlang`]) and answers "what if" questions
//! about staffing and strategies.
//!
//! Deterministic: the same parameters (seed included) give the same report.
//! The random numbers come from a small xoshiro256++ generator seeded by
//! SplitMix64, so the crate needs no random-number dependency.
//!
//! ```
//! use ccu_routing::sim::{simulate, SimParams};
//!
//! let report = simulate(&SimParams {
//!     operators: 14,
//!     arrivals_per_hour: 200.0,
//!     aht_seconds: 180.0,
//!     target_seconds: 20.0,
//!     hours: 5.0,
//!     seed: 7,
//!     ..SimParams::default()
//! })
//! .unwrap();
//! assert!(report.offered > 500);
//! assert_eq!(report.offered, report.answered + report.abandoned);
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, RoutingError};
use crate::erlang::{self, ErlangError, Metrics, QueueModel};
use crate::event::{Command, EndReason, Event};
use crate::model::{
    ConversationId, EngineConfig, OperatorId, OperatorProfile, OrgId, QueueConfig, QueueId,
    SkillId, SkillLevel, SkillRequirement, Strategy, Timestamp,
};

/// What to simulate. Field names match the `ccu simulate` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimParams {
    pub operators: u32,
    pub arrivals_per_hour: f64,
    pub aht_seconds: f64,
    pub target_seconds: f64,
    /// Simulated hours of arrivals (after the warm-up).
    pub hours: f64,
    pub seed: u64,
    /// Mean patience of waiting callers; `None`: nobody hangs up.
    pub patience_seconds: Option<f64>,
    pub strategy: Strategy,
    /// Hours simulated first and left out of the figures, so that the
    /// empty start does not flatter the service level.
    pub warmup_hours: f64,
    /// The measured period is cut into this many batches; their spread
    /// gives the standard errors in the report (batch means).
    pub batches: u32,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            operators: 14,
            arrivals_per_hour: 200.0,
            aht_seconds: 180.0,
            target_seconds: 20.0,
            hours: 8.0,
            seed: 1,
            patience_seconds: None,
            strategy: Strategy::LongestIdle,
            warmup_hours: 0.5,
            batches: 20,
        }
    }
}

/// What the simulation measured, with the closed form for comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Calls arriving in the measured period.
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    /// Answered within the target over offered (abandons count against).
    pub service_level: f64,
    /// Fraction of offered calls that found no free operator.
    pub p_wait: f64,
    /// Average wait of answered calls.
    pub asa_seconds: f64,
    /// Average talk time of answered calls.
    pub aht_seconds: f64,
    /// Operators' busy time over their staffed time in the measured period.
    pub occupancy: f64,
    pub abandon_rate: f64,
    /// Standard errors (batch means) of the figures above.
    pub service_level_std_error: f64,
    pub p_wait_std_error: f64,
    pub asa_std_error: f64,
    pub abandon_rate_std_error: f64,
    /// Events fed to the engine.
    pub engine_events: u64,
    /// Erlang C (or A with patience) for the same parameters.
    pub theory: Option<Metrics>,
}

const MAX_OPERATORS: u32 = 100_000;
const MAX_CALLS: f64 = 1e8;
const MAX_HOURS: f64 = 1e6;
const MAX_SECONDS: f64 = 1e9;

/// Why a simulation cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("{what} must be a positive finite number, got {value}")]
    NotPositive { what: &'static str, value: f64 },
    #[error("at least one batch is needed")]
    NoBatches,
    #[error(
        "simulation too large: at most {MAX_OPERATORS} operators, {MAX_CALLS} calls, \
         {MAX_HOURS} hours, and {MAX_SECONDS} s for any duration"
    )]
    TooLarge,
    #[error("the engine refused an event: {0}")]
    Engine(#[from] RoutingError),
    #[error("closed form: {0}")]
    Erlang(#[from] ErlangError),
}

/// xoshiro256++ (Blackman and Vigna), seeded through SplitMix64 so that
/// nearby seeds give unrelated streams.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Exponential with the given mean (inverse transform).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.uniform()).ln()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SimEvent {
    Arrival,
    End(u64),
    Patience(u64),
}

#[derive(Debug, Clone, Copy, Default)]
struct Call {
    arrived: i64,
    answered: Option<i64>,
    abandoned: bool,
    /// An accept is on its way (ring-all rings several operators).
    accepting: bool,
    talk_ms: i64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Batch {
    offered: u64,
    answered: u64,
    in_target: u64,
    waited: u64,
    abandoned: u64,
    wait_ms: i64,
}

fn positive(what: &'static str, value: f64) -> Result<f64, SimError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(SimError::NotPositive { what, value })
    }
}

/// Runs the simulation.
pub fn simulate(params: &SimParams) -> Result<SimReport, SimError> {
    positive("operators", f64::from(params.operators))?;
    positive("arrivals per hour", params.arrivals_per_hour)?;
    positive("handle time", params.aht_seconds)?;
    positive("hours", params.hours)?;
    if let Some(p) = params.patience_seconds {
        positive("patience", p)?;
    }
    // Bounds that keep virtual time within i64 milliseconds and memory
    // within reason, whatever the command line says.
    let calls = params.arrivals_per_hour * (params.hours + params.warmup_hours.max(0.0));
    let too_large = params.operators > MAX_OPERATORS
        || calls > MAX_CALLS
        || params.hours + params.warmup_hours.max(0.0) > MAX_HOURS
        || 3600.0 / params.arrivals_per_hour > MAX_SECONDS
        || params.aht_seconds > MAX_SECONDS
        || params.target_seconds > MAX_SECONDS
        || params.patience_seconds.is_some_and(|p| p > MAX_SECONDS);
    if too_large {
        return Err(SimError::TooLarge);
    }
    if !(params.target_seconds.is_finite() && params.target_seconds >= 0.0) {
        return Err(SimError::NotPositive {
            what: "target seconds",
            value: params.target_seconds,
        });
    }
    if !(params.warmup_hours.is_finite() && params.warmup_hours >= 0.0) {
        return Err(SimError::NotPositive {
            what: "warm-up hours",
            value: params.warmup_hours,
        });
    }
    if params.batches == 0 {
        return Err(SimError::NoBatches);
    }

    let queue = QueueId(1);
    let mut engine = Engine::new(EngineConfig {
        // One queue: priorities and exclusions play no part.
        autopause_after_misses: 0,
        ..EngineConfig::default()
    });
    let mut q = QueueConfig::new(
        queue,
        OrgId(1),
        vec![SkillRequirement {
            skill: SkillId(1),
            min_level: 1,
        }],
    );
    q.strategy = params.strategy;
    q.target_secs = params
        .target_seconds
        .round()
        .clamp(0.0, f64::from(u32::MAX)) as u32;
    // Operators accept at once; the timeout never fires.
    q.offer_timeout_secs = 3600;
    engine.add_queue(q)?;
    // Virtual time starts at a fixed instant; only differences matter.
    let start: i64 = 1_767_225_600_000;
    let t0 = Timestamp(start);
    for i in 0..params.operators {
        engine.upsert_operator(OperatorProfile::new(
            OperatorId(u64::from(i)),
            OrgId(1),
            // Levels vary so that best-skill has something to choose.
            vec![SkillLevel {
                skill: SkillId(1),
                level: (i % 10) as u8 + 1,
            }],
        ))?;
        engine.handle(
            t0,
            Event::OperatorLogin {
                operator: OperatorId(u64::from(i)),
            },
        )?;
    }

    let mut rng = Rng::new(params.seed);
    let ms = |secs: f64| (secs * 1000.0).round() as i64;
    let mean_gap = 3600.0 / params.arrivals_per_hour;
    let measure_from = start + ms(params.warmup_hours * 3600.0);
    let stop_arrivals = measure_from + ms(params.hours * 3600.0);
    let batch_ms = ((stop_arrivals - measure_from) / i64::from(params.batches)).max(1);
    let target_ms = ms(params.target_seconds);

    let mut calls: Vec<Call> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(i64, u64, SimEvent)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |heap: &mut BinaryHeap<_>, at: i64, ev: SimEvent| {
        seq += 1;
        heap.push(Reverse((at, seq, ev)));
    };
    push(
        &mut heap,
        start + ms(rng.exponential(mean_gap)),
        SimEvent::Arrival,
    );
    let mut events = 0u64;
    let mut busy_ms: i64 = 0;
    let mut pending: Vec<Event> = Vec::new();

    loop {
        let next_sim = heap.peek().map(|Reverse((t, _, _))| *t);
        let next_engine = engine.next_deadline().map(|t| t.0);
        let (now, event) = match (next_sim, next_engine) {
            (None, None) => break,
            (Some(s), Some(e)) if e < s => (e, Event::Tick),
            (None, Some(e)) => (e, Event::Tick),
            (Some(_), _) => {
                let Some(Reverse((t, _, ev))) = heap.pop() else {
                    break;
                };
                let event = match ev {
                    SimEvent::Arrival => {
                        if t >= stop_arrivals {
                            continue;
                        }
                        let id = calls.len() as u64;
                        calls.push(Call {
                            arrived: t,
                            ..Call::default()
                        });
                        push(
                            &mut heap,
                            t + ms(rng.exponential(mean_gap)),
                            SimEvent::Arrival,
                        );
                        if let Some(p) = params.patience_seconds {
                            push(
                                &mut heap,
                                t + ms(rng.exponential(p)),
                                SimEvent::Patience(id),
                            );
                        }
                        Event::ConversationQueued {
                            conversation: ConversationId(id),
                            queue,
                            channel: crate::model::Channel::Voice,
                            language: None,
                            enqueued_at: None,
                        }
                    }
                    SimEvent::End(id) => Event::ConversationEnded {
                        conversation: ConversationId(id),
                        reason: EndReason::Completed,
                    },
                    SimEvent::Patience(id) => {
                        let Some(call) = calls.get_mut(id as usize) else {
                            continue;
                        };
                        if call.answered.is_some() {
                            continue;
                        }
                        call.abandoned = true;
                        Event::ConversationEnded {
                            conversation: ConversationId(id),
                            reason: EndReason::Abandoned,
                        }
                    }
                };
                (t, event)
            }
        };
        pending.push(event);
        while let Some(event) = pending.pop() {
            events += 1;
            engine.handle(Timestamp(now), event)?;
            for cmd in engine.drain() {
                match cmd {
                    // The operator answers at once; with ring-all the first
                    // one rung answers and the engine withdraws the others.
                    Command::Offer {
                        offer,
                        conversation,
                        ..
                    } => {
                        if let Some(call) = calls.get_mut(conversation.0 as usize)
                            && !call.accepting
                        {
                            call.accepting = true;
                            pending.push(Event::OfferAccepted { offer });
                        }
                    }
                    Command::Assign { conversation, .. } => {
                        let id = conversation.0;
                        if let Some(call) = calls.get_mut(id as usize) {
                            let talk = ms(rng.exponential(params.aht_seconds)).max(1);
                            call.answered = Some(now);
                            call.talk_ms = talk;
                            // Busy time inside the measured period.
                            let end = now + talk;
                            busy_ms += (end.min(stop_arrivals) - now.max(measure_from)).max(0);
                            push(&mut heap, end, SimEvent::End(id));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    let mut batches = vec![Batch::default(); params.batches as usize];
    let (mut answered, mut abandoned, mut talk_ms) = (0u64, 0u64, 0i64);
    for call in calls.iter().filter(|c| c.arrived >= measure_from) {
        let b = (((call.arrived - measure_from) / batch_ms) as usize).min(batches.len() - 1);
        let batch = &mut batches[b];
        batch.offered += 1;
        if let Some(at) = call.answered {
            let wait = at - call.arrived;
            batch.answered += 1;
            batch.wait_ms += wait;
            batch.in_target += u64::from(wait <= target_ms);
            batch.waited += u64::from(wait > 0);
            answered += 1;
            talk_ms += call.talk_ms;
        } else if call.abandoned {
            batch.abandoned += 1;
            batch.waited += 1;
            abandoned += 1;
        }
    }
    let total = batches.iter().fold(Batch::default(), |mut acc, b| {
        acc.offered += b.offered;
        acc.answered += b.answered;
        acc.in_target += b.in_target;
        acc.waited += b.waited;
        acc.abandoned += b.abandoned;
        acc.wait_ms += b.wait_ms;
        acc
    });
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let sl = |b: &Batch| ratio(b.in_target as f64, b.offered as f64);
    let pw = |b: &Batch| ratio(b.waited as f64, b.offered as f64);
    let asa = |b: &Batch| ratio(b.wait_ms as f64 / 1000.0, b.answered as f64);
    let ab = |b: &Batch| ratio(b.abandoned as f64, b.offered as f64);
    let std_error = |f: &dyn Fn(&Batch) -> f64| {
        let n = batches.len() as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let values: Vec<f64> = batches.iter().map(f).collect();
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (var / n).sqrt()
    };
    let staffed_ms = f64::from(params.operators) * (stop_arrivals - measure_from) as f64;
    let theory = erlang::metrics(&QueueModel {
        arrivals_per_hour: params.arrivals_per_hour,
        aht_secs: params.aht_seconds,
        target_secs: params.target_seconds,
        operators: params.operators,
        patience_secs: params.patience_seconds,
    })
    .ok();
    Ok(SimReport {
        offered: total.offered,
        answered,
        abandoned,
        service_level: sl(&total),
        p_wait: pw(&total),
        asa_seconds: asa(&total),
        aht_seconds: ratio(talk_ms as f64 / 1000.0, answered as f64),
        occupancy: ratio(busy_ms as f64, staffed_ms),
        abandon_rate: ab(&total),
        service_level_std_error: std_error(&sl),
        p_wait_std_error: std_error(&pw),
        asa_std_error: std_error(&asa),
        abandon_rate_std_error: std_error(&ab),
        engine_events: events,
        theory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_roughly_uniform() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut r = Rng::new(1);
        let n = 200_000;
        let mean = (0..n).map(|_| r.exponential(3.0)).sum::<f64>() / f64::from(n);
        // Standard error of the mean is 3 / sqrt(n) = 0.0067.
        assert!((mean - 3.0).abs() < 0.03, "{mean}");
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn the_same_parameters_give_the_same_report() {
        let p = SimParams {
            hours: 2.0,
            patience_seconds: Some(120.0),
            ..SimParams::default()
        };
        assert_eq!(simulate(&p).unwrap(), simulate(&p).unwrap());
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let p = SimParams {
            operators: 0,
            ..SimParams::default()
        };
        assert!(matches!(simulate(&p), Err(SimError::NotPositive { .. })));
        let p = SimParams {
            batches: 0,
            ..SimParams::default()
        };
        assert_eq!(simulate(&p), Err(SimError::NoBatches));
        let p = SimParams {
            hours: 1e300,
            ..SimParams::default()
        };
        assert_eq!(simulate(&p), Err(SimError::TooLarge));
    }
}
