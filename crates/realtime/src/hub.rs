//! The hub: one task (the pump) owns the registry of connections and the delivery position; `Hub` is
//! a cheap cloneable handle that talks to it over a bounded command channel (the actix
//! `chat-actorless` shape).
//!
//! The pump never awaits a client. Each message is serialized once and pushed with `try_send` into
//! every connection's bounded queue, and its bytes are charged to that connection's [`Budget`] until
//! they have been written towards its socket. A connection over its budget (or with a full queue)
//! cannot keep up, and it is removed and told to close (1013 `slow_consumer`) rather than allowed to
//! slow the others down or grow the server's memory. This is the same trade as mini-redis's
//! broadcast channel, with "lagged" turned into "disconnected": a dashboard that missed events
//! resumes with `since=` and gets them from the outbox.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::{HttpRequest, HttpResponse, web};
use tether_domain::{
    Clock, EventFeed, EventSink, SessionDirectory, SessionView, StatusCounts, StoredEvent,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, interval_at, sleep_until};

use crate::budget::Budget;
use crate::config::RealtimeConfig;
use crate::connection::Replays;
use crate::error::{Error, chain};
use crate::message::{self, Text};
use crate::queue::{self, Refused};
use crate::sequencer::Sequencer;
use crate::subscription::{Command, Kill, PAGE, Subscription};
use crate::{ConnectOptions, HealthUpdates, connection, socket, wire};

/// Sessions listed in a `health_update`.
const HEALTH_SESSIONS: u32 = 50;
/// Registry commands waiting for the pump. Small: the pump answers each without awaiting anything.
const COMMAND_CAPACITY: usize = 64;

/// What the handle and the pump share without a lock.
#[derive(Default)]
struct Signals {
    /// Set by `EventSink::publish`: an event committed in this process.
    wake: Notify,
    shutdown: Notify,
    /// Some connection is registered or registering: only then does a commit wake the pump. Without
    /// dashboards a wake-up per commit was a cross-thread hand-off per request for nothing. Set
    /// before a registration reads the outbox, so a commit either is read by it or wakes the pump.
    watched: AtomicBool,
    connections: AtomicUsize,
    delivered: AtomicU64,
    /// Every connection's [`Budget`] adds to it.
    buffered: Arc<AtomicUsize>,
    /// Connections closed as slow consumers, ever.
    slow_consumers: AtomicU64,
    /// Every connection's replay counts here.
    replays: Arc<Replays>,
    /// The counts of the last `health_update`, and when they were read: what a metrics scrape
    /// reuses instead of querying the database again.
    counts: Mutex<Option<(Instant, StatusCounts)>>,
}

/// A snapshot of the hub, for health pages, tests and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HubStats {
    /// Registered connections.
    pub connections: usize,
    /// The last `seq` delivered to live connections.
    pub delivered: u64,
    /// Bytes held for connections and not yet written towards their sockets (their queues and
    /// response bodies), summed over connections. Each connection's share is bounded by
    /// [`RealtimeConfig::max_buffered_bytes`]; beyond this count actix-http holds at most about
    /// 48 KiB per connection. A message is counted for every connection that holds it, although
    /// they share one copy (slices of it, for large ones), so the memory used is usually far less.
    pub buffered_bytes: usize,
    /// Connections closed with 1013 `slow_consumer` since the hub started.
    pub slow_consumers: u64,
    /// Resuming connections (`since`) whose replay ran to its `resumed` message, since the hub
    /// started.
    pub replays: u64,
    /// Of those, the ones answered `recovered: false` (events they missed were pruned, or their
    /// position belongs to another outbox): their dashboards must reload over REST.
    pub incomplete_replays: u64,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    signals: Arc<Signals>,
    feed: Arc<dyn EventFeed>,
    clock: Arc<dyn Clock>,
    config: RealtimeConfig,
    pump: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the event hub: fans events and health summaries out to WebSocket dashboards.
///
/// Cloning is cheap (one `Arc`). It is also the [`EventSink`] to give the writing
/// [`SessionManager`](tether_domain::SessionManager): `publish` only wakes the pump, which then reads the outbox, so an event
/// reaches dashboards through one ordered path whether it was written here or by another instance.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("stats", &self.stats())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// Starts the pump at the feed's current end, so that a new hub does not replay history to live
    /// dashboards (a dashboard that wants history asks with `since`).
    ///
    /// `directory` is read for the health summary only (the newest sessions and the counts): the
    /// store itself will do. The manager that *writes* should have this hub (or a
    /// [`Sinks`](tether_domain::Sinks) containing it) as its sink.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`], [`Error::NoRuntime`] outside a tokio runtime, [`Error::Feed`] when the
    /// feed's position cannot be read.
    pub async fn start(
        feed: Arc<dyn EventFeed>,
        directory: Arc<dyn SessionDirectory>,
        clock: Arc<dyn Clock>,
        config: RealtimeConfig,
    ) -> Result<Hub, Error> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let delivered = feed.last_seq().await.map_err(Error::Feed)?;
        let signals = Arc::new(Signals::default());
        signals.delivered.store(delivered, Ordering::Relaxed);
        let (commands, receiver) = mpsc::channel(COMMAND_CAPACITY);
        let pump = Pump {
            feed: Arc::clone(&feed),
            directory,
            clock: Arc::clone(&clock),
            config,
            signals: Arc::clone(&signals),
            sequencer: Sequencer::new(delivered, config.gap_timeout),
            connections: HashMap::new(),
            next_id: 0,
        };
        let task = runtime.spawn(pump.run(receiver));
        Ok(Hub {
            inner: Arc::new(Inner {
                commands,
                signals,
                feed,
                clock,
                config,
                pump: Mutex::new(Some(task)),
            }),
        })
    }

    /// Upgrades an (already authenticated) request to a WebSocket and serves it: replay from `since`
    /// if given (see [`resume_point`](crate::resume_point)), then live events and health updates.
    ///
    /// The connection is registered before the upgrade response is returned, so every event
    /// delivered after the client saw the upgrade reaches it. If the hub has stopped, the upgrade
    /// still succeeds and the socket is closed at once with 1001 `server_shutdown`.
    ///
    /// A closing connection (for any reason) that is not gone within 2 s, typically because its
    /// client does not read, is reset: through the socket kept by [`on_connect`](crate::on_connect)
    /// when the server was given that hook, which is the only way once actix-http's write buffer is
    /// full.
    ///
    /// # Errors
    /// The handshake's error when the request is not a valid WebSocket upgrade.
    pub async fn connect(
        &self,
        req: &HttpRequest,
        body: web::Payload,
        since: Option<u64>,
    ) -> Result<HttpResponse, actix_web::Error> {
        let options = ConnectOptions {
            since,
            health: HealthUpdates::Full,
        };
        self.connect_with(req, body, options).await
    }

    /// [`connect`](Self::connect) with the client's choices read by
    /// [`connect_options`](crate::connect_options): where to resume, and which health updates.
    ///
    /// # Errors
    /// The handshake's error when the request is not a valid WebSocket upgrade.
    pub async fn connect_with(
        &self,
        req: &HttpRequest,
        body: web::Payload,
        options: ConnectOptions,
    ) -> Result<HttpResponse, actix_web::Error> {
        let ConnectOptions { since, health } = options;
        let mut handshake = actix_http::ws::handshake(req.head())?;
        let budget = self.budget();
        let (out, response_body) = wire::outbound(Arc::clone(&budget));
        let response = handshake.message_body(BoxBody::new(response_body))?;
        let inbound = wire::Inbound::new(body, self.inner.config.max_frame);
        let subscription = self.subscribe_with(budget, health).await;
        // The payload and the body are not `Send`: the connection runs on this worker's local task
        // set, next to the actix-http dispatcher that polls them.
        let context = connection::Context {
            feed: Arc::clone(&self.inner.feed),
            clock: Arc::clone(&self.inner.clock),
            config: self.inner.config,
            replays: Arc::clone(&self.inner.signals.replays),
        };
        actix_web::rt::spawn(connection::run(
            context,
            out,
            inbound,
            socket::take(req),
            subscription,
            since,
        ));
        Ok(response.into())
    }

    /// Connections registered right now, the delivery position, and the counters since the start.
    /// Atomics only: no lock, no query.
    pub fn stats(&self) -> HubStats {
        let signals = &self.inner.signals;
        HubStats {
            connections: signals.connections.load(Ordering::Relaxed),
            delivered: signals.delivered.load(Ordering::Relaxed),
            buffered_bytes: signals.buffered.load(Ordering::Relaxed),
            slow_consumers: signals.slow_consumers.load(Ordering::Relaxed),
            replays: signals.replays.done.load(Ordering::Relaxed),
            incomplete_replays: signals.replays.incomplete.load(Ordering::Relaxed),
        }
    }

    /// The sessions per state that the last `health_update` reported, if they were read from the
    /// directory at most `max_age` ago. The pump reads them once per tick only while dashboards are
    /// connected: without dashboards this is `None` and a caller that needs counts reads them itself.
    pub fn recent_counts(&self, max_age: Duration) -> Option<StatusCounts> {
        let cached = *self
            .inner
            .signals
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cached
            .filter(|(at, _)| at.elapsed() <= max_age)
            .map(|(_, counts)| counts)
    }

    /// Stops the pump: every connection is closed with 1001 `server_shutdown`, and later connections
    /// are closed the same way. Returns once the pump has ended. Idempotent.
    ///
    /// Without it the pump runs as long as a handle or a connection exists; since the writing
    /// manager holds the hub as its sink, that is usually the life of the process.
    pub async fn shutdown(&self) {
        self.inner.signals.shutdown.notify_one();
        let task = self
            .inner
            .pump
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the event hub's task ended abnormally");
        }
    }

    /// A fresh byte budget for one consumer.
    fn budget(&self) -> Arc<Budget> {
        Budget::new(
            Arc::clone(&self.inner.signals.buffered),
            self.inner.config.max_buffered_bytes,
        )
    }

    /// Registers a consumer with the pump.
    #[cfg(test)]
    pub(crate) async fn subscribe(&self) -> Result<Subscription, Error> {
        self.subscribe_with(self.budget(), HealthUpdates::Full)
            .await
    }

    /// Registers a consumer with the pump, charging what is pushed to it to `budget`.
    async fn subscribe_with(
        &self,
        budget: Arc<Budget>,
        health: HealthUpdates,
    ) -> Result<Subscription, Error> {
        let (queue_tx, queue) = queue::queue(self.inner.config.queue_capacity);
        let (kill_tx, kill) = oneshot::channel();
        let (reply_tx, reply) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Register {
                queue: queue_tx,
                kill: kill_tx,
                budget: Arc::clone(&budget),
                health,
                reply: reply_tx,
            })
            .await
            .map_err(|_| Error::HubStopped)?;
        let (id, position) = reply.await.map_err(|_| Error::HubStopped)?;
        Ok(Subscription {
            id,
            position,
            queue,
            kill,
            budget,
            commands: self.inner.commands.clone(),
        })
    }
}

impl EventSink for Hub {
    fn publish(&self, _event: &StoredEvent) {
        // The event is read back from the outbox, not taken from here: one ordered path for local and
        // remote events, and the pump's position stays the outbox's. `notify_one` keeps a permit if
        // the pump is busy, so no wake-up is lost.
        if self.inner.signals.watched.load(Ordering::SeqCst) {
            self.inner.signals.wake.notify_one();
        }
    }
}

/// A registered connection, as the pump sees it.
struct Entry {
    queue: queue::Sender,
    kill: oneshot::Sender<Kill>,
    budget: Arc<Budget>,
    health: HealthUpdates,
}

/// The task that owns the registry and the delivery position.
struct Pump {
    feed: Arc<dyn EventFeed>,
    directory: Arc<dyn SessionDirectory>,
    clock: Arc<dyn Clock>,
    config: RealtimeConfig,
    signals: Arc<Signals>,
    sequencer: Sequencer,
    connections: HashMap<u64, Entry>,
    next_id: u64,
}

impl Pump {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let feed = Arc::clone(&self.feed);
        let signals = Arc::clone(&self.signals);
        // Kept across iterations and renewed only when it fires, so a write between two waits is
        // never missed (a fresh waiter would start after it).
        let mut feed_wait = feed.wait_for_events();
        let mut feed_armed = false;
        let mut poll = interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let period = self.config.health_interval;
        let mut health = interval_at(Instant::now() + period, period);
        health.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            // The feed is waited on only while someone watches; a waiter left registered would be
            // woken by every commit, so it is replaced by a fresh (not yet registered) one.
            let watched = !self.connections.is_empty();
            if feed_armed && !watched {
                feed_wait = feed.wait_for_events();
            }
            feed_armed = watched;
            let gap = self.sequencer.gap_deadline();
            // Biased: registry commands before deliveries, so a registration is answered promptly
            // and a closing connection stops receiving.
            tokio::select! {
                biased;
                () = signals.shutdown.notified() => break,
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    // Every handle and subscription is gone: nobody to serve.
                    None => break,
                },
                () = &mut feed_wait, if watched => {
                    feed_wait = feed.wait_for_events();
                    self.pull_if_watched().await;
                }
                () = signals.wake.notified() => self.pull_if_watched().await,
                () = until(gap) => self.pull_if_watched().await,
                _ = poll.tick() => self.pull_if_watched().await,
                _ = health.tick() => {
                    self.pull_if_watched().await;
                    self.health().await;
                }
            }
        }
        self.remove_all(Kill::SHUTDOWN);
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Register {
                queue,
                kill,
                budget,
                health,
                reply,
            } => {
                // Catch up first, so the position handed out is the outbox's as far as it can be
                // read now: a resuming client is then judged against the freshest position. After
                // a time without dashboards, nothing was read: start from the outbox's end, as a
                // new hub does, rather than read everything written meanwhile.
                self.signals.watched.store(true, Ordering::SeqCst);
                if self.connections.is_empty() {
                    self.skip_to_end().await;
                }
                self.pull().await;
                let id = self.next_id;
                self.next_id += 1;
                // In the registry (and counted) before the caller hears back; kept only if the caller
                // still waits, since otherwise nobody would drain the queue.
                self.connections.insert(
                    id,
                    Entry {
                        queue,
                        kill,
                        budget,
                        health,
                    },
                );
                if reply.send((id, self.sequencer.delivered())).is_err() {
                    self.connections.remove(&id);
                }
            }
            Command::Deregister { id } => {
                self.connections.remove(&id);
            }
        }
        self.count();
    }

    /// Reads the feed from the delivery position until it is exhausted or a hole stops it.
    /// Reads the feed only while someone watches: without dashboards every wake-up (one per
    /// commit, at worst) would cost a query for nothing.
    async fn pull_if_watched(&mut self) {
        if !self.connections.is_empty() {
            self.pull().await;
        }
    }

    /// Moves the position to the outbox's end without reading what lies before it.
    async fn skip_to_end(&mut self) {
        match self.feed.last_seq().await {
            Ok(last) if last > self.sequencer.delivered() => {
                self.sequencer = Sequencer::new(last, self.config.gap_timeout);
                self.signals.delivered.store(last, Ordering::Relaxed);
            }
            Ok(_) => {}
            // Then the pull reads from the old position, which is correct, only slower.
            Err(e) => tracing::warn!(error = %chain(&e), "could not read the feed's end"),
        }
    }

    async fn pull(&mut self) {
        loop {
            let page = match self
                .feed
                .events_after(self.sequencer.delivered(), PAGE)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    // Retried at the next wake-up or poll; the position has not moved.
                    tracing::warn!(error = %chain(&e), "could not read the event feed");
                    return;
                }
            };
            let more = page.len() >= PAGE as usize;
            let admitted = self.sequencer.admit(page, Instant::now());
            for event in &admitted.ready {
                match message::event(event) {
                    Ok(text) => self.broadcast(&text, |_| true),
                    Err(e) => {
                        tracing::error!(seq = event.seq, error = %e, "could not serialize an event")
                    }
                }
            }
            self.signals
                .delivered
                .store(self.sequencer.delivered(), Ordering::Relaxed);
            if admitted.blocked {
                if self.skip_pruned().await {
                    continue;
                }
                return;
            }
            if !more {
                return;
            }
        }
    }

    /// A hole that pruning made will never fill: skip it now rather than after `gap_timeout`.
    /// Returns whether the position moved.
    async fn skip_pruned(&mut self) -> bool {
        match self.feed.pruned_through().await {
            Ok(pruned) => self.sequencer.skip_through(pruned),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "could not read the feed's pruning point");
                false
            }
        }
    }

    /// One summary per tick for every connection: two queries, one serialization.
    async fn health(&mut self) {
        if self.connections.is_empty() {
            return;
        }
        let (newest, counts) = match (
            self.directory.newest(HEALTH_SESSIONS).await,
            self.directory.count_by_status().await,
        ) {
            (Ok(page), Ok(counts)) => (page, counts),
            (Err(e), _) | (_, Err(e)) => {
                // A missed summary is harmless; the next tick tries again.
                tracing::warn!(error = %chain(&e), "health_update skipped: sessions could not be read");
                return;
            }
        };
        *self
            .signals
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), counts));
        let views: Vec<SessionView> = newest.iter().map(SessionView::from).collect();
        // Each shape is serialized once, and only if a connection takes it.
        for (mode, sessions) in [
            (HealthUpdates::Full, Some(views.as_slice())),
            (HealthUpdates::Summary, None),
        ] {
            if !self.connections.values().any(|e| e.health == mode) {
                continue;
            }
            match message::health(
                self.sequencer.delivered(),
                self.clock.now(),
                sessions,
                counts,
            ) {
                Ok(text) => self.broadcast(&text, |e| e.health == mode),
                Err(e) => tracing::error!(error = %e, "could not serialize a health_update"),
            }
        }
    }

    /// Pushes one message to every queue that `to` picks, without waiting; drops consumers that
    /// cannot take it.
    fn broadcast(&mut self, text: &Text, to: impl Fn(&Entry) -> bool) {
        let bytes = text.len();
        let mut gone = Vec::new();
        for (id, entry) in self.connections.iter().filter(|(_, e)| to(e)) {
            // Charged before the push so that the consumer never releases bytes not yet counted;
            // taken back when the push fails.
            if !entry.budget.admits(bytes) {
                gone.push((*id, true));
                continue;
            }
            entry.budget.charge(bytes);
            match entry.queue.try_send(Arc::clone(text)) {
                Ok(()) => {}
                Err(Refused::Full) => {
                    entry.budget.release(bytes);
                    gone.push((*id, true));
                }
                Err(Refused::Closed) => {
                    entry.budget.release(bytes);
                    gone.push((*id, false));
                }
            }
        }
        for (id, slow) in gone {
            if let Some(entry) = self.connections.remove(&id)
                && slow
            {
                tracing::info!(
                    connection = id,
                    buffered_bytes = entry.budget.held(),
                    "closing a dashboard that cannot keep up"
                );
                self.signals.slow_consumers.fetch_add(1, Ordering::Relaxed);
                let _ = entry.kill.send(Kill::SLOW_CONSUMER);
            }
        }
        self.count();
    }

    fn remove_all(&mut self, kill: Kill) {
        for (_, entry) in self.connections.drain() {
            let _ = entry.kill.send(kill);
        }
        self.count();
    }

    fn count(&self) {
        self.signals
            .connections
            .store(self.connections.len(), Ordering::Relaxed);
        self.signals
            .watched
            .store(!self.connections.is_empty(), Ordering::SeqCst);
    }
}

/// Resolves at `deadline`, or never.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
