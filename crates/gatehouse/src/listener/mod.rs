//! The listeners: listening sockets and what each speaks, the accept loop, the
//! handshakes (TLS, the WebSocket upgrade), and the limits decided at accept.
//!
//! The seed listens with `{reuseaddr, true}, {nodelay, true}, {backlog, 999999}`;
//! so does [`bind`] (the kernel caps the backlog at `net.core.somaxconn`). Each
//! listener's accept loop spawns one task per connection (the seed's parallel
//! server), never dies of an accept error (it logs, backs off ~100 ms and goes on),
//! and refuses connections over the limits with a kick instead of leaving them
//! hanging. A TCP connection is served at once; a TLS or WebSocket one first
//! completes its handshake within `limits.handshake_timeout`, in its own task, so a
//! stalled handshake holds only its admission slot and costs no hub registration.
//!
//! - [`config`]: [`ListenerConfig`], the `[[listeners]]` entries.
//! - `handshake`: the TLS handshake and the HTTP upgrade before a connection is
//!   served.
//! - `tls` (feature `tls`): `Certificates`, reloadable.
//! - `http` (feature `websocket`): the WebSocket upgrade, origins,
//!   `X-Forwarded-For`, static pages.

pub mod config;
#[cfg(any(feature = "tls", feature = "websocket"))]
mod handshake;
#[cfg(feature = "websocket")]
pub(crate) mod http;
#[cfg(feature = "tls")]
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

pub use self::config::{ListenerConfig, TransportKind};
#[cfg(feature = "websocket")]
pub use self::http::{Pages, WebOptions};
#[cfg(feature = "tls")]
pub use self::tls::{Certificates, TlsError};
use crate::connection::ConnId;
use crate::driver::{self, tcp::TcpTransport};
use crate::group::{Group, Shared};
use crate::limits::Refusal;
use crate::logs::Admit;
use crate::service::Service;
use gatehouse_protocol::KickReason;

/// The seed's `{backlog, 999999}`: ask for the most; the kernel caps it.
const BACKLOG: u32 = i32::MAX as u32;

/// Pause after an accept error that is about the server (descriptors, memory), not
/// about one connection, so that a full descriptor table does not spin the loop.
pub(crate) const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

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

/// A listener that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The configuration is incomplete (see [`ListenerConfig::validate`]).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The certificate or key could not be loaded.
    #[cfg(feature = "tls")]
    #[error("the {transport} listener on {address}: {source}")]
    Tls {
        /// `tls` or `wss`.
        transport: TransportKind,
        /// The address.
        address: SocketAddr,
        /// Why.
        source: TlsError,
    },
}

/// A bound listening socket and what it speaks. Build one from a [`ListenerConfig`]
/// with [`Listener::bind`], or from a socket of [`bind`] with [`Listener::tcp`],
/// [`Listener::tls`], [`Listener::websocket`] or [`Listener::secure_websocket`].
pub struct Listener {
    socket: TcpListener,
    speaks: Speaks,
}

enum Speaks {
    Tcp,
    #[cfg(feature = "tls")]
    Tls(Certificates),
    #[cfg(feature = "websocket")]
    Ws(Arc<WebOptions>),
    #[cfg(all(feature = "tls", feature = "websocket"))]
    Wss(Certificates, Arc<WebOptions>),
}

impl Listener {
    /// Binds `config.address` and loads what its transport needs.
    ///
    /// ```no_run
    /// use gatehouse::{Listener, ListenerConfig, TransportKind};
    ///
    /// # async fn listeners() -> Result<(), Box<dyn std::error::Error>> {
    /// let tcp = Listener::bind(&ListenerConfig::new(TransportKind::Tcp, "0.0.0.0:7000".parse()?)).await?;
    /// let ws = Listener::bind(&ListenerConfig::new(TransportKind::Ws, "0.0.0.0:7080".parse()?)).await?;
    /// // `server.run(vec![tcp, ws], shutdown)` serves both behind one hub.
    /// # drop((tcp, ws));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn bind(config: &ListenerConfig) -> Result<Listener, ListenError> {
        config.validate()?;
        let address = config.address;
        #[cfg(feature = "tls")]
        let certificates = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) if config.transport.is_tls() => Some(
                Certificates::from_files(cert, key).map_err(|source| ListenError::Tls {
                    transport: config.transport,
                    address,
                    source,
                })?,
            ),
            _ => None,
        };
        let socket = bind(address)
            .await
            .map_err(|source| ListenError::Bind { address, source })?;
        #[cfg(feature = "websocket")]
        let web = || WebOptions {
            allowed_origins: config.allowed_origins.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            pages: Pages::new(),
        };
        // validate() refused a transport that was not compiled in.
        Ok(match config.transport {
            #[cfg(feature = "tls")]
            TransportKind::Tls => match certificates {
                Some(certs) => Listener::tls(socket, certs),
                None => unreachable!("validate() requires cert and key for tls"),
            },
            #[cfg(feature = "websocket")]
            TransportKind::Ws => Listener::websocket(socket, web()),
            #[cfg(all(feature = "tls", feature = "websocket"))]
            TransportKind::Wss => match certificates {
                Some(certs) => Listener::secure_websocket(socket, certs, web()),
                None => unreachable!("validate() requires cert and key for wss"),
            },
            _ => Listener::tcp(socket),
        })
    }

    /// `{packet, 4}` frames over TCP.
    pub fn tcp(socket: TcpListener) -> Listener {
        Listener {
            socket,
            speaks: Speaks::Tcp,
        }
    }

    /// `{packet, 4}` frames over TLS.
    #[cfg(feature = "tls")]
    pub fn tls(socket: TcpListener, certificates: Certificates) -> Listener {
        Listener {
            socket,
            speaks: Speaks::Tls(certificates),
        }
    }

    /// WebSocket over plain HTTP (`ws://`), serving `options.pages` to plain `GET`s.
    #[cfg(feature = "websocket")]
    pub fn websocket(socket: TcpListener, options: WebOptions) -> Listener {
        Listener {
            socket,
            speaks: Speaks::Ws(Arc::new(options)),
        }
    }

    /// WebSocket over TLS (`wss://`).
    #[cfg(all(feature = "tls", feature = "websocket"))]
    pub fn secure_websocket(
        socket: TcpListener,
        certificates: Certificates,
        options: WebOptions,
    ) -> Listener {
        Listener {
            socket,
            speaks: Speaks::Wss(certificates, Arc::new(options)),
        }
    }

    /// Serves `pages` to plain `GET`s (WebSocket listeners; others ignore them).
    #[cfg(feature = "websocket")]
    pub fn with_pages(mut self, pages: Pages) -> Listener {
        match &mut self.speaks {
            Speaks::Ws(options) => Arc::make_mut(options).pages = pages,
            #[cfg(feature = "tls")]
            Speaks::Wss(_, options) => Arc::make_mut(options).pages = pages,
            _ => {}
        }
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// What it speaks.
    pub fn transport(&self) -> TransportKind {
        match self.speaks {
            Speaks::Tcp => TransportKind::Tcp,
            #[cfg(feature = "tls")]
            Speaks::Tls(_) => TransportKind::Tls,
            #[cfg(feature = "websocket")]
            Speaks::Ws(_) => TransportKind::Ws,
            #[cfg(all(feature = "tls", feature = "websocket"))]
            Speaks::Wss(..) => TransportKind::Wss,
        }
    }

    /// Its certificates, for [`Certificates::reload`] (TLS listeners).
    #[cfg(feature = "tls")]
    pub fn certificates(&self) -> Option<&Certificates> {
        match &self.speaks {
            Speaks::Tls(certs) => Some(certs),
            #[cfg(feature = "websocket")]
            Speaks::Wss(certs, _) => Some(certs),
            _ => None,
        }
    }

    /// Where clients reach it, as `scheme://address` (`ws://127.0.0.1:7080`).
    pub fn url(&self) -> io::Result<String> {
        Ok(format!("{}://{}", self.transport(), self.local_addr()?))
    }

    /// A trusted proxy's connections are counted per IP once the proxy has said whose
    /// they are (`X-Forwarded-For`, WebSocket listeners only).
    fn trusts_proxy(&self, peer: SocketAddr) -> bool {
        let trusted: &[ipnet::IpNet] = match &self.speaks {
            #[cfg(feature = "websocket")]
            Speaks::Ws(options) => &options.trusted_proxies[..],
            #[cfg(all(feature = "tls", feature = "websocket"))]
            Speaks::Wss(_, options) => &options.trusted_proxies[..],
            _ => &[],
        };
        trusted.iter().any(|net| net.contains(&peer.ip()))
    }
}

impl From<TcpListener> for Listener {
    fn from(socket: TcpListener) -> Listener {
        Listener::tcp(socket)
    }
}

/// The listeners one server runs on: one hub and one service behind all of them.
pub struct Listeners(pub(crate) Vec<Listener>);

impl From<TcpListener> for Listeners {
    fn from(socket: TcpListener) -> Listeners {
        Listeners(vec![Listener::tcp(socket)])
    }
}

impl From<Listener> for Listeners {
    fn from(listener: Listener) -> Listeners {
        Listeners(vec![listener])
    }
}

impl From<Vec<Listener>> for Listeners {
    fn from(listeners: Vec<Listener>) -> Listeners {
        Listeners(listeners)
    }
}

/// Accepts until the group is cancelled.
pub(crate) async fn accept_loop<S: Service>(
    listener: Arc<Listener>,
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
) {
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    loop {
        let accepted = tokio::select! {
            biased;
            () = group.token.cancelled() => return,
            accepted = listener.socket.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => admit(&listener, socket, peer, &shared, &group, &refusals),
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
pub(crate) fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

fn admit<S: Service>(
    listener: &Arc<Listener>,
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
    let admitted = if listener.trusts_proxy(peer) {
        shared.admission.try_admit_unplaced()
    } else {
        shared.admission.try_admit(peer.ip())
    };
    let permit = match admitted {
        Ok(permit) => permit,
        Err(refusal) => return refuse(listener, socket, peer, refusal, shared, refusals),
    };
    let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    match listener.speaks {
        Speaks::Tcp => {
            shared.stats.count_accept(TransportKind::Tcp);
            group.tracker.spawn(driver::serve(
                TcpTransport::new(socket),
                TransportKind::Tcp,
                peer,
                id,
                shared.clone(),
                group.clone(),
                permit,
            ));
        }
        #[cfg(any(feature = "tls", feature = "websocket"))]
        _ => {
            group.tracker.spawn(handshake::handshake_then_serve(
                listener.clone(),
                socket,
                peer,
                id,
                shared.clone(),
                group.clone(),
                permit,
            ));
        }
    }
}

/// One refusal's log line, within the server's budget for them.
fn log_refusal<S: Service>(
    shared: &Shared<S>,
    peer: SocketAddr,
    reason: KickReason,
    proxy: Option<SocketAddr>,
) {
    match shared.refusal_logs.admit(std::time::Instant::now()) {
        Admit::Skip => {}
        Admit::Write { suppressed } => {
            if suppressed > 0 {
                warn!(
                    suppressed,
                    "refusal log lines left out in the last second (a flood)"
                );
            }
            match proxy {
                Some(proxy) => info!(%peer, %proxy, %reason, code = reason.0, "refused"),
                None => info!(%peer, %reason, code = reason.0, "refused"),
            }
        }
    }
}

fn refusal_kick(refusal: Refusal) -> (KickReason, &'static str) {
    match refusal {
        Refusal::ServerFull => (KickReason::SERVER_FULL, "server full"),
        Refusal::TooManyFromIp => (
            KickReason::TOO_MANY_FROM_IP,
            "too many connections from your address",
        ),
    }
}

/// Refuses a connection over the limits with a kick, written off the accept path;
/// bounded so a connect flood cannot pile up tasks. Without a slot the socket is
/// simply closed. A TLS or WebSocket client gets its handshake first
/// (`handshake::refuse`), so that it can read the kick.
fn refuse<S: Service>(
    listener: &Arc<Listener>,
    socket: TcpStream,
    peer: SocketAddr,
    refusal: Refusal,
    shared: &Arc<Shared<S>>,
    refusals: &Arc<Semaphore>,
) {
    shared.stats.count_refusal(refusal);
    let (reason, text) = refusal_kick(refusal);
    log_refusal(shared, peer, reason, None);
    let Ok(slot) = refusals.clone().try_acquire_owned() else {
        // Its refusal was logged (or counted) above.
        debug!(%peer, "too many refusals in flight; closing without a kick");
        return;
    };
    #[cfg(any(feature = "tls", feature = "websocket"))]
    let shared = shared.clone();
    let listener = listener.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            match &listener.speaks {
                Speaks::Tcp => {
                    let _ = kick_raw(socket, reason, text).await;
                }
                #[cfg(any(feature = "tls", feature = "websocket"))]
                speaks => handshake::refuse(speaks, socket, peer, &shared, reason, text).await,
            }
        })
        .await;
        drop(slot);
    });
}

/// The kick of a refused TCP connection, written as raw bytes.
async fn kick_raw(mut socket: TcpStream, reason: KickReason, text: &str) -> io::Result<()> {
    socket.write_all(&reason.frame(text)).await?;
    socket.shutdown().await?;
    // Wait for the peer's close, so that late input from it does not make the kernel
    // reset the connection before it read the kick.
    let mut sink = [0u8; 512];
    while socket.read(&mut sink).await? > 0 {}
    Ok(())
}
