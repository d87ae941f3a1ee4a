//! Keyed delivery of bus events to the sockets that care about them.
//!
//! The bus is a broadcast: every receiver sees every event. That is right
//! for the router and the dashboards (a handful of receivers that want
//! everything), and wrong for ten thousand chat sockets and hundreds of
//! consoles, each interested in one or a few conversations: with a
//! broadcast every chat message would wake every socket's task, which is
//! O(events × sockets) work (20 million wake-ups a second at 2,000
//! messages/s and 10,000 chats) for nothing.
//!
//! So one dispatcher task per node reads the broadcast and hands each event
//! only to the [`Subscription`]s that watch one of its [`Key`]s: the
//! conversation it is about, and the operator it concerns. Costs are then
//! O(events × interested sockets).
//!
//! Two properties keep the semantics of the plain broadcast:
//!
//! - **No gap between subscribing and watching.** A socket subscribes when
//!   it opens, but learns its conversation id later (after `start`, or
//!   after a store read). [`Subscription::watch`] replays the recent events
//!   for the new key that were dispatched since the subscription (or its
//!   last [`Subscription::mark`]), so a notification published while the
//!   socket was busy storing the conversation is not lost. If those events
//!   are no longer in the replay window, the subscription reports
//!   [`Delivery::Lagged`] and the socket reloads from the store, as a
//!   lagging broadcast receiver did.
//! - **An operator follows their conversations at once.** When a
//!   conversation is assigned to an operator, the dispatcher itself adds the
//!   conversation's key to every subscription watching that operator before
//!   it dispatches the next event, so the first citizen message after the
//!   assignment cannot slip past a console that has not yet reacted.
//!
//! A slow socket never blocks the dispatcher: each subscription has a
//! bounded queue; when it is full the subscription is marked lagged and
//! catches up from the store (the bus carries notifications, not data).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{broadcast, mpsc};

use crate::bus::BusEvent;

/// What a subscription can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Conversation(i64),
    /// A user: offers, presence and assignments of this operator.
    Operator(i64),
}

/// What [`Subscription::recv`] returns.
#[derive(Debug)]
pub enum Delivery {
    Event(Arc<BusEvent>),
    /// Events were missed: reload what you show from the store.
    Lagged,
    /// The bus is gone (shutdown).
    Closed,
}

/// Events kept for [`Subscription::watch`] to replay.
const REPLAY_WINDOW: usize = 16_384;
/// Buckets of [`Registry::evicted`]: keys share a bucket by hash, so a
/// collision can only cause a needless reload, never a missed event.
const EVICTED_BUCKETS: usize = 4096;
/// Events a subscription may have waiting before it is marked lagged.
const QUEUE: usize = 256;

/// The keys an event is about: its conversation and its operator or user.
fn keys_of(event: &BusEvent) -> [Option<Key>; 2] {
    use BusEvent::*;
    let conversation = match event {
        ConversationCreated {
            conversation_id, ..
        }
        | ConversationChanged {
            conversation_id, ..
        }
        | OfferMade {
            conversation_id, ..
        }
        | OfferWithdrawn {
            conversation_id, ..
        }
        | Position {
            conversation_id, ..
        }
        | RoutingNotice {
            conversation_id, ..
        }
        | Typing {
            conversation_id, ..
        }
        | ConversationEnded {
            conversation_id, ..
        }
        | MessageAdded {
            conversation_id, ..
        }
        | CallHold {
            conversation_id, ..
        } => Some(Key::Conversation(*conversation_id)),
        OperatorChanged { .. } | UserChanged { .. } | Resync => None,
    };
    let operator = match event {
        ConversationChanged { operator_id, .. } => operator_id.map(Key::Operator),
        OfferMade { operator_id, .. } | OfferWithdrawn { operator_id, .. } => {
            Some(Key::Operator(*operator_id))
        }
        OperatorChanged { user_id } | UserChanged { user_id } => Some(Key::Operator(*user_id)),
        _ => None,
    };
    [conversation, operator]
}

struct Entry {
    /// `None` is a wake-up: look at the lag flag.
    tx: mpsc::Sender<Option<Arc<BusEvent>>>,
    lagged: Arc<AtomicBool>,
    keys: Vec<Key>,
    /// Sequence number of the last event dispatched before this
    /// subscription was made (or marked): `watch` replays what follows.
    since: u64,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Sequence number of the last dispatched event.
    seq: u64,
    recent: VecDeque<(u64, Arc<BusEvent>)>,
    by_key: HashMap<Key, Vec<u64>>,
    entries: HashMap<u64, Entry>,
    closed: bool,
    /// Per bucket of keys, the newest sequence number that left the replay
    /// window: `watch` reports a lag only if events *of its key* may be gone.
    evicted: Vec<u64>,
}

fn bucket(key: Key) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault};
    let hash =
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(key);
    usize::try_from(hash % EVICTED_BUCKETS as u64).unwrap_or(0)
}

impl Registry {
    fn deliver(&mut self, id: u64, event: &Arc<BusEvent>) {
        if let Some(entry) = self.entries.get(&id) {
            match entry.tx.try_send(Some(event.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    entry.lagged.store(true, Ordering::Release);
                }
                // The socket is going away; its Drop removes the entry.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    fn add_key(&mut self, id: u64, key: Key) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        if entry.keys.contains(&key) {
            return false;
        }
        entry.keys.push(key);
        self.by_key.entry(key).or_default().push(id);
        true
    }

    fn remove_key(&mut self, id: u64, key: Key) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.keys.retain(|k| *k != key);
        }
        if let Some(ids) = self.by_key.get_mut(&key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }

    fn dispatch(&mut self, event: Arc<BusEvent>) {
        self.seq += 1;
        if self.recent.len() == REPLAY_WINDOW
            && let Some((seq, old)) = self.recent.pop_front()
        {
            if self.evicted.is_empty() {
                self.evicted = vec![0; EVICTED_BUCKETS];
            }
            for key in keys_of(&old).into_iter().flatten() {
                self.evicted[bucket(key)] = seq;
            }
        }
        self.recent.push_back((self.seq, event.clone()));
        let keys = keys_of(&event);
        // An assignment: the operator's consoles follow the conversation
        // from this event on (see the module docs).
        if let BusEvent::ConversationChanged {
            conversation_id,
            state,
            operator_id: Some(operator),
            ..
        } = event.as_ref()
            && state == "assigned"
        {
            let consoles = self
                .by_key
                .get(&Key::Operator(*operator))
                .cloned()
                .unwrap_or_default();
            for id in consoles {
                self.add_key(id, Key::Conversation(*conversation_id));
            }
        }
        let mut targets: Vec<u64> = Vec::new();
        for key in keys.into_iter().flatten() {
            if let Some(ids) = self.by_key.get(&key) {
                for id in ids {
                    if !targets.contains(id) {
                        targets.push(*id);
                    }
                }
            }
        }
        for id in targets {
            self.deliver(id, &event);
        }
    }

    fn lag_everyone(&mut self) {
        for entry in self.entries.values() {
            entry.lagged.store(true, Ordering::Release);
            // Wakes a socket waiting on an empty queue; a full one wakes anyway.
            let _ = entry.tx.try_send(None);
        }
    }
}

/// The keyed fan-out of one node. Cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    registry: Arc<Mutex<Registry>>,
}

fn lock(registry: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // A panic while holding the lock leaves plain data behind; carry on.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fanout {
    /// Starts the dispatcher on `events` (a receiver of the bus's local
    /// broadcast). Must be called inside the tokio runtime.
    pub fn start(mut events: broadcast::Receiver<Arc<BusEvent>>) -> Self {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let shared = registry.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    // The bus itself may have missed events (Redis reconnected).
                    Ok(event) if matches!(*event, BusEvent::Resync) => {
                        lock(&shared).lag_everyone();
                    }
                    Ok(event) => lock(&shared).dispatch(event),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the fan-out fell behind the bus");
                        metrics::counter!("ccu_fanout_lagged_total").increment(1);
                        lock(&shared).lag_everyone();
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let mut registry = lock(&shared);
                        registry.closed = true;
                        // Dropping the senders ends every subscription.
                        registry.entries.clear();
                        registry.by_key.clear();
                        return;
                    }
                }
            }
        });
        Self { registry }
    }

    /// A new subscription watching nothing yet.
    pub fn subscribe(&self) -> Subscription {
        let (tx, rx) = mpsc::channel(QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut registry = lock(&self.registry);
        let id = registry.next_id;
        registry.next_id += 1;
        if !registry.closed {
            let since = registry.seq;
            registry.entries.insert(
                id,
                Entry {
                    tx,
                    lagged: lagged.clone(),
                    keys: Vec::new(),
                    since,
                },
            );
        }
        Subscription {
            id,
            rx,
            lagged,
            registry: self.registry.clone(),
        }
    }

    /// Subscriptions alive on this node.
    #[cfg(test)]
    fn subscriptions(&self) -> usize {
        lock(&self.registry).entries.len()
    }
}

/// One socket's view of the bus. Dropping it stops the deliveries.
pub struct Subscription {
    id: u64,
    rx: mpsc::Receiver<Option<Arc<BusEvent>>>,
    lagged: Arc<AtomicBool>,
    registry: Arc<Mutex<Registry>>,
}

impl Subscription {
    /// Watches `key` from now on, and replays the events for it dispatched
    /// since the subscription was made or last [marked](Self::mark).
    pub fn watch(&self, key: Key) {
        let mut registry = lock(&self.registry);
        let Some(since) = registry.entries.get(&self.id).map(|e| e.since) else {
            return;
        };
        if !registry.add_key(self.id, key) {
            return;
        }
        if registry
            .evicted
            .get(bucket(key))
            .is_some_and(|&seq| seq > since)
        {
            // Events of this key after `since` may be gone from the window.
            self.lagged.store(true, Ordering::Release);
        }
        let replay: Vec<Arc<BusEvent>> = registry
            .recent
            .iter()
            .filter(|(seq, event)| *seq > since && keys_of(event).contains(&Some(key)))
            .map(|(_, event)| event.clone())
            .collect();
        for event in replay {
            registry.deliver(self.id, &event);
        }
    }

    pub fn unwatch(&self, key: Key) {
        lock(&self.registry).remove_key(self.id, key);
    }

    /// Future [`watch`](Self::watch) calls replay only events after this
    /// point: call it just before reading a snapshot from the store.
    pub fn mark(&self) {
        let mut registry = lock(&self.registry);
        let seq = registry.seq;
        if let Some(entry) = registry.entries.get_mut(&self.id) {
            entry.since = seq;
        }
    }

    /// The next event for a watched key, or `Lagged` when some were missed
    /// (the queue is then emptied: the caller reloads from the store).
    pub async fn recv(&mut self) -> Delivery {
        loop {
            if self.take_lag() {
                return Delivery::Lagged;
            }
            match self.rx.recv().await {
                Some(Some(event)) => {
                    return if self.take_lag() {
                        Delivery::Lagged
                    } else {
                        Delivery::Event(event)
                    };
                }
                Some(None) => continue,
                None => return Delivery::Closed,
            }
        }
    }

    fn take_lag(&mut self) -> bool {
        if self.lagged.swap(false, Ordering::AcqRel) {
            while self.rx.try_recv().is_ok() {}
            true
        } else {
            false
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut registry = lock(&self.registry);
        if let Some(entry) = registry.entries.remove(&self.id) {
            for key in entry.keys {
                if let Some(ids) = registry.by_key.get_mut(&key) {
                    ids.retain(|i| *i != self.id);
                    if ids.is_empty() {
                        registry.by_key.remove(&key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(conversation_id: i64, message_id: i64) -> BusEvent {
        BusEvent::MessageAdded {
            conversation_id,
            message_id,
        }
    }

    fn assigned(conversation_id: i64, operator: i64) -> BusEvent {
        BusEvent::ConversationChanged {
            conversation_id,
            organization_id: "comune".into(),
            state: "assigned".into(),
            operator_id: Some(operator),
        }
    }

    async fn next(sub: &mut Subscription) -> Delivery {
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap_or(Delivery::Closed)
    }

    /// Waits until the dispatcher has seen `n` events.
    async fn settle(fanout: &Fanout, n: u64) {
        for _ in 0..500 {
            if lock(&fanout.registry).seq >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the dispatcher did not see {n} events");
    }

    fn is_message(delivery: &Delivery, id: i64) -> bool {
        matches!(delivery, Delivery::Event(e) if matches!(e.as_ref(), BusEvent::MessageAdded { message_id, .. } if *message_id == id))
    }

    #[tokio::test]
    async fn a_subscription_hears_only_the_conversations_it_watches() {
        let (tx, rx) = broadcast::channel(64);
        let fanout = Fanout::start(rx);
        let mut one = fanout.subscribe();
        let mut two = fanout.subscribe();
        one.watch(Key::Conversation(1));
        two.watch(Key::Conversation(2));
        for (c, m) in [(1, 10), (2, 20), (3, 30), (1, 11)] {
            tx.send(Arc::new(message(c, m))).unwrap();
        }
        assert!(is_message(&next(&mut one).await, 10));
        assert!(is_message(&next(&mut one).await, 11));
        assert!(is_message(&next(&mut two).await, 20));
        settle(&fanout, 4).await;
        assert!(one.rx.try_recv().is_err(), "nothing else for one");
        assert!(two.rx.try_recv().is_err(), "nothing else for two");
    }

    #[tokio::test]
    async fn watching_late_replays_what_was_published_since_the_subscription() {
        let (tx, rx) = broadcast::channel(64);
        let fanout = Fanout::start(rx);
        tx.send(Arc::new(message(7, 1))).unwrap();
        settle(&fanout, 1).await;
        let mut sub = fanout.subscribe();
        tx.send(Arc::new(message(7, 2))).unwrap();
        tx.send(Arc::new(message(8, 3))).unwrap();
        settle(&fanout, 3).await;
        // The socket learns its conversation only now.
        sub.watch(Key::Conversation(7));
        assert!(
            is_message(&next(&mut sub).await, 2),
            "message 1 came before the subscription"
        );
        tx.send(Arc::new(message(7, 4))).unwrap();
        assert!(is_message(&next(&mut sub).await, 4));
        // Watching again replays nothing twice.
        sub.watch(Key::Conversation(7));
        settle(&fanout, 4).await;
        assert!(sub.rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_operator_follows_a_conversation_from_its_assignment_on() {
        let (tx, rx) = broadcast::channel(64);
        let fanout = Fanout::start(rx);
        let mut console = fanout.subscribe();
        console.watch(Key::Operator(42));
        tx.send(Arc::new(message(5, 1))).unwrap();
        tx.send(Arc::new(assigned(5, 42))).unwrap();
        tx.send(Arc::new(message(5, 2))).unwrap();
        match next(&mut console).await {
            Delivery::Event(e) => assert_eq!(*e, assigned(5, 42)),
            other => panic!("expected the assignment, got {other:?}"),
        }
        assert!(is_message(&next(&mut console).await, 2));
        console.unwatch(Key::Conversation(5));
        tx.send(Arc::new(message(5, 3))).unwrap();
        settle(&fanout, 4).await;
        assert!(console.rx.try_recv().is_err(), "unwatched");
    }

    #[tokio::test]
    async fn a_full_queue_reports_lagged_then_delivers_again() {
        let (tx, rx) = broadcast::channel(4 * QUEUE);
        let fanout = Fanout::start(rx);
        let mut sub = fanout.subscribe();
        sub.watch(Key::Conversation(1));
        let n = u64::try_from(QUEUE).unwrap() + 10;
        for m in 0..n {
            tx.send(Arc::new(message(1, i64::try_from(m).unwrap())))
                .unwrap();
        }
        settle(&fanout, n).await;
        assert!(matches!(next(&mut sub).await, Delivery::Lagged));
        tx.send(Arc::new(message(1, 9999))).unwrap();
        assert!(is_message(&next(&mut sub).await, 9999));
    }

    #[tokio::test]
    async fn watching_late_lags_only_when_events_of_that_key_left_the_window() {
        let (tx, rx) = broadcast::channel(4 * REPLAY_WINDOW);
        let fanout = Fanout::start(rx);
        let mut sub = fanout.subscribe();
        tx.send(Arc::new(message(1, 0))).unwrap();
        // A flood about other conversations pushes it out of the window.
        let n = u64::try_from(REPLAY_WINDOW).unwrap() + 1;
        for m in 1..=n {
            tx.send(Arc::new(message(1_000_000 + i64::try_from(m).unwrap(), 0)))
                .unwrap();
        }
        settle(&fanout, n + 1).await;
        // A brand-new conversation has lost nothing: no reload.
        let fresh = fanout.subscribe();
        fresh.watch(Key::Conversation(77));
        assert!(
            !fresh.lagged.load(Ordering::Acquire),
            "nothing of 77 was evicted"
        );
        // Conversation 1's event was evicted: the late watcher must reload.
        sub.watch(Key::Conversation(1));
        assert!(matches!(next(&mut sub).await, Delivery::Lagged));
    }

    #[tokio::test]
    async fn a_resync_of_the_bus_makes_every_subscription_reload() {
        let (tx, rx) = broadcast::channel(64);
        let fanout = Fanout::start(rx);
        let mut sub = fanout.subscribe();
        sub.watch(Key::Conversation(3));
        tx.send(Arc::new(BusEvent::Resync)).unwrap();
        assert!(matches!(next(&mut sub).await, Delivery::Lagged));
        tx.send(Arc::new(message(3, 1))).unwrap();
        assert!(is_message(&next(&mut sub).await, 1));
    }

    #[tokio::test]
    async fn a_dropped_subscription_leaves_no_trace_and_the_end_of_the_bus_closes_the_rest() {
        let (tx, rx) = broadcast::channel(64);
        let fanout = Fanout::start(rx);
        let first = fanout.subscribe();
        first.watch(Key::Conversation(1));
        let mut second = fanout.subscribe();
        second.watch(Key::Conversation(1));
        assert_eq!(fanout.subscriptions(), 2);
        drop(first);
        assert_eq!(fanout.subscriptions(), 1);
        assert_eq!(
            lock(&fanout.registry).by_key[&Key::Conversation(1)].len(),
            1
        );
        drop(tx);
        assert!(matches!(next(&mut second).await, Delivery::Closed));
    }
}
