//! The HTTP side of a `ws`/`wss` listener: one request per connection, read within the
//! handshake timeout and at most [`MAX_REQUEST_HEAD`] bytes. A WebSocket upgrade from
//! an allowed origin becomes a [`WebSocketStream`]; any other `GET` is answered from
//! the listener's [`Pages`] (the game's browser client) and closed.
//!
//! Two checks live here because only HTTP carries what they need: the `Origin` of a
//! browser page (a page of another site is refused, so that it cannot play as the
//! visitor), and `X-Forwarded-For` from a trusted proxy (the client's real address,
//! for the per-IP cap and the logs; from anyone else the header is ignored).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

/// Largest request head (request line and headers) read; more is refused with 431.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Headers parsed at most.
const MAX_HEADERS: usize = 48;

/// What a `ws`/`wss` listener serves besides the WebSocket.
#[derive(Clone, Debug, Default)]
pub struct WebOptions {
    /// Origins of other sites' pages allowed to connect (`scheme://host[:port]`, or
    /// `*`). Pages served by this listener are always allowed.
    pub allowed_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Files answered to plain `GET`s.
    pub pages: Pages,
}

/// Static files served by a WebSocket listener, by path (`/` for the index).
#[derive(Clone, Debug, Default)]
pub struct Pages {
    files: Arc<HashMap<String, Page>>,
}

#[derive(Clone, Debug)]
struct Page {
    content_type: &'static str,
    body: Bytes,
}

impl Pages {
    /// No pages: every plain `GET` is answered 404.
    pub fn new() -> Pages {
        Pages::default()
    }

    /// Adds (or replaces) the file served at `path`.
    pub fn with(mut self, path: &str, content_type: &'static str, body: impl Into<Bytes>) -> Pages {
        Arc::make_mut(&mut self.files).insert(
            path.to_owned(),
            Page {
                content_type,
                body: body.into(),
            },
        );
        self
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// How the request ended.
#[expect(
    clippy::large_enum_variant,
    reason = "made once per connection and moved at once into its transport"
)]
pub(crate) enum Handshake<S> {
    /// Upgraded: the WebSocket and the client's address (the proxy's client when
    /// forwarded by a trusted proxy).
    Upgraded(WebSocketStream<S>, SocketAddr),
    /// A page (or a 404 for one) was served; the connection is done.
    Served,
}

/// Why a request was refused; the connection got the status first.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("{status} {why}")]
    Status { status: u16, why: &'static str },
    #[error("cross-origin page refused: {0}")]
    Origin(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Refused {
    fn status(status: u16, why: &'static str) -> Refused {
        Refused::Status { status, why }
    }
}

/// Reads one request from `stream` and answers it. `secure`: served over TLS (the
/// page's scheme is `https`). The caller bounds it with the handshake timeout.
pub(crate) async fn handshake<S>(
    mut stream: S,
    peer: SocketAddr,
    secure: bool,
    options: &WebOptions,
    config: WebSocketConfig,
) -> Result<Handshake<S>, Refused>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (head, rest) = match read_head(&mut stream).await {
        Ok(read) => read,
        Err(refused @ Refused::Status { status, why }) => {
            respond(&mut stream, status, why, &[]).await;
            return Err(refused);
        }
        Err(e) => return Err(e),
    };
    match answer(&head, peer, secure, options) {
        Answer::Upgrade { accept, client } => {
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            stream.write_all(response.as_bytes()).await?;
            stream.flush().await?;
            let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config))
                .await;
            Ok(Handshake::Upgraded(ws, client))
        }
        Answer::Page(page, head_only) => {
            let headers = [
                ("Content-Type", page.content_type),
                ("Cache-Control", "no-cache"),
            ];
            let body: &[u8] = if head_only { &[] } else { &page.body };
            write_response(&mut stream, 200, "OK", &headers, page.body.len(), body).await?;
            let _ = stream.shutdown().await;
            Ok(Handshake::Served)
        }
        Answer::NotFound(status, why) => {
            respond(&mut stream, status, why, &[]).await;
            Ok(Handshake::Served)
        }
        Answer::Refuse(refused) => {
            let (status, why, extra): (u16, &str, &[(&str, &str)]) = match &refused {
                Refused::Status { status: 426, why } => {
                    (426, why, &[("Sec-WebSocket-Version", "13")])
                }
                Refused::Status { status, why } => (*status, why, &[]),
                Refused::Origin(_) => (403, "cross-origin WebSocket refused", &[]),
                Refused::Io(_) => unreachable!("answer does no I/O"),
            };
            respond(&mut stream, status, why, extra).await;
            Err(refused)
        }
    }
}

/// Reads until the end of the head; returns it and whatever followed it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(Vec<u8>, Vec<u8>), Refused> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Refused::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let searched_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        // A request starts with its method, a token of capitals: anything else (a
        // `{packet, 4}` client's frame, a TLS hello) is refused at once, rather than
        // left waiting for a blank line that never comes.
        if !buf[0].is_ascii_uppercase() {
            return Err(Refused::status(
                400,
                "not HTTP: this listener speaks WebSocket (ws:// or wss://)",
            ));
        }
        if let Some(end) = find(&buf[searched_from..], b"\r\n\r\n") {
            let end = searched_from + end + 4;
            if end > MAX_REQUEST_HEAD {
                break;
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            break;
        }
    }
    Err(Refused::status(431, "request head too large"))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

enum Answer {
    Upgrade {
        accept: String,
        client: SocketAddr,
    },
    Page(Page, bool),
    /// A plain request for nothing served (404) or not a `GET` (405): answered.
    NotFound(u16, &'static str),
    /// An upgrade refused: a failed handshake.
    Refuse(Refused),
}

/// Decides what to answer to a request head, without I/O.
fn answer(head: &[u8], peer: SocketAddr, secure: bool, options: &WebOptions) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Answer::Refuse(Refused::status(400, "malformed request")),
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let method = request.method.unwrap_or_default();
    let path = request.path.unwrap_or("/");
    let path = path.split(['?', '#']).next().unwrap_or("/");
    let upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        if method != "GET" && method != "HEAD" {
            return Answer::NotFound(405, "method not allowed");
        }
        return match options.pages.files.get(path) {
            Some(page) => Answer::Page(page.clone(), method == "HEAD"),
            None => Answer::NotFound(404, "not found"),
        };
    }
    if method != "GET" {
        return Answer::Refuse(Refused::status(405, "a WebSocket upgrade is a GET"));
    }
    if !header("connection").is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    }) {
        return Answer::Refuse(Refused::status(400, "Connection: Upgrade missing"));
    }
    if header("sec-websocket-version") != Some("13") {
        return Answer::Refuse(Refused::status(426, "WebSocket version 13 only"));
    }
    let Some(key) = header("sec-websocket-key") else {
        return Answer::Refuse(Refused::status(400, "Sec-WebSocket-Key missing"));
    };
    // A trusted proxy says how the browser reached it (a TLS-terminating proxy in
    // front of a `ws` listener serves the page over https).
    let proxied = options
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&peer.ip()));
    let secure = match header("x-forwarded-proto") {
        Some(proto) if proxied => proto.eq_ignore_ascii_case("https"),
        _ => secure,
    };
    if let Some(origin) = header("origin") {
        if !origin_allowed(origin, header("host"), secure, &options.allowed_origins) {
            return Answer::Refuse(Refused::Origin(origin.to_owned()));
        }
    }
    // Every line of the header, in order: a proxy may add its own line rather than
    // append to the client's.
    let forwarded: Vec<&str> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .collect();
    let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
    let client = match forwarded_client(peer, forwarded.as_deref(), &options.trusted_proxies) {
        Ok(client) => client,
        Err(()) => return Answer::Refuse(Refused::status(400, "malformed X-Forwarded-For")),
    };
    Answer::Upgrade {
        accept: derive_accept_key(key.as_bytes()),
        client,
    }
}

/// A browser page may connect if it was served by this listener (its origin is our
/// own scheme and `Host`) or its origin is allowed.
fn origin_allowed(origin: &str, host: Option<&str>, secure: bool, allowed: &[String]) -> bool {
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let scheme = if secure { "https://" } else { "http://" };
    match (origin.strip_prefix(scheme), host) {
        (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy that names
/// one. The list is read from the right (the address the nearest proxy saw), skipping
/// our own trusted proxies: the first other address is the client, as far as anyone
/// we trust can tell. `Err` for a header that is not a list of addresses.
pub(crate) fn forwarded_client(
    peer: SocketAddr,
    header: Option<&str>,
    trusted: &[IpNet],
) -> Result<SocketAddr, ()> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let Some(header) = header else {
        return Ok(peer);
    };
    if !is_trusted(&peer.ip()) {
        return Ok(peer);
    }
    let mut client = peer.ip();
    for entry in header.rsplit(',') {
        let ip = forwarded_address(entry.trim()).ok_or(())?;
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    // The proxy's client's port is not known; 0 says so in the logs.
    Ok(SocketAddr::new(
        client,
        if client == peer.ip() { peer.port() } else { 0 },
    ))
}

/// One `X-Forwarded-For` entry: an address, `ip:port`, or `[ipv6]:port`.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(with_port) = entry.parse::<SocketAddr>() {
        return Some(with_port.ip());
    }
    entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Answers with a status and a one-line text body, best effort, and closes.
async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    why: &str,
    extra: &[(&str, &str)],
) {
    let mut headers = vec![("Content-Type", "text/plain; charset=utf-8")];
    headers.extend_from_slice(extra);
    let body = format!("{why}\n");
    let _ = write_response(
        stream,
        status,
        reason_phrase(status),
        &headers,
        body.len(),
        body.as_bytes(),
    )
    .await;
    let _ = stream.shutdown().await;
}

async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    phrase: &str,
    headers: &[(&str, &str)],
    content_length: usize,
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {phrase}\r\nConnection: close\r\nContent-Length: {content_length}\r\nX-Content-Type-Options: nosniff\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(any(test, feature = "fuzzing"))]
#[path = "http_checks.rs"]
pub(crate) mod checks;
#[cfg(test)]
#[path = "http_properties.rs"]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_read_only_from_a_trusted_proxy() {
        let trusted = [net("10.0.0.0/8")];
        let from_proxy = forwarded_client(addr("10.1.2.3:5000"), Some("203.0.113.7"), &trusted);
        assert_eq!(from_proxy, Ok(addr("203.0.113.7:0")));
        let forged = forwarded_client(addr("198.51.100.9:5000"), Some("203.0.113.7"), &trusted);
        assert_eq!(forged, Ok(addr("198.51.100.9:5000")));
    }

    #[test]
    fn forwarded_for_skips_our_proxies_and_stops_at_the_first_stranger() {
        let trusted = [net("10.0.0.0/8")];
        // A client who wrote its own header: the forged left entry is not believed.
        let got = forwarded_client(
            addr("10.0.0.1:1"),
            Some("1.1.1.1, 203.0.113.7, 10.0.0.2"),
            &trusted,
        );
        assert_eq!(got, Ok(addr("203.0.113.7:0")));
        assert_eq!(
            forwarded_client(addr("10.0.0.1:1"), Some("nonsense"), &trusted),
            Err(())
        );
    }

    #[test]
    fn own_pages_and_listed_origins_may_connect() {
        let allowed = ["https://game.example".to_owned()];
        assert!(origin_allowed(
            "http://127.0.0.1:7080",
            Some("127.0.0.1:7080"),
            false,
            &[]
        ));
        assert!(!origin_allowed(
            "https://127.0.0.1:7080",
            Some("127.0.0.1:7080"),
            false,
            &[]
        ));
        assert!(!origin_allowed(
            "http://evil.example",
            Some("127.0.0.1:7080"),
            false,
            &[]
        ));
        assert!(origin_allowed(
            "https://game.example",
            Some("127.0.0.1:7080"),
            false,
            &allowed
        ));
        assert!(origin_allowed(
            "http://anything",
            None,
            false,
            &["*".to_owned()]
        ));
    }
}
