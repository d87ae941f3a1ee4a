//! The router actor in the server: conversations from the hub reach
//! operators through the real engine, every step is stored, and a restart
//! rebuilds the state from the store.

use std::sync::Arc;
use std::time::Duration;

use ccu::bus::BusEvent;
use ccu::config::Channel;
use ccu::hub::Arrival;
use ccu::router::RouterError;
use ccu::store::{ConversationState, Scope};
use ccu_routing::Presence;
use serde_json::{Value, json};
use tokio::sync::broadcast::Receiver;

use crate::helpers::*;

/// Queues open around the clock, so the tests do not depend on the hour.
fn always_open(queue: &str) -> Vec<(String, Value)> {
    vec![
        (format!("queues.{queue}.schedule"), json!("h24")),
        (format!("queues.{queue}.holidays"), json!(false)),
    ]
}

async fn app_with(overrides: Vec<(String, Value)>) -> TestApp {
    let borrowed: Vec<(&str, Value)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    spawn_app_with(&borrowed).await
}

impl TestApp {
    async fn operator(&self, username: &str, organization: &str, skills: Value) -> i64 {
        let response = self
            .post(
                "/api/v1/users",
                &self.admin_token,
                &json!({"username": username, "display_name": username, "password": "una password lunga e sicura",
                        "role": "operator", "organization_id": organization, "skills": skills,
                        "languages": ["it", "en"]}),
            )
            .await;
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap()
    }

    async fn available(&self, user: i64) {
        self.state
            .hub
            .router()
            .presence(user, Presence::Available)
            .await
            .unwrap();
    }

    async fn chat(&self, queue: &str) -> i64 {
        self.state
            .hub
            .open_conversation(Arrival {
                queue_id: queue.into(),
                channel: Channel::Chat,
                language: "it".into(),
                subject: None,
                contact_id: None,
            })
            .await
            .unwrap()
            .id
    }

    async fn kinds(&self, conversation: i64) -> Vec<String> {
        let detail = self
            .store()
            .get_conversation(&Scope::All, conversation)
            .await
            .unwrap()
            .unwrap();
        detail.events.into_iter().map(|e| e.kind).collect()
    }

    async fn state_of(&self, conversation: i64) -> ConversationState {
        let detail = self
            .store()
            .get_conversation(&Scope::All, conversation)
            .await
            .unwrap()
            .unwrap();
        detail.conversation.state
    }
}

/// Waits (at most 10 s) for the first bus event matching `pick`.
async fn wait_for<T>(
    rx: &mut Receiver<Arc<BusEvent>>,
    mut pick: impl FnMut(&BusEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let event = rx.recv().await.expect("the bus is open");
            if let Some(found) = pick(&event) {
                return found;
            }
        }
    })
    .await
    .expect("the event arrives within 10 s")
}

fn offer_to(operator: i64) -> impl FnMut(&BusEvent) -> Option<(u64, i64)> {
    move |event| match event {
        BusEvent::OfferMade {
            offer_id,
            operator_id,
            conversation_id,
            ..
        } if *operator_id == operator => Some((*offer_id, *conversation_id)),
        _ => None,
    }
}

fn became(conversation: i64, wanted: &'static str) -> impl FnMut(&BusEvent) -> Option<()> {
    move |event| match event {
        BusEvent::ConversationChanged {
            conversation_id,
            state,
            ..
        } if *conversation_id == conversation && state == wanted => Some(()),
        _ => None,
    }
}

#[tokio::test]
async fn a_conversation_is_offered_to_a_skilled_available_operator_and_assigned_on_accept() {
    let app = app_with(always_open("anagrafe")).await;
    let mut rx = app.state.bus.subscribe();
    let anna = app.operator("anna", "comune", json!({"anagrafe": 8})).await;
    app.available(anna).await;
    let conversation = app.chat("anagrafe").await;
    let (offer, offered) = wait_for(&mut rx, offer_to(anna)).await;
    assert_eq!(offered, conversation);
    assert_eq!(app.state_of(conversation).await, ConversationState::Offered);

    app.state.hub.router().accept(anna, offer).await.unwrap();
    wait_for(&mut rx, became(conversation, "assigned")).await;
    let detail = app
        .store()
        .get_conversation(&Scope::All, conversation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.conversation.state, ConversationState::Assigned);
    assert_eq!(detail.conversation.operator_id, Some(anna));
    assert_eq!(
        app.kinds(conversation).await,
        ["queued", "offered", "assigned"]
    );
    // The operator's own console sees it through the API, scoped to them.
    let (_, token) = (anna, app.login("anna", "una password lunga e sicura").await);
    let mine: Value = app
        .get(&format!("/api/v1/conversations?operator={anna}"), &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"][0]["id"], conversation);
}

#[tokio::test]
async fn an_unskilled_or_foreign_operator_is_never_offered_the_conversation() {
    let app = app_with(always_open("anagrafe")).await;
    let mut rx = app.state.bus.subscribe();
    // Available first, but from a company, and another one without the skill.
    let water = app
        .operator("op.acque", "acque", json!({"anagrafe": 10}))
        .await;
    let novice = app
        .operator("op.scuola", "comune", json!({"scuola": 9, "anagrafe": 2}))
        .await;
    app.available(water).await;
    app.available(novice).await;
    let conversation = app.chat("anagrafe").await;
    let city = app
        .operator("op.anagrafe", "comune", json!({"anagrafe": 5}))
        .await;
    app.available(city).await;
    let first_offer = wait_for(&mut rx, |event| match event {
        BusEvent::OfferMade {
            operator_id,
            conversation_id,
            ..
        } if *conversation_id == conversation => Some(*operator_id),
        _ => None,
    })
    .await;
    assert_eq!(first_offer, city);
}

#[tokio::test]
async fn a_declined_offer_is_requeued_and_offered_to_the_next_operator() {
    let app = app_with(always_open("tributi")).await;
    let mut rx = app.state.bus.subscribe();
    let first = app.operator("primo", "comune", json!({"tributi": 9})).await;
    app.available(first).await;
    let conversation = app.chat("tributi").await;
    let (offer, _) = wait_for(&mut rx, offer_to(first)).await;
    let second = app
        .operator("secondo", "comune", json!({"tributi": 6}))
        .await;
    app.available(second).await;
    // Someone else cannot answer the first operator's offer.
    assert!(matches!(
        app.state.hub.router().accept(second, offer).await,
        Err(RouterError::NotYourOffer)
    ));
    app.state.hub.router().decline(first, offer).await.unwrap();
    let (next_offer, offered) = wait_for(&mut rx, offer_to(second)).await;
    assert_eq!(offered, conversation);
    app.state
        .hub
        .router()
        .accept(second, next_offer)
        .await
        .unwrap();
    wait_for(&mut rx, became(conversation, "assigned")).await;
    assert_eq!(
        app.kinds(conversation).await,
        ["queued", "offered", "requeued", "offered", "assigned"]
    );
}

#[tokio::test]
async fn an_unanswered_offer_times_out_and_the_conversation_waits_again() {
    let mut overrides = always_open("scuola");
    overrides.push(("queues.scuola.offer_timeout_seconds".into(), json!(1)));
    let app = app_with(overrides).await;
    let mut rx = app.state.bus.subscribe();
    let sleepy = app
        .operator("dormiglione", "comune", json!({"scuola": 5}))
        .await;
    app.available(sleepy).await;
    let conversation = app.chat("scuola").await;
    wait_for(&mut rx, offer_to(sleepy)).await;
    wait_for(&mut rx, became(conversation, "queued")).await;
    let detail = app
        .store()
        .get_conversation(&Scope::All, conversation)
        .await
        .unwrap()
        .unwrap();
    let requeue = detail
        .events
        .iter()
        .find(|e| e.kind == "requeued")
        .expect("a requeued event");
    assert!(requeue.data.contains("missed"), "{}", requeue.data);
}

#[tokio::test]
async fn an_abandoned_conversation_leaves_the_queue_with_its_wait_recorded() {
    let app = app_with(always_open("urp")).await;
    let conversation = app.chat("urp").await;
    assert!(app.state.hub.abandon(conversation).await.unwrap());
    assert_eq!(
        app.state_of(conversation).await,
        ConversationState::Abandoned
    );
    // A second abandon changes nothing.
    assert!(!app.state.hub.abandon(conversation).await.unwrap());
    let snapshot = app.state.hub.router().snapshot().await.unwrap();
    let (_, urp) = snapshot
        .queues
        .iter()
        .find(|(name, _)| name == "urp")
        .unwrap();
    let json = serde_json::to_value(urp).unwrap();
    assert_eq!(json["waiting"], 0, "{json}");
    assert_eq!(json["today"]["abandoned"], 1, "{json}");
}

#[tokio::test]
async fn completing_starts_wrap_up_and_the_disposition_closes_it() {
    let app = app_with(always_open("anagrafe")).await;
    let mut rx = app.state.bus.subscribe();
    let op = app
        .operator("chiusura", "comune", json!({"anagrafe": 8}))
        .await;
    app.available(op).await;
    let conversation = app.chat("anagrafe").await;
    let (offer, _) = wait_for(&mut rx, offer_to(op)).await;
    app.state.hub.router().accept(op, offer).await.unwrap();
    wait_for(&mut rx, became(conversation, "assigned")).await;
    assert!(app.state.hub.complete(conversation, op).await.unwrap());
    wait_for(&mut rx, became(conversation, "wrap_up")).await;
    app.state
        .hub
        .router()
        .wrap_up_done(op, Some(conversation), Some("informazioni_fornite".into()))
        .await
        .unwrap();
    wait_for(&mut rx, became(conversation, "closed")).await;
    let kinds = app.kinds(conversation).await;
    assert_eq!(
        kinds[kinds.len() - 3..],
        ["completed", "wrap_up_started", "wrap_up_ended"]
    );
}

#[tokio::test]
async fn a_restart_keeps_waiting_conversations_in_place_and_offers_again_those_in_flight() {
    let mut overrides = always_open("anagrafe");
    overrides.extend(always_open("tributi"));
    let app = app_with(overrides).await;
    let mut rx = app.state.bus.subscribe();
    let op = app
        .operator("riavvio", "comune", json!({"anagrafe": 8}))
        .await;
    app.available(op).await;
    let in_flight = app.chat("anagrafe").await;
    wait_for(&mut rx, offer_to(op)).await;
    let waiting = app.chat("tributi").await;
    let before = app
        .store()
        .get_conversation(&Scope::All, waiting)
        .await
        .unwrap()
        .unwrap();

    let app = app.restart().await;
    let mut rx = app.state.bus.subscribe();
    // The operator's presence came back from the store: the offer in flight
    // was withdrawn and is made again (possibly before we subscribed, so
    // ask the router rather than the bus).
    let offer = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snapshot = app.state.hub.router().snapshot().await.unwrap();
            let view = snapshot
                .operators
                .iter()
                .find(|o| o.id.0 == op as u64)
                .unwrap();
            if let Some(offer) = view.offers.first() {
                return offer.0;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the offer is made again");
    assert_eq!(app.state_of(in_flight).await, ConversationState::Offered);
    app.state.hub.router().accept(op, offer).await.unwrap();
    wait_for(&mut rx, became(in_flight, "assigned")).await;
    let kinds = app.kinds(in_flight).await;
    assert_eq!(
        kinds,
        ["queued", "offered", "requeued", "offered", "assigned"]
    );
    // The waiting one kept its enqueue time and is still queued.
    let after = app
        .store()
        .get_conversation(&Scope::All, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        after.conversation.enqueued_at,
        before.conversation.enqueued_at
    );
    assert_eq!(after.conversation.state, ConversationState::Queued);
    let snapshot = app.state.hub.router().snapshot().await.unwrap();
    let (_, tributi) = snapshot
        .queues
        .iter()
        .find(|(name, _)| name == "tributi")
        .unwrap();
    assert_eq!(serde_json::to_value(tributi).unwrap()["waiting"], 1);
}
