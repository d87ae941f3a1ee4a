//! The store's own suite, run on whichever backend the environment selects
//! (SQLite by default, PostgreSQL with CCU_TEST_DATABASE_URL): CI runs it
//! on both, so both implementations answer to the same tests.

use std::collections::BTreeMap;

use ccu::store::{
    ConversationFilter, ConversationState, Direction, NewUser, Role, RoutingOutcome, RoutingWrite,
    Scope, Store, StoreError, UserChanges,
};

use crate::helpers::*;

struct TestStore {
    store: Store,
    settings: ccu::config::Settings,
    _dir: tempfile::TempDir,
}

async fn test_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(dir.path(), &[]).await;
    let store = Store::connect(&settings.database_url).await.unwrap();
    store.migrate().await.unwrap();
    ccu::app::sync_config(&settings, &store).await.unwrap();
    TestStore {
        store,
        settings,
        _dir: dir,
    }
}

fn new_user(username: &str, organization: &str) -> NewUser {
    NewUser {
        username: username.into(),
        display_name: username.into(),
        password_hash: "$argon2id$not-a-real-hash".into(),
        role: Role::Operator,
        organization_id: organization.into(),
        grants: vec![],
        skills: BTreeMap::from([("anagrafe".into(), 8), ("tributi".into(), 5)]),
        languages: vec!["it".into(), "de".into()],
        capacity: BTreeMap::from([("chat".into(), 2)]),
    }
}

fn orgs(list: &[&str]) -> Scope {
    Scope::Organizations {
        organizations: list.iter().map(|s| s.to_string()).collect(),
        assigned_to: None,
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_config_sync_is_repeatable() {
    let t = test_store().await;
    t.store.migrate().await.unwrap();
    ccu::app::sync_config(&t.settings, &t.store).await.unwrap();
    t.store.ping().await.unwrap();
}

#[tokio::test]
async fn users_round_trip_with_skills_languages_and_capacity() {
    let t = test_store().await;
    let created = t
        .store
        .create_user(&new_user("rita", "comune"), 1_000)
        .await
        .unwrap();
    let loaded = t.store.get_user(created.id).await.unwrap().unwrap();
    assert_eq!(created, loaded);
    assert_eq!(loaded.skills["anagrafe"], 8);
    assert_eq!(loaded.languages, ["it", "de"]);
    assert_eq!(loaded.capacity["chat"], 2);
    assert!(matches!(
        t.store.create_user(&new_user("rita", "acque"), 1_001).await,
        Err(StoreError::Conflict(_))
    ));
    let changed = t
        .store
        .update_user(
            created.id,
            &UserChanges {
                skills: Some(BTreeMap::from([("scuola".into(), 3)])),
                grants: Some(vec!["acque".into()]),
                ..Default::default()
            },
            2_000,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.skills, BTreeMap::from([("scuola".into(), 3)]));
    assert_eq!(changed.grants, ["acque"]);
    assert_eq!(changed.updated_at, 2_000);
    assert!(
        t.store
            .update_user(999_999, &UserChanges::default(), 1)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn users_are_listed_within_the_scope() {
    let t = test_store().await;
    t.store
        .create_user(&new_user("uno", "comune"), 1)
        .await
        .unwrap();
    t.store
        .create_user(&new_user("due", "acque"), 1)
        .await
        .unwrap();
    t.store
        .create_user(&new_user("tre", "mobilita"), 1)
        .await
        .unwrap();
    let names =
        |users: Vec<ccu::store::User>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();
    assert_eq!(
        names(t.store.list_users(&Scope::All).await.unwrap()),
        ["due", "tre", "uno"]
    );
    assert_eq!(
        names(
            t.store
                .list_users(&orgs(&["acque", "mobilita"]))
                .await
                .unwrap()
        ),
        ["due", "tre"]
    );
    assert!(t.store.list_users(&orgs(&[])).await.unwrap().is_empty());
}

#[tokio::test]
async fn sessions_expire_and_die_with_deactivation() {
    let t = test_store().await;
    let user = t
        .store
        .create_user(&new_user("sessione", "comune"), 1)
        .await
        .unwrap();
    t.store
        .insert_session("h1", user.id, 100, 200, Some("127.0.0.1"))
        .await
        .unwrap();
    assert!(t.store.session_user("h1", 150).await.unwrap().is_some());
    assert!(t.store.session_user("h1", 200).await.unwrap().is_none());
    assert_eq!(t.store.purge_expired_sessions(200).await.unwrap(), 1);
    t.store
        .insert_session("h2", user.id, 100, 10_000, None)
        .await
        .unwrap();
    let off = UserChanges {
        active: Some(false),
        ..Default::default()
    };
    t.store.update_user(user.id, &off, 300).await.unwrap();
    assert!(t.store.session_user("h2", 301).await.unwrap().is_none());
}

#[tokio::test]
async fn references_count_up_per_prefix_and_year() {
    let t = test_store().await;
    let a = create_conversation(&t.store, &t.settings, "anagrafe").await;
    let b = create_conversation(&t.store, &t.settings, "tributi").await;
    assert_eq!(a.reference, "URP-2026-000001");
    assert_eq!(b.reference, "URP-2026-000002");
    assert_eq!(a.state, ConversationState::Queued);
    assert_eq!(a.enqueued_at, a.created_at);
}

#[tokio::test]
async fn conversation_events_are_append_only() {
    let t = test_store().await;
    let c = create_conversation(&t.store, &t.settings, "anagrafe").await;
    t.store
        .append_event(
            c.id,
            5,
            "note",
            Some("anagrafe"),
            None,
            &serde_json::json!({"k": 1}),
        )
        .await
        .unwrap();
    let url = &t.settings.database_url;
    // Straight SQL, bypassing the store API: the database itself refuses.
    let refused = if url.starts_with("sqlite") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        let update = sqlx::query("UPDATE conversation_events SET kind = 'forged'")
            .execute(&pool)
            .await;
        let delete = sqlx::query("DELETE FROM conversation_events")
            .execute(&pool)
            .await;
        update.is_err() && delete.is_err()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let update = sqlx::query("UPDATE conversation_events SET kind = 'forged'")
            .execute(&pool)
            .await;
        let delete = sqlx::query("DELETE FROM conversation_events")
            .execute(&pool)
            .await;
        update.is_err() && delete.is_err()
    };
    assert!(refused, "conversation_events must refuse UPDATE and DELETE");
    let detail = t
        .store
        .get_conversation(&Scope::All, c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        detail
            .events
            .iter()
            .map(|e| e.kind.as_str())
            .collect::<Vec<_>>(),
        ["queued", "note"]
    );
}

#[tokio::test]
async fn a_message_retried_with_the_same_client_id_is_stored_once() {
    let t = test_store().await;
    let c = create_conversation(&t.store, &t.settings, "anagrafe").await;
    let first = t
        .store
        .add_message(c.id, 10, Direction::Inbound, None, "ciao", Some("client-1"))
        .await
        .unwrap();
    let again = t
        .store
        .add_message(c.id, 11, Direction::Inbound, None, "ciao", Some("client-1"))
        .await
        .unwrap();
    assert_eq!(first, again);
    let other = t
        .store
        .add_message(c.id, 12, Direction::Outbound, None, "buongiorno", None)
        .await
        .unwrap();
    assert_ne!(other.id, first.id);
    let detail = t
        .store
        .get_conversation(&Scope::All, c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.messages.len(), 2);
}

#[tokio::test]
async fn a_conversation_is_assigned_at_most_once() {
    let t = test_store().await;
    let a = t
        .store
        .create_user(&new_user("primo", "comune"), 1)
        .await
        .unwrap();
    let b = t
        .store
        .create_user(&new_user("secondo", "comune"), 1)
        .await
        .unwrap();
    let c = create_conversation(&t.store, &t.settings, "anagrafe").await;
    let (first, second) = tokio::join!(
        t.store.assign_conversation(c.id, a.id, 10),
        t.store.assign_conversation(c.id, b.id, 10)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert!(
        first ^ second,
        "exactly one assignment wins: {first} {second}"
    );
    let detail = t
        .store
        .get_conversation(&Scope::All, c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.conversation.state, ConversationState::Assigned);
    assert_eq!(
        detail
            .events
            .iter()
            .filter(|e| e.kind == "assigned")
            .count(),
        1
    );
}

#[tokio::test]
async fn scoping_is_enforced_in_the_queries() {
    let t = test_store().await;
    let city = create_conversation(&t.store, &t.settings, "anagrafe").await;
    let water = create_conversation(&t.store, &t.settings, "acqua_rifiuti").await;
    let filter = ConversationFilter {
        limit: 50,
        ..Default::default()
    };
    let ids =
        |list: Vec<ccu::store::Conversation>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(t
            .store
            .list_conversations(&Scope::All, &filter)
            .await
            .unwrap()),
        [water.id, city.id]
    );
    assert_eq!(
        ids(t
            .store
            .list_conversations(&orgs(&["acque"]), &filter)
            .await
            .unwrap()),
        [water.id]
    );
    assert!(
        t.store
            .get_conversation(&orgs(&["acque"]), city.id)
            .await
            .unwrap()
            .is_none()
    );
    let by_assignment = Scope::Organizations {
        organizations: vec![],
        assigned_to: Some(77),
    };
    assert!(
        t.store
            .list_conversations(&by_assignment, &filter)
            .await
            .unwrap()
            .is_empty()
    );
    let filtered = ConversationFilter {
        queue_id: Some("anagrafe".into()),
        state: Some(ConversationState::Queued),
        channel: Some(ccu::config::Channel::Chat),
        limit: 50,
        ..Default::default()
    };
    assert_eq!(
        ids(t
            .store
            .list_conversations(&Scope::All, &filtered)
            .await
            .unwrap()),
        [city.id]
    );
}

fn line(conversation_id: i64, client_id: Option<&str>, body: &str) -> ccu::store::NewMessage {
    ccu::store::NewMessage {
        conversation_id,
        at: 1,
        direction: Direction::Inbound,
        author_user_id: None,
        body: body.into(),
        client_id: client_id.map(str::to_owned),
    }
}

#[tokio::test]
async fn a_batch_of_messages_is_stored_in_order_and_a_retried_client_id_once() {
    let t = test_store().await;
    let a = create_conversation(&t.store, &t.settings, "urp").await.id;
    let b = create_conversation(&t.store, &t.settings, "urp").await.id;
    let first = t
        .store
        .add_message(a, 1, Direction::Inbound, None, "prima", Some("x"))
        .await
        .unwrap();
    let batch = [
        line(a, Some("y"), "seconda"),
        line(b, Some("y"), "altra conversazione, stesso id del client"),
        line(a, Some("x"), "ritrasmessa"),
        line(a, Some("y"), "ritrasmessa nello stesso lotto"),
        line(a, None, "senza id"),
    ];
    let stored = t.store.add_messages(&batch).await.unwrap();
    assert_eq!(stored.len(), batch.len());
    assert_eq!(stored[0].body, "seconda");
    assert_eq!(stored[1].conversation_id, b);
    assert_eq!(stored[2], first, "a retry gets the stored message back");
    assert_eq!(stored[3], stored[0], "a retry within the batch too");
    assert!(stored[4].id > stored[1].id && stored[1].id > stored[0].id);
    let kept = t.store.citizen_messages_after(a, 0).await.unwrap();
    let bodies: Vec<&str> = kept.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["prima", "seconda", "senza id"]);
}

#[tokio::test]
async fn a_batch_with_a_bad_message_stores_nothing_of_it() {
    let t = test_store().await;
    let a = create_conversation(&t.store, &t.settings, "urp").await.id;
    let batch = [
        line(a, Some("ok"), "buona"),
        line(a + 1_000_000, Some("ko"), "conversazione inesistente"),
    ];
    assert!(t.store.add_messages(&batch).await.is_err());
    assert!(
        t.store
            .citizen_messages_after(a, 0)
            .await
            .unwrap()
            .is_empty(),
        "one transaction"
    );
}

/// The router's run: offer, accept, assign and a refused move in one
/// transaction, outcomes in order; a second run's assignment of the same
/// conversation is refused by the compare-and-set.
#[tokio::test]
async fn a_routing_run_writes_in_order_and_assigns_at_most_once() {
    let t = test_store().await;
    let op = t
        .store
        .create_user(&new_user("primo", "comune"), 1)
        .await
        .unwrap();
    let c = create_conversation(&t.store, &t.settings, "urp").await;
    let offer = RoutingWrite::Offer {
        conversation_id: c.id,
        operator_id: op.id,
        queue_id: "urp".into(),
        offered_at: 10,
        expires_at: 30_010,
        router_offer_id: 7,
    };
    let close = RoutingWrite::CloseOffer {
        conversation_id: c.id,
        router_offer_id: 7,
        outcome: "accepted".into(),
        now: 20,
    };
    let assign = RoutingWrite::Assign {
        conversation_id: c.id,
        operator_id: op.id,
        now: 20,
    };
    // Not in wrap-up: the guard refuses, and the run goes on.
    let refused = RoutingWrite::Transition {
        conversation_id: c.id,
        from: vec![ConversationState::WrapUp],
        to: ConversationState::Closed,
        kind: "wrap_up_ended".into(),
        operator_id: Some(op.id),
        data: serde_json::json!({}),
        now: 21,
    };
    let outcomes = t
        .store
        .routing_batch(&[offer, close, assign.clone(), refused])
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    assert!(matches!(outcomes[0], RoutingOutcome::Offer(id) if id > 0));
    assert_eq!(outcomes[1], RoutingOutcome::Done);
    assert_eq!(outcomes[2], RoutingOutcome::Moved(Some("comune".into())));
    assert_eq!(outcomes[3], RoutingOutcome::Moved(None));
    assert_eq!(
        t.store.routing_batch(&[assign]).await.unwrap(),
        vec![RoutingOutcome::Moved(None)],
        "assigned once"
    );
    assert!(t.store.open_offers_for(op.id).await.unwrap().is_empty());
    let detail = t
        .store
        .get_conversation(&Scope::All, c.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(detail.conversation.state, ConversationState::Assigned);
    let kinds: Vec<&str> = detail.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["queued", "offered", "assigned"]);
}

/// The stored presence remembers when it last changed: setting the same
/// one again (a console reconnecting) keeps the time, so the router can
/// restore the dashboard's time in presence after a restart.
#[tokio::test]
async fn a_presence_set_again_keeps_the_time_it_began() {
    let t = test_store().await;
    let op = t
        .store
        .create_user(&new_user("primo", "comune"), 1)
        .await
        .unwrap();
    t.store
        .set_presence(op.id, "\"available\"", 100)
        .await
        .unwrap();
    t.store
        .set_presence(op.id, "\"available\"", 200)
        .await
        .unwrap();
    let stored = t.store.presences().await.unwrap();
    assert_eq!(stored, vec![(op.id, "\"available\"".to_owned(), 100)]);
    t.store
        .set_presence(op.id, "\"offline\"", 300)
        .await
        .unwrap();
    let stored = t.store.presences().await.unwrap();
    assert_eq!(stored, vec![(op.id, "\"offline\"".to_owned(), 300)]);
}
