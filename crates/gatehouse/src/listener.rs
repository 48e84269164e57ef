//! The acceptor: the listening socket's options, the accept loop, and the limits
//! decided at accept.
//!
//! The seed listens with `{reuseaddr, true}, {nodelay, true}, {backlog, 999999}`;
//! so does [`bind`] (the kernel caps the backlog at `net.core.somaxconn`). The
//! accept loop spawns one task per connection (the seed's parallel server), never
//! dies of an accept error (it logs, backs off ~100 ms and goes on), and refuses
//! connections over the limits with a kick instead of leaving them hanging.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

use crate::connection::ConnId;
use crate::driver::{self, tcp::TcpTransport};
use crate::group::{Group, Shared};
use crate::limits::Refusal;
use crate::service::Service;
use gatehouse_protocol::KickReason;

/// The seed's `{backlog, 999999}`: ask for the most; the kernel caps it.
const BACKLOG: u32 = i32::MAX as u32;

/// Pause after an accept error that is about the server (descriptors, memory), not
/// about one connection, so that a full descriptor table does not spin the loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Refusals being written at once; past this, refused sockets are just closed.
const MAX_PENDING_REFUSALS: usize = 256;

/// How long a refusal may take to write its kick.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);

/// Opens the listening socket with the seed's options.
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts until the group is cancelled.
pub(crate) async fn accept_loop<S: Service>(
    listener: Arc<TcpListener>,
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
) {
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = group.token.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => admit(socket, peer, &shared, &group, &refusals),
            Err(e) if is_per_connection_error(&e) => {
                debug!(error = %e, "accept: connection failed before it was accepted");
            }
            Err(e) => {
                error!(error = %e, "accept failed; backing off");
                tokio::select! {
                    () = group.token.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => {}
                }
            }
        }
    }
}

/// Errors that concern the one connection being accepted (it was reset before we
/// got to it), not the listener: retry at once.
fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

fn admit<S: Service>(
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared<S>>,
    group: &Arc<Group<S::Message>>,
    refusals: &Arc<Semaphore>,
) {
    if let Err(e) = socket.set_nodelay(true) {
        debug!(error = %e, %peer, "set_nodelay failed; the peer is likely gone");
        return;
    }
    match shared.admission.try_admit(peer.ip()) {
        Ok(permit) => {
            shared.stats.count_accept();
            let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
            group.tracker.spawn(driver::serve(
                TcpTransport::new(socket),
                peer,
                id,
                shared.clone(),
                group.clone(),
                permit,
            ));
        }
        Err(refusal) => {
            shared.stats.count_refusal(refusal);
            let (reason, text) = match refusal {
                Refusal::ServerFull => (KickReason::SERVER_FULL, "server full"),
                Refusal::TooManyFromIp => (
                    KickReason::TOO_MANY_FROM_IP,
                    "too many connections from your address",
                ),
            };
            info!(%peer, %reason, "refused");
            // Written off the accept path; bounded so a connect flood cannot pile up
            // tasks. Without a slot the socket is simply closed.
            let Ok(slot) = refusals.clone().try_acquire_owned() else {
                warn!(%peer, "too many refusals in flight; closing without a kick");
                return;
            };
            tokio::spawn(async move {
                let mut socket = socket;
                let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
                    socket.write_all(&reason.frame(text)).await?;
                    socket.shutdown().await?;
                    // Wait for the peer's close, so that late input from it does not
                    // make the kernel reset the connection before it read the kick.
                    let mut sink = [0u8; 512];
                    while socket.read(&mut sink).await? > 0 {}
                    io::Result::Ok(())
                })
                .await;
                drop(slot);
            });
        }
    }
}
