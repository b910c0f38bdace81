//! The dashboards: WebSocket clients spread over threads, each thread running its own actix System
//! (awc's client and sockets are not `Send`), driven by commands from the controller.
//!
//! A dashboard answers pings, counts `health_update`s, and stamps each `session_created` whose
//! `session_id` belongs to the armed round with `Instant::now()` as soon as its frame is decoded.
//! `Instant` is one monotonic clock for every thread, so the controller subtracts its own send times.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use awc::ws::{CloseCode, CloseReason, Frame, Message};
use tokio::sync::{mpsc, oneshot, watch};

use crate::BoxError;

/// Bound on one handshake (connect + upgrade).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on closing a thread's dashboards.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest frame a dashboard accepts: a `health_update` lists 50 sessions, far below this.
const MAX_FRAME: usize = 1 << 20;

/// One received event of the armed round.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// The group of the dashboard that received it (which server it is connected to).
    pub group: u8,
    /// Index of the event in the round.
    pub event: u32,
    /// When its frame was decoded.
    pub at: Instant,
}

/// Outcome of opening dashboards.
#[derive(Clone, Debug)]
pub struct Ramp {
    /// Handshakes that got 101.
    pub ok: usize,
    /// Handshakes that failed.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// Wall time from the first attempt to the last answer (over all threads).
    pub wall: Duration,
    /// Handshakes allowed in flight at once (over all threads).
    pub in_flight: usize,
    /// Handshake durations (attempt to 101), µs.
    pub handshakes: crate::stats::Samples,
}

impl Ramp {
    /// Handshakes completed per second of wall time.
    pub fn rate(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }
}

/// What the dashboards have seen of the server.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Dashboards still open.
    pub open: usize,
    /// Closed by the server with a close frame.
    pub closed_by_server: usize,
    /// Ended without a close frame (reset, or a protocol error).
    pub lost: usize,
    /// The last close frame or error seen, for the report.
    pub last_end: Option<String>,
}

enum Command {
    Connect {
        url: Arc<str>,
        key: Arc<str>,
        group: u8,
        count: usize,
        in_flight: usize,
        reply: oneshot::Sender<ThreadRamp>,
    },
    Arm {
        round: Arc<HashMap<String, u32>>,
        reply: oneshot::Sender<()>,
    },
    Collect {
        reply: oneshot::Sender<Vec<Arrival>>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    CloseAll {
        reply: oneshot::Sender<usize>,
    },
}

struct ThreadRamp {
    ok: usize,
    failed: usize,
    first_error: Option<String>,
    started: Instant,
    finished: Instant,
    handshakes: crate::stats::Samples,
}

/// Handle to the dashboard threads. Dropping it closes every dashboard and joins the threads.
pub struct Fleet {
    threads: Vec<(mpsc::Sender<Command>, Option<JoinHandle<()>>)>,
    arrived: Arc<AtomicUsize>,
    health_frames: Arc<AtomicU64>,
}

impl Fleet {
    /// Starts `threads` dashboard threads.
    ///
    /// # Errors
    /// When a thread cannot be spawned.
    pub fn start(threads: usize) -> Result<Self, BoxError> {
        let arrived = Arc::new(AtomicUsize::new(0));
        let health_frames = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let (tx, rx) = mpsc::channel(16);
            let counters = (arrived.clone(), health_frames.clone());
            let handle = std::thread::Builder::new()
                .name(format!("dashboards-{i}"))
                .spawn(move || {
                    let system = actix_rt::System::new();
                    system.block_on(serve_commands(rx, counters.0, counters.1));
                })?;
            handles.push((tx, Some(handle)));
        }
        Ok(Self {
            threads: handles,
            arrived,
            health_frames,
        })
    }

    /// Opens `count` dashboards on `url` with the API key, split evenly over the threads, with at
    /// most `in_flight` handshakes pending at once (over all threads).
    ///
    /// # Errors
    /// When a thread has stopped.
    pub async fn connect(
        &self,
        url: &str,
        key: &str,
        group: u8,
        count: usize,
        in_flight: usize,
    ) -> Result<Ramp, BoxError> {
        let n = self.threads.len();
        let (url, key): (Arc<str>, Arc<str>) = (url.into(), key.into());
        let mut replies = Vec::with_capacity(n);
        for (i, (tx, _)) in self.threads.iter().enumerate() {
            let share = count / n + usize::from(i < count % n);
            if share == 0 {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            tx.send(Command::Connect {
                url: url.clone(),
                key: key.clone(),
                group,
                count: share,
                in_flight: (in_flight / n).max(1),
                reply,
            })
            .await
            .map_err(|_| "a dashboard thread has stopped")?;
            replies.push(rx);
        }
        let mut ramp = Ramp {
            ok: 0,
            failed: 0,
            first_error: None,
            wall: Duration::ZERO,
            in_flight: (in_flight / n).max(1) * replies.len(),
            handshakes: crate::stats::Samples::default(),
        };
        let (mut first, mut last) = (None::<Instant>, None::<Instant>);
        for rx in replies {
            let r = rx.await.map_err(|_| "a dashboard thread has stopped")?;
            ramp.ok += r.ok;
            ramp.failed += r.failed;
            ramp.first_error = ramp.first_error.or(r.first_error);
            first = Some(first.map_or(r.started, |f| f.min(r.started)));
            last = Some(last.map_or(r.finished, |l| l.max(r.finished)));
            ramp.handshakes.extend(r.handshakes);
        }
        if let (Some(f), Some(l)) = (first, last) {
            ramp.wall = l.saturating_duration_since(f);
        }
        Ok(ramp)
    }

    /// Starts recording the arrivals of the events named in `round` (session id → index), forgetting
    /// earlier ones, and resets the arrival counter.
    ///
    /// # Errors
    /// When a thread has stopped.
    pub async fn arm(&self, round: HashMap<String, u32>) -> Result<(), BoxError> {
        let round = Arc::new(round);
        self.arrived.store(0, Ordering::SeqCst);
        for (tx, _) in &self.threads {
            let (reply, rx) = oneshot::channel();
            tx.send(Command::Arm {
                round: round.clone(),
                reply,
            })
            .await
            .map_err(|_| "a dashboard thread has stopped")?;
            rx.await.map_err(|_| "a dashboard thread has stopped")?;
        }
        Ok(())
    }

    /// Arrivals recorded since `arm`, on every thread so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::Relaxed)
    }

    /// `health_update` frames received by all dashboards since the start.
    pub fn health_frames(&self) -> u64 {
        self.health_frames.load(Ordering::Relaxed)
    }

    /// Waits for the next `health_update` and returns how long it took to reach `n` dashboards (from
    /// the first frame to the `n`-th), or `None` if no tick came within `within`. Rounds start right
    /// after a tick, so that the rounds being compared meet the health ticks at the same moments.
    pub async fn after_tick(&self, n: usize, within: Duration) -> Option<Duration> {
        if n == 0 {
            return None;
        }
        let poll = Duration::from_millis(1);
        let deadline = Instant::now() + within;
        // Let a tick still being delivered finish: 100 ms without a frame.
        let mut last = self.health_frames();
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < Duration::from_millis(100) && Instant::now() < deadline {
            tokio::time::sleep(poll).await;
            let now = self.health_frames();
            if now != last {
                last = now;
                quiet_since = Instant::now();
            }
        }
        while self.health_frames() == last && Instant::now() < deadline {
            tokio::time::sleep(poll).await;
        }
        if self.health_frames() == last {
            return None;
        }
        let first = Instant::now();
        let target = last + n as u64;
        let spread_deadline = first + Duration::from_secs(10);
        while self.health_frames() < target && Instant::now() < spread_deadline {
            tokio::time::sleep(poll).await;
        }
        Some(first.elapsed())
    }

    /// Takes the recorded arrivals and disarms.
    ///
    /// # Errors
    /// When a thread has stopped.
    pub async fn collect(&self) -> Result<Vec<Arrival>, BoxError> {
        let mut all = Vec::new();
        for (tx, _) in &self.threads {
            let (reply, rx) = oneshot::channel();
            tx.send(Command::Collect { reply })
                .await
                .map_err(|_| "a dashboard thread has stopped")?;
            all.extend(rx.await.map_err(|_| "a dashboard thread has stopped")?);
        }
        Ok(all)
    }

    /// Open dashboards and how the others ended, over all threads.
    ///
    /// # Errors
    /// When a thread has stopped.
    pub async fn status(&self) -> Result<Status, BoxError> {
        let mut s = Status::default();
        for (tx, _) in &self.threads {
            let (reply, rx) = oneshot::channel();
            tx.send(Command::Status { reply })
                .await
                .map_err(|_| "a dashboard thread has stopped")?;
            let t = rx.await.map_err(|_| "a dashboard thread has stopped")?;
            s.open += t.open;
            s.closed_by_server += t.closed_by_server;
            s.lost += t.lost;
            s.last_end = t.last_end.or(s.last_end);
        }
        Ok(s)
    }

    /// Closes every dashboard (close frame 1000) and waits, up to 15 s, until they are gone. Returns
    /// how many were still open then.
    ///
    /// # Errors
    /// When a thread has stopped.
    pub async fn close_all(&self) -> Result<usize, BoxError> {
        let mut replies = Vec::new();
        for (tx, _) in &self.threads {
            let (reply, rx) = oneshot::channel();
            tx.send(Command::CloseAll { reply })
                .await
                .map_err(|_| "a dashboard thread has stopped")?;
            replies.push(rx);
        }
        let mut left = 0;
        for rx in replies {
            left += rx.await.map_err(|_| "a dashboard thread has stopped")?;
        }
        Ok(left)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let handles: Vec<_> = self.threads.drain(..).filter_map(|(_, h)| h).collect();
        // The senders are gone now: each thread's command loop ends, and its System with it.
        for h in handles {
            let _ = h.join();
        }
    }
}

/// One thread's state, shared by its dashboard tasks.
struct Local {
    client: awc::Client,
    round: RefCell<Option<Arc<HashMap<String, u32>>>>,
    arrivals: RefCell<Vec<Arrival>>,
    open: Cell<usize>,
    closed_by_server: Cell<usize>,
    lost: Cell<usize>,
    last_end: RefCell<Option<String>>,
    /// Bumped to close every dashboard of the thread.
    stop: watch::Sender<u64>,
    arrived: Arc<AtomicUsize>,
    health_frames: Arc<AtomicU64>,
}

async fn serve_commands(
    mut commands: mpsc::Receiver<Command>,
    arrived: Arc<AtomicUsize>,
    health_frames: Arc<AtomicU64>,
) {
    let connector = awc::Connector::new()
        // 0 = no limit: every open WebSocket keeps its pool permit for its whole life, and the
        // default limit of 100 would stall the 101st handshake.
        .limit(0);
    let local = Rc::new(Local {
        client: awc::Client::builder()
            .connector(connector)
            .timeout(HANDSHAKE_TIMEOUT)
            .finish(),
        round: RefCell::new(None),
        arrivals: RefCell::new(Vec::new()),
        open: Cell::new(0),
        closed_by_server: Cell::new(0),
        lost: Cell::new(0),
        last_end: RefCell::new(None),
        stop: watch::channel(0).0,
        arrived,
        health_frames,
    });
    while let Some(command) = commands.recv().await {
        match command {
            Command::Connect {
                url,
                key,
                group,
                count,
                in_flight,
                reply,
            } => {
                let r = ramp(&local, url, key, group, count, in_flight).await;
                let _ = reply.send(r);
            }
            Command::Arm { round, reply } => {
                local.arrivals.borrow_mut().clear();
                *local.round.borrow_mut() = Some(round);
                let _ = reply.send(());
            }
            Command::Collect { reply } => {
                *local.round.borrow_mut() = None;
                let _ = reply.send(std::mem::take(&mut *local.arrivals.borrow_mut()));
            }
            Command::Status { reply } => {
                let _ = reply.send(Status {
                    open: local.open.get(),
                    closed_by_server: local.closed_by_server.get(),
                    lost: local.lost.get(),
                    last_end: local.last_end.borrow().clone(),
                });
            }
            Command::CloseAll { reply } => {
                local.stop.send_modify(|g| *g += 1);
                let deadline = Instant::now() + CLOSE_TIMEOUT;
                while local.open.get() > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // Later dashboards count their own ends from zero.
                local.closed_by_server.set(0);
                local.lost.set(0);
                let _ = reply.send(local.open.get());
            }
        }
    }
    local.stop.send_modify(|g| *g += 1);
}

/// Opens `count` dashboards with `in_flight` handshakes pending at a time.
async fn ramp(
    local: &Rc<Local>,
    url: Arc<str>,
    key: Arc<str>,
    group: u8,
    count: usize,
    in_flight: usize,
) -> ThreadRamp {
    let next = Rc::new(Cell::new(0usize));
    let result = Rc::new(RefCell::new(ThreadRamp {
        ok: 0,
        failed: 0,
        first_error: None,
        started: Instant::now(),
        finished: Instant::now(),
        handshakes: crate::stats::Samples::default(),
    }));
    let mut workers = Vec::new();
    for _ in 0..in_flight.clamp(1, count.max(1)) {
        let (local, url, key, next, result) = (
            local.clone(),
            url.clone(),
            key.clone(),
            next.clone(),
            result.clone(),
        );
        workers.push(actix_rt::spawn(async move {
            // Bounded by `count`: each turn takes the next index.
            loop {
                let i = next.get();
                if i >= count {
                    break;
                }
                next.set(i + 1);
                let started = Instant::now();
                let outcome = open(&local, &url, &key, group).await;
                let mut r = result.borrow_mut();
                match outcome {
                    Ok(()) => {
                        r.ok += 1;
                        r.handshakes.push(started.elapsed());
                    }
                    Err(e) => {
                        r.failed += 1;
                        r.first_error.get_or_insert(e);
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let mut r = result.borrow_mut();
    r.finished = Instant::now();
    ThreadRamp {
        ok: r.ok,
        failed: r.failed,
        first_error: r.first_error.take(),
        started: r.started,
        finished: r.finished,
        handshakes: std::mem::take(&mut r.handshakes),
    }
}

/// One handshake; on 101 the dashboard runs on as a task of this thread.
async fn open(local: &Rc<Local>, url: &str, key: &str, group: u8) -> Result<(), String> {
    let request = local
        .client
        .ws(url)
        .bearer_auth(key)
        .max_frame_size(MAX_FRAME)
        .connect();
    let (_response, mut socket) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, request).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(format!("handshake: {e}")),
        Err(_) => return Err("handshake: no answer within 15 s".into()),
    };
    let mut stop = local.stop.subscribe();
    let local = local.clone();
    local.open.set(local.open.get() + 1);
    // The socket's type (actix-codec's `Framed`) is not nameable here: the loop stays inline.
    actix_rt::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    let close = Message::Close(Some(CloseReason::from(CloseCode::Normal)));
                    if std::pin::Pin::new(&mut socket).write(close).is_ok() {
                        let flush = poll_fn(|cx| std::pin::Pin::new(&mut socket).flush(cx));
                        let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
                    }
                    break;
                }
                frame = poll_fn(|cx| std::pin::Pin::new(&mut socket).next_item(cx)) => match frame {
                    Some(Ok(Frame::Text(bytes))) => {
                        // Stamped before anything else is done with the frame.
                        let at = Instant::now();
                        local.on_text(&bytes, at, group);
                    }
                    Some(Ok(Frame::Ping(payload))) => {
                        if std::pin::Pin::new(&mut socket).write(Message::Pong(payload)).is_err()
                            || poll_fn(|cx| std::pin::Pin::new(&mut socket).flush(cx)).await.is_err()
                        {
                            local.ended(false, "could not answer a ping".into());
                            break;
                        }
                    }
                    Some(Ok(Frame::Close(reason))) => {
                        local.ended(true, format!("closed by the server: {reason:?}"));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        local.ended(false, format!("protocol error: {e}"));
                        break;
                    }
                    None => {
                        local.ended(false, "connection ended without a close frame".into());
                        break;
                    }
                },
            }
        }
        local.open.set(local.open.get().saturating_sub(1));
    });
    Ok(())
}

impl Local {
    /// Records an arrival when `text` is a `session_created` of the armed round. The key order of
    /// every message is fixed by the contract (`type` first, `session_id` after `timestamp`), so a
    /// prefix test and one search replace a JSON parse on this hot path.
    fn on_text(&self, text: &[u8], at: Instant, group: u8) {
        const CREATED: &[u8] = br#"{"type":"session_created","#;
        const HEALTH: &[u8] = br#"{"type":"health_update","#;
        if text.starts_with(HEALTH) {
            self.health_frames.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if !text.starts_with(CREATED) {
            return;
        }
        let Some(id) = session_id(text) else { return };
        let event = match self.round.borrow().as_ref().and_then(|r| r.get(id)) {
            Some(&event) => event,
            None => return,
        };
        self.arrivals
            .borrow_mut()
            .push(Arrival { group, event, at });
        self.arrived.fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self, by_server: bool, why: String) {
        if by_server {
            self.closed_by_server.set(self.closed_by_server.get() + 1);
        } else {
            self.lost.set(self.lost.get() + 1);
        }
        *self.last_end.borrow_mut() = Some(why);
    }
}

/// The `session_id` value of an event message (ids are `[A-Za-z0-9._:-]`: never escaped).
fn session_id(text: &[u8]) -> Option<&str> {
    const KEY: &[u8] = br#""session_id":""#;
    let start = text.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = text.get(start..)?.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(text.get(start..start + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_id() {
        let m = br#"{"type":"session_created","seq":3,"timestamp":"t","session_id":"r-1.a:b","data":{}}"#;
        assert_eq!(session_id(m), Some("r-1.a:b"));
        assert_eq!(session_id(br#"{"type":"health_update"}"#), None);
    }
}
