//! A fake clock and a few builders shared by the engine tests.
#![allow(dead_code, clippy::unwrap_used)]

use ccu_routing::*;

/// Tuesday 2026-11-24 09:00 in Rome (08:00 UTC): a working morning.
pub const T0_MS: i64 = 1_795_507_200_000;

pub fn skill(id: u32, min_level: u8) -> SkillRequirement {
    SkillRequirement {
        skill: SkillId(id),
        min_level,
    }
}

pub fn level(id: u32, level: u8) -> SkillLevel {
    SkillLevel {
        skill: SkillId(id),
        level,
    }
}

/// An engine with a fake clock that only moves when told.
pub struct World {
    pub engine: Engine,
    pub now: Timestamp,
}

impl World {
    pub fn new() -> Self {
        Self::with_config(EngineConfig::default())
    }

    pub fn with_config(config: EngineConfig) -> Self {
        Self {
            engine: Engine::new(config),
            now: Timestamp(T0_MS),
        }
    }

    /// Moves the clock to `secs` after T0 (ticking the engine there).
    pub fn at(&mut self, secs: f64) -> Vec<Command> {
        self.now = Timestamp(T0_MS + (secs * 1000.0) as i64);
        self.send(Event::Tick)
    }

    pub fn send(&mut self, event: Event) -> Vec<Command> {
        self.engine.handle(self.now, event).unwrap();
        self.engine.check_invariants().unwrap();
        self.engine.drain().collect()
    }

    pub fn queue(&mut self, config: QueueConfig) {
        self.engine.add_queue(config).unwrap();
    }

    pub fn simple_queue(&mut self, id: u32, skill_id: u32, min_level: u8) {
        self.queue(QueueConfig::new(
            QueueId(id),
            OrgId(1),
            vec![skill(skill_id, min_level)],
        ));
    }

    pub fn operator(&mut self, profile: OperatorProfile) -> Vec<Command> {
        let id = profile.id;
        self.engine.upsert_operator(profile).unwrap();
        self.send(Event::OperatorLogin { operator: id })
    }

    pub fn simple_operator(&mut self, id: u64, skills: &[(u32, u8)]) -> Vec<Command> {
        self.operator(OperatorProfile::new(
            OperatorId(id),
            OrgId(1),
            skills.iter().map(|&(s, l)| level(s, l)).collect(),
        ))
    }

    pub fn arrive(&mut self, conversation: u64, queue: u32, channel: Channel) -> Vec<Command> {
        self.send(Event::ConversationQueued {
            conversation: ConversationId(conversation),
            queue: QueueId(queue),
            channel,
            language: None,
            enqueued_at: None,
        })
    }

    pub fn call(&mut self, conversation: u64, queue: u32) -> Vec<Command> {
        self.arrive(conversation, queue, Channel::Voice)
    }

    pub fn accept(&mut self, offer: OfferId) -> Vec<Command> {
        self.send(Event::OfferAccepted { offer })
    }

    pub fn end(&mut self, conversation: u64) -> Vec<Command> {
        self.send(Event::ConversationEnded {
            conversation: ConversationId(conversation),
            reason: EndReason::Completed,
        })
    }

    pub fn abandon(&mut self, conversation: u64) -> Vec<Command> {
        self.send(Event::ConversationEnded {
            conversation: ConversationId(conversation),
            reason: EndReason::Abandoned,
        })
    }

    pub fn status(&self, conversation: u64) -> Option<ConversationStatus> {
        self.engine
            .conversation(ConversationId(conversation))
            .map(|v| v.status)
    }
}

/// The offers in a batch of commands: (offer, conversation, operator).
pub fn offers(cmds: &[Command]) -> Vec<(OfferId, u64, u64)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::Offer {
                offer,
                conversation,
                operator,
                ..
            } => Some((*offer, conversation.0, operator.0)),
            _ => None,
        })
        .collect()
}

/// The single offer in a batch, which must exist.
pub fn the_offer(cmds: &[Command]) -> (OfferId, u64, u64) {
    let all = offers(cmds);
    assert_eq!(all.len(), 1, "expected exactly one offer in {cmds:#?}");
    all[0]
}

/// Offers a conversation and accepts it at once; returns the operator.
pub fn answer(world: &mut World, cmds: &[Command]) -> u64 {
    let (offer, _, op) = the_offer(cmds);
    world.accept(offer);
    op
}
