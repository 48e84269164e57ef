//! The admin listener's connections: the accept loop, the cap on connections served
//! at once, and one task per connection serving HTTP/1.1 with hyper over a socket
//! whose reads and writes keep their deadlines ([`super::deadlines`]).
//!
//! Past `admin.limits.max_connections`, a connection is still accepted and answered,
//! so that its client learns why: up to [`MAX_REFUSALS`] at once get 503 with
//! `Retry-After: 1` (under the same deadlines), and any more are closed at once. A
//! client held off this way can tell a busy admin listener from a dead one, and
//! nothing past the cap costs more than a socket for a moment.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{service_fn, Service as _};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};

use super::deadlines::{Activity, Answer, Watched};
use super::{read_body_within, AdminLimits, ApiError, MAX_HEAD, MAX_REFUSALS};
use crate::listener::{is_per_connection_error, ACCEPT_ERROR_BACKOFF};
use crate::logs::{Admit, LogLimiter};

/// hyper's buffer per connection, which bounds what it reads ahead and what an
/// answer queues ahead of the socket.
const MAX_BUFFER: usize = 64 * 1024;

/// Serves `router` on `listener` until `stop` is cancelled, then lets open
/// connections finish their exchange (event streams end with `stop`) and returns.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: AdminLimits,
    stop: CancellationToken,
) {
    let served = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSALS));
    let refusal = refusal_router(&limits);
    let refusal_logs = LogLimiter::default();
    let tasks = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_per_connection_error(&e) => continue,
            Err(e) => {
                error!(error = %e, "admin listener: accept failed; backing off");
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                }
            }
        };
        let (router, slot) = match served.clone().try_acquire_owned() {
            Ok(slot) => (router.clone(), slot),
            Err(_) => {
                let slot = refusing.clone().try_acquire_owned().ok();
                log_refusal(&refusal_logs, peer, limits.max_connections, slot.is_some());
                match slot {
                    Some(slot) => (refusal.clone(), slot),
                    None => continue, // dropped: closed
                }
            }
        };
        let stop = stop.clone();
        tasks.spawn(serve_connection(
            socket,
            peer,
            router,
            limits.clone(),
            stop,
            slot,
        ));
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Serves one connection until it closes, fails a deadline, or `stop` is cancelled
/// and its exchange in progress is over; `_slot` is its place under the cap.
async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: AdminLimits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Activity::new(&limits);
    let io = TokioIo::new(Watched::new(socket, activity.clone(), limits.send_timeout));
    let router = TowerToHyperService::new(router);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let exchange = activity.begin_exchange();
        let answer = router.call(request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| Answer::new(body, exchange)))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(MAX_BUFFER)
        .max_header_size(MAX_HEAD)
        // The socket keeps the head's deadline (see `deadlines`): hyper's own would
        // also run while a kept-alive connection waits, and needs hyper's timer.
        .header_read_timeout(None);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        debug!(%peer, error = %e, "admin connection ended");
    }
}

/// What a connection past the cap gets, whatever it asks (once its body is read, so
/// that the close does not reset the connection before the client reads the answer).
fn refusal_router(limits: &AdminLimits) -> Router {
    let max_connections = limits.max_connections;
    let read_body = middleware::from_fn_with_state(limits.body_timeout, read_body_within);
    let refuse = move || async move {
        let message = format!(
            "the admin listener serves {max_connections} connections at once \
             (admin.limits.max_connections); retry"
        );
        let mut answer: Response =
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).into_response();
        let headers = answer.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        answer
    };
    Router::new().fallback(refuse).layer(read_body)
}

/// A connection past the cap: a line a connect flood causes, so budgeted.
fn log_refusal(logs: &LogLimiter, peer: SocketAddr, max_connections: usize, answered: bool) {
    if let Admit::Write { suppressed } = logs.admit(std::time::Instant::now()) {
        let answer = if answered {
            "answered 503"
        } else {
            "closed without an answer (too many refusals at once)"
        };
        warn!(
            %peer,
            max_connections,
            suppressed,
            "admin connection past admin.limits.max_connections: {answer}"
        );
    }
}
