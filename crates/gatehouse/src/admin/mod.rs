//! The admin listener: an HTTP server (axum) off the game's ports, for operators.
//!
//! | path | method | token | what |
//! |---|---|---|---|
//! | `/healthz` | GET | never | alive: the process answers |
//! | `/readyz` | GET | never | 200 while the server takes connections, 503 while the hub restarts or the server drains |
//! | `/metrics` | GET | if set | Prometheus metrics (OpenMetrics text) |
//! | `/` | GET | never | the console (it asks for the token, if one is set, before reading data) |
//! | `/api/stats` | GET | if set | the server's numbers as JSON |
//! | `/api/events` | GET | if set | Server-Sent Events: the metrics text once a second |
//! | `/api/history` | GET | if set | the charted numbers of the last 5 minutes, one point a second |
//! | `/api/connections` | GET | if set | live connections, paged (`?after=ID&limit=N`), or one player's (`?player=NAME`) |
//! | `/api/rooms` | GET | if set | running rooms, most members first (`?limit=N`) |
//! | `/api/cluster` | GET | if set | this node, every live node's counts, the link's numbers |
//! | `/api/connections/{id}/kick` | POST | required | kick one connection with a reason |
//! | `/api/broadcast` | POST | required | push an announcement to every connection |
//! | `/api/drain` | POST | required | stop accepting, kick everyone `shutdown`, stop |
//!
//! Requests whose `Host` is a name other than `localhost` or one of
//! [`AdminConfig::allowed_hosts`] are refused (403): a web page cannot read the API
//! through DNS rebinding. With a token configured ([`AdminConfig::token`]), every path but `/healthz`,
//! `/readyz` and the page's own HTML needs `Authorization: Bearer <token>`, compared in
//! constant time. Without one, the read-only paths are open (the listener is on
//! loopback by default) and the mutating ones answer 403. Every error is JSON:
//! `{"error": "..."}` with a 4xx status (but a head over [`MAX_HEAD`], which hyper
//! answers with a bare 431).
//!
//! Every connection is bounded ([`AdminLimits`]): a request's head, its body, the
//! wait between kept-alive requests and an answer's writes each have a deadline, and
//! at most `max_connections` are served at once (past them, a few more are answered
//! 503 and the rest closed). The event stream is long-lived by design: it holds one
//! of those connections, and only its writes are timed.
//!
//! - this file: configuration, the router, authentication, the body's deadline.
//! - `api`: the JSON endpoints, the metrics and the event stream.
//! - `history`: the last minutes of the console's charts, read once a second.
//! - `page.html`: the console itself (one file, no build step).
//! - `connections`: the accept loop, the connection cap, serving each connection.
//! - `deadlines`: the deadlines of a connection's reads and writes.

mod api;
mod connections;
mod deadlines;
mod history;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::ConfigError;
use crate::group::Shared;
use crate::service::Service;

/// The admin API's settings (the `[admin]` section of the binary's file, less the
/// address, which belongs to whoever binds the listener).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The bearer token every request but health, readiness and the page needs. Unset,
    /// the read-only endpoints are open and the mutating ones are off.
    pub token: Option<String>,
    /// Host names (besides IP addresses and `localhost`) the API answers to, for an
    /// admin listener reached by name (`admin.example.internal`). Other names are
    /// refused: the guard against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// How many connections it serves at once and how long each may take
    /// (`[admin.limits]`).
    pub limits: AdminLimits,
}

/// What bounds the admin listener's connections, so that clients that send slowly,
/// stop reading or just stay connected cannot hold it (`[admin.limits]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminLimits {
    /// Connections served at once. Past it, [`MAX_REFUSALS`] more are answered 503
    /// (`Retry-After: 1`) and closed; past those, new connections are closed at once.
    /// Each open console holds one (its event stream).
    pub max_connections: usize,
    /// A request's head (request line and headers) must be whole this long after the
    /// connection was accepted, or, on a kept-alive connection, after its first byte.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A request's body must be whole this long after its head: past it, 408 and the
    /// connection closes.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A kept-alive connection may wait this long after an answer for its next request.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// An answer whose writes make no progress this long (a client that stopped
    /// reading, an event stream nobody reads) closes its connection.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
        }
    }
}

/// Connections answered 503 at once when [`AdminLimits::max_connections`] are being
/// served; past these, new ones are closed without an answer.
pub const MAX_REFUSALS: usize = 16;

/// Most connections `admin.limits.max_connections` may allow.
const MAX_CONNECTIONS_CEILING: usize = 65_536;

/// Longest deadline `[admin.limits]` takes: a day is more than any admin client
/// needs, and keeps every deadline a representable instant.
const DEADLINE_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// Shortest token accepted: a guessable token is worse than none.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminConfig {
    /// Checks the token's length and characters, and the limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if !(1..=MAX_CONNECTIONS_CEILING).contains(&l.max_connections) {
            return Err(ConfigError::Invalid {
                key: "admin.limits.max_connections",
                message: format!("must be from 1 to {MAX_CONNECTIONS_CEILING}"),
            });
        }
        for (key, value) in [
            ("admin.limits.header_timeout", l.header_timeout),
            ("admin.limits.body_timeout", l.body_timeout),
            ("admin.limits.idle_timeout", l.idle_timeout),
            ("admin.limits.send_timeout", l.send_timeout),
        ] {
            if value.is_zero() || value > DEADLINE_CEILING {
                return Err(ConfigError::Invalid {
                    key,
                    message: "must be longer than zero and at most a day".into(),
                });
            }
        }
        if let Some(token) = &self.token {
            if token.len() < MIN_TOKEN_LEN {
                return Err(ConfigError::Invalid {
                    key: "admin.token",
                    message: format!("must be at least {MIN_TOKEN_LEN} characters"),
                });
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ConfigError::Invalid {
                    key: "admin.token",
                    message: "must be printable ASCII without spaces".into(),
                });
            }
        }
        Ok(())
    }
}

/// What the handlers share.
struct AdminState<S: Service> {
    shared: Arc<Shared<S>>,
    token: Option<Arc<[u8]>>,
    /// Cancelled when the server has stopped: open event streams end.
    stop: CancellationToken,
    /// The last metrics text and when it was read, shared by every stream and scrape.
    last_text: tokio::sync::Mutex<Option<(tokio::time::Instant, String)>>,
    /// Event streams open now.
    streams: Arc<Semaphore>,
    /// The console's charts of the last minutes.
    history: Arc<history::History>,
}

type Admin<S> = Arc<AdminState<S>>;

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.1 }));
        (self.0, body).into_response()
    }
}

/// What a request may do, by what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read-only endpoints.
    Read,
    /// Endpoints that change something.
    Write,
}

/// Checks the bearer token (see the module docs).
fn authorize(token: Option<&[u8]>, request: &Request, access: Access) -> Result<(), ApiError> {
    let Some(expected) = token else {
        return match access {
            Access::Read => Ok(()),
            Access::Write => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "mutating endpoints are off: no admin token is configured (admin.token)",
            )),
        };
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(presented) if bool::from(presented.ct_eq(expected)) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong token")),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <admin.token>)",
        )),
    }
}

/// The token a group of routes wants, and for what.
type Guard = (Option<Arc<[u8]>>, Access);

async fn guard(State((token, access)): State<Guard>, request: Request, next: Next) -> Response {
    match authorize(token.as_deref(), &request, access) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Whether a request's `Host` may reach the API: an IP address, `localhost`, or one of
/// `admin.allowed_hosts` (any port). Anything else is a name that resolves here only
/// by accident or by DNS rebinding (a web page making the operator's browser read the
/// API), and is refused.
fn host_allowed(host: Option<&str>, allowed: &[String]) -> bool {
    let Some(host) = host else {
        return true; // not a browser: browsers always send one
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => {
            return v6
                .split(']')
                .next()
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        }
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

async fn check_host(
    State(allowed): State<Arc<[String]>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("?"));
    if host_allowed(host, &allowed) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "this Host is not the admin listener's (add it to admin.allowed_hosts)",
        )
        .into_response()
    }
}

/// Largest request head (request line and headers), in bytes: 431 past it. Room for
/// a browser's cookies for `localhost`, which the console may be sent.
pub const MAX_HEAD: usize = 64 * 1024;

/// Largest request body, in bytes: the API's largest is a kick or an announcement,
/// 4096 bytes of text as JSON.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads a request's whole body before anything answers it: at most [`MAX_BODY`]
/// bytes (413), within `admin.limits.body_timeout` of its head (408, and the
/// connection closes). A slow body holds its connection no longer than that, and no
/// answer leaves unread bytes behind it.
async fn read_body_within(
    State(timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (head, body) = request.into_parts();
    let whole = Limited::new(body, MAX_BODY).collect();
    match tokio::time::timeout(timeout, whole).await {
        Ok(Ok(body)) => {
            next.run(Request::from_parts(head, Body::from(body.to_bytes())))
                .await
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over {MAX_BODY} bytes"),
        )
        .into_response(),
        Ok(Err(e)) => {
            ApiError::new(StatusCode::BAD_REQUEST, format!("unreadable body: {e}")).into_response()
        }
        Err(_) => {
            let message = format!(
                "the request body did not arrive within {timeout:?} (admin.limits.body_timeout)"
            );
            let mut answer = ApiError::new(StatusCode::REQUEST_TIMEOUT, message).into_response();
            // What is left of the body will not be read: the connection cannot go on.
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            answer
        }
    }
}

fn router<S: Service>(admin: Admin<S>, hosts: Arc<[String]>, body_timeout: Duration) -> Router {
    let token = &admin.token;
    let needs = |access: Access| middleware::from_fn_with_state((token.clone(), access), guard);
    let reads = Router::new()
        .route("/metrics", get(api::metrics::<S>))
        .route("/api/stats", get(api::stats::<S>))
        .route("/api/events", get(api::events::<S>))
        .route("/api/history", get(api::history::<S>))
        .route("/api/connections", get(api::connections::<S>))
        .route("/api/rooms", get(api::rooms::<S>))
        .route("/api/cluster", get(api::cluster::<S>))
        .route_layer(needs(Access::Read));
    let writes = Router::new()
        .route("/api/connections/{id}/kick", post(api::kick::<S>))
        .route("/api/broadcast", post(api::broadcast::<S>))
        .route("/api/drain", post(api::drain::<S>))
        .route_layer(needs(Access::Write));
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz::<S>))
        .route("/", get(api::page))
        .merge(reads)
        .merge(writes)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(middleware::from_fn_with_state(hosts, check_host))
        .layer(middleware::from_fn_with_state(
            body_timeout,
            read_body_within,
        ))
        .with_state(admin)
}

/// Serves the admin API on `listener` until `stop` is cancelled, keeping the
/// console's history meanwhile.
pub(crate) async fn serve<S: Service>(
    listener: TcpListener,
    config: AdminConfig,
    shared: Arc<Shared<S>>,
    stop: CancellationToken,
) {
    let history = Arc::new(history::History::default());
    let recording = history::record(shared.clone(), history.clone(), stop.clone());
    let admin = Arc::new(AdminState {
        shared,
        token: config.token.map(|t| Arc::from(t.into_bytes())),
        stop: stop.clone(),
        last_text: tokio::sync::Mutex::new(None),
        streams: Arc::new(Semaphore::new(api::MAX_EVENT_STREAMS)),
        history,
    });
    let hosts: Arc<[String]> = config.allowed_hosts.into();
    if admin.token.is_none() {
        info!("admin API without a token: read-only endpoints open, mutating ones off");
    }
    let router = router(admin, hosts, config.limits.body_timeout);
    tokio::join!(
        recording,
        connections::serve(listener, router, config.limits, stop)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/metrics");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(axum::body::Body::empty()).unwrap_or_default()
    }

    #[test]
    fn without_a_token_reads_are_open_and_writes_are_off() {
        assert!(authorize(None, &request(None), Access::Read).is_ok());
        let refused = authorize(None, &request(Some("Bearer x")), Access::Write);
        assert!(matches!(refused, Err(ApiError(StatusCode::FORBIDDEN, _))));
    }

    #[test]
    fn with_a_token_only_the_exact_bearer_token_passes() {
        let token = Some(&b"0123456789abcdef"[..]);
        for access in [Access::Read, Access::Write] {
            assert!(authorize(token, &request(Some("Bearer 0123456789abcdef")), access).is_ok());
            for wrong in [
                None,
                Some("Bearer 0123456789abcdeX"),
                Some("Bearer 0123456789abcdef0"),
                Some("Bearer "),
                Some("bearer 0123456789abcdef"),
                Some("Basic 0123456789abcdef"),
            ] {
                let refused = authorize(token, &request(wrong), access);
                assert!(
                    matches!(refused, Err(ApiError(StatusCode::UNAUTHORIZED, _))),
                    "{wrong:?}"
                );
            }
        }
    }

    #[test]
    fn only_addresses_localhost_and_allowed_names_may_be_the_host() {
        let allowed = ["admin.internal".to_owned()];
        for host in [
            None,
            Some("127.0.0.1:7070"),
            Some("10.0.0.5"),
            Some("[::1]:7070"),
            Some("localhost:7070"),
            Some("LOCALHOST"),
            Some("admin.internal:7070"),
        ] {
            assert!(host_allowed(host, &allowed), "{host:?}");
        }
        for host in [
            Some("evil.example:7070"),
            Some("evil.example"),
            Some("127.0.0.1.evil.example"),
            Some("[not-an-ip]:80"),
            Some("?"),
        ] {
            assert!(!host_allowed(host, &allowed), "{host:?}");
        }
    }

    #[test]
    fn short_or_spaced_tokens_are_refused_by_validation() {
        let config = |t: &str| AdminConfig {
            token: Some(t.into()),
            ..AdminConfig::default()
        };
        assert!(config("short").validate().is_err());
        assert!(config("sixteen chars xx").validate().is_err());
        assert!(config("0123456789abcdef").validate().is_ok());
        assert!(AdminConfig::default().validate().is_ok());
    }

    #[test]
    fn a_connection_cap_or_deadline_of_zero_or_out_of_bounds_is_refused_naming_its_key() {
        const ZERO: Duration = Duration::ZERO;
        type Change = fn(&mut AdminLimits);
        let cases: [(Change, &str); 7] = [
            (|l| l.max_connections = 0, "max_connections"),
            (|l| l.header_timeout = ZERO, "header_timeout"),
            (|l| l.body_timeout = ZERO, "body_timeout"),
            (|l| l.idle_timeout = ZERO, "idle_timeout"),
            (|l| l.send_timeout = ZERO, "send_timeout"),
            (|l| l.max_connections = 1 << 20, "max_connections"),
            (|l| l.idle_timeout = Duration::MAX, "idle_timeout"),
        ];
        for (change, key) in cases {
            let mut config = AdminConfig::default();
            change(&mut config.limits);
            let error = config.validate().map_err(|e| e.to_string());
            let named = format!("admin.limits.{key}: ");
            assert!(
                matches!(&error, Err(message) if message.starts_with(&named)),
                "{key}: {error:?}"
            );
        }
    }
}
