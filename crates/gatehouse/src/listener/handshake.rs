//! A TLS or WebSocket connection before it is served: the TLS handshake and the
//! HTTP upgrade (feature `tls`, feature `websocket`), within
//! `limits.handshake_timeout`, in the connection's own task; then the same
//! connection task as TCP's, or, for a refused one, its kick over the transport it
//! now speaks.

#[cfg(feature = "tls")]
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
#[cfg(feature = "tls")]
use tokio_rustls::server::TlsStream;
#[cfg(feature = "websocket")]
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

#[cfg(feature = "websocket")]
use super::http;
use super::{log_refusal, refusal_kick, Listener, Speaks, REFUSAL_TIMEOUT};
use crate::config::TransportKind;
use crate::connection::ConnId;
use crate::driver;
#[cfg(feature = "tls")]
use crate::driver::stream::StreamTransport;
#[cfg(feature = "websocket")]
use crate::driver::websocket::{self, WebSocketTransport};
use crate::group::{Group, Shared};
use crate::limits::Permit;
use crate::service::Service;
use gatehouse_protocol::KickReason;

/// A connection after its handshake.
#[allow(
    clippy::large_enum_variant,
    reason = "made once per connection and moved at once into its transport (with \
              one transport compiled in, no variant is larger than another)"
)]
enum Upgraded {
    #[cfg(feature = "tls")]
    Tls(TlsStream<TcpStream>),
    #[cfg(feature = "websocket")]
    Ws(WebSocketStream<TcpStream>, SocketAddr),
    #[cfg(all(feature = "tls", feature = "websocket"))]
    Wss(WebSocketStream<TlsStream<TcpStream>>, SocketAddr),
    /// A plain HTTP request, answered: nothing to serve.
    #[cfg(feature = "websocket")]
    Answered,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[cfg(feature = "tls")]
    #[error("TLS: {0}")]
    Tls(io::Error),
    #[cfg(feature = "websocket")]
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
    #[cfg(feature = "websocket")]
    let ws_config = websocket::config(max_frame_bytes);
    #[cfg(not(feature = "websocket"))]
    let _ = (peer, max_frame_bytes);
    Ok(match speaks {
        Speaks::Tcp => unreachable!("TCP has no handshake"),
        #[cfg(feature = "tls")]
        Speaks::Tls(certs) => Upgraded::Tls(
            certs
                .acceptor()
                .accept(socket)
                .await
                .map_err(HandshakeError::Tls)?,
        ),
        #[cfg(feature = "websocket")]
        Speaks::Ws(web) => match http::handshake(socket, peer, false, web, ws_config).await? {
            http::Handshake::Upgraded(ws, client) => Upgraded::Ws(ws, client),
            http::Handshake::Served => Upgraded::Answered,
        },
        #[cfg(all(feature = "tls", feature = "websocket"))]
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
pub(super) async fn handshake_then_serve<S: Service>(
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
    #[cfg(feature = "websocket")]
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
        #[cfg(feature = "tls")]
        Upgraded::Tls(stream) => serving.run(StreamTransport::new(stream), peer).await,
        #[cfg(feature = "websocket")]
        Upgraded::Ws(ws, client) => {
            serving
                .run(WebSocketTransport::new(ws, limits), client)
                .await
        }
        #[cfg(all(feature = "tls", feature = "websocket"))]
        Upgraded::Wss(ws, client) => {
            serving
                .run(WebSocketTransport::new(ws, limits), client)
                .await
        }
        #[cfg(feature = "websocket")]
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

/// A refused TLS or WebSocket client gets its handshake first, so that it can read
/// its kick.
pub(super) async fn refuse<S: Service>(
    speaks: &Speaks,
    socket: TcpStream,
    peer: SocketAddr,
    shared: &Shared<S>,
    reason: KickReason,
    text: &str,
) {
    let config = shared.core_config.clone();
    #[cfg(feature = "websocket")]
    let limits = &shared.config.limits;
    match handshake(speaks, socket, peer, shared.config.limits.max_frame_bytes).await {
        #[cfg(feature = "tls")]
        Ok(Upgraded::Tls(tls)) => {
            driver::refuse(StreamTransport::new(tls), config, reason, text).await
        }
        #[cfg(feature = "websocket")]
        Ok(Upgraded::Ws(ws, _)) => {
            let transport = WebSocketTransport::new(ws, limits);
            driver::refuse(transport, config, reason, text).await
        }
        #[cfg(all(feature = "tls", feature = "websocket"))]
        Ok(Upgraded::Wss(ws, _)) => {
            let transport = WebSocketTransport::new(ws, limits);
            driver::refuse(transport, config, reason, text).await
        }
        #[cfg(feature = "websocket")]
        Ok(Upgraded::Answered) => {}
        Err(_) => {}
    }
}
