//! Routing decision time and event throughput at contact-center scale.
//!
//! A steady state with `W` conversations waiting over 50 skill queues and
//! every operator busy: an operator finishes a call (the timed *decision*:
//! the engine picks the best waiting conversation among the operator's
//! queues and offers it), accepts the offer, and a new call arrives so the
//! line keeps its length.
//!
//! `cargo bench -p ccu-routing` prints criterion medians, then p50/p99 of
//! single decisions measured one by one (criterion reports no tails).
//! `ROUTING_BENCH_QUICK=1` keeps only the 10^4 x 1,000 case.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use ccu_routing::sim::Rng;
use ccu_routing::*;
use criterion::{BenchmarkId, Criterion, Throughput};

const SKILLS: u32 = 50;

struct Scenario {
    engine: Engine,
    rng: Rng,
    now: Timestamp,
    next_conv: u64,
    assigned: Vec<ConversationId>,
}

impl Scenario {
    fn new(waiting: usize, operators: u64) -> Self {
        let mut engine = Engine::new(EngineConfig::default());
        let mut rng = Rng::new(7);
        for s in 0..SKILLS {
            let mut q = QueueConfig::new(
                QueueId(s),
                OrgId(1),
                vec![SkillRequirement {
                    skill: SkillId(s),
                    min_level: 1 + (s % 5) as u8,
                }],
            );
            q.priority = (s % 3) as i32;
            q.strategy = match s % 4 {
                0 => Strategy::LongestIdle,
                1 => Strategy::BestSkill,
                2 => Strategy::LeastBusy,
                _ => Strategy::RoundRobin,
            };
            engine.add_queue(q).unwrap();
        }
        let now = Timestamp::from_secs(1_795_507_200);
        for o in 0..operators {
            // Four distinct skills at levels 5-10: eligible for 4 queues.
            let mut skills: Vec<SkillLevel> = Vec::new();
            while skills.len() < 4 {
                let skill = SkillId((rng.next_u64() % u64::from(SKILLS)) as u32);
                if skills.iter().all(|s| s.skill != skill) {
                    skills.push(SkillLevel {
                        skill,
                        level: 5 + (rng.next_u64() % 6) as u8,
                    });
                }
            }
            engine
                .upsert_operator(OperatorProfile::new(OperatorId(o), OrgId(1), skills))
                .unwrap();
            engine
                .handle(
                    now,
                    Event::OperatorLogin {
                        operator: OperatorId(o),
                    },
                )
                .unwrap();
        }
        let mut s = Self {
            engine,
            rng,
            now,
            next_conv: 0,
            assigned: Vec::new(),
        };
        // Fill every operator, then build the line.
        // Nothing ends during the fill, so every arrival is still there.
        while s.next_conv < operators + waiting as u64 {
            s.arrive();
        }
        s
    }

    fn settle(&mut self) {
        let cmds: Vec<Command> = self.engine.drain().collect();
        for cmd in cmds {
            match cmd {
                Command::Offer { offer, .. } => {
                    self.engine
                        .handle(self.now, Event::OfferAccepted { offer })
                        .unwrap();
                    self.settle();
                }
                Command::Assign { conversation, .. } => self.assigned.push(conversation),
                _ => {}
            }
        }
    }

    fn arrive(&mut self) {
        self.now = self.now.plus_millis(10);
        let queue = QueueId((self.rng.next_u64() % u64::from(SKILLS)) as u32);
        self.next_conv += 1;
        self.engine
            .handle(
                self.now,
                Event::ConversationQueued {
                    conversation: ConversationId(self.next_conv),
                    queue,
                    channel: Channel::Voice,
                    language: None,
                    enqueued_at: None,
                },
            )
            .unwrap();
        self.settle();
    }

    /// The other direction: operators idle, a call arrives and the engine
    /// picks the operator by the queue's strategy (timed); then, untimed,
    /// the call is answered and ends so that the operator is free again.
    fn arrival_decision(&mut self) -> Duration {
        self.now = self.now.plus_millis(10);
        let queue = QueueId((self.rng.next_u64() % u64::from(SKILLS)) as u32);
        self.next_conv += 1;
        let conversation = ConversationId(self.next_conv);
        let start = Instant::now();
        self.engine
            .handle(
                self.now,
                Event::ConversationQueued {
                    conversation,
                    queue,
                    channel: Channel::Voice,
                    language: None,
                    enqueued_at: None,
                },
            )
            .unwrap();
        let took = start.elapsed();
        self.settle();
        self.assigned.retain(|c| *c != conversation);
        self.engine
            .handle(
                self.now,
                Event::ConversationEnded {
                    conversation,
                    reason: EndReason::Completed,
                },
            )
            .unwrap();
        self.settle();
        took
    }

    /// One decision: a random busy operator finishes. Returns its duration.
    fn decision(&mut self) -> Duration {
        let i = (self.rng.next_u64() % self.assigned.len() as u64) as usize;
        let conversation = self.assigned.swap_remove(i);
        self.now = self.now.plus_millis(10);
        let start = Instant::now();
        self.engine
            .handle(
                self.now,
                Event::ConversationEnded {
                    conversation,
                    reason: EndReason::Completed,
                },
            )
            .unwrap();
        let took = start.elapsed();
        self.settle();
        self.arrive();
        took
    }
}

fn sizes() -> Vec<(usize, u64)> {
    if std::env::var_os("ROUTING_BENCH_QUICK").is_some() {
        return vec![(10_000, 1_000)];
    }
    vec![
        (1_000, 1_000),
        (10_000, 1_000),
        (100_000, 1_000),
        (1_000, 15_000),
        (10_000, 15_000),
        (100_000, 15_000),
    ]
}

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for (waiting, operators) in sizes() {
        let mut s = Scenario::new(waiting, operators);
        group.bench_with_input(
            BenchmarkId::new(format!("{operators}-operators"), waiting),
            &waiting,
            |b, _| b.iter_custom(|iters| (0..iters).map(|_| black_box(s.decision())).sum()),
        );
    }
    group.finish();
}

fn arrivals(c: &mut Criterion) {
    let mut group = c.benchmark_group("arrival-decision");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    let operators: &[u64] = if std::env::var_os("ROUTING_BENCH_QUICK").is_some() {
        &[1_000]
    } else {
        &[1_000, 15_000]
    };
    for &operators in operators {
        let mut s = Scenario::new(0, operators);
        // Free everyone: nothing waits, so every operator is idle.
        for conversation in std::mem::take(&mut s.assigned) {
            s.engine
                .handle(
                    s.now,
                    Event::ConversationEnded {
                        conversation,
                        reason: EndReason::Completed,
                    },
                )
                .unwrap();
            s.settle();
        }
        group.bench_function(BenchmarkId::new("idle-operators", operators), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| black_box(s.arrival_decision())).sum())
        });
    }
    group.finish();
}

/// Whole steady-state cycles (finish, accept, arrive): 3 events each,
/// including the caller-side work of the benchmark itself.
fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("events");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(3));
    for (waiting, operators) in sizes() {
        let mut s = Scenario::new(waiting, operators);
        group.bench_with_input(
            BenchmarkId::new(format!("{operators}-operators"), waiting),
            &waiting,
            |b, _| {
                b.iter(|| {
                    s.decision();
                })
            },
        );
    }
    group.finish();
}

fn percentiles() {
    println!("\nsingle decisions, measured one by one (includes ~20 ns of clock reads)");
    println!(
        "{:>9} {:>9} {:>10} {:>10} {:>10}",
        "waiting", "operators", "p50 µs", "p99 µs", "p99.9 µs"
    );
    for (waiting, operators) in sizes() {
        let mut s = Scenario::new(waiting, operators);
        for _ in 0..10_000 {
            s.decision();
        }
        let mut d: Vec<Duration> = (0..100_000).map(|_| s.decision()).collect();
        d.sort();
        let at = |q: f64| d[((d.len() as f64 * q) as usize).min(d.len() - 1)].as_secs_f64() * 1e6;
        println!(
            "{waiting:>9} {operators:>9} {:>10.2} {:>10.2} {:>10.2}",
            at(0.50),
            at(0.99),
            at(0.999)
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    decisions(&mut c);
    arrivals(&mut c);
    throughput(&mut c);
    c.final_summary();
    percentiles();
}
