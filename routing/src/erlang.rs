//! Closed-form queueing models for staffing: Erlang B, Erlang C (M/M/N)
//! and Erlang A (M/M/N+M, callers with exponential patience).
//!
//! These are the yardsticks the simulator ([`crate::sim`]) is checked
//! against, and what `ccu erlang` prints for a supervisor planning shifts.
//!
//! Erlang C uses the numerically stable Erlang B recursion. Erlang A has no
//! elementary closed form; it is computed exactly from the birth-death
//! chain of the number of callers in the system (truncated where the
//! remaining probability is below 1e-15), with service-level by
//! uniformization of the waiting stages. Both agree when patience grows
//! without bound.
//!
//! ```
//! use ccu_routing::erlang::{metrics, QueueModel};
//!
//! // 100 calls per 30 minutes, 3-minute calls, 14 operators, 20 s target.
//! let m = metrics(&QueueModel {
//!     arrivals_per_hour: 200.0,
//!     aht_secs: 180.0,
//!     target_secs: 20.0,
//!     operators: 14,
//!     patience_secs: None,
//! })
//! .unwrap();
//! assert!((m.service_level - 0.8884).abs() < 5e-5);
//! assert!((m.p_wait - 0.1741).abs() < 5e-5);
//! ```

use serde::{Deserialize, Serialize};

/// Beyond any contact center; keeps the recursions short.
const MAX_OPERATORS: u32 = 1_000_000;

/// Why a model cannot be evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErlangError {
    #[error("{what} must be a positive finite number, got {value}")]
    NotPositive { what: &'static str, value: f64 },
    #[error("at most {max} operators are supported, got {got}")]
    TooManyOperators { got: u32, max: u32 },
    #[error("target service level must be between 0 and 1, got {0}")]
    BadTarget(f64),
    #[error("no staffing up to {max} operators reaches service level {target}")]
    Unreachable { target: f64, max: u32 },
}

/// A single queue as the formulas see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueModel {
    pub arrivals_per_hour: f64,
    pub aht_secs: f64,
    /// Service-level target: answered within this many seconds.
    pub target_secs: f64,
    pub operators: u32,
    /// Mean patience of a waiting caller; `None`: nobody hangs up (Erlang C).
    pub patience_secs: Option<f64>,
}

/// What the formulas predict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub operators: u32,
    /// Offered traffic in erlangs (arrival rate times handle time).
    pub traffic_erlangs: f64,
    /// Probability that a caller has to wait at all.
    pub p_wait: f64,
    /// Answered within the target over all offered calls (abandons count
    /// against it). Without patience every call is answered, so this is
    /// P(wait <= target).
    pub service_level: f64,
    /// Average speed of answer over answered calls, seconds.
    pub asa_secs: f64,
    /// Busy fraction of the operators.
    pub occupancy: f64,
    /// Fraction of callers who hang up before an answer (0 for Erlang C).
    pub abandon_rate: f64,
}

fn positive(what: &'static str, value: f64) -> Result<f64, ErlangError> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(ErlangError::NotPositive { what, value })
    }
}

/// Erlang B: the probability that all `n` servers are busy with `a` erlangs
/// offered and no waiting room (blocked calls are lost).
pub fn erlang_b(n: u32, a: f64) -> f64 {
    // B(0) = 1, B(k) = a B(k-1) / (k + a B(k-1)): stable for any size.
    let mut b = 1.0;
    for k in 1..=n {
        b = a * b / (f64::from(k) + a * b);
    }
    b
}

/// Erlang C: the probability of waiting with `n` operators and `a` erlangs;
/// 1 when the queue is unstable (`n <= a`).
pub fn erlang_c(n: u32, a: f64) -> f64 {
    let nf = f64::from(n);
    if nf <= a {
        return 1.0;
    }
    let b = erlang_b(n, a);
    nf * b / (nf - a * (1.0 - b))
}

/// Predicts a queue's figures: Erlang C without patience, Erlang A with it.
pub fn metrics(model: &QueueModel) -> Result<Metrics, ErlangError> {
    let lambda = positive("arrivals per hour", model.arrivals_per_hour)? / 3600.0;
    let aht = positive("handle time", model.aht_secs)?;
    let target = model.target_secs;
    if !target.is_finite() || target < 0.0 {
        return Err(ErlangError::NotPositive {
            what: "target seconds",
            value: target,
        });
    }
    positive("operators", f64::from(model.operators))?;
    if model.operators > MAX_OPERATORS {
        return Err(ErlangError::TooManyOperators {
            got: model.operators,
            max: MAX_OPERATORS,
        });
    }
    match model.patience_secs {
        None => Ok(erlang_c_metrics(model.operators, lambda, aht, target)),
        Some(p) => Ok(erlang_a_metrics(
            model.operators,
            lambda,
            aht,
            positive("patience", p)?,
            target,
        )),
    }
}

fn erlang_c_metrics(n: u32, lambda: f64, aht: f64, target: f64) -> Metrics {
    let a = lambda * aht;
    let nf = f64::from(n);
    let c = erlang_c(n, a);
    let (service_level, asa) = if nf > a {
        (
            1.0 - c * (-(nf - a) * target / aht).exp(),
            c * aht / (nf - a),
        )
    } else {
        // Unstable: the line grows without bound.
        (0.0, f64::INFINITY)
    };
    Metrics {
        operators: n,
        traffic_erlangs: a,
        p_wait: c,
        service_level,
        asa_secs: asa,
        occupancy: (a / nf).min(1.0),
        abandon_rate: 0.0,
    }
}

fn erlang_a_metrics(n: u32, lambda: f64, aht: f64, patience: f64, target: f64) -> Metrics {
    let mu = 1.0 / aht;
    let theta = 1.0 / patience;
    let nf = f64::from(n);
    // Stationary distribution of the number in system, in logs to survive
    // thousands of operators: pi_k = pi_{k-1} * lambda / death_k.
    let mut log_pi: Vec<f64> = vec![0.0];
    let mut max_log = 0.0f64;
    let mut k = 0u64;
    loop {
        k += 1;
        let kf = k as f64;
        let death = if kf <= nf {
            kf * mu
        } else {
            nf * mu + (kf - nf) * theta
        };
        let Some(&prev) = log_pi.last() else { break };
        let next = prev + (lambda / death).ln();
        log_pi.push(next);
        max_log = max_log.max(next);
        // Past the mode and negligible: stop. The cap bounds the work for
        // absurd inputs (patience of years); the tail beyond is ignored.
        if (kf > nf && next < max_log - 36.0 && lambda < death) || k > 5_000_000 {
            break;
        }
    }
    let weights: Vec<f64> = log_pi.iter().map(|l| (l - max_log).exp()).collect();
    let total: f64 = weights.iter().sum();
    let pi: Vec<f64> = weights.iter().map(|w| w / total).collect();
    let n_us = n as usize;
    let p_wait: f64 = pi.iter().skip(n_us).sum();
    // Abandonment balance: rate theta * E[queue] = lambda * P(abandon).
    let mean_queue: f64 = pi
        .iter()
        .enumerate()
        .skip(n_us)
        .map(|(k, p)| (k - n_us) as f64 * p)
        .sum();
    let abandon_rate = (theta * mean_queue / lambda).min(1.0);

    // A caller arriving with j callers ahead passes stage j, j-1, ..., 0;
    // stage i ends at rate N mu + (i+1) theta, by progress (N mu + i theta)
    // or by the caller's own abandonment (theta).
    let queue_states: Vec<f64> = pi.iter().skip(n_us).copied().collect();
    let mut served_wait_sum = 0.0; // E[W 1{served}]
    for (j, &p) in queue_states.iter().enumerate() {
        let mut pass = 1.0;
        let mut mean = 0.0;
        for i in 0..=j {
            let progress = nf * mu + i as f64 * theta;
            let rate = progress + theta;
            pass *= progress / rate;
            mean += 1.0 / rate;
        }
        served_wait_sum += p * pass * mean;
    }
    let answered = 1.0 - abandon_rate;
    let asa = if answered > 0.0 {
        served_wait_sum / answered
    } else {
        f64::INFINITY
    };
    let within = uniformized_served_within(&queue_states, nf * mu, theta, target);
    let service_level = (1.0 - p_wait) + within;
    Metrics {
        operators: n,
        traffic_erlangs: lambda * aht,
        p_wait,
        service_level: service_level.clamp(0.0, 1.0),
        asa_secs: asa,
        occupancy: (lambda * answered * aht / nf).min(1.0),
        abandon_rate,
    }
}

/// P(a waiting caller is answered within `t`), summed over the arrival
/// states `mass[j]` (j callers ahead), by uniformization: a Poisson number
/// of steps of rate `big`, each step moving mass one stage ahead, to
/// abandonment, or nowhere.
fn uniformized_served_within(mass: &[f64], n_mu: f64, theta: f64, t: f64) -> f64 {
    if mass.is_empty() || t <= 0.0 {
        return 0.0;
    }
    let big = n_mu + mass.len() as f64 * theta + theta;
    let lt = big * t;
    let steps = (lt + 12.0 * lt.sqrt() + 30.0).ceil() as usize;
    let mut m = mass.to_vec();
    let mut served = 0.0;
    let mut log_w = -lt; // log Poisson(lt; 0)
    // P(served by step s) accumulates; weight by P(steps after t >= s):
    // sum_s P(N(t) = s) * served_by(s).
    let mut result = 0.0;
    for s in 0..=steps {
        if s > 0 {
            let mut next = vec![0.0; m.len()];
            for (j, &x) in m.iter().enumerate() {
                if x == 0.0 {
                    continue;
                }
                let progress = (n_mu + j as f64 * theta) / big;
                let stay = 1.0 - progress - theta / big;
                next[j] += x * stay.max(0.0);
                if j == 0 {
                    served += x * progress;
                } else {
                    next[j - 1] += x * progress;
                }
            }
            m = next;
            log_w += lt.ln() - (s as f64).ln();
        }
        result += log_w.exp() * served;
    }
    result
}

/// The fewest operators reaching `target_service_level` for the model (its
/// `operators` field is ignored), with the figures at that staffing.
pub fn staffing(model: &QueueModel, target_service_level: f64) -> Result<Metrics, ErlangError> {
    if !(0.0..1.0).contains(&target_service_level) {
        return Err(ErlangError::BadTarget(target_service_level));
    }
    let a = positive("arrivals per hour", model.arrivals_per_hour)? / 3600.0
        * positive("handle time", model.aht_secs)?;
    // Generous: square-root staffing never needs more than a few sqrt(a)
    // above the load for any target below 1.
    let max = (a + 20.0 * a.sqrt() + 50.0).min(f64::from(MAX_OPERATORS)) as u32;
    let start = if model.patience_secs.is_some() {
        1
    } else {
        (a.floor() as u32).saturating_add(1)
    };
    // Service level rises with every operator added: binary search.
    let at = |n: u32| {
        metrics(&QueueModel {
            operators: n,
            ..model.clone()
        })
    };
    let (mut lo, mut hi) = (start, max);
    if at(hi)?.service_level < target_service_level {
        return Err(ErlangError::Unreachable {
            target: target_service_level,
            max,
        });
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if at(mid)?.service_level >= target_service_level {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    at(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(n: u32, patience: Option<f64>) -> QueueModel {
        QueueModel {
            arrivals_per_hour: 200.0,
            aht_secs: 180.0,
            target_secs: 20.0,
            operators: n,
            patience_secs: patience,
        }
    }

    #[test]
    fn erlang_c_matches_the_published_example() {
        // 100 calls per 30 min, AHT 180 s, 20 s target, 14 operators.
        let m = metrics(&model(14, None)).unwrap();
        assert!((m.p_wait - 0.1741).abs() < 5e-5, "{m:?}");
        assert!((m.service_level - 0.8884).abs() < 5e-5, "{m:?}");
        assert!((m.traffic_erlangs - 10.0).abs() < 1e-12);
        // ASA = C * AHT / (N - A) = 0.1741 * 180 / 4.
        assert!((m.asa_secs - 7.83).abs() < 0.01, "{m:?}");
        assert!((m.occupancy - 10.0 / 14.0).abs() < 1e-12);
    }

    #[test]
    fn erlang_b_matches_the_classic_table() {
        // 5 erlangs on 10 lines block 1.84% of calls.
        assert!((erlang_b(10, 5.0) - 0.01838).abs() < 5e-5);
        assert!((erlang_b(1, 1.0) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn staffing_finds_the_fewest_operators_for_the_target() {
        let m = staffing(&model(0, None), 0.80).unwrap();
        // 13 operators give about 0.78, 14 give 0.8884.
        assert_eq!(m.operators, 14);
        assert!(metrics(&model(13, None)).unwrap().service_level < 0.80);
    }

    #[test]
    fn erlang_a_tends_to_erlang_c_as_patience_grows() {
        let c = metrics(&model(14, None)).unwrap();
        let a = metrics(&model(14, Some(1e9))).unwrap();
        assert!((a.p_wait - c.p_wait).abs() < 1e-4, "{a:?} vs {c:?}");
        assert!(
            (a.service_level - c.service_level).abs() < 1e-4,
            "{a:?} vs {c:?}"
        );
        assert!((a.asa_secs - c.asa_secs).abs() < 1e-2, "{a:?} vs {c:?}");
        assert!(a.abandon_rate < 1e-6);
    }

    #[test]
    fn impatience_lowers_waiting_and_raises_abandons() {
        let patient = metrics(&model(11, Some(600.0))).unwrap();
        let impatient = metrics(&model(11, Some(60.0))).unwrap();
        assert!(impatient.abandon_rate > patient.abandon_rate);
        assert!(impatient.asa_secs < patient.asa_secs);
        assert!(impatient.p_wait < patient.p_wait);
    }

    #[test]
    fn erlang_a_is_stable_even_when_understaffed() {
        // 10 erlangs on 8 operators: Erlang C diverges, Erlang A does not.
        let m = metrics(&model(8, Some(120.0))).unwrap();
        assert!(m.abandon_rate > 0.1 && m.abandon_rate < 0.5, "{m:?}");
        assert!(m.occupancy <= 1.0);
        assert_eq!(metrics(&model(8, None)).unwrap().p_wait, 1.0);
    }

    #[test]
    fn invalid_inputs_are_refused() {
        let mut m = model(14, None);
        m.aht_secs = 0.0;
        assert!(matches!(metrics(&m), Err(ErlangError::NotPositive { .. })));
        assert!(matches!(
            staffing(&model(0, None), 1.5),
            Err(ErlangError::BadTarget(_))
        ));
    }
}
