//! What one dashboard may cost the server: the bytes held for a client that does not read (issue 7,
//! item 1) and the size of what a client sends (item 2). A real actix-web server on 127.0.0.1:0,
//! real clients: awc dashboards, and raw TCP sockets that complete the handshake and then behave
//! badly (never read, answer nothing, or declare a huge frame).
//!
//! Nothing sleeps to wait for an event. The well-behaved dashboard's `health_update`s are the clock
//! the hub's counters are checked against; a reset is awaited as the socket's error readiness, never
//! by reading (reading would let the server flush and close politely). Every wait is bounded.

// `allow-unwrap-in-tests` covers `#[test]` functions only, not the helpers they share.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use awc::ws::{CloseCode, Frame};
use support::{Dashboard, WAIT, World, world};
use tether_domain::{Metadata, NewSession, SessionId};
use tether_realtime::RealtimeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Sessions listed in every `health_update`, and the metadata each carries: about 170 KB a message,
/// 50 of them a second, so a client that stops reading falls behind fast.
const SESSIONS: usize = 20;
const METADATA_BYTES: usize = 8000;
/// The byte budget of the tests about it: about three `health_update`s.
const BUDGET: usize = 512 * 1024;

impl World {
    /// Sessions whose metadata make every `health_update` large.
    async fn heavy_sessions(&self) {
        for i in 0..SESSIONS {
            let metadata =
                Metadata::parse(serde_json::json!({ "blob": "x".repeat(METADATA_BYTES) })).unwrap();
            self.manager
                .open(NewSession {
                    session_id: SessionId::parse(&format!("s-{i}")).unwrap(),
                    client_type: "claude-desktop".into(),
                    client_version: None,
                    principal: None,
                    metadata,
                })
                .await
                .unwrap();
        }
    }

    /// A dashboard that takes `health_update`s of any size.
    async fn dashboard(&self) -> Dashboard {
        Dashboard::connect(
            awc::Client::new().ws(&self.url).max_frame_size(4 << 20),
            true,
        )
        .await
    }
}

/// A raw client: the WebSocket handshake, then nothing it is not told to do. `recv_buffer` shrinks
/// its receive window so that a server that keeps writing to it is stuck after a few KB.
async fn raw(addr: SocketAddr, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    // The response head byte by byte: not one byte of a frame is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = timeout(WAIT, stream.read_u8())
            .await
            .expect("the handshake in time")
            .unwrap();
        head.push(byte);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A masked client frame (FIN set) with `opcode` and `payload`.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads server frames until a close frame; its code.
async fn raw_close_code(stream: &mut TcpStream) -> u16 {
    timeout(WAIT, async {
        loop {
            let first = stream.read_u8().await.unwrap();
            let len = match stream.read_u8().await.unwrap() & 0x7f {
                126 => u64::from(stream.read_u16().await.unwrap()),
                127 => stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            let mut payload = vec![0; usize::try_from(len).unwrap()];
            stream.read_exact(&mut payload).await.unwrap();
            if first & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    })
    .await
    .expect("a close frame in time")
}

/// Whether the server resets the connection within `within`: the socket reports an error (the RST)
/// without being read.
async fn reset_within(stream: &TcpStream, within: Duration) -> bool {
    match timeout(within, stream.ready(Interest::ERROR)).await {
        Ok(ready) => ready.unwrap().is_error(),
        Err(_) => false,
    }
}

fn budget_config() -> RealtimeConfig {
    RealtimeConfig {
        health_interval: Duration::from_millis(20),
        max_buffered_bytes: BUDGET,
        // The count of messages must not be what decides: only bytes.
        queue_capacity: 1_000_000,
        ..RealtimeConfig::default()
    }
}

#[actix_rt::test]
async fn a_dashboard_that_never_reads_is_closed_at_its_byte_budget_and_reset() {
    let w = world(budget_config()).await;
    w.heavy_sessions().await;
    let mut clock = w.dashboard().await;
    let stuck = raw(w.addr, Some(4096)).await;
    assert_eq!(w.hub.stats().connections, 2);

    let message = clock.next().await.to_string().len();
    let mut most = 0;
    let hub = w.hub.clone();
    clock
        .until("the non-reader closed as a slow consumer", || {
            let stats = hub.stats();
            most = most.max(stats.buffered_bytes);
            stats.connections == 1
        })
        .await;
    // Two connections, each within its budget (the reader's share is usually one message).
    assert!(
        most <= 2 * BUDGET,
        "held {most} bytes, budget {BUDGET} each (messages of {message})"
    );
    assert!(
        reset_within(&stuck, Duration::from_secs(5)).await,
        "the socket of a client that does not read is reset, not kept until it leaves"
    );
    // What it held is freed; the reader is still served.
    assert!(
        w.hub.stats().buffered_bytes <= 2 * message,
        "{:?}",
        w.hub.stats()
    );
    assert_eq!(clock.next().await["type"], "health_update");
    w.stop().await;
}

#[actix_rt::test]
async fn a_dashboard_that_keeps_the_heartbeat_but_never_reads_is_closed_at_its_byte_budget() {
    let w = world(RealtimeConfig {
        ping_interval: Duration::from_millis(100),
        ..budget_config()
    })
    .await;
    w.heavy_sessions().await;
    let mut clock = w.dashboard().await;
    let stuck = Arc::new(raw(w.addr, Some(4096)).await);
    // Unsolicited pongs keep the heartbeat satisfied without reading a byte.
    let ponger = {
        let stuck = stuck.clone();
        actix_rt::spawn(async move {
            let pong = client_frame(0xa, b"");
            let mut every = tokio::time::interval(Duration::from_millis(50));
            loop {
                every.tick().await;
                if stuck.writable().await.is_err() || stuck.try_write(&pong).is_err() {
                    break;
                }
            }
        })
    };

    let hub = w.hub.clone();
    clock
        .until("the ponging non-reader closed as a slow consumer", || {
            hub.stats().connections == 1
        })
        .await;
    assert!(reset_within(&stuck, Duration::from_secs(5)).await);
    ponger.abort();
    w.stop().await;
}

#[actix_rt::test]
async fn a_slow_consumer_that_reads_again_is_told_1013_slow_consumer() {
    let w = world(budget_config()).await;
    w.heavy_sessions().await;
    let mut clock = w.dashboard().await;
    let mut slow = w.dashboard().await;
    slow.reading.send(false).unwrap();

    let hub = w.hub.clone();
    clock
        .until("the paused dashboard closed as a slow consumer", || {
            hub.stats().connections == 1
        })
        .await;
    slow.reading.send(true).unwrap();
    let reason = timeout(WAIT, async {
        loop {
            if let Frame::Close(reason) = slow.frame().await {
                return reason.expect("a close reason");
            }
        }
    })
    .await
    .expect("the close frame after the backlog");
    assert_eq!(reason.code, CloseCode::Again);
    assert_eq!(u16::from(reason.code), 1013);
    assert_eq!(reason.description.as_deref(), Some("slow_consumer"));
    w.stop().await;
}

#[actix_rt::test]
async fn a_heartbeat_close_does_not_wait_for_a_client_that_does_not_read() {
    let w = world(RealtimeConfig {
        health_interval: Duration::from_millis(20),
        ping_interval: Duration::from_millis(200),
        // Large enough that only the heartbeat closes it.
        max_buffered_bytes: 256 << 20,
        queue_capacity: 1_000_000,
        ..RealtimeConfig::default()
    })
    .await;
    w.heavy_sessions().await;
    let stuck = raw(w.addr, Some(4096)).await;
    // Closed at the third ping tick (0.6 s), then at most the close timeout (2 s) for a client that
    // cannot even take the close frame.
    assert!(
        reset_within(&stuck, Duration::from_secs(6)).await,
        "the socket is reset soon after the heartbeat close"
    );
    assert_eq!(w.hub.stats().connections, 0);
    assert_eq!(w.hub.stats().buffered_bytes, 0);
    w.stop().await;
}

#[actix_rt::test]
async fn a_frame_declaring_more_than_the_limit_is_refused_from_its_header() {
    let w = world(RealtimeConfig::default()).await;

    // 2^40 bytes declared, 1 KiB sent, and then the client waits: only the header can refuse it.
    let mut huge = raw(w.addr, None).await;
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
    frame.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    frame.extend_from_slice(&[0u8; 1024]);
    huge.write_all(&frame).await.unwrap();
    assert_eq!(raw_close_code(&mut huge).await, 1009);
    // And the connection ends; nothing waits for the rest of the frame.
    let mut rest = Vec::new();
    let end = timeout(WAIT, huge.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the server ends the connection");

    // The same with a 16-bit length just over the 4096-byte limit.
    let mut over = raw(w.addr, None).await;
    let mut frame = client_frame(0x1, &[b'x'; 4097]);
    frame.truncate(8 + 100);
    over.write_all(&frame).await.unwrap();
    assert_eq!(raw_close_code(&mut over).await, 1009);

    // A frame at the limit is still taken.
    let mut fine = raw(w.addr, None).await;
    fine.write_all(&client_frame(0x1, &[b'x'; 4096]))
        .await
        .unwrap();
    fine.write_all(&client_frame(0x9, b"hi")).await.unwrap();
    let pong = timeout(WAIT, async {
        let first = fine.read_u8().await.unwrap();
        let len = fine.read_u8().await.unwrap();
        let mut payload = vec![0; usize::from(len)];
        fine.read_exact(&mut payload).await.unwrap();
        (first, payload)
    })
    .await
    .unwrap();
    assert_eq!(
        pong,
        (0x8a, b"hi".to_vec()),
        "the ping after it is answered"
    );
    w.stop().await;
}
