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
//! - [`tls`]: [`Certificates`], reloadable.
//! - `http`: the WebSocket upgrade, origins, `X-Forwarded-For`, static pages.

pub mod config;
pub(crate) mod http;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, error, info, warn};

pub use self::config::{ListenerConfig, TransportKind};
pub use self::http::{Pages, WebOptions};
pub use self::tls::{Certificates, TlsError};
use crate::connection::ConnId;
use crate::driver::stream::StreamTransport;
use crate::driver::websocket::{self, WebSocketTransport};
use crate::driver::{self, tcp::TcpTransport};
use crate::group::{Group, Shared};
use crate::limits::{Permit, Refusal};
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
    Tls(Certificates),
    Ws(Arc<WebOptions>),
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
        let web = || WebOptions {
            allowed_origins: config.allowed_origins.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            pages: Pages::new(),
        };
        Ok(match (config.transport, certificates) {
            (TransportKind::Tls, Some(certs)) => Listener::tls(socket, certs),
            (TransportKind::Ws, _) => Listener::websocket(socket, web()),
            (TransportKind::Wss, Some(certs)) => Listener::secure_websocket(socket, certs, web()),
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
    pub fn tls(socket: TcpListener, certificates: Certificates) -> Listener {
        Listener {
            socket,
            speaks: Speaks::Tls(certificates),
        }
    }

    /// WebSocket over plain HTTP (`ws://`), serving `options.pages` to plain `GET`s.
    pub fn websocket(socket: TcpListener, options: WebOptions) -> Listener {
        Listener {
            socket,
            speaks: Speaks::Ws(Arc::new(options)),
        }
    }

    /// WebSocket over TLS (`wss://`).
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
    pub fn with_pages(mut self, pages: Pages) -> Listener {
        if let Speaks::Ws(options) | Speaks::Wss(_, options) = &mut self.speaks {
            Arc::make_mut(options).pages = pages;
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
            Speaks::Tls(_) => TransportKind::Tls,
            Speaks::Ws(_) => TransportKind::Ws,
            Speaks::Wss(..) => TransportKind::Wss,
        }
    }

    /// Its certificates, for [`Certificates::reload`] (TLS listeners).
    pub fn certificates(&self) -> Option<&Certificates> {
        match &self.speaks {
            Speaks::Tls(certs) | Speaks::Wss(certs, _) => Some(certs),
            Speaks::Tcp | Speaks::Ws(_) => None,
        }
    }

    /// Where clients reach it, as `scheme://address` (`ws://127.0.0.1:7080`).
    pub fn url(&self) -> io::Result<String> {
        Ok(format!("{}://{}", self.transport(), self.local_addr()?))
    }

    fn web(&self) -> Option<&WebOptions> {
        match &self.speaks {
            Speaks::Ws(options) | Speaks::Wss(_, options) => Some(options),
            Speaks::Tcp | Speaks::Tls(_) => None,
        }
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
    // A trusted proxy's connections are counted per IP once the proxy has said whose
    // they are.
    let proxied = listener.web().is_some_and(|web| {
        web.trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip()))
    });
    let admitted = if proxied {
        shared.admission.try_admit_unplaced()
    } else {
        shared.admission.try_admit(peer.ip())
    };
    let permit = match admitted {
        Ok(permit) => permit,
        Err(refusal) => return refuse(listener, socket, peer, refusal, shared, refusals),
    };
    let id = ConnId(shared.next_id.fetch_add(1, Ordering::Relaxed));
    if let Speaks::Tcp = listener.speaks {
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
    } else {
        group.tracker.spawn(handshake_then_serve(
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

/// A connection after its handshake.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per connection and moved at once into its transport"
)]
enum Upgraded {
    Tls(TlsStream<TcpStream>),
    Ws(WebSocketStream<TcpStream>, SocketAddr),
    Wss(WebSocketStream<TlsStream<TcpStream>>, SocketAddr),
    /// A plain HTTP request, answered: nothing to serve.
    Answered,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] http::Refused),
}

/// The TLS handshake and the HTTP upgrade, as the listener speaks them.
async fn handshake(
    speaks: &Speaks,
    socket: TcpStream,
    peer: SocketAddr,
    max_frame_bytes: usize,
) -> Result<Upgraded, HandshakeError> {
    let ws_config = websocket::config(max_frame_bytes);
    Ok(match speaks {
        Speaks::Tcp => unreachable!("TCP has no handshake"),
        Speaks::Tls(certs) => Upgraded::Tls(
            certs
                .acceptor()
                .accept(socket)
                .await
                .map_err(HandshakeError::Tls)?,
        ),
        Speaks::Ws(web) => match http::handshake(socket, peer, false, web, ws_config).await? {
            http::Handshake::Upgraded(ws, client) => Upgraded::Ws(ws, client),
            http::Handshake::Served => Upgraded::Answered,
        },
        Speaks::Wss(certs, web) => {
            let tls = certs
                .acceptor()
                .accept(socket)
                .await
                .map_err(HandshakeError::Tls)?;
            match http::handshake(tls, peer, true, web, ws_config).await? {
                http::Handshake::Upgraded(ws, client) => Upgraded::Wss(ws, client),
                http::Handshake::Served => Upgraded::Answered,
            }
        }
    })
}

/// A TLS or WebSocket connection: its handshake within `limits.handshake_timeout`
/// (or until the group stops), then the same connection task as TCP's.
async fn handshake_then_serve<S: Service>(
    listener: Arc<Listener>,
    socket: TcpStream,
    peer: SocketAddr,
    id: ConnId,
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
    permit: Permit,
) {
    let limits = &shared.config.limits;
    // Boxed: the handshake's state (rustls' handshake, the HTTP request) would
    // otherwise size the task for the connection's whole life.
    let handshaking = tokio::time::timeout(
        limits.handshake_timeout,
        Box::pin(handshake(
            &listener.speaks,
            socket,
            peer,
            limits.max_frame_bytes,
        )),
    );
    let upgraded = tokio::select! {
        biased;
        () = group.token.cancelled() => return,
        upgraded = handshaking => upgraded,
    };
    let upgraded = match upgraded {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => {
            shared.stats.count_handshake_failure(listener.transport());
            debug!(%peer, transport = %listener.transport(), error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            shared.stats.count_handshake_timeout(listener.transport());
            debug!(%peer, transport = %listener.transport(), timeout = ?limits.handshake_timeout, "handshake timed out");
            return;
        }
    };
    let limits = &shared.config.limits;
    let serving = Serving {
        transport: listener.transport(),
        proxy: peer,
        id,
        shared: shared.clone(),
        group,
        permit,
    };
    match upgraded {
        Upgraded::Tls(stream) => serving.run(StreamTransport::new(stream), peer).await,
        Upgraded::Ws(ws, client) => {
            serving
                .run(WebSocketTransport::new(ws, limits), client)
                .await
        }
        Upgraded::Wss(ws, client) => {
            serving
                .run(WebSocketTransport::new(ws, limits), client)
                .await
        }
        Upgraded::Answered => shared.stats.count_page_served(),
    }
}

/// A connection whose handshake is done, about to be served (or refused, if the
/// client a proxy named is over its per-IP cap).
struct Serving<S: Service> {
    transport: TransportKind,
    /// The address the connection came from (the proxy's, when proxied).
    proxy: SocketAddr,
    id: ConnId,
    shared: Arc<Shared<S>>,
    group: Arc<Group<S::Message>>,
    permit: Permit,
}

impl<S: Service> Serving<S> {
    async fn run<T: driver::Transport>(mut self, transport: T, client: SocketAddr) {
        let shared = self.shared;
        if let Err(refusal) = self.permit.place(client.ip()) {
            shared.stats.count_refusal(refusal);
            let (reason, text) = refusal_kick(refusal);
            log_refusal(&shared, client, reason, Some(self.proxy));
            let refusing = driver::refuse(transport, shared.core_config.clone(), reason, text);
            let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refusing).await;
            return;
        }
        shared.stats.count_accept(self.transport);
        let kind = self.transport;
        driver::serve(
            transport,
            kind,
            client,
            self.id,
            shared,
            self.group,
            self.permit,
        )
        .await;
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
/// simply closed. A TLS or WebSocket client gets its handshake first, so that it can
/// read the kick.
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
    let (listener, shared) = (listener.clone(), shared.clone());
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            let max_frame = shared.config.limits.max_frame_bytes;
            match &listener.speaks {
                Speaks::Tcp => {
                    let _ = kick_raw(socket, reason, text).await;
                }
                speaks => {
                    let config = shared.core_config.clone();
                    let limits = &shared.config.limits;
                    match handshake(speaks, socket, peer, max_frame).await {
                        Ok(Upgraded::Tls(tls)) => {
                            driver::refuse(StreamTransport::new(tls), config, reason, text).await
                        }
                        Ok(Upgraded::Ws(ws, _)) => {
                            let transport = WebSocketTransport::new(ws, limits);
                            driver::refuse(transport, config, reason, text).await
                        }
                        Ok(Upgraded::Wss(ws, _)) => {
                            let transport = WebSocketTransport::new(ws, limits);
                            driver::refuse(transport, config, reason, text).await
                        }
                        Ok(Upgraded::Answered) | Err(_) => {}
                    }
                }
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
