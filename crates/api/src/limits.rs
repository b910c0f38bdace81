//! Caps on connections, so that no client address can hold all of them: actix caps the total (per
//! worker), this caps each address. A connection over its address's cap is shut down as soon as it
//! is accepted, before it costs a read buffer; the others are counted until they close.

use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::HttpMessage as _;
use actix_web::dev::{Extensions, Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::rt::net::TcpStream;
use actix_web::web::Bytes;
use futures_util::StreamExt as _;
use tokio::time::Instant;

/// Open connections per client address, with a cap (0 = no cap).
#[derive(Clone, Debug)]
pub struct ConnectionCap {
    per_ip: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; dropped with the connection's extensions when it closes.
#[derive(Debug)]
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Only addresses with open connections are kept: the map is bounded by the
                // connections themselves.
                open.remove(&self.ip);
            }
        }
    }
}

impl ConnectionCap {
    /// At most `per_ip` connections per client address (0 = unlimited).
    pub fn new(per_ip: usize) -> Self {
        Self {
            per_ip,
            open: Arc::default(),
        }
    }

    /// Counts a connection from `ip` in, unless its address is at the cap.
    pub fn admit(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if self.per_ip > 0 && *n >= self.per_ip {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            open: self.open.clone(),
        })
    }

    /// actix's `on_connect` hook: admit the connection (`true`), or shut its socket down at once
    /// (the dispatcher then sees the end of the stream and drops it without reading).
    pub fn on_connect(&self, conn: &dyn Any, ext: &mut Extensions) -> bool {
        let Some(tcp) = conn.downcast_ref::<TcpStream>() else {
            return true;
        };
        let Ok(peer) = tcp.peer_addr() else {
            return true;
        };
        match self.admit(peer.ip()) {
            Some(slot) => {
                ext.insert(slot);
                // An MCP answer is an event stream written in two segments (priming event, then
                // the answer): with Nagle's algorithm the second waits for the client's delayed
                // ACK, 40 ms on Linux. The MCP benchmark measured 99.7 % of answers at >= 40 ms
                // without this, and 1.4-2.3x the throughput with it.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                true
            }
            None => {
                tracing::warn!(client = %peer.ip(), cap = self.per_ip, "connection refused: too many from this address");
                let _ = socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Both);
                false
            }
        }
    }
}

/// What a body that did not arrive in time reads as: an I/O error of kind `TimedOut`.
pub fn is_body_timeout(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// The same, wrapped in actix's error (as extractors report it).
pub fn is_body_timeout_error(e: &actix_web::Error) -> bool {
    e.as_error::<PayloadError>().is_some_and(is_body_timeout)
}

/// Bounds the time the whole body of `req` may take to arrive: past `deadline` its payload ends in
/// a `TimedOut` error (answered 408 by whoever reads it). WebSocket upgrades are left alone (their
/// "body" is the stream of frames), and so are requests without a body.
pub fn body_deadline(req: &mut ServiceRequest, deadline: Instant) {
    let headers = req.headers();
    let upgrade = headers.contains_key(header::UPGRADE);
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if upgrade || !has_body {
        return;
    }
    let payload = req.take_payload();
    let bounded = futures_util::stream::unfold(Some(payload), move |state| async move {
        let mut payload = state?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(payload))),
            Ok(None) => None,
            Err(_) => {
                let late =
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "request body timeout");
                Some((Err::<Bytes, _>(PayloadError::Io(late)), None))
            }
        }
    });
    req.set_payload(Payload::from(
        Box::pin(bounded) as actix_http::BoxedPayloadStream
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_is_capped_and_slots_come_back() {
        let cap = ConnectionCap::new(2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let s1 = cap.admit(a).unwrap();
        let _s2 = cap.admit(a).unwrap();
        assert!(cap.admit(a).is_none(), "a third from the same address");
        assert!(cap.admit(b).is_some(), "another address is not affected");
        drop(s1);
        assert!(cap.admit(a).is_some(), "a closed connection frees its slot");
    }

    #[test]
    fn the_map_forgets_addresses_without_connections() {
        let cap = ConnectionCap::new(0);
        for i in 0..100u8 {
            drop(cap.admit([10, 0, 0, i].into()).unwrap());
        }
        assert!(cap.open.lock().unwrap().is_empty());
    }
}
