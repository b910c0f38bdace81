//! The pump's registry and delivery, without sockets: consumers are bare subscriptions.

use std::sync::Arc;
use std::time::Duration;

use tether_domain::*;
use tokio::time::timeout;

use super::*;
use actix_http::ws::CloseCode;

struct World {
    hub: Hub,
    manager: SessionManager,
}

async fn world(config: RealtimeConfig) -> World {
    let store = Arc::new(InMemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_000)));
    let manager = |sink: Arc<dyn EventSink>| {
        SessionManager::new(
            store.clone(),
            Arc::new(NoTokens::default()),
            sink,
            clock.clone(),
            Policy::defaults(),
        )
        .unwrap()
    };
    let hub = Hub::start(store.clone(), store.clone(), clock.clone(), config)
        .await
        .unwrap();
    let manager = manager(Arc::new(hub.clone()));
    World { hub, manager }
}

async fn open(manager: &SessionManager, id: &str) {
    manager
        .open(NewSession {
            session_id: SessionId::parse(id).unwrap(),
            client_type: "t".into(),
            client_version: None,
            principal: None,
            metadata: Metadata::default(),
        })
        .await
        .unwrap();
}

async fn next(sub: &mut Subscription) -> serde_json::Value {
    let text = timeout(Duration::from_secs(5), sub.queue.recv())
        .await
        .expect("a message in time")
        .expect("the queue is open");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_full_queue_closes_that_consumer_only() {
    let w = world(RealtimeConfig {
        queue_capacity: 2,
        ..RealtimeConfig::default()
    })
    .await;
    let mut fast = w.hub.subscribe().await.unwrap();
    let mut slow = w.hub.subscribe().await.unwrap();
    assert_eq!(w.hub.stats().connections, 2);

    for i in 0..5 {
        open(&w.manager, &format!("s{i}")).await;
        // The fast one drains as it goes; the slow one never does.
        assert_eq!(next(&mut fast).await["seq"], i + 1);
    }
    let kill = timeout(Duration::from_secs(5), &mut slow.kill)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kill, Kill::SLOW_CONSUMER);
    assert_eq!(kill.code, CloseCode::Again);
    assert_eq!(u16::from(kill.code), 1013);
    assert_eq!(kill.reason, "slow_consumer");
    assert_eq!(w.hub.stats().slow_consumers, 1, "counted once");
    // What it had queued stays readable, but nothing more is pushed.
    assert_eq!(next(&mut slow).await["seq"], 1);
    assert_eq!(next(&mut slow).await["seq"], 2);
    assert!(slow.queue.recv().await.is_none());
    assert_eq!(w.hub.stats().connections, 1);

    open(&w.manager, "after").await;
    assert_eq!(next(&mut fast).await["seq"], 6);
    w.hub.shutdown().await;
}

/// What a connection does once a message has been written: give its bytes back.
async fn take(sub: &mut Subscription) -> serde_json::Value {
    let text = timeout(Duration::from_secs(5), sub.queue.recv())
        .await
        .expect("a message in time")
        .expect("the queue is open");
    sub.budget.release(text.len());
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_consumer_over_its_byte_budget_closes_though_its_queue_has_room() {
    // Each of these events is about 120 bytes: two fit, the third does not.
    let w = world(RealtimeConfig {
        max_buffered_bytes: 300,
        ..RealtimeConfig::default()
    })
    .await;
    let mut fast = w.hub.subscribe().await.unwrap();
    let mut slow = w.hub.subscribe().await.unwrap();
    for i in 0..3 {
        open(&w.manager, &format!("s{i}")).await;
        assert_eq!(take(&mut fast).await["seq"], i + 1);
        assert_eq!(fast.budget.held(), 0);
    }
    let kill = timeout(Duration::from_secs(5), &mut slow.kill)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kill, Kill::SLOW_CONSUMER);
    let held = slow.budget.held();
    assert!((200..=300).contains(&held), "{held}");
    assert_eq!(w.hub.stats().buffered_bytes, held);
    assert_eq!(w.hub.stats().connections, 1);
    // Its bytes go with it.
    drop(slow);
    assert_eq!(w.hub.stats().buffered_bytes, 0);

    w.hub.shutdown().await;
}

#[tokio::test]
async fn a_message_larger_than_the_budget_reaches_a_consumer_that_holds_nothing() {
    let w = world(RealtimeConfig {
        max_buffered_bytes: 300,
        health_interval: Duration::from_millis(20),
        ..RealtimeConfig::default()
    })
    .await;
    let big = Metadata::parse(serde_json::json!({ "blob": "x".repeat(1000) })).unwrap();
    w.manager
        .open(NewSession {
            session_id: SessionId::parse("big").unwrap(),
            client_type: "t".into(),
            client_version: None,
            principal: None,
            metadata: big,
        })
        .await
        .unwrap();
    let mut sub = w.hub.subscribe().await.unwrap();
    for _ in 0..3 {
        let health = take(&mut sub).await;
        assert_eq!(health["type"], "health_update");
        assert!(health.to_string().len() > 1000);
    }
    assert_eq!(w.hub.stats().connections, 1, "not closed for it");
    w.hub.shutdown().await;
}

#[tokio::test]
async fn a_subscription_starts_at_the_hub_position_and_deregisters_on_drop() {
    let w = world(RealtimeConfig::default()).await;
    open(&w.manager, "before").await;
    // Registration catches up with the outbox first: 'before' is behind this subscriber.
    let mut first = w.hub.subscribe().await.unwrap();
    assert_eq!(first.position, 1);
    open(&w.manager, "after").await;
    assert_eq!(next(&mut first).await["seq"], 2);
    let second = w.hub.subscribe().await.unwrap();
    assert_eq!(second.position, 2);
    let stats = w.hub.stats();
    assert_eq!((stats.connections, stats.delivered), (2, 2));
    drop(second);
    // The deregistration is a command behind us; the next registration is answered after it.
    let third = w.hub.subscribe().await.unwrap();
    assert_eq!(w.hub.stats().connections, 2);
    drop(third);
    w.hub.shutdown().await;
}

#[tokio::test]
async fn a_new_hub_does_not_replay_history() {
    let store = Arc::new(InMemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_secs(1)));
    let manager = SessionManager::new(
        store.clone(),
        Arc::new(NoTokens::default()),
        Arc::new(NoEvents),
        clock.clone(),
        Policy::defaults(),
    )
    .unwrap();
    open(&manager, "old").await;
    let hub = Hub::start(store.clone(), store, clock, RealtimeConfig::default())
        .await
        .unwrap();
    assert_eq!(hub.stats().delivered, 1);
    let mut sub = hub.subscribe().await.unwrap();
    // Written through a manager that does not wake the hub: the feed's own wake-up delivers it.
    open(&manager, "new").await;
    let msg = next(&mut sub).await;
    assert_eq!(msg["seq"], 2);
    assert_eq!(msg["session_id"], "new");
    hub.shutdown().await;
}

#[tokio::test]
async fn shutdown_kills_every_consumer_and_refuses_new_ones() {
    let w = world(RealtimeConfig::default()).await;
    let mut sub = w.hub.subscribe().await.unwrap();
    w.hub.shutdown().await;
    assert_eq!((&mut sub.kill).await.unwrap(), Kill::SHUTDOWN);
    assert!(matches!(
        w.hub.subscribe().await,
        Err(crate::Error::HubStopped)
    ));
    assert_eq!(w.hub.stats().connections, 0);
    w.hub.shutdown().await; // idempotent
}

#[tokio::test]
async fn invalid_config_is_refused_at_start() {
    let store = Arc::new(InMemoryStore::new());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let config = RealtimeConfig {
        health_interval: Duration::ZERO,
        ..RealtimeConfig::default()
    };
    assert!(matches!(
        Hub::start(store.clone(), store, clock, config).await,
        Err(crate::Error::InvalidConfig("health_interval"))
    ));
}

/// Counts the feed reads a hub makes.
struct CountingFeed {
    inner: Arc<InMemoryStore>,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl EventFeed for CountingFeed {
    async fn events_after(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, tether_domain::Error> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.events_after(after, limit).await
    }
    async fn last_seq(&self) -> Result<u64, tether_domain::Error> {
        self.inner.last_seq().await
    }
    async fn pruned_through(&self) -> Result<u64, tether_domain::Error> {
        self.inner.pruned_through().await
    }
    async fn epoch(&self) -> Result<String, tether_domain::Error> {
        self.inner.epoch().await
    }
    async fn wait_for_events(&self) {
        self.inner.wait_for_events().await;
    }
}

#[tokio::test]
async fn without_dashboards_the_hub_reads_nothing_and_a_newcomer_starts_at_the_end() {
    let store = Arc::new(InMemoryStore::new());
    let feed = Arc::new(CountingFeed {
        inner: store.clone(),
        reads: Default::default(),
    });
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(Timestamp::from_secs(1)));
    let hub = Hub::start(
        feed.clone(),
        store.clone(),
        clock.clone(),
        RealtimeConfig::default(),
    )
    .await
    .unwrap();
    let manager = SessionManager::new(
        store.clone(),
        Arc::new(NoTokens::default()),
        Arc::new(hub.clone()),
        clock,
        Policy::defaults(),
    )
    .unwrap();
    for i in 0..50 {
        open(&manager, &format!("quiet{i}")).await;
        // The pump runs on this (current-thread) runtime: let it handle the wake-up.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(
        feed.reads.load(Ordering::SeqCst),
        0,
        "50 commits woke the pump; nobody watched, so it read nothing"
    );
    let mut sub = hub.subscribe().await.unwrap();
    assert_eq!(
        sub.position, 50,
        "starts at the end, without reading the 50 events"
    );
    open(&manager, "watched").await;
    assert_eq!(next(&mut sub).await["seq"], 51);
}
