//! The event bus, in-process or on Redis (CCU_TEST_REDIS_URL): same tests.

use std::time::Duration;

use ccu::bus::{Bus, BusEvent};
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

async fn test_bus(prefix: &str, shutdown: &CancellationToken) -> Bus {
    match redis_url() {
        Some(url) => Bus::redis(&url, prefix, shutdown.child_token())
            .await
            .unwrap(),
        None => Bus::in_process(),
    }
}

fn event(n: i64) -> BusEvent {
    BusEvent::MessageAdded {
        conversation_id: n,
        message_id: n * 10,
    }
}

async fn next(rx: &mut tokio::sync::broadcast::Receiver<std::sync::Arc<BusEvent>>) -> BusEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("the bus is open")
        .as_ref()
        .clone()
}

#[tokio::test]
async fn subscribers_receive_published_events_in_order() {
    let shutdown = CancellationToken::new();
    let bus = test_bus(&format!("ccu-test-{}", random_suffix()), &shutdown).await;
    assert!(bus.healthy().await);
    let mut a = bus.subscribe();
    let mut b = bus.subscribe();
    for n in 1..=20 {
        bus.publish(event(n)).await.unwrap();
    }
    for n in 1..=20 {
        assert_eq!(next(&mut a).await, event(n));
        assert_eq!(next(&mut b).await, event(n));
    }
    shutdown.cancel();
}

#[tokio::test]
async fn two_nodes_on_redis_hear_each_other() {
    let Some(url) = redis_url() else {
        // In-process buses are one per node by definition; this is the Redis case.
        return;
    };
    let shutdown = CancellationToken::new();
    let prefix = format!("ccu-test-{}", random_suffix());
    let node_a = Bus::redis(&url, &prefix, shutdown.child_token())
        .await
        .unwrap();
    let node_b = Bus::redis(&url, &prefix, shutdown.child_token())
        .await
        .unwrap();
    let other_tenant = Bus::redis(&url, &format!("{prefix}-other"), shutdown.child_token())
        .await
        .unwrap();
    let mut on_b = node_b.subscribe();
    let mut on_other = other_tenant.subscribe();
    node_a
        .publish(BusEvent::UserChanged { user_id: 7 })
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await, BusEvent::UserChanged { user_id: 7 });
    // Garbage on the channel is skipped, not fatal.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(format!("{prefix}:events"))
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    node_a
        .publish(BusEvent::UserChanged { user_id: 8 })
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await, BusEvent::UserChanged { user_id: 8 });
    // Another prefix is another deployment: nothing crosses.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), on_other.recv())
            .await
            .is_err()
    );
    shutdown.cancel();
}
