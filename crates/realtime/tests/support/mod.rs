//! The world both WebSocket test binaries run in: the in-memory store as session store and event
//! feed, a real `SessionManager` with the hub as its event sink, and an actix-web server on
//! 127.0.0.1:0 wired as the service wires it (`on_connect` included); and a dashboard client on awc.

// Each test binary uses its own part of this module.
#![allow(dead_code, reason = "shared by two test binaries")]

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use awc::ws::{CloseCode, Frame, Message, WebsocketsRequest};
use serde_json::Value;
use tether_domain::{
    Clock, InMemoryStore, ManualClock, NoTokens, Policy, SessionManager, Timestamp,
};
use tether_realtime::{Hub, RealtimeConfig, resume_point};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// Bound of any wait for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// The hub, what feeds it, and the server in front of it.
pub struct World {
    pub store: Arc<InMemoryStore>,
    pub clock: Arc<ManualClock>,
    pub manager: SessionManager,
    pub hub: Hub,
    pub server: ServerHandle,
    pub addr: SocketAddr,
    /// `http://ADDR/ws`.
    pub url: String,
}

async fn ws_route(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Hub>,
) -> Result<HttpResponse, actix_web::Error> {
    let since = resume_point(&req).map_err(actix_web::error::ErrorBadRequest)?;
    hub.connect(&req, body, since).await
}

/// A fresh world whose hub runs with `config`; the clock starts at 2026-11-25T08:26:58Z.
pub async fn world(config: RealtimeConfig) -> World {
    let store = Arc::new(InMemoryStore::new());
    let clock = Arc::new(ManualClock::new(Timestamp::from_secs(1_795_595_218)));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let hub = Hub::start(store.clone(), store.clone(), dyn_clock.clone(), config)
        .await
        .unwrap();
    let manager = SessionManager::new(
        store.clone(),
        Arc::new(NoTokens::default()),
        Arc::new(hub.clone()),
        dyn_clock,
        Policy::defaults(),
    )
    .unwrap();
    let data = web::Data::new(hub.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/ws", web::get().to(ws_route))
    })
    .on_connect(tether_realtime::on_connect)
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    World {
        store,
        clock,
        manager,
        hub,
        server: handle,
        addr,
        url: format!("http://{addr}/ws"),
    }
}

impl World {
    /// Stops the hub, then the server.
    pub async fn stop(self) {
        self.hub.shutdown().await;
        self.server.stop(false).await;
    }
}

/// A dashboard client. A local task owns the socket (awc's `Framed`) and relays frames over
/// channels, so tests wait on a channel with a timeout. It reads (and answers pings) only while
/// `reading` is true: while paused, its socket is not read at all, as with a browser tab whose page
/// is frozen.
pub struct Dashboard {
    frames: mpsc::Receiver<Frame>,
    out: mpsc::Sender<Message>,
    /// Whether the socket is read.
    pub reading: watch::Sender<bool>,
}

impl Dashboard {
    /// Connects to `url` with `headers`; `answer_pings` false makes a client that never pongs.
    pub async fn dial(url: &str, headers: &[(&str, &str)], answer_pings: bool) -> Dashboard {
        let mut request = awc::Client::new().ws(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::connect(request, answer_pings).await
    }

    /// Connects with a request the caller has set up (frame size, headers).
    pub async fn connect(request: WebsocketsRequest, answer_pings: bool) -> Dashboard {
        let (response, mut socket) = request.connect().await.unwrap();
        assert_eq!(response.status().as_u16(), 101);
        let (frames_tx, frames) = mpsc::channel(4096);
        let (out, mut out_rx) = mpsc::channel::<Message>(16);
        let (reading, mut reading_rx) = watch::channel(true);
        actix_rt::spawn(async move {
            loop {
                let read = *reading_rx.borrow_and_update();
                tokio::select! {
                    frame = poll_fn(|cx| std::pin::Pin::new(&mut socket).next_item(cx)), if read => {
                        let Some(Ok(frame)) = frame else { break };
                        if let (Frame::Ping(payload), true) = (&frame, answer_pings) {
                            let _ = std::pin::Pin::new(&mut socket).write(Message::Pong(payload.clone()));
                            let _ = poll_fn(|cx| std::pin::Pin::new(&mut socket).flush(cx)).await;
                        }
                        let closed = matches!(frame, Frame::Close(_));
                        if frames_tx.send(frame).await.is_err() || closed {
                            break;
                        }
                    }
                    message = out_rx.recv() => {
                        let Some(message) = message else { break };
                        if std::pin::Pin::new(&mut socket).write(message).is_err() {
                            break;
                        }
                        if poll_fn(|cx| std::pin::Pin::new(&mut socket).flush(cx)).await.is_err() {
                            break;
                        }
                    }
                    changed = reading_rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Dashboard {
            frames,
            out,
            reading,
        }
    }

    /// The next frame.
    pub async fn frame(&mut self) -> Frame {
        timeout(WAIT, self.frames.recv())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
    }

    /// The next JSON message, skipping control frames.
    pub async fn next(&mut self) -> Value {
        loop {
            match self.frame().await {
                Frame::Text(bytes) => return serde_json::from_slice(&bytes).unwrap(),
                Frame::Ping(_) | Frame::Pong(_) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next message that is not a `health_update`.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let msg = self.next().await;
            if msg["type"] != "health_update" {
                return msg;
            }
        }
    }

    /// Reads, with `done` checked after each message, until it holds. The messages are the clock.
    pub async fn until(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        timeout(WAIT, async {
            while !done() {
                self.next().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} within {WAIT:?}"));
    }

    /// The close frame, skipping anything before it.
    pub async fn close_frame(&mut self) -> (CloseCode, Option<String>) {
        loop {
            if let Frame::Close(reason) = self.frame().await {
                let reason = reason.expect("a close code");
                return (reason.code, reason.description);
            }
        }
    }

    /// Sends `message`.
    pub async fn send(&self, message: Message) {
        self.out.send(message).await.unwrap();
    }
}
