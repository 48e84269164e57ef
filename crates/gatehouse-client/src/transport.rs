//! Where a client connects and how: a [`Target`] (`host:port` or `tcp://`, `tls://`,
//! `ws://`, `wss://` addresses) opened into a stream of frame bodies and a sink for
//! them. TCP and TLS carry `{packet, 4}` frames; WebSocket carries one envelope per
//! binary message, and a close frame with code 4000-4999 after a kick.
//!
//! TLS trusts the system's roots, or only the PEM file of
//! [`ClientConfig::tls_ca`](crate::ClientConfig::tls_ca) (a development
//! certificate from `gatehouse dev-cert`).

use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use gatehouse_protocol::{KickReason, HEADER_LEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::codec::{Decoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use crate::{ClientConfig, ClientError};

/// A server address and the transport to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` or `tcp://host:port`.
    Tcp(String),
    /// `tls://host:port`.
    Tls(String),
    /// `ws://host:port/path` (the whole URL).
    Ws(String),
    /// `wss://host:port/path` (the whole URL).
    Wss(String),
}

impl Target {
    /// The same address over TLS: `tcp` becomes `tls`, `ws` becomes `wss`.
    pub fn with_tls(self) -> Target {
        match self {
            Target::Tcp(addr) => Target::Tls(addr),
            Target::Ws(url) => match url.strip_prefix("ws://") {
                Some(rest) => Target::Wss(format!("wss://{rest}")),
                None => Target::Wss(url),
            },
            secure => secure,
        }
    }

    /// `host:port` of the server.
    fn authority(&self) -> &str {
        match self {
            Target::Tcp(addr) | Target::Tls(addr) => addr,
            Target::Ws(url) | Target::Wss(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                rest.split(['/', '?', '#']).next().unwrap_or(rest)
            }
        }
    }

    /// The host without the port, for the TLS server name.
    fn host(&self) -> &str {
        let authority = self.authority();
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s.split_once("://").unwrap_or(("tcp", s));
        let target = match scheme {
            "tcp" => Target::Tcp(rest.to_owned()),
            "tls" => Target::Tls(rest.to_owned()),
            "ws" => Target::Ws(s.to_owned()),
            "wss" => Target::Wss(s.to_owned()),
            other => return Err(format!("unknown scheme `{other}` (tcp, tls, ws, wss)")),
        };
        // host:port, with an IPv6 host in brackets ("[::1]:7000").
        let authority = target.authority();
        let host_and_port = authority.rsplit_once(':').filter(|(host, port)| {
            port.parse::<u16>().is_ok()
                && !host.is_empty()
                && (host.starts_with('[') && host.ends_with(']') || !host.contains(':'))
        });
        if host_and_port.is_none() {
            return Err(format!(
                "`{s}` has no host:port (an IPv6 host in brackets: [::1]:7000)"
            ));
        }
        Ok(target)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "tcp://{addr}"),
            Target::Tls(addr) => write!(f, "tls://{addr}"),
            Target::Ws(url) | Target::Wss(url) => f.write_str(url),
        }
    }
}

/// Frame bodies from the server, in order.
pub(crate) type Bodies = Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>;
/// Frame bodies to the server.
pub(crate) type BodySink = Pin<Box<dyn Sink<Bytes, Error = ClientError> + Send>>;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

fn io_error(e: impl fmt::Display) -> ClientError {
    ClientError::Io(e.to_string())
}

/// Connects to `target` and splits the connection into bodies in and out.
pub(crate) async fn open(
    target: &Target,
    config: &ClientConfig,
) -> Result<(Bodies, BodySink), ClientError> {
    let tcp = TcpStream::connect(target.authority())
        .await
        .map_err(io_error)?;
    tcp.set_nodelay(true).map_err(io_error)?;
    match target {
        Target::Tcp(_) => Ok(framed(tcp, config)),
        Target::Tls(_) => Ok(framed(tls(tcp, target, config).await?, config)),
        Target::Ws(url) => websocket(tcp, url, config).await,
        Target::Wss(url) => websocket(tls(tcp, target, config).await?, url, config).await,
    }
}

/// `{packet, 4}` frames over a byte stream.
pub(crate) fn framed(io: impl Io, config: &ClientConfig) -> (Bodies, BodySink) {
    let codec = || {
        LengthDelimitedCodec::builder()
            .length_field_length(HEADER_LEN)
            .max_frame_length(config.max_frame_bytes)
            .new_codec()
    };
    let (read, write) = tokio::io::split(io);
    let first = FirstBytes {
        frames: codec(),
        checked: false,
    };
    let bodies =
        FramedRead::new(read, first).map(|frame| frame.map(|b| b.freeze()).map_err(io_error));
    let sink =
        SinkExt::<Bytes>::sink_map_err(FramedWrite::new(write, codec()), |e: std::io::Error| {
            io_error(e)
        });
    (Box::pin(bodies), Box::pin(sink))
}

/// The frame decoder, which first checks that the server speaks frames at all: a
/// TLS or HTTP server's first bytes read as a length far over any frame, and the
/// codec's "frame size too big" would hide that the address is wrong.
struct FirstBytes {
    frames: LengthDelimitedCodec,
    checked: bool,
}

impl Decoder for FirstBytes {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        if !self.checked && buf.len() >= 4 {
            self.checked = true;
            if let Some(speaks) = not_frames(&buf[..4]) {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, speaks));
            }
        }
        self.frames.decode(buf)
    }
}

/// What a server that answers with `head` speaks, if not `{packet, 4}` frames.
fn not_frames(head: &[u8]) -> Option<&'static str> {
    match head {
        // A TLS record: handshake (22) or alert (21), version 3.x.
        [0x15 | 0x16, 0x03, 0x00..=0x04, _] => Some(
            "the server answered in TLS: connect with tls:// (or wss:// for a WebSocket listener)",
        ),
        [b'H', b'T', b'T', b'P'] => Some(
            "the server answered in HTTP: connect with ws:// (or wss://) to a WebSocket listener",
        ),
        _ => None,
    }
}

async fn tls(
    tcp: TcpStream,
    target: &Target,
    config: &ClientConfig,
) -> Result<impl Io, ClientError> {
    let tls_config = tls_config(config.tls_ca.as_deref())?;
    let name = ServerName::try_from(target.host().to_owned()).map_err(io_error)?;
    TlsConnector::from(tls_config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let text = e.to_string();
            // The common case behind it: a self-signed development certificate.
            let hint = if config.tls_ca.is_none() && text.contains("UnknownIssuer") {
                " (the server's certificate is not signed by a CA this system trusts: \
                 for a development certificate, trust its PEM file with `tls_ca`, \
                 `gatehouse client --ca FILE`)"
            } else {
                ""
            };
            io_error(format!("TLS: {text}{hint}"))
        })
}

/// A client's TLS settings: TLS 1.2 or 1.3, trusting only the certificates of the PEM
/// file `ca` (a development certificate) or, without one, the system's roots.
pub fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let bad = |e: &dyn fmt::Display| io_error(format!("{}: {e}", path.display()));
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert); // a system certificate rustls cannot use is skipped
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io_error)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One envelope per binary WebSocket message.
async fn websocket(
    io: impl Io,
    url: &str,
    config: &ClientConfig,
) -> Result<(Bodies, BodySink), ClientError> {
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes));
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(ws_config))
        .await
        .map_err(|e| io_error(format!("WebSocket: {e}")))?;
    let (sink, stream) = ws.split();
    let bodies = stream.filter_map(|message| async move {
        match message {
            Ok(WsMessage::Binary(body)) => Some(Ok(body)),
            Ok(WsMessage::Close(Some(frame))) => {
                // The kick envelope came first and ended the connection; a close
                // without one still says why.
                let text = frame.reason.to_string();
                Some(Err(
                    match KickReason::from_websocket_close_code(frame.code.into()) {
                        Some(reason) => ClientError::Kicked { reason, text },
                        None => ClientError::Closed,
                    },
                ))
            }
            Ok(WsMessage::Close(None)) => Some(Err(ClientError::Closed)),
            Ok(WsMessage::Text(_)) => Some(Err(ClientError::Protocol(
                "the server sent a text message".into(),
            ))),
            Ok(_) => None, // pings are answered by tungstenite
            Err(e) => Some(Err(io_error(e))),
        }
    });
    let sink = sink
        .sink_map_err(io_error)
        .with(|body: Bytes| async move { Ok::<_, ClientError>(WsMessage::Binary(body)) });
    Ok((Box::pin(bodies), Box::pin(sink)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_or_without_a_scheme() {
        assert_eq!(
            "127.0.0.1:7000".parse(),
            Ok(Target::Tcp("127.0.0.1:7000".into()))
        );
        assert_eq!(
            "tls://example.com:7443".parse::<Target>().unwrap().host(),
            "example.com"
        );
        let ws: Target = "ws://[::1]:7080/ws".parse().unwrap();
        assert_eq!((ws.authority(), ws.host()), ("[::1]:7080", "::1"));
        assert_eq!(ws.with_tls(), Target::Wss("wss://[::1]:7080/ws".into()));
        assert!("quic://h:1".parse::<Target>().is_err());
        assert!(
            "::1".parse::<Target>().is_err(),
            "an IPv6 host needs brackets"
        );
        assert!("[::1]:7000".parse::<Target>().is_ok());
        assert!("ws://h:1?x=y".parse::<Target>().is_ok());
        assert_eq!(
            Target::Ws("odd".into()).with_tls(),
            Target::Wss("odd".into())
        );
        assert!("ws://nohost/ws".parse::<Target>().is_err());
    }
}
