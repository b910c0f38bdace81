//! A handle on a dashboard's TCP socket, to reset it when the client does not read.
//!
//! actix-http writes a response through its own buffer and, once that holds 32 KiB it could not
//! write, stops asking the response body for more: a connection whose client stopped reading can no
//! longer be ended from the body, nor from anywhere else in the handler. It stays, with its buffers
//! and the kernel's send queue, until the client leaves. The only way out is the socket itself: with
//! `SO_LINGER` 0 and a shutdown, actix-http's next write fails, it drops the connection, and the
//! kernel answers with a reset and frees the send queue at once.
//!
//! Handlers never see the socket; [`on_connect`] is the one place that does, so it keeps a second
//! handle (a duplicated descriptor) in the connection's data, and [`Hub::connect`](crate::Hub::connect)
//! takes it from there.

use std::any::Any;
use std::cell::RefCell;
use std::net::Shutdown;
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use socket2::{SockRef, Socket};

/// Stored by [`on_connect`], taken by the upgrade.
struct ConnSocket(RefCell<Option<Socket>>);

/// Keeps a handle on each accepted TCP socket so that a dashboard that stops reading can be reset
/// rather than left to hold its buffers until the client leaves. Pass it to
/// [`HttpServer::on_connect`](actix_web::HttpServer::on_connect) of the server that serves
/// [`Hub::connect`](crate::Hub::connect).
///
/// Without it dashboards still work, and their queues are still bounded and freed, but the socket of
/// a client that does not read (and what actix-http and the kernel hold for it) stays until that
/// client goes away.
///
/// The handle is a duplicated file descriptor: each connection to that server uses two descriptors
/// while it is open. The duplicate is released with the connection (or, for a dashboard, when its
/// task ends).
pub fn on_connect(connection: &dyn Any, data: &mut Extensions) {
    let Some(stream) = connection.downcast_ref::<TcpStream>() else {
        // TLS or another transport: no reset, as documented above.
        return;
    };
    match SockRef::from(stream).try_clone() {
        Ok(socket) => {
            data.insert(ConnSocket(RefCell::new(Some(socket))));
        }
        Err(e) => tracing::debug!(error = %e, "could not keep a handle on a connection's socket"),
    }
}

/// The socket of the connection `req` came on, if [`on_connect`] kept one and nothing took it yet.
pub(crate) fn take(req: &HttpRequest) -> Option<Socket> {
    req.conn_data::<ConnSocket>()
        .and_then(|socket| socket.0.borrow_mut().take())
}

/// Resets the connection: discards what the kernel still has to send, and makes actix-http's next
/// read and write fail so that it drops its side (the reset goes out when the last descriptor closes).
pub(crate) fn reset(socket: Socket) {
    if let Err(e) = socket.set_linger(Some(Duration::ZERO)) {
        tracing::debug!(error = %e, "could not set SO_LINGER on a dashboard socket");
    }
    if let Err(e) = socket.shutdown(Shutdown::Both) {
        // Already disconnected: nothing left to free.
        tracing::debug!(error = %e, "could not shut a dashboard socket down");
    }
}
