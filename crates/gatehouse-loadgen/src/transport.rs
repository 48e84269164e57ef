//! What the generator's connections run over: TCP, TLS, WebSocket, WebSocket over
//! TLS ([`Transport`]), all seen by the scenarios as one byte stream of `{packet, 4}`
//! frames (`Conn`), so that every scenario drives every transport unchanged.
//!
//! A WebSocket connection is adapted (`WsStream`): the frames a scenario writes are
//! cut at their length prefixes and each body sent as one binary message; each binary
//! message received is handed back with its length prefix. The adapter costs the
//! generator a copy per message, not the server.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::wire::HEADER;

/// Bytes a scenario may write ahead of what the WebSocket has taken.
const MAX_UNSENT: usize = 256 * 1024;

/// How the generator reaches the server.
#[derive(Clone, Default)]
pub enum Transport {
    /// `{packet, 4}` over TCP.
    #[default]
    Tcp,
    /// `{packet, 4}` over TLS, trusting the given roots.
    Tls(Arc<ClientConfig>),
    /// WebSocket, one envelope per binary message.
    Ws,
    /// WebSocket over TLS.
    Wss(Arc<ClientConfig>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Transport {
    /// `tcp`, `tls`, `ws` or `wss`; the TLS ones trust only the certificates in the
    /// PEM file `ca` (the server's development certificate).
    pub fn new(name: &str, ca: Option<&Path>) -> Result<Transport, String> {
        let tls = || -> Result<Arc<ClientConfig>, String> {
            let ca = ca.ok_or_else(|| {
                format!("--transport {name} needs --ca (the server's certificate, PEM)")
            })?;
            gatehouse_client::tls_config(Some(ca)).map_err(|e| e.to_string())
        };
        Ok(match name {
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls(tls()?),
            "ws" => Transport::Ws,
            "wss" => Transport::Wss(tls()?),
            other => return Err(format!("unknown transport `{other}` (tcp, tls, ws, wss)")),
        })
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::Ws => "ws",
            Transport::Wss(_) => "wss",
        }
    }

    /// Runs the transport's handshakes over a connected socket.
    pub(crate) async fn open(&self, tcp: TcpStream, addr: SocketAddr) -> io::Result<Conn> {
        Ok(match self {
            Transport::Tcp => Conn::Tcp(tcp),
            Transport::Tls(config) => Conn::Tls(Box::new(tls(tcp, addr, config).await?)),
            Transport::Ws => Conn::Ws(Box::new(WsStream::open(tcp, "ws", addr).await?)),
            Transport::Wss(config) => {
                let stream = tls(tcp, addr, config).await?;
                Conn::Wss(Box::new(WsStream::open(stream, "wss", addr).await?))
            }
        })
    }
}

async fn tls(
    tcp: TcpStream,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(config.clone()).connect(name, tcp).await
}

/// One connection of the generator, over any transport.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WsStream<TcpStream>>),
    Wss(Box<WsStream<TlsStream<TcpStream>>>),
}

impl Conn {
    /// The TCP socket, when nothing lies between it and the server (the echo
    /// scenario's readiness-based fast path).
    pub(crate) fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Tcp(tcp) => Some(tcp),
            _ => None,
        }
    }
}

macro_rules! each {
    ($conn:expr, $s:ident => $e:expr) => {
        match $conn.get_mut() {
            Conn::Tcp($s) => $e,
            Conn::Tls($s) => $e,
            Conn::Ws($s) => $e,
            Conn::Wss($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// A WebSocket seen as a stream of `{packet, 4}` frames.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// Written by the scenario, not yet sent: whole frames and maybe part of one.
    unsent: BytesMut,
    /// Messages started but not flushed.
    unflushed: bool,
    /// The rest of the last message received, framed, not yet read.
    received: Bytes,
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    async fn open(stream: S, scheme: &str, addr: SocketAddr) -> io::Result<WsStream<S>> {
        let url = format!("{scheme}://{addr}/ws");
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(ws_error)?;
        Ok(WsStream {
            ws,
            unsent: BytesMut::new(),
            unflushed: false,
            received: Bytes::new(),
        })
    }

    /// Sends every whole frame written so far, one message each, and flushes.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(len) = whole_frame(&self.unsent) {
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_error)?;
            let mut frame = self.unsent.split_to(HEADER + len);
            frame.advance(HEADER);
            Pin::new(&mut self.ws)
                .start_send(Message::Binary(frame.freeze()))
                .map_err(ws_error)?;
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.ws).poll_flush(cx)).map_err(ws_error)?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }
}

/// The body length of the first frame in `buf`, if all of it is there.
fn whole_frame(buf: &[u8]) -> Option<usize> {
    let header: [u8; HEADER] = buf.get(..HEADER)?.try_into().ok()?;
    let len = u32::from_be_bytes(header) as usize;
    (buf.len() >= HEADER + len).then_some(len)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A scenario that only waits for answers must still get its requests out.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        // Every message already here goes into this one read, as a TCP read would
        // take every frame that has arrived: the scenario answers them in one batch.
        let mut copied = false;
        while buf.remaining() > 0 {
            if !this.received.is_empty() {
                let n = this.received.len().min(buf.remaining());
                buf.put_slice(&this.received[..n]);
                this.received.advance(n);
                copied = true;
                continue;
            }
            let next = match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Pending if copied => break,
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            };
            match next {
                Some(Ok(Message::Binary(body))) => {
                    let mut framed = BytesMut::with_capacity(HEADER + body.len());
                    framed.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
                    framed.put_slice(&body);
                    this.received = framed.freeze();
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {} // tungstenite answers pings
                // The end (or an error) after data: the data first; the next read
                // sees the end again.
                _ if copied => break,
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())), // end of stream
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message",
                    )))
                }
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.unsent.len() >= MAX_UNSENT {
            ready!(this.poll_send(cx))?;
        }
        this.unsent.extend_from_slice(buf);
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.ws).poll_close(cx).map_err(ws_error)
    }
}
