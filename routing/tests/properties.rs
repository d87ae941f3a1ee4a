//! Invariants of the routing engine over random event sequences.
// Helpers outside `#[test]` functions may unwrap too: a failure is a test
// failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use ccu_routing::*;
use proptest::prelude::*;
use proptest::strategy::Strategy as Gen;

const T0: i64 = 1_795_507_200_000;

fn req(skill: u32, min_level: u8) -> SkillRequirement {
    SkillRequirement {
        skill: SkillId(skill),
        min_level,
    }
}

/// One random thing that happens. Indices pick among what exists at that
/// moment (modulo its length), so most steps are valid; some refer to
/// things already gone, which the engine must refuse without harm.
#[derive(Debug, Clone)]
enum Step {
    Arrive {
        queue: u8,
        channel: u8,
        lang: u8,
    },
    Accept(u8),
    Reject(u8),
    TimedOut(u8),
    End {
        pick: u8,
        abandoned: bool,
    },
    Presence {
        op: u8,
        kind: u8,
    },
    Transfer {
        pick: u8,
        to_queue: Option<u8>,
        to_op: u8,
    },
    WrapUpDone(u8),
    Advance(u16),
    /// A configuration reload of one queue: strategy, priority and the
    /// minimum level of its first skill change.
    Reconfigure {
        queue: u8,
        strategy: u8,
        priority: i8,
        min_level: u8,
    },
}

fn step() -> impl Gen<Value = Step> {
    prop_oneof![
        4 => (0u8..4, 0u8..4, 0u8..3).prop_map(|(queue, channel, lang)| Step::Arrive { queue, channel, lang }),
        4 => any::<u8>().prop_map(Step::Accept),
        1 => any::<u8>().prop_map(Step::Reject),
        1 => any::<u8>().prop_map(Step::TimedOut),
        3 => (any::<u8>(), any::<bool>()).prop_map(|(pick, abandoned)| Step::End { pick, abandoned }),
        2 => (0u8..8, 0u8..5).prop_map(|(op, kind)| Step::Presence { op, kind }),
        1 => (any::<u8>(), proptest::option::of(0u8..4), 0u8..8)
            .prop_map(|(pick, to_queue, to_op)| Step::Transfer { pick, to_queue, to_op }),
        1 => (0u8..8).prop_map(Step::WrapUpDone),
        3 => (0u16..90).prop_map(Step::Advance),
        1 => (0u8..4, 0u8..5, -2i8..3, 1u8..11).prop_map(|(queue, strategy, priority, min_level)| {
            Step::Reconfigure { queue, strategy, priority, min_level }
        }),
    ]
}

/// (organization, [(skill, level)], languages choice, capacity).
type OpSpec = (u8, Vec<(u8, u8)>, u8, Capacity);

fn operator_profile() -> impl Gen<Value = OpSpec> {
    (
        1u8..3,
        proptest::collection::vec((1u8..4, 1u8..11), 0..3),
        0u8..3,
        (0u8..2, 0u8..4, 0u8..3, any::<bool>()),
    )
        .prop_map(
            |(org, skills, langs, (voice, chat, email, call_with_chats))| {
                (
                    org,
                    skills,
                    langs,
                    Capacity {
                        voice,
                        chat,
                        email,
                        webform: 1,
                        call_with_chats,
                    },
                )
            },
        )
}

fn strategy_of(i: u8) -> ccu_routing::Strategy {
    match i % 5 {
        0 => ccu_routing::Strategy::LongestIdle,
        1 => ccu_routing::Strategy::BestSkill,
        2 => ccu_routing::Strategy::LeastBusy,
        3 => ccu_routing::Strategy::RoundRobin,
        _ => ccu_routing::Strategy::RingAll,
    }
}

fn lang(i: u8) -> Option<Language> {
    match i {
        1 => Some(Language::parse("it").unwrap()),
        2 => Some(Language::parse("en").unwrap()),
        _ => None,
    }
}

/// Four queues exercising every feature: skills with levels, priority,
/// overflow (relax, add group, move), sharing across organizations, max
/// wait with callback and voicemail, wrap-up.
fn queues(strategies: &[u8]) -> Vec<QueueConfig> {
    let mut q0 = QueueConfig::new(QueueId(0), OrgId(1), vec![req(1, 6)]);
    q0.overflow = vec![
        OverflowStep {
            after_secs: 30,
            action: OverflowAction::RelaxLevel {
                skill: SkillId(1),
                min_level: 2,
            },
        },
        OverflowStep {
            after_secs: 60,
            action: OverflowAction::AddSkillGroup(vec![req(2, 1)]),
        },
    ];
    q0.wrap_up_secs = 15;
    q0.max_wait = Some((200, MaxWaitAction::Callback));
    let mut q1 = QueueConfig::new(QueueId(1), OrgId(2), vec![req(2, 3), req(3, 1)]);
    q1.priority = 1;
    q1.shared_with = vec![OrgId(1)];
    q1.max_wait = Some((150, MaxWaitAction::Voicemail));
    let mut q2 = QueueConfig::new(QueueId(2), OrgId(2), vec![req(3, 8)]);
    q2.overflow = vec![OverflowStep {
        after_secs: 40,
        action: OverflowAction::MoveToQueue(QueueId(1)),
    }];
    q2.offer_timeout_secs = 10;
    let mut q3 = QueueConfig::new(QueueId(3), OrgId(1), vec![]);
    q3.priority = -1;
    q3.announce_every_secs = Some(45);
    // Queue 2 moves to queue 1, so 1 is added first.
    let mut all = vec![q0, q1, q3, q2];
    for (q, s) in all.iter_mut().zip(strategies) {
        q.strategy = strategy_of(*s);
    }
    all
}

/// The requirement groups in force at `tier`, computed here independently
/// of the engine.
fn tier_groups(q: &QueueConfig, tier: usize) -> Vec<Vec<SkillRequirement>> {
    let mut groups = vec![q.skills.clone()];
    let mut steps = q.overflow.clone();
    steps.sort_by_key(|s| s.after_secs);
    for step in steps.iter().take(tier) {
        match &step.action {
            OverflowAction::RelaxLevel { skill, min_level } => {
                for g in &mut groups {
                    for r in g.iter_mut().filter(|r| r.skill == *skill) {
                        r.min_level = r.min_level.min(*min_level);
                    }
                }
            }
            OverflowAction::AddSkillGroup(g) => groups.push(g.clone()),
            OverflowAction::MoveToQueue(_) => {}
        }
    }
    groups
}

struct Run {
    engine: Engine,
    now: i64,
    log: Vec<Command>,
    profiles: BTreeMap<u64, OperatorProfile>,
    queues: BTreeMap<u32, QueueConfig>,
    /// Conversations the engine must still hold.
    live: BTreeSet<u64>,
    /// Offers not yet answered, withdrawn or timed out.
    open_offers: Vec<OfferId>,
    assigned: BTreeSet<u64>,
    /// The live conversations that are calls (voicemail keeps their place).
    calls: BTreeSet<u64>,
    next_conv: u64,
}

fn eligible(run: &Run, op: &OperatorProfile, view: &ConversationView) -> Result<(), String> {
    let q = &run.queues[&view.queue.0];
    if view.pinned_to == Some(op.id) {
        return Ok(());
    }
    if op.org != q.org && !q.shared_with.contains(&op.org) {
        return Err(format!("operator {} of another organization", op.id));
    }
    let level = |s: SkillId| {
        op.skills
            .iter()
            .filter(|l| l.skill == s)
            .map(|l| l.level)
            .max()
            .unwrap_or(0)
    };
    let groups = tier_groups(q, view.tier);
    if !groups
        .iter()
        .any(|g| g.iter().all(|r| level(r.skill) >= r.min_level))
    {
        return Err(format!(
            "operator {} lacks the skills for {:?}",
            op.id, view
        ));
    }
    // The tier in force cannot be ahead of the time waited in the queue.
    let elapsed = run.now - view.queue_entered_at.0;
    let mut steps: Vec<u32> = q.overflow.iter().map(|s| s.after_secs).collect();
    steps.sort();
    let due = steps
        .iter()
        .filter(|&&s| i64::from(s) * 1000 <= elapsed)
        .count();
    if view.tier > due {
        return Err(format!("tier {} before its time ({elapsed} ms)", view.tier));
    }
    if let Some(l) = view.language
        && !op.languages.is_empty()
        && !op.languages.contains(&l)
    {
        return Err(format!("operator {} does not speak {l}", op.id));
    }
    if op.capacity_of(view.channel) == 0 {
        return Err(format!(
            "operator {} has no {:?} capacity",
            op.id, view.channel
        ));
    }
    Ok(())
}

trait CapacityOf {
    fn capacity_of(&self, ch: Channel) -> u8;
}

impl CapacityOf for OperatorProfile {
    fn capacity_of(&self, ch: Channel) -> u8 {
        match ch {
            Channel::Voice => self.capacity.voice,
            Channel::Chat => self.capacity.chat,
            Channel::Email => self.capacity.email,
            Channel::Webform => self.capacity.webform,
        }
    }
}

impl Run {
    fn new(ops: &[OpSpec], strategies: &[u8]) -> Self {
        let mut engine = Engine::new(EngineConfig {
            reoffer_delay_secs: 10,
            ..EngineConfig::default()
        });
        let mut queue_map = BTreeMap::new();
        for q in queues(strategies) {
            queue_map.insert(q.id.0, q.clone());
            engine.add_queue(q).unwrap();
        }
        let mut profiles = BTreeMap::new();
        for (i, (org, skills, langs, capacity)) in ops.iter().enumerate() {
            let mut p = OperatorProfile::new(
                OperatorId(i as u64),
                OrgId(u32::from(*org)),
                skills
                    .iter()
                    .map(|&(s, l)| SkillLevel {
                        skill: SkillId(u32::from(s)),
                        level: l,
                    })
                    .collect(),
            );
            p.languages = match langs {
                0 => vec![],
                1 => vec![Language::parse("it").unwrap()],
                _ => vec![
                    Language::parse("it").unwrap(),
                    Language::parse("en").unwrap(),
                ],
            };
            p.capacity = *capacity;
            engine.upsert_operator(p.clone()).unwrap();
            profiles.insert(i as u64, p);
        }
        Self {
            engine,
            now: T0,
            log: Vec::new(),
            profiles,
            queues: queue_map,
            live: BTreeSet::new(),
            calls: BTreeSet::new(),
            open_offers: Vec::new(),
            assigned: BTreeSet::new(),
            next_conv: 1,
        }
    }

    fn pick_offer(&self, i: u8) -> OfferId {
        if self.open_offers.is_empty() {
            OfferId(u64::from(i) + 1_000_000)
        } else {
            self.open_offers[usize::from(i) % self.open_offers.len()]
        }
    }

    fn pick_conv(&self, i: u8) -> ConversationId {
        let live: Vec<u64> = self.live.iter().copied().collect();
        if live.is_empty() {
            ConversationId(u64::from(i) + 1_000_000)
        } else {
            ConversationId(live[usize::from(i) % live.len()])
        }
    }

    fn event(&mut self, step: &Step) -> Event {
        let n_ops = self.profiles.len().max(1) as u8;
        match *step {
            Step::Arrive {
                queue,
                channel,
                lang: l,
            } => {
                let id = self.next_conv;
                self.next_conv += 1;
                Event::ConversationQueued {
                    conversation: ConversationId(id),
                    queue: QueueId(u32::from(queue)),
                    channel: Channel::ALL[usize::from(channel)],
                    language: lang(l),
                    enqueued_at: None,
                }
            }
            Step::Accept(i) => Event::OfferAccepted {
                offer: self.pick_offer(i),
            },
            Step::Reject(i) => Event::OfferRejected {
                offer: self.pick_offer(i),
            },
            Step::TimedOut(i) => Event::OfferTimedOut {
                offer: self.pick_offer(i),
            },
            Step::End { pick, abandoned } => Event::ConversationEnded {
                conversation: self.pick_conv(pick),
                reason: if abandoned {
                    EndReason::Abandoned
                } else {
                    EndReason::Completed
                },
            },
            Step::Presence { op, kind } => {
                let operator = OperatorId(u64::from(op % n_ops));
                match kind {
                    0 => Event::OperatorLogin { operator },
                    1 => Event::OperatorLogout { operator },
                    2 => Event::OperatorPresence {
                        operator,
                        presence: Presence::Break {
                            reason: "pausa".into(),
                        },
                    },
                    3 => Event::OperatorPresence {
                        operator,
                        presence: Presence::Available,
                    },
                    _ => Event::OperatorLogin { operator },
                }
            }
            Step::Transfer {
                pick,
                to_queue,
                to_op,
            } => Event::Transfer {
                conversation: self.pick_conv(pick),
                target: match to_queue {
                    Some(q) => TransferTarget::Queue(QueueId(u32::from(q))),
                    None => TransferTarget::Operator(OperatorId(u64::from(to_op % n_ops))),
                },
            },
            Step::WrapUpDone(op) => Event::WrapUpDone {
                operator: OperatorId(u64::from(op % n_ops)),
                conversation: None,
                disposition: Some("ok".into()),
            },
            Step::Advance(_) | Step::Reconfigure { .. } => Event::Tick,
        }
    }

    fn apply(&mut self, step: &Step) -> Result<(), String> {
        if let Step::Advance(secs) = *step {
            // Walk through each deadline so every batch of commands is
            // checked against the state right after it.
            let target = self.now + i64::from(secs) * 1000;
            while let Some(d) = self.engine.next_deadline() {
                if d.0 > target {
                    break;
                }
                self.now = self.now.max(d.0);
                self.apply_event(Event::Tick)?;
            }
            self.now = target;
            return self.apply_event(Event::Tick);
        }
        if let Step::Reconfigure {
            queue,
            strategy,
            priority,
            min_level,
        } = *step
        {
            let mut q = self.queues[&u32::from(queue)].clone();
            q.strategy = strategy_of(strategy);
            q.priority = i32::from(priority);
            if let Some(first) = q.skills.first_mut() {
                first.min_level = min_level;
            }
            self.engine
                .update_queue(q.clone())
                .map_err(|e| e.to_string())?;
            self.queues.insert(q.id.0, q);
            return self.apply_event(Event::Tick);
        }
        let event = self.event(step);
        self.apply_event(event)
    }

    fn apply_event(&mut self, event: Event) -> Result<(), String> {
        let result = self.engine.handle(Timestamp(self.now), event.clone());
        if result.is_ok() {
            match &event {
                Event::ConversationQueued {
                    conversation,
                    channel,
                    ..
                } => {
                    self.live.insert(conversation.0);
                    if *channel == Channel::Voice {
                        self.calls.insert(conversation.0);
                    }
                }
                Event::ConversationEnded { conversation, .. } => {
                    self.live.remove(&conversation.0);
                    self.assigned.remove(&conversation.0);
                }
                Event::Transfer { conversation, .. } => {
                    self.assigned.remove(&conversation.0);
                }
                _ => {}
            }
        }
        let cmds: Vec<Command> = self.engine.drain().collect();
        self.engine.check_invariants().map_err(|e| e.to_string())?;
        for cmd in &cmds {
            match cmd {
                Command::Offer {
                    offer,
                    conversation,
                    operator,
                    ..
                } => {
                    self.open_offers.push(*offer);
                    let Some(view) = self.engine.conversation(*conversation) else {
                        // Offered, then missed and sent away by a later timer
                        // of the same tick: that must show in the batch.
                        let left = cmds.iter().any(|c| {
                            matches!(c, Command::MaxWaitReached { conversation: x, .. }
                                | Command::QueueClosed { conversation: x, .. } if x == conversation)
                        });
                        if left {
                            continue;
                        }
                        return Err(format!("offer of an unknown conversation; batch {cmds:#?}"));
                    };
                    let op = &self.profiles[&operator.0];
                    eligible(self, op, &view)?;
                }
                Command::Withdraw { offer, .. } => self.open_offers.retain(|o| o != offer),
                Command::Assign { conversation, .. } if !self.assigned.insert(conversation.0) => {
                    return Err(format!("conversation {conversation} assigned twice"));
                }
                Command::QueueClosed {
                    conversation,
                    action,
                    ..
                } if *action != ClosedAction::Queue => {
                    self.live.remove(&conversation.0);
                }
                Command::MaxWaitReached {
                    conversation,
                    action,
                    ..
                } if *action != MaxWaitAction::Callback
                    && !(*action == MaxWaitAction::Voicemail
                        && self.calls.contains(&conversation.0)) =>
                {
                    self.live.remove(&conversation.0);
                }
                _ => {}
            }
        }
        // Accepted, rejected or timed-out offers are over.
        if let Event::OfferAccepted { offer }
        | Event::OfferRejected { offer }
        | Event::OfferTimedOut { offer } = event
            && result.is_ok()
        {
            self.open_offers.retain(|o| *o != offer);
        }
        // No conversation lost, none invented.
        let held: BTreeSet<u64> = self.engine.conversations().iter().map(|c| c.id.0).collect();
        if held != self.live {
            return Err(format!("engine holds {held:?}, expected {:?}", self.live));
        }
        for (id, p) in &self.profiles {
            let v = self.engine.operator(p.id).ok_or("operator vanished")?;
            for ch in Channel::ALL {
                if v.active[ch as usize] > p.capacity_of(ch) {
                    return Err(format!("operator {id} over capacity on {ch:?}"));
                }
            }
            if v.active[0] > 0 && v.active[1] > 0 && !p.capacity.call_with_chats {
                return Err(format!("operator {id} has a call and chats"));
            }
        }
        self.log.extend(cmds);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_every_routing_invariant(
        ops in proptest::collection::vec(operator_profile(), 1..8),
        strategies in proptest::collection::vec(0u8..5, 4),
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let mut run = Run::new(&ops, &strategies);
        for s in &steps {
            if let Err(e) = run.apply(s) {
                prop_assert!(false, "after {:?}: {}", s, e);
            }
        }
    }

    #[test]
    fn the_same_events_give_the_same_commands(
        ops in proptest::collection::vec(operator_profile(), 1..8),
        strategies in proptest::collection::vec(0u8..5, 4),
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let mut a = Run::new(&ops, &strategies);
        let mut b = Run::new(&ops, &strategies);
        for s in &steps {
            let _ = a.apply(s);
            let _ = b.apply(s);
        }
        prop_assert_eq!(&a.log, &b.log);
    }

    /// One queue, identical operators, no declines or timeouts: offers go
    /// out strictly in arrival order.
    #[test]
    fn equal_priority_and_eligibility_is_first_in_first_out(
        n_ops in 1usize..5,
        steps in proptest::collection::vec(
            prop_oneof![
                3 => Just(0u8),       // arrive
                3 => Just(1u8),       // accept the oldest open offer
                2 => Just(2u8),       // end the oldest assigned conversation
                1 => Just(3u8),       // an operator takes a break or returns
                2 => Just(4u8),       // time passes
            ],
            1..150,
        ),
        seed in any::<u8>(),
    ) {
        let mut engine = Engine::new(EngineConfig::default());
        let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![req(1, 1)]);
        q.offer_timeout_secs = 1_000_000;
        engine.add_queue(q).unwrap();
        let mut now = T0;
        for i in 0..n_ops {
            engine.upsert_operator(OperatorProfile::new(OperatorId(i as u64), OrgId(1), vec![SkillLevel { skill: SkillId(1), level: 5 }])).unwrap();
            engine.handle(Timestamp(now), Event::OperatorLogin { operator: OperatorId(i as u64) }).unwrap();
        }
        let mut next = 1u64;
        let mut open: Vec<OfferId> = Vec::new();
        let mut assigned: Vec<ConversationId> = Vec::new();
        let mut offered: Vec<u64> = Vec::new();
        let mut toggle = seed;
        for s in steps {
            let event = match s {
                0 => { next += 1; Event::ConversationQueued { conversation: ConversationId(next), queue: QueueId(1), channel: Channel::Voice, language: None, enqueued_at: None } }
                1 if !open.is_empty() => Event::OfferAccepted { offer: open.remove(0) },
                2 if !assigned.is_empty() => Event::ConversationEnded { conversation: assigned.remove(0), reason: EndReason::Completed },
                3 => {
                    toggle = toggle.wrapping_add(1);
                    let operator = OperatorId(u64::from(toggle) % n_ops as u64);
                    let presence = if toggle % 2 == 0 { Presence::Available } else { Presence::Break { reason: "caffè".into() } };
                    Event::OperatorPresence { operator, presence }
                }
                _ => { now += 7_000; Event::Tick }
            };
            engine.handle(Timestamp(now), event).unwrap();
            for cmd in engine.drain() {
                match cmd {
                    Command::Offer { offer, conversation, .. } => {
                        if !offered.contains(&conversation.0) {
                            offered.push(conversation.0);
                        }
                        open.push(offer);
                    }
                    Command::Withdraw { offer, .. } => open.retain(|o| *o != offer),
                    Command::Assign { conversation, .. } => assigned.push(conversation),
                    _ => {}
                }
            }
        }
        let mut sorted = offered.clone();
        sorted.sort();
        prop_assert_eq!(offered, sorted);
    }
}
