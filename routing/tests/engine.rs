//! Named behaviours of the routing engine, with a fake clock.
// Helpers outside `#[test]` functions may unwrap too: a failure is a test
// failure. (clippy.toml only covers the test functions themselves.)
#![allow(clippy::unwrap_used)]

mod common;

use ccu_routing::calendar::{HolidayCalendar, OpeningHours, WeeklyHours};
use ccu_routing::*;
use common::*;

#[test]
fn a_conversation_is_offered_to_an_available_eligible_operator_and_assigned_on_accept() {
    let mut w = World::new();
    w.simple_queue(1, 7, 5);
    w.simple_operator(10, &[(7, 6)]);
    let cmds = w.call(100, 1);
    let (offer, conv, op) = the_offer(&cmds);
    assert_eq!((conv, op), (100, 10));
    w.at(3.0);
    let cmds = w.accept(offer);
    assert!(cmds.contains(&Command::Assign {
        conversation: ConversationId(100),
        operator: OperatorId(10),
        queue: QueueId(1),
        waited_ms: 3000,
    }));
    assert_eq!(
        w.status(100),
        Some(ConversationStatus::Assigned {
            operator: OperatorId(10)
        })
    );
}

#[test]
fn an_operator_below_the_minimum_skill_level_is_never_offered_the_conversation() {
    let mut w = World::new();
    w.simple_queue(1, 7, 5);
    w.simple_operator(10, &[(7, 4)]);
    w.simple_operator(11, &[(8, 9)]);
    let cmds = w.call(100, 1);
    assert!(offers(&cmds).is_empty());
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
    let cmds = w.simple_operator(12, &[(7, 5)]);
    assert_eq!(the_offer(&cmds).2, 12);
}

#[test]
fn an_operator_of_another_organization_takes_only_queues_shared_with_it() {
    let mut w = World::new();
    let mut water = QueueConfig::new(QueueId(1), OrgId(2), vec![skill(1, 1)]);
    w.queue(water.clone());
    water.id = QueueId(2);
    water.shared_with = vec![OrgId(1)];
    w.queue(water);
    // A city generalist (org 1).
    w.simple_operator(10, &[(1, 5)]);
    assert!(offers(&w.call(100, 1)).is_empty());
    assert_eq!(the_offer(&w.call(101, 2)).2, 10);
}

#[test]
fn a_conversation_in_a_language_goes_only_to_operators_who_speak_it() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    let mut it_only = OperatorProfile::new(OperatorId(10), OrgId(1), vec![level(1, 5)]);
    it_only.languages = vec![Language::parse("it").unwrap()];
    w.operator(it_only);
    let cmds = w.send(Event::ConversationQueued {
        conversation: ConversationId(100),
        queue: QueueId(1),
        channel: Channel::Chat,
        language: Some(Language::parse("EN").unwrap()),
        enqueued_at: None,
    });
    assert!(offers(&cmds).is_empty());
    let mut bilingual = OperatorProfile::new(OperatorId(11), OrgId(1), vec![level(1, 5)]);
    bilingual.languages = vec![
        Language::parse("it").unwrap(),
        Language::parse("en").unwrap(),
    ];
    let cmds = w.operator(bilingual);
    assert_eq!(the_offer(&cmds).2, 11);
}

#[test]
fn an_operator_takes_one_call_but_three_chats_at_once() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    {
        let c = w.call(100, 1);
        answer(&mut w, &c)
    };
    assert!(offers(&w.call(101, 1)).is_empty());
    let cmds = w.end(100);
    assert_eq!(the_offer(&cmds).1, 101);

    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    for c in 0..3 {
        assert_eq!(offers(&w.arrive(200 + c, 1, Channel::Chat)).len(), 1);
    }
    assert!(offers(&w.arrive(203, 1, Channel::Chat)).is_empty());
    // Five e-mails fit next to the chats.
    for c in 0..5 {
        assert_eq!(offers(&w.arrive(300 + c, 1, Channel::Email)).len(), 1);
    }
    assert!(offers(&w.arrive(305, 1, Channel::Email)).is_empty());
}

#[test]
fn an_operator_on_a_call_is_offered_no_chats() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    {
        let c = w.call(100, 1);
        answer(&mut w, &c)
    };
    assert!(offers(&w.arrive(101, 1, Channel::Chat)).is_empty());
    let cmds = w.end(100);
    assert_eq!(the_offer(&cmds).1, 101);
}

#[test]
fn an_operator_with_chats_is_offered_a_call_only_when_configured() {
    for allowed in [false, true] {
        let mut w = World::new();
        w.simple_queue(1, 1, 1);
        let mut p = OperatorProfile::new(OperatorId(10), OrgId(1), vec![level(1, 5)]);
        p.capacity.call_with_chats = allowed;
        w.operator(p);
        {
            let c = w.arrive(100, 1, Channel::Chat);
            answer(&mut w, &c)
        };
        assert_eq!(offers(&w.call(101, 1)).len(), usize::from(allowed));
    }
}

#[test]
fn a_higher_priority_queue_is_served_before_an_older_lower_priority_conversation() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    let mut vip = QueueConfig::new(QueueId(2), OrgId(1), vec![skill(1, 1)]);
    vip.priority = 2; // worth 120 s of waiting with the default aging
    w.queue(vip);
    w.call(100, 1);
    w.at(60.0);
    w.call(101, 2);
    let cmds = w.simple_operator(10, &[(1, 5)]);
    assert_eq!(the_offer(&cmds).1, 101);
}

#[test]
fn a_low_priority_conversation_ages_past_a_newer_high_priority_one() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    let mut vip = QueueConfig::new(QueueId(2), OrgId(1), vec![skill(1, 1)]);
    vip.priority = 2;
    w.queue(vip);
    w.call(100, 1);
    w.at(150.0); // waited longer than the 120 s the priority is worth
    w.call(101, 2);
    let cmds = w.simple_operator(10, &[(1, 5)]);
    assert_eq!(the_offer(&cmds).1, 100);
}

#[test]
fn conversations_of_equal_priority_are_served_first_in_first_out() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    for c in 0..5 {
        w.at(f64::from(c));
        w.call(100 + c as u64, 1);
    }
    let mut cmds = w.simple_operator(10, &[(1, 5)]);
    let mut served = Vec::new();
    for _ in 0..5 {
        let (offer, conv, _) = the_offer(&cmds);
        served.push(conv);
        w.accept(offer);
        cmds = w.end(conv);
    }
    assert_eq!(served, vec![100, 101, 102, 103, 104]);
}

fn strategy_world(strategy: Strategy) -> World {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.strategy = strategy;
    w.queue(q);
    w
}

#[test]
fn longest_idle_picks_the_operator_idle_for_the_longest_time() {
    let mut w = strategy_world(Strategy::LongestIdle);
    w.simple_operator(10, &[(1, 9)]);
    w.at(5.0);
    w.simple_operator(11, &[(1, 2)]);
    w.at(6.0);
    assert_eq!(the_offer(&w.call(100, 1)).2, 10);
}

#[test]
fn best_skill_picks_the_highest_level_then_the_longest_idle() {
    let mut w = strategy_world(Strategy::BestSkill);
    w.simple_operator(10, &[(1, 3)]);
    w.at(1.0);
    w.simple_operator(11, &[(1, 8)]);
    w.at(2.0);
    w.simple_operator(12, &[(1, 8)]);
    assert_eq!(the_offer(&w.call(100, 1)).2, 11);
}

#[test]
fn least_busy_picks_the_operator_with_fewest_conversations() {
    let mut w = strategy_world(Strategy::LeastBusy);
    w.simple_operator(10, &[(1, 5)]);
    w.at(1.0);
    w.simple_operator(11, &[(1, 5)]);
    // Both take chats: the first goes to 10 (longest idle), then 11 has fewer.
    let first = {
        let c = w.arrive(100, 1, Channel::Chat);
        answer(&mut w, &c)
    };
    assert_eq!(first, 10);
    let second = {
        let c = w.arrive(101, 1, Channel::Chat);
        answer(&mut w, &c)
    };
    assert_eq!(second, 11);
    w.end(101);
    let third = {
        let c = w.arrive(102, 1, Channel::Chat);
        answer(&mut w, &c)
    };
    assert_eq!(third, 11);
}

#[test]
fn round_robin_gives_operators_turns() {
    let mut w = strategy_world(Strategy::RoundRobin);
    for op in 10..13 {
        w.simple_operator(op, &[(1, 5)]);
    }
    let mut order = Vec::new();
    for c in 0..6 {
        let op = {
            let c = w.arrive(100 + c, 1, Channel::Email);
            answer(&mut w, &c)
        };
        order.push(op);
    }
    assert_eq!(order, vec![10, 11, 12, 10, 11, 12]);
}

#[test]
fn ring_all_offers_a_call_to_every_eligible_operator_and_withdraws_the_losers() {
    let mut w = strategy_world(Strategy::RingAll);
    for op in 10..13 {
        w.simple_operator(op, &[(1, 5)]);
    }
    w.simple_operator(13, &[(2, 5)]);
    let cmds = w.call(100, 1);
    let rung = offers(&cmds);
    assert_eq!(
        rung.iter().map(|o| o.2).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    w.at(2.0);
    let cmds = w.accept(rung[1].0);
    let withdrawn: Vec<u64> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Withdraw {
                operator,
                reason: WithdrawReason::AnsweredElsewhere,
                ..
            } => Some(operator.0),
            _ => None,
        })
        .collect();
    assert_eq!(withdrawn, vec![10, 12]);
    assert_eq!(
        w.status(100),
        Some(ConversationStatus::Assigned {
            operator: OperatorId(11)
        })
    );
    // The losers are free again for the next call.
    assert_eq!(offers(&w.call(101, 1)).len(), 2);
}

#[test]
fn a_missed_offer_requeues_the_conversation_at_its_original_position() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    let (_, first, _) = the_offer(&w.call(100, 1));
    assert_eq!(first, 100);
    w.at(1.0);
    w.call(101, 1);
    w.at(2.0);
    w.call(102, 1);
    // Nobody answers within the 20 s offer timeout.
    let cmds = w.at(20.0);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Withdraw {
            reason: WithdrawReason::TimedOut,
            ..
        }
    )));
    assert!(cmds.contains(&Command::Requeued {
        conversation: ConversationId(100),
        queue: QueueId(1),
        reason: RequeueReason::Missed,
    }));
    assert_eq!(
        w.engine.position(ConversationId(100)).unwrap().map(|p| p.0),
        Some(1)
    );
    // Operator 10 is skipped for 100 for a while, so it gets 101 now; a new
    // operator gets 100, still first in line.
    assert_eq!(the_offer(&cmds).1, 101);
    let cmds = w.simple_operator(11, &[(1, 5)]);
    assert_eq!(the_offer(&cmds).1, 100);
}

#[test]
fn a_declined_conversation_is_not_offered_again_to_the_same_operator_until_the_delay_passes() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    let (offer, _, _) = the_offer(&w.call(100, 1));
    let cmds = w.send(Event::OfferRejected { offer });
    assert!(offers(&cmds).is_empty());
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
    // The reoffer delay (30 s by default) passes.
    let cmds = w.at(30.0);
    assert_eq!(the_offer(&cmds), (OfferId(2), 100, 10));
    // A decline is a decision, not a miss.
    assert_eq!(
        w.engine
            .operator(OperatorId(10))
            .unwrap()
            .consecutive_misses,
        0
    );
}

#[test]
fn after_three_consecutive_missed_offers_the_operator_goes_not_ready_with_the_reason() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    let mut cmds = Vec::new();
    for c in 0..3 {
        w.call(100 + c, 1);
        cmds = w.at(20.0 * (c as f64 + 1.0));
    }
    assert!(cmds.contains(&Command::OperatorAutoPaused {
        operator: OperatorId(10),
        missed: 3
    }));
    let view = w.engine.operator(OperatorId(10)).unwrap();
    assert_eq!(
        view.presence,
        Presence::NotReady(NotReadyReason::MissedOffers { count: 3 })
    );
    assert_eq!(view.status, OperatorStatus::NotReady);
    assert!(view.offers.is_empty());
    // Back to available: counter reset, offers resume.
    let cmds = w.send(Event::OperatorPresence {
        operator: OperatorId(10),
        presence: Presence::Available,
    });
    assert_eq!(offers(&cmds).len(), 1);
    assert_eq!(
        w.engine
            .operator(OperatorId(10))
            .unwrap()
            .consecutive_misses,
        0
    );
}

#[test]
fn an_accepted_offer_resets_the_consecutive_miss_count() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    w.call(100, 1);
    let cmds = w.at(20.0); // missed once (the reoffer delay keeps 100 away)
    assert!(offers(&cmds).is_empty());
    let cmds = w.call(101, 1);
    answer(&mut w, &cmds);
    assert_eq!(
        w.engine
            .operator(OperatorId(10))
            .unwrap()
            .consecutive_misses,
        0
    );
}

#[test]
fn wrap_up_blocks_new_offers_until_done_and_records_the_disposition() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.wrap_up_secs = 30;
    w.queue(q);
    w.simple_operator(10, &[(1, 5)]);
    {
        let c = w.call(100, 1);
        answer(&mut w, &c)
    };
    w.at(60.0);
    let cmds = w.end(100);
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::WrapUpStarted { .. }))
    );
    assert_eq!(
        w.engine.operator(OperatorId(10)).unwrap().status,
        OperatorStatus::WrapUp
    );
    assert!(offers(&w.call(101, 1)).is_empty());
    w.at(70.0);
    let cmds = w.send(Event::WrapUpDone {
        operator: OperatorId(10),
        conversation: Some(ConversationId(100)),
        disposition: Some("certificato-inviato".into()),
    });
    assert!(cmds.contains(&Command::WrapUpEnded {
        operator: OperatorId(10),
        conversation: ConversationId(100),
        disposition: Some("certificato-inviato".into()),
        timed_out: false,
    }));
    assert_eq!(the_offer(&cmds).1, 101);
    // AHT counts talk (60 s) plus wrap-up (10 s).
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!(stats.today.aht_secs, Some(70.0));
}

#[test]
fn wrap_up_ends_by_itself_after_the_queue_wrap_up_time() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.wrap_up_secs = 30;
    w.queue(q);
    w.simple_operator(10, &[(1, 5)]);
    {
        let c = w.call(100, 1);
        answer(&mut w, &c)
    };
    w.end(100);
    w.call(101, 1);
    assert_eq!(w.engine.next_deadline(), Some(w.now.plus_secs(30)));
    let cmds = w.at(30.0);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::WrapUpEnded {
            timed_out: true,
            ..
        }
    )));
    assert_eq!(the_offer(&cmds).1, 101);
}

#[test]
fn overflow_relaxes_the_minimum_level_after_the_first_step() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 8)]);
    q.overflow = vec![OverflowStep {
        after_secs: 30,
        action: OverflowAction::RelaxLevel {
            skill: SkillId(1),
            min_level: 4,
        },
    }];
    w.queue(q);
    w.simple_operator(10, &[(1, 5)]);
    assert!(offers(&w.call(100, 1)).is_empty());
    assert!(offers(&w.at(29.0)).is_empty());
    let cmds = w.at(30.0);
    assert_eq!(the_offer(&cmds).1, 100);
    assert_eq!(w.engine.conversation(ConversationId(100)).unwrap().tier, 1);
}

#[test]
fn overflow_adds_a_second_skill_group() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 5)]);
    q.overflow = vec![OverflowStep {
        after_secs: 45,
        action: OverflowAction::AddSkillGroup(vec![skill(9, 3)]),
    }];
    w.queue(q);
    w.simple_operator(10, &[(9, 3)]);
    assert!(offers(&w.call(100, 1)).is_empty());
    let cmds = w.at(45.0);
    assert_eq!(the_offer(&cmds).2, 10);
}

#[test]
fn overflow_moves_to_another_queue_keeping_the_original_enqueue_time() {
    let mut w = World::new();
    w.simple_queue(2, 9, 1); // the city's generalists
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 5)]);
    q.overflow = vec![OverflowStep {
        after_secs: 60,
        action: OverflowAction::MoveToQueue(QueueId(2)),
    }];
    w.queue(q);
    w.call(100, 1);
    w.at(10.0);
    w.call(101, 2); // arrived later, directly in queue 2
    let cmds = w.at(60.0);
    assert!(cmds.contains(&Command::Overflow {
        conversation: ConversationId(100),
        from: QueueId(1),
        to: QueueId(2),
    }));
    let view = w.engine.conversation(ConversationId(100)).unwrap();
    assert_eq!(view.queue, QueueId(2));
    assert_eq!(view.enqueued_at, Timestamp(T0_MS));
    // Older than 101, so served first in queue 2.
    let cmds = w.simple_operator(10, &[(9, 5)]);
    assert_eq!(the_offer(&cmds).1, 100);
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!(stats.today.overflowed_out, 1);
}

#[test]
fn maximum_wait_with_callback_keeps_the_place_and_the_offer_says_callback() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.max_wait = Some((120, MaxWaitAction::Callback));
    w.queue(q);
    w.call(100, 1);
    w.at(5.0);
    w.call(101, 1);
    let cmds = w.at(120.0);
    assert_eq!(
        cmds,
        vec![Command::MaxWaitReached {
            conversation: ConversationId(100),
            queue: QueueId(1),
            action: MaxWaitAction::Callback,
        }]
    );
    // The caller hears the confirmation: not offered while on the line.
    assert!(matches!(
        w.status(100),
        Some(ConversationStatus::Parked { .. })
    ));
    let cmds = w.simple_operator(10, &[(1, 5)]);
    assert_eq!(the_offer(&cmds).1, 101, "{cmds:?}");
    w.simple_operator(11, &[(1, 5)]);
    let cmds = w.send(Event::CallerLeft {
        conversation: ConversationId(100),
    });
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Offer {
            conversation: ConversationId(100),
            operator: OperatorId(11),
            callback: true,
            ..
        }
    )));
    // Said again, or of a conversation never kept: nothing happens.
    assert!(
        w.send(Event::CallerLeft {
            conversation: ConversationId(100),
        })
        .is_empty()
    );
}

#[test]
fn a_callback_request_keeps_the_place_stops_the_maximum_wait_and_the_offer_says_callback() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.max_wait = Some((
        120,
        MaxWaitAction::Close {
            message: "x".into(),
        },
    ));
    w.queue(q);
    w.call(100, 1);
    w.at(5.0);
    w.call(101, 1);
    w.at(10.0);
    w.engine
        .handle(
            w.now,
            Event::CallbackRequested {
                conversation: ConversationId(100),
            },
        )
        .unwrap();
    // Not closed at the maximum wait: a callback waits as long as it takes.
    let cmds = w.at(300.0);
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::MaxWaitReached {
                conversation: ConversationId(100),
                ..
            }
        )),
        "{cmds:?}"
    );
    assert!(matches!(
        w.status(100),
        Some(ConversationStatus::Parked { .. })
    ));
    assert_eq!(w.status(101), None, "101 reached the maximum wait and left");
    // The caller hung up after the confirmation: offered from its place.
    w.send(Event::CallerLeft {
        conversation: ConversationId(100),
    });
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
    let cmds = w.simple_operator(10, &[(1, 5)]);
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Offer {
            conversation: ConversationId(100),
            callback: true,
            ..
        }
    )));
    // An unknown conversation is an error, not a panic.
    assert!(
        w.engine
            .handle(
                w.now,
                Event::CallbackRequested {
                    conversation: ConversationId(999),
                },
            )
            .is_err()
    );
}

/// A callback that did not reach the citizen leaves its operator without
/// a wrap-up, waits out of line for its retry delay, and is then offered
/// again as a callback. Only the operator who holds it can put it back.
#[test]
fn a_callback_retry_frees_the_operator_and_offers_again_after_the_delay() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.wrap_up_secs = 30;
    w.queue(q);
    w.simple_operator(10, &[(1, 5)]);
    let (offer, _, _) = the_offer(&w.call(100, 1));
    // Offered, not assigned: nobody's to put back.
    let retry = |operator: u64, not_before: Timestamp| Event::CallbackRetry {
        conversation: ConversationId(100),
        operator: OperatorId(operator),
        not_before,
    };
    assert!(w.engine.handle(w.now, retry(10, Timestamp(0))).is_err());
    w.accept(offer);
    w.at(5.0);
    assert_eq!(
        w.engine.handle(w.now, retry(11, Timestamp(0))),
        Err(RoutingError::UnknownOperator(OperatorId(11)))
    );
    let not_before = Timestamp(w.now.0 + 60_000);
    let cmds = w.send(retry(10, not_before));
    assert!(
        cmds.contains(&Command::Requeued {
            conversation: ConversationId(100),
            queue: QueueId(1),
            reason: RequeueReason::CallbackRetry,
        }),
        "{cmds:?}"
    );
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::WrapUpStarted { .. } | Command::Offer { .. })),
        "no wrap-up, no offer yet: {cmds:?}"
    );
    assert_eq!(
        w.status(100),
        Some(ConversationStatus::Parked { until: not_before })
    );
    // The operator is free, but the citizen is not called again before the delay.
    assert!(w.at(64.0).is_empty());
    let cmds = w.at(65.5);
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Offer {
                conversation: ConversationId(100),
                operator: OperatorId(10),
                callback: true,
                ..
            }
        )),
        "{cmds:?}"
    );
    // A parked callback whose citizen is closed by someone else leaves the engine.
    let (offer, _, _) = the_offer(&cmds);
    w.accept(offer);
    w.send(retry(10, Timestamp(w.now.0 + 60_000)));
    w.abandon(100);
    assert_eq!(w.status(100), None);
    assert!(w.at(200.0).is_empty());
    assert!(
        w.engine
            .handle(
                w.now,
                Event::CallbackRetry {
                    conversation: ConversationId(999),
                    operator: OperatorId(10),
                    not_before: Timestamp(0),
                },
            )
            .is_err()
    );
}

/// A retry due now (the operator hung up before the citizen answered) goes
/// to a colleague at once, and to the same operator only after the
/// re-offer delay.
#[test]
fn a_callback_retried_at_once_goes_to_a_colleague_first() {
    let mut w = World::new();
    w.queue(QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]));
    w.simple_operator(10, &[(1, 9)]);
    let (offer, _, op) = the_offer(&w.call(100, 1));
    assert_eq!(op, 10);
    w.accept(offer);
    w.simple_operator(11, &[(1, 5)]);
    let cmds = w.send(Event::CallbackRetry {
        conversation: ConversationId(100),
        operator: OperatorId(10),
        not_before: Timestamp(0),
    });
    let (_, conversation, operator) = the_offer(&cmds);
    assert_eq!((conversation, operator), (100, 11), "{cmds:?}");
}

/// Voicemail at the maximum wait: the caller leaves a message and is called
/// back, so the call keeps its place as a callback; a chat (no message to
/// leave) leaves the line as for `close`.
#[test]
fn maximum_wait_with_voicemail_keeps_a_calls_place_and_takes_a_chat_out_of_line() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.max_wait = Some((120, MaxWaitAction::Voicemail));
    w.queue(q);
    w.call(100, 1);
    w.arrive(101, 1, Channel::Chat);
    w.at(119.0);
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
    let cmds = w.at(121.0);
    assert_eq!(
        cmds.iter()
            .filter(|c| matches!(
                c,
                Command::MaxWaitReached {
                    action: MaxWaitAction::Voicemail,
                    ..
                }
            ))
            .count(),
        2,
        "{cmds:?}"
    );
    // The caller is leaving the message: kept, not offered meanwhile.
    assert!(matches!(
        w.status(100),
        Some(ConversationStatus::Parked { .. })
    ));
    assert_eq!(w.status(101), None);
    assert_eq!(w.engine.waiting(QueueId(1)).unwrap(), 0);
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!(stats.today.max_wait_exits, 1);
    let cmds = w.simple_operator(10, &[(1, 5)]);
    assert!(
        !cmds.iter().any(|c| matches!(c, Command::Offer { .. })),
        "{cmds:?}"
    );
    w.simple_operator(11, &[(1, 5)]);
    w.at(130.0);
    w.call(102, 1);
    // Not again: it is a callback now, offered as one, before 102 (its
    // place), once the caller hung up.
    let cmds = w.send(Event::CallerLeft {
        conversation: ConversationId(100),
    });
    assert!(cmds.iter().any(|c| matches!(
        c,
        Command::Offer {
            conversation: ConversationId(100),
            callback: true,
            ..
        }
    )));
    assert!(w.at(600.0).iter().all(|c| !matches!(
        c,
        Command::MaxWaitReached {
            conversation: ConversationId(100),
            ..
        }
    )));
}

/// A caller whose callback was kept but who is never reported gone (a
/// lost message, a node that died) is offered after the longest a caller
/// can stay on the line.
#[test]
fn a_kept_callback_is_offered_at_the_latest_after_the_longest_time_on_the_line() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.max_wait = Some((60, MaxWaitAction::Voicemail));
    w.queue(q);
    w.call(100, 1);
    w.at(61.0);
    w.simple_operator(10, &[(1, 5)]);
    let limit = ccu_routing::engine::CALLER_ON_LINE_MAX_MS as f64 / 1000.0;
    assert!(
        !w.at(60.0 + limit - 1.0)
            .iter()
            .any(|c| matches!(c, Command::Offer { .. }))
    );
    let cmds = w.at(61.0 + limit + 1.0);
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::Offer {
                conversation: ConversationId(100),
                callback: true,
                ..
            }
        )),
        "{cmds:?}"
    );
}

/// A queue that closes with `close_waiting` sends its callers away, but a
/// callback it keeps (nobody on the line) waits for the next opening.
#[test]
fn a_closing_queue_keeps_its_callbacks() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.max_wait = Some((600, MaxWaitAction::Callback));
    q.hours = Some(office_hours());
    q.closed_action = ClosedAction::SuggestWebform;
    q.closing_policy = ClosingPolicy::CloseWaiting;
    w.queue(q);
    w.at(3.0 * 3600.0); // 12:00
    w.call(100, 1);
    w.at(3.0 * 3600.0 + 601.0);
    w.send(Event::CallerLeft {
        conversation: ConversationId(100),
    });
    w.at(3.0 * 3600.0 + 1500.0);
    w.call(101, 1);
    assert_eq!(w.engine.waiting(QueueId(1)).unwrap(), 2);
    let cmds = w.at(3.0 * 3600.0 + 1800.0); // 12:30, closing
    assert!(
        cmds.iter().any(|c| matches!(
            c,
            Command::QueueClosed {
                conversation: ConversationId(101),
                ..
            }
        )),
        "{cmds:?}"
    );
    assert!(
        !cmds.iter().any(|c| matches!(
            c,
            Command::QueueClosed {
                conversation: ConversationId(100),
                ..
            }
        )),
        "{cmds:?}"
    );
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
}

#[test]
fn a_written_request_is_not_taken_out_of_line_at_the_maximum_wait() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.max_wait = Some((
        120,
        MaxWaitAction::Close {
            message: "x".into(),
        },
    ));
    w.queue(q);
    w.arrive(100, 1, Channel::Email);
    w.arrive(101, 1, Channel::Webform);
    w.call(102, 1);
    let cmds = w.at(3600.0);
    assert_eq!(
        cmds.iter()
            .filter(|c| matches!(c, Command::MaxWaitReached { .. }))
            .count(),
        1,
        "the call only: {cmds:?}"
    );
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
    assert_eq!(w.status(101), Some(ConversationStatus::Waiting));
    assert_eq!(w.status(102), None);
}

fn office_hours() -> OpeningHours {
    let weekly = WeeklyHours::parse_days(&[("mon-fri", "08:30-12:30")]).unwrap();
    OpeningHours::new(chrono_tz::Europe::Rome, weekly, HolidayCalendar::italy())
}

#[test]
fn a_closed_queue_gives_arriving_conversations_the_closed_action() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.hours = Some(office_hours());
    q.closed_action = ClosedAction::Message("Gli uffici sono chiusi".into());
    w.queue(q);
    w.simple_operator(10, &[(1, 5)]);
    // 09:00 Rome: open.
    assert_eq!(offers(&w.call(100, 1)).len(), 1);
    // 12:31 Rome: closed.
    w.at(3.0 * 3600.0 + 60.0 * 31.0);
    let cmds = w.call(101, 1);
    assert_eq!(
        cmds,
        vec![Command::QueueClosed {
            conversation: ConversationId(101),
            queue: QueueId(1),
            action: ClosedAction::Message("Gli uffici sono chiusi".into()),
        }]
    );
    assert_eq!(w.status(101), None);
    assert_eq!(
        w.engine
            .queue_stats(QueueId(1), w.now)
            .unwrap()
            .today
            .closed,
        1
    );
}

#[test]
fn a_closing_queue_with_the_close_waiting_policy_sends_waiting_conversations_away() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.hours = Some(office_hours());
    q.closed_action = ClosedAction::SuggestWebform;
    q.closing_policy = ClosingPolicy::CloseWaiting;
    w.queue(q);
    w.at(3.0 * 3600.0); // 12:00
    w.arrive(100, 1, Channel::Chat);
    // The engine asks to be woken at 12:30 Rome, the closing time.
    assert_eq!(
        w.engine.next_deadline(),
        Some(Timestamp(T0_MS + (3 * 3600 + 1800) * 1000))
    );
    let cmds = w.at(3.0 * 3600.0 + 1800.0);
    assert!(cmds.contains(&Command::QueueClosed {
        conversation: ConversationId(100),
        queue: QueueId(1),
        action: ClosedAction::SuggestWebform,
    }));
    assert_eq!(w.status(100), None);
}

#[test]
fn e_mail_arriving_while_closed_can_wait_for_the_next_opening() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.hours = Some(office_hours());
    q.closed_action = ClosedAction::Queue;
    w.queue(q);
    w.at(10.0 * 3600.0); // 18:00
    w.arrive(100, 1, Channel::Email);
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
}

#[test]
fn an_abandon_removes_the_conversation_and_records_its_wait() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.call(100, 1);
    w.call(101, 1);
    w.at(3.0);
    w.abandon(100); // short abandon (< 5 s)
    w.at(40.0);
    w.abandon(101);
    assert_eq!(w.status(100), None);
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!(stats.today.abandoned, 2);
    assert_eq!(stats.today.short_abandoned, 1);
    assert_eq!(stats.today.avg_abandon_wait_secs, Some(21.5));
    assert_eq!(stats.waiting, 0);
}

#[test]
fn abandoning_while_ringing_withdraws_the_offer_and_frees_the_operator() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    let (offer, _, _) = the_offer(&w.call(100, 1));
    let cmds = w.abandon(100);
    assert!(cmds.contains(&Command::Withdraw {
        offer,
        conversation: ConversationId(100),
        operator: OperatorId(10),
        reason: WithdrawReason::Abandoned,
    }));
    assert_eq!(the_offer(&w.call(101, 1)).2, 10);
}

#[test]
fn a_transfer_to_another_queue_keeps_the_conversation_age() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_queue(2, 2, 1);
    w.simple_operator(10, &[(1, 5)]);
    {
        let c = w.call(100, 1);
        answer(&mut w, &c)
    };
    w.at(10.0);
    w.call(101, 2);
    w.at(30.0);
    let cmds = w.send(Event::Transfer {
        conversation: ConversationId(100),
        target: TransferTarget::Queue(QueueId(2)),
    });
    assert!(offers(&cmds).is_empty());
    let view = w.engine.conversation(ConversationId(100)).unwrap();
    assert_eq!(
        (view.queue, view.enqueued_at),
        (QueueId(2), Timestamp(T0_MS))
    );
    assert_eq!(
        w.engine.position(ConversationId(100)).unwrap().map(|p| p.0),
        Some(1)
    );
    // The transferring operator is free again.
    assert_eq!(
        w.engine.operator(OperatorId(10)).unwrap().status,
        OperatorStatus::Idle
    );
}

#[test]
fn a_transfer_to_a_named_operator_waits_for_that_operator_only() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    w.simple_operator(11, &[(1, 5)]);
    let op = {
        let c = w.call(100, 1);
        answer(&mut w, &c)
    };
    assert_eq!(op, 10);
    {
        let c = w.call(101, 1);
        answer(&mut w, &c)
    };
    // 10 passes 100 to 11, who is busy with 101.
    let cmds = w.send(Event::Transfer {
        conversation: ConversationId(100),
        target: TransferTarget::Operator(OperatorId(11)),
    });
    assert!(offers(&cmds).is_empty());
    // 10 is free but 100 waits for 11 only.
    assert_eq!(
        w.engine.operator(OperatorId(10)).unwrap().status,
        OperatorStatus::Idle
    );
    let cmds = w.end(101);
    assert_eq!(the_offer(&cmds), (OfferId(3), 100, 11));
}

#[test]
fn waiting_conversations_hear_their_position_and_estimated_wait() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.announce_every_secs = Some(30);
    q.default_aht_secs = 120;
    w.queue(q);
    w.simple_operator(10, &[(1, 5)]);
    w.simple_operator(11, &[(1, 5)]);
    {
        let c = w.call(1, 1);
        answer(&mut w, &c)
    };
    {
        let c = w.call(2, 1);
        answer(&mut w, &c)
    };
    // Two staffed operators, 120 s per conversation: one place per minute.
    let cmds = w.call(100, 1);
    assert_eq!(
        cmds,
        vec![Command::Announce {
            conversation: ConversationId(100),
            queue: QueueId(1),
            position: 1,
            estimated_wait_secs: Some(60),
        }]
    );
    w.call(101, 1);
    let cmds = w.at(30.0);
    let announced: Vec<(u64, u32, Option<u32>)> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::Announce {
                conversation,
                position,
                estimated_wait_secs,
                ..
            } => Some((conversation.0, *position, *estimated_wait_secs)),
            _ => None,
        })
        .collect();
    assert_eq!(announced, vec![(100, 1, Some(60)), (101, 2, Some(120))]);
    assert_eq!(w.engine.estimated_wait(QueueId(1)).unwrap(), Some(180));
}

#[test]
fn queue_statistics_report_service_level_asa_and_operators_by_status() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1); // 20 s target
    w.simple_operator(10, &[(1, 5)]);
    w.simple_operator(11, &[(1, 5)]);
    w.simple_operator(12, &[(1, 5)]);
    w.send(Event::OperatorPresence {
        operator: OperatorId(12),
        presence: Presence::Break {
            reason: "pranzo".into(),
        },
    });
    // 100 answered after 10 s, 101 after 30 s (nobody free until then).
    let (o1, _, _) = the_offer(&w.call(100, 1));
    let (o2, _, _) = the_offer(&w.call(101, 1));
    w.send(Event::OfferRejected { offer: o2 });
    w.at(10.0);
    w.accept(o1);
    w.at(30.0);
    // Operator 11 declined; it is offered again after the 30 s delay.
    let view = w.engine.conversation(ConversationId(101)).unwrap();
    let ConversationStatus::Offered { .. } = view.status else {
        panic!("101 should be offered again, got {view:?}");
    };
    let offer = w.engine.operator(OperatorId(11)).unwrap().offers[0];
    w.accept(offer);
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!(stats.today.answered, 2);
    assert_eq!(stats.today.answered_in_target, 1);
    assert_eq!(stats.today.service_level, Some(0.5));
    assert_eq!(stats.today.asa_secs, Some(20.0));
    assert_eq!(stats.operators.busy, 2);
    assert_eq!(stats.operators.on_break, 1);
    assert_eq!(stats.window, stats.today);
}

#[test]
fn daily_statistics_restart_at_local_midnight_but_the_window_slides() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.call(100, 1);
    w.abandon(100);
    // 23:59:30 Rome the same day, then 00:00:10 the next.
    w.at(14.0 * 3600.0 + 59.0 * 60.0 + 30.0);
    w.call(101, 1);
    w.at(15.0 * 3600.0 + 10.0);
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!(stats.today.offered, 0);
    assert_eq!(stats.window.offered, 1);
    assert_eq!(stats.waiting, 1);
}

#[test]
fn restore_keeps_original_order_and_re_offers_offers_in_flight() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.engine
        .upsert_operator(OperatorProfile::new(
            OperatorId(10),
            OrgId(1),
            vec![level(1, 5)],
        ))
        .unwrap();
    w.engine
        .upsert_operator(OperatorProfile::new(
            OperatorId(11),
            OrgId(1),
            vec![level(1, 5)],
        ))
        .unwrap();
    let restored =
        |id: u64, enq: i64, assigned: Option<(OperatorId, Timestamp)>| RestoredConversation {
            id: ConversationId(id),
            queue: QueueId(1),
            channel: Channel::Voice,
            language: None,
            enqueued_at: Timestamp(T0_MS - enq * 1000),
            queue_entered_at: None,
            callback: false,
            assigned,
        };
    w.at(0.0);
    w.engine
        .restore(
            w.now,
            vec![
                (OperatorId(10), Presence::Available),
                (OperatorId(11), Presence::Available),
            ],
            vec![
                restored(3, 10, None),
                restored(1, 60, Some((OperatorId(10), Timestamp(T0_MS - 30_000)))),
                restored(2, 40, None), // was being offered before the restart
            ],
        )
        .unwrap();
    w.engine.check_invariants().unwrap();
    let cmds: Vec<Command> = w.engine.drain().collect();
    // 11 is the only free operator and gets the oldest waiting one.
    assert_eq!(offers(&cmds), vec![(OfferId(1), 2, 11)]);
    assert_eq!(
        w.engine.position(ConversationId(3)).unwrap().map(|p| p.0),
        Some(1)
    );
    let cmds = w.end(1);
    assert_eq!(the_offer(&cmds).1, 3);
}

#[test]
fn logging_out_withdraws_pending_offers_and_requeues_them() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    let (offer, _, _) = the_offer(&w.call(100, 1));
    let cmds = w.send(Event::OperatorLogout {
        operator: OperatorId(10),
    });
    assert!(cmds.contains(&Command::Withdraw {
        offer,
        conversation: ConversationId(100),
        operator: OperatorId(10),
        reason: WithdrawReason::OperatorUnavailable,
    }));
    assert_eq!(w.status(100), Some(ConversationStatus::Waiting));
    // Not counted as a miss, and no reoffer delay: back in, offered at once.
    let cmds = w.send(Event::OperatorLogin {
        operator: OperatorId(10),
    });
    assert_eq!(the_offer(&cmds).1, 100);
}

#[test]
fn unknown_identifiers_are_refused_without_changing_anything() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    let now = w.now;
    let e = &mut w.engine;
    assert_eq!(
        e.handle(now, Event::OfferAccepted { offer: OfferId(9) }),
        Err(RoutingError::UnknownOffer(OfferId(9)))
    );
    assert_eq!(
        e.handle(
            now,
            Event::ConversationQueued {
                conversation: ConversationId(1),
                queue: QueueId(7),
                channel: Channel::Chat,
                language: None,
                enqueued_at: None,
            }
        ),
        Err(RoutingError::UnknownQueue(QueueId(7)))
    );
    assert_eq!(
        e.handle(
            now,
            Event::OperatorLogin {
                operator: OperatorId(3)
            }
        ),
        Err(RoutingError::UnknownOperator(OperatorId(3)))
    );
    assert!(e.drain().next().is_none());
    assert!(e.conversations().is_empty());
}

#[test]
fn a_duplicate_conversation_is_refused() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.call(100, 1);
    let r = w.engine.handle(
        w.now,
        Event::ConversationQueued {
            conversation: ConversationId(100),
            queue: QueueId(1),
            channel: Channel::Voice,
            language: None,
            enqueued_at: None,
        },
    );
    assert_eq!(
        r,
        Err(RoutingError::DuplicateConversation(ConversationId(100)))
    );
}

#[test]
fn invalid_skill_levels_are_refused_in_configuration() {
    let mut e = Engine::new(EngineConfig::default());
    assert!(matches!(
        e.add_queue(QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 11)])),
        Err(RoutingError::InvalidSkillLevel { .. })
    ));
    assert!(matches!(
        e.upsert_operator(OperatorProfile::new(
            OperatorId(1),
            OrgId(1),
            vec![level(1, 0)]
        )),
        Err(RoutingError::InvalidSkillLevel { .. })
    ));
}

#[test]
fn time_running_backwards_is_treated_as_no_time_passing() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.at(100.0);
    w.call(100, 1);
    w.now = Timestamp(T0_MS);
    let cmds = w.simple_operator(10, &[(1, 5)]);
    let expires = cmds.iter().find_map(|c| match c {
        Command::Offer { expires_at, .. } => Some(*expires_at),
        _ => None,
    });
    assert_eq!(expires, Some(Timestamp(T0_MS + 120_000)));
    assert_eq!(w.engine.now(), Timestamp(T0_MS + 100_000));
}

#[test]
fn extreme_timestamps_and_priorities_never_panic() {
    let mut e = Engine::new(EngineConfig {
        aging_secs_per_priority: u32::MAX,
        ..EngineConfig::default()
    });
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.priority = i32::MAX;
    q.offer_timeout_secs = u32::MAX;
    q.max_wait = Some((u32::MAX, MaxWaitAction::Voicemail));
    e.add_queue(q).unwrap();
    e.upsert_operator(OperatorProfile::new(
        OperatorId(1),
        OrgId(1),
        vec![level(1, 5)],
    ))
    .unwrap();
    for (i, now) in [i64::MIN, -1, 0, i64::MAX, i64::MAX - 1]
        .into_iter()
        .enumerate()
    {
        e.handle(
            Timestamp(now),
            Event::ConversationQueued {
                conversation: ConversationId(i as u64),
                queue: QueueId(1),
                channel: Channel::Voice,
                language: None,
                enqueued_at: Some(Timestamp(i64::MIN)),
            },
        )
        .unwrap();
        e.check_invariants().unwrap();
    }
    e.handle(
        Timestamp(i64::MAX),
        Event::OperatorLogin {
            operator: OperatorId(1),
        },
    )
    .unwrap();
    e.handle(Timestamp(i64::MAX), Event::Tick).unwrap();
    e.check_invariants().unwrap();
    // By the year 9999 even a 136-year maximum wait has passed for the
    // conversations enqueued at the epoch.
    assert!(
        e.drain()
            .any(|c| matches!(c, Command::MaxWaitReached { .. }))
    );
    e.queue_stats(QueueId(1), Timestamp(i64::MIN)).unwrap();
}

#[test]
fn a_queue_update_places_waiting_conversations_again_under_the_new_rules() {
    let mut w = World::new();
    w.simple_queue(1, 1, 8);
    w.simple_operator(10, &[(1, 5)]);
    w.simple_operator(11, &[(1, 5)]);
    w.call(100, 1);
    w.at(5.0);
    w.call(101, 1);
    w.at(9.0);
    assert_eq!(w.engine.waiting(QueueId(1)).unwrap(), 2);
    // The supervisor lowers the level: both operators now qualify, and the
    // line is served in its original order.
    w.engine
        .update_queue(QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 5)]))
        .unwrap();
    w.engine.check_invariants().unwrap();
    let cmds: Vec<Command> = w.engine.drain().collect();
    let mut got: Vec<(u64, u64)> = offers(&cmds).iter().map(|o| (o.1, o.2)).collect();
    got.sort();
    assert_eq!(got, vec![(100, 10), (101, 11)]);
    let view = w.engine.conversation(ConversationId(100)).unwrap();
    assert_eq!(view.enqueued_at, Timestamp(T0_MS));
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!((stats.today.offered, stats.operators.busy), (2, 2));
}

#[test]
fn a_queue_update_can_take_operators_out_of_a_queue() {
    let mut w = World::new();
    w.simple_queue(1, 1, 1);
    w.simple_operator(10, &[(1, 5)]);
    w.engine
        .update_queue(QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 9)]))
        .unwrap();
    assert!(offers(&w.call(100, 1)).is_empty());
    let stats = w.engine.queue_stats(QueueId(1), w.now).unwrap();
    assert_eq!(stats.operators, OperatorsByStatus::default());
    // Announcements from the old configuration do not repeat.
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 9)]);
    q.announce_every_secs = Some(10);
    w.engine.update_queue(q.clone()).unwrap();
    w.engine.update_queue(q).unwrap();
    let cmds = w.at(10.0);
    assert_eq!(cmds.len(), 1, "{cmds:?}");
}

#[test]
fn the_operator_view_tells_since_when_the_presence_holds_and_when_wrap_up_ends() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.wrap_up_secs = 30;
    w.queue(q);
    w.at(5.0);
    w.simple_operator(10, &[(1, 5)]);
    let view = w.engine.operator(OperatorId(10)).unwrap();
    assert_eq!(view.presence_since, w.now, "logged in at 5 s");
    // Work does not change the presence, so its clock keeps running.
    w.at(12.0);
    {
        let c = w.call(100, 1);
        answer(&mut w, &c)
    };
    w.at(20.0);
    w.end(100);
    let view = w.engine.operator(OperatorId(10)).unwrap();
    assert_eq!(view.presence_since, Timestamp(T0_MS + 5_000));
    assert_eq!(view.wrap_ups, vec![ConversationId(100)]);
    assert_eq!(view.wrap_up_until, vec![Timestamp(T0_MS + 50_000)]);
    // A break starts a new clock.
    w.at(60.0);
    w.send(Event::OperatorPresence {
        operator: OperatorId(10),
        presence: Presence::Break {
            reason: "pausa".into(),
        },
    });
    let view = w.engine.operator(OperatorId(10)).unwrap();
    assert_eq!(view.presence_since, Timestamp(T0_MS + 60_000));
    assert!(
        view.wrap_up_until.is_empty(),
        "the wrap-up ended by itself at 50 s"
    );
}

#[test]
fn a_restored_operator_keeps_the_time_their_presence_began() {
    let mut w = World::new();
    w.queue(QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]));
    w.at(100.0);
    w.simple_operator(10, &[(1, 5)]);
    w.engine
        .restore_presence_since(OperatorId(10), Timestamp(T0_MS + 40_000))
        .unwrap();
    let view = w.engine.operator(OperatorId(10)).unwrap();
    assert_eq!(view.presence_since, Timestamp(T0_MS + 40_000));
    // A stored time after now (a clock step back) is taken as now.
    w.engine
        .restore_presence_since(OperatorId(10), Timestamp(T0_MS + 500_000))
        .unwrap();
    let view = w.engine.operator(OperatorId(10)).unwrap();
    assert_eq!(view.presence_since, w.now);
    assert!(
        w.engine
            .restore_presence_since(OperatorId(99), Timestamp(T0_MS))
            .is_err(),
        "an unknown operator is refused"
    );
}

/// The closed action answers someone on the line or in the chat; e-mail and
/// web forms wait for the opening instead of being dropped, on arrival and
/// when the queue closes under them.
#[test]
fn asynchronous_requests_wait_for_the_opening_whatever_the_closed_action() {
    let mut w = World::new();
    let mut q = QueueConfig::new(QueueId(1), OrgId(1), vec![skill(1, 1)]);
    q.hours = Some(office_hours());
    q.closed_action = ClosedAction::SuggestWebform;
    q.closing_policy = ClosingPolicy::CloseWaiting;
    w.queue(q);
    w.at(3.0 * 3600.0); // 12:00, open
    w.arrive(100, 1, Channel::Chat);
    w.arrive(101, 1, Channel::Email);
    let cmds = w.at(3.0 * 3600.0 + 1800.0); // 12:30, closing
    assert!(cmds.contains(&Command::QueueClosed {
        conversation: ConversationId(100),
        queue: QueueId(1),
        action: ClosedAction::SuggestWebform,
    }));
    assert!(!cmds.iter().any(|c| matches!(c, Command::QueueClosed { conversation, .. } if *conversation == ConversationId(101))));
    assert_eq!(w.status(100), None);
    assert_eq!(w.status(101), Some(ConversationStatus::Waiting));
    w.at(10.0 * 3600.0); // 19:00, closed
    let cmds = w.arrive(102, 1, Channel::Webform);
    assert!(
        !cmds
            .iter()
            .any(|c| matches!(c, Command::QueueClosed { .. })),
        "{cmds:?}"
    );
    assert_eq!(w.status(102), Some(ConversationStatus::Waiting));
}
