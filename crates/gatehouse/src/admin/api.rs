//! The admin API's endpoints (see the table in the module above): health and
//! readiness, the metrics and their event stream, the JSON API.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use gatehouse_protocol::{KickReason, ROUTE_ANNOUNCEMENT};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{error, info, warn};

use super::{Admin, AdminState, ApiError};
use crate::connection::{ConnId, TrafficCounts};
use crate::group::Shared;
use crate::hub::{Census, ConnectionInfo, HandleError};
use crate::metrics::{labelled_by, per_transport, CONTENT_TYPE};
use crate::scrape;
use crate::service::Service;
use crate::stats::{DISCONNECT_REASONS, KICK_REASONS, REFUSAL_REASONS};

/// How long a reading waits for the hub before reporting it as unavailable.
const HUB_WAIT: Duration = Duration::from_secs(1);

/// Connections (or rooms) per page by default, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// Longest announcement text, in bytes.
const MAX_ANNOUNCEMENT: usize = 4096;

/// How often the event stream sends the metrics.
const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// Event streams open at once (each open console holds one).
pub(super) const MAX_EVENT_STREAMS: usize = 32;

/// How long one reading of the metrics serves every stream and scrape.
const SAMPLE_REUSE: Duration = Duration::from_millis(500);

fn seconds_since_epoch(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A duration in seconds to the millisecond: a person reads `12.345`, not the
/// clock's nanoseconds.
fn millis_as_seconds(duration: Duration) -> f64 {
    duration.as_millis() as f64 / 1000.0
}

/// The metrics text, at most [`SAMPLE_REUSE`] old: the event streams of every open
/// console share one reading (each is a census of every connection in the hub).
async fn metrics_text<S: Service>(admin: &AdminState<S>) -> Result<String, ApiError> {
    let mut cached = admin.last_text.lock().await;
    if let Some((at, text)) = &*cached {
        if at.elapsed() < SAMPLE_REUSE {
            return Ok(text.clone());
        }
    }
    let text = scrape::text(&admin.shared).await.map_err(|_| {
        error!("a metrics collector failed; the scrape is refused rather than cut short");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a metrics collector failed (see the server's log)",
        )
    })?;
    *cached = Some((Instant::now(), text.clone()));
    Ok(text)
}

/// `call` against the hub, within [`HUB_WAIT`]: a 503 if the hub is gone or its
/// queue stays full that long.
async fn within<T>(call: impl Future<Output = Result<T, HandleError>>) -> Result<T, ApiError> {
    match tokio::time::timeout(HUB_WAIT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(HandleError::FrameTooLarge { len, max })) => Err(bad_request(format!(
            "{len} bytes is over max_frame_bytes ({max})"
        ))),
        Ok(Err(HandleError::Unavailable | HandleError::Busy)) | Err(_) => Err(hub_gone()),
    }
}

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

pub(super) async fn readyz<S: Service>(State(admin): State<Admin<S>>) -> Response {
    match admin.shared.not_ready() {
        None => Json(json!({ "ready": true })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

pub(super) async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

pub(super) async fn metrics<S: Service>(
    State(admin): State<Admin<S>>,
) -> Result<Response, ApiError> {
    let text = metrics_text(&admin).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// The metrics text once a second, as Server-Sent Events (`event: metrics`), until
/// the client goes or the server stops; at most [`MAX_EVENT_STREAMS`] at once.
pub(super) async fn events<S: Service>(
    State(admin): State<Admin<S>>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, ApiError> {
    let slot = admin.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_EVENT_STREAMS} event streams are open already"),
        )
    })?;
    let stop = admin.stop.clone();
    let mut interval = tokio::time::interval(EVENT_INTERVAL);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ticks = stream::unfold(
        (admin, interval, slot),
        |(admin, mut interval, slot)| async move {
            interval.tick().await;
            let event = match metrics_text(&admin).await {
                Ok(text) => Event::default().event("metrics").data(text),
                Err(ApiError(_, message)) => Event::default().event("error").data(message),
            };
            Some((Ok(event), (admin, interval, slot)))
        },
    );
    let until_stopped = futures_util::StreamExt::take_until(ticks, stop.cancelled_owned());
    Ok(Sse::new(until_stopped).keep_alive(KeepAlive::default()))
}

/// The counts above zero, by label.
fn by_label<const N: usize>(
    labels: &'static [&'static str; N],
    values: &[u64; N],
) -> BTreeMap<&'static str, u64> {
    labelled_by(labels, values)
        .filter(|&(_, v)| v > 0)
        .collect()
}

fn traffic_json(t: &TrafficCounts) -> Value {
    json!({
        "frames_in": t.frames_in,
        "bytes_in": t.bytes_in,
        "frames_out": t.frames_out,
        "bytes_out": t.bytes_out,
    })
}

pub(super) async fn stats<S: Service>(State(admin): State<Admin<S>>) -> Json<Value> {
    let shared = &admin.shared;
    let sample = scrape::sample(shared).await;
    let s = &sample.stats;
    // Unknown (null) when the hub could not answer in time.
    let census = sample.census.as_ref();
    let live = |read: fn(&Census) -> Value| census.map_or(Value::Null, read);
    let handlers: BTreeMap<&str, Value> = sample
        .handler_latency
        .iter()
        .filter(|(_, h)| h.count > 0)
        .map(|(route, h)| (*route, json!({ "count": h.count, "sum_seconds": h.sum })))
        .collect();
    let uptime = SystemTime::now()
        .duration_since(shared.started)
        .unwrap_or_default();
    let (rooms, saves) = parts_json(shared);
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        // Whether the mutating endpoints are on (an admin token is configured).
        "controls": admin.token.is_some(),
        "started": seconds_since_epoch(shared.started),
        "ready": sample.ready,
        "draining": sample.draining,
        "hub_up": sample.hub_up,
        "uptime_seconds": uptime.as_secs_f64(),
        "connections": {
            "open": live(|c| json!(c.open.iter().map(|(_, n)| n).sum::<u64>())),
            "open_by_transport": live(|c| json!(per_transport(|i| c.open[i]).collect::<BTreeMap<_, _>>())),
            "max": sample.max_connections,
            "players": live(|c| json!(c.players)),
            "accepted": s.accepted,
            "refused": by_label(&REFUSAL_REASONS, &s.refusals),
            "disconnects": by_label(&DISCONNECT_REASONS, &s.disconnects),
            "kicks": by_label(&KICK_REASONS, &s.kicks),
            "handshake_failures": s.handshake_failures,
            "handshake_timeouts": s.handshake_timeouts,
        },
        "traffic": per_transport(|i| traffic_json(&sample.traffic[i])).collect::<BTreeMap<_, _>>(),
        "outbound_queue": {
            "bytes": live(|c| json!(c.queued_bytes)),
            "max_bytes": live(|c| json!(c.queued_bytes_max)),
        },
        "memory_budget": { "bytes": sample.memory_budget.0, "used_bytes": sample.memory_budget.1 },
        "hub": {
            "restarts": s.hub_restarts,
            "queue_commands": sample.hub_queue.0,
            "queue_bytes": sample.hub_queue.1,
        },
        "sessions": {
            "disconnect_hooks": s.disconnect_hooks,
            "hook_timeouts": s.hook_timeouts,
            "checkpoints": s.checkpoints,
            "detached": s.sessions_detached,
            "resumed": s.sessions_resumed,
        },
        "handlers": handlers,
        "rooms": rooms,
        "saves": saves,
    }))
}

/// The numbers of the parts the server owns: its room types (by kind) and its save
/// writer (null without one).
fn parts_json<S: Service>(shared: &Shared<S>) -> (Value, Value) {
    let parts = shared.parts();
    let rooms: BTreeMap<&str, Value> = parts
        .rooms
        .iter()
        .flat_map(|rooms| rooms.readings())
        .map(|(kind, r)| {
            let reading = json!({
                "rooms": r.rooms,
                "members": r.members,
                "ticks": r.lateness.count,
                "late_ticks": r.late,
                "crashes": r.crashes,
            });
            (kind, reading)
        })
        .collect();
    let saves = parts.saves.as_ref().map_or(Value::Null, |read| {
        let w = read();
        json!({
            "queued": w.queued,
            "oldest_unsaved_seconds": w.oldest_unsaved.unwrap_or_default().as_secs_f64(),
            "saved": w.saved,
            "failed_attempts": w.failed_attempts,
            "conflicts": w.conflicts,
            "dead_letters": w.dead_letters,
        })
    });
    (json!(rooms), saves)
}

/// The console's charted numbers of the last minutes, oldest first.
pub(super) async fn history<S: Service>(State(admin): State<Admin<S>>) -> Json<Value> {
    Json(json!({
        "interval_seconds": super::history::EVERY.as_secs_f64(),
        "window": super::history::WINDOW,
        "points": admin.history.points(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoomsQuery {
    limit: Option<usize>,
}

/// The running rooms of every type, most members first (then by kind and name), at
/// most `limit`; `total` counts them all.
/// `GET /api/cluster`: this node and every live node with its counts, and what the
/// link did; `{"enabled": false}` for a server that is in no cluster.
pub(super) async fn cluster<S: Service>(
    State(admin): State<Admin<S>>,
) -> Result<Json<Value>, ApiError> {
    let handle = &admin.shared.handle;
    let Some(stats) = handle.cluster_stats() else {
        return Ok(Json(json!({ "enabled": false })));
    };
    let counts = within(handle.cluster_counts()).await?;
    let nodes: Vec<Value> = counts
        .nodes
        .iter()
        .map(|n| json!({ "node": n.node, "connections": n.connections, "players": n.players }))
        .collect();
    Ok(Json(json!({
        "enabled": true,
        "node": counts.nodes.first().map(|n| n.node.clone()),
        "connected": stats.connected,
        "nodes": nodes,
        "connections": counts.connections,
        "players": counts.players,
        "messages": {
            "sent": stats.sent,
            "received": stats.received,
            "dropped_outbox_full": stats.dropped_full,
            "dropped_disconnected": stats.dropped_disconnected,
            "malformed": stats.malformed,
        },
        "players_lost": stats.lost_players,
        "node_deaths": stats.nodes_died,
    })))
}

pub(super) async fn rooms<S: Service>(
    State(admin): State<Admin<S>>,
    query: Result<Query<RoomsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| bad_request(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let mut rooms = (admin.shared.parts().rooms.as_ref())
        .map(|r| r.list())
        .unwrap_or_default();
    let total = rooms.len();
    rooms.sort_by(|(kind_a, a), (kind_b, b)| {
        (b.members, kind_a, &a.name).cmp(&(a.members, kind_b, &b.name))
    });
    let rooms: Vec<Value> = rooms
        .iter()
        .take(limit)
        .map(|(kind, r)| {
            json!({
                "kind": kind,
                "name": r.name,
                "members": r.members,
                "ticks": r.ticks,
                "late_ticks": r.late_ticks,
                "max_lateness_seconds": r.max_lateness.as_secs_f64(),
                "restarts": r.restarts,
                "messages": r.messages,
            })
        })
        .collect();
    Ok(Json(json!({ "total": total, "rooms": rooms })))
}

/// A page's `limit`: [`DEFAULT_PAGE`] when not given, at most [`MAX_PAGE`].
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(bad_request(format!("limit must be 1 to {MAX_PAGE}")))
    }
}

fn bad_request(message: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message.to_string())
}

/// A body axum could not read (too large: 413), with its own status.
fn rejected(rejection: BytesRejection) -> ApiError {
    ApiError::new(rejection.status(), rejection.body_text())
}

fn hub_gone() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the hub is restarting or the server stopped; try again",
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    after: Option<u64>,
    limit: Option<usize>,
    /// Only the connection logged in as this player.
    player: Option<String>,
}

fn connection_json(c: &ConnectionInfo, now: SystemTime, rooms: Vec<String>) -> Value {
    json!({
        "id": c.id.0,
        "peer": c.peer.to_string(),
        "transport": c.transport.scheme(),
        "since": seconds_since_epoch(c.since),
        "connected_seconds": millis_as_seconds(now.duration_since(c.since).unwrap_or_default()),
        "frames_in": c.traffic.frames_in,
        "bytes_in": c.traffic.bytes_in,
        "frames_out": c.traffic.frames_out,
        "bytes_out": c.traffic.bytes_out,
        "queued_bytes": c.queued_bytes,
        "player": c.player,
        "rooms": rooms,
    })
}

/// The rooms (of the server's room types) a connection is in.
fn rooms_of<S: Service>(shared: &Shared<S>, id: ConnId) -> Vec<String> {
    shared
        .parts()
        .rooms
        .as_ref()
        .map(|rooms| rooms.rooms_of(id))
        .unwrap_or_default()
}

pub(super) async fn connections<S: Service>(
    State(admin): State<Admin<S>>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| bad_request(e.body_text()))?;
    let limit = page_limit(query.limit)?;
    let hub = admin.shared.live_hub().ok_or_else(hub_gone)?;
    let now = SystemTime::now();
    if let Some(player) = &query.player {
        if query.after.is_some() {
            return Err(bad_request("`player` names one connection: no `after`"));
        }
        // The player's connection, while the hub still lists it.
        let held = admin.shared.hub_slot.players.holder_conn(player);
        let found = match held {
            Some(id) => within(hub.connection(id)).await?,
            None => None,
        };
        let connections: Vec<Value> = found
            .iter()
            .map(|c| connection_json(c, now, rooms_of(&admin.shared, c.id)))
            .collect();
        return Ok(Json(json!({
            "total": connections.len(),
            "connections": connections,
            "next_after": null,
        })));
    }
    let page = within(hub.connections(query.after.map(ConnId), limit)).await?;
    let next_after = (page.connections.len() == limit)
        .then(|| page.connections.last().map(|c| c.id.0))
        .flatten();
    let connections: Vec<Value> = page
        .connections
        .iter()
        .map(|c| connection_json(c, now, rooms_of(&admin.shared, c.id)))
        .collect();
    Ok(Json(json!({
        "connections": connections,
        "total": page.total,
        "next_after": next_after,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KickBody {
    /// A kick reason's name (`kicked`, `shutdown`, …) or a game's own code (1000+).
    reason: Option<ReasonName>,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ReasonName {
    Name(String),
    Code(u16),
}

fn kick_reason(name: Option<ReasonName>) -> Result<KickReason, ApiError> {
    match name {
        None => Ok(KickReason::KICKED),
        Some(ReasonName::Code(code)) if code >= 1000 => Ok(KickReason(code)),
        Some(ReasonName::Code(code)) => KickReason(code)
            .name()
            .map(|_| KickReason(code))
            .ok_or_else(|| bad_request(format!("no kick reason has code {code}"))),
        Some(ReasonName::Name(name)) => KickReason::from_name(&name).ok_or_else(|| {
            bad_request(format!(
                "unknown kick reason `{name}` (one of {}, or a game's code from 1000)",
                KICK_REASONS[1..].join(", ")
            ))
        }),
    }
}

/// A JSON body, whatever its content type (curl's `-d` says form-urlencoded); an
/// empty body is `T::default()`.
fn json_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

pub(super) async fn kick<S: Service>(
    State(admin): State<Admin<S>>,
    id: Result<Path<u64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|e| bad_request(e.body_text()))?;
    let body: KickBody = json_body(&body.map_err(rejected)?)?;
    let reason = kick_reason(body.reason)?;
    let text = body.text.unwrap_or_else(|| "kicked by an operator".into());
    if text.len() > MAX_ANNOUNCEMENT {
        return Err(bad_request(format!("text over {MAX_ANNOUNCEMENT} bytes")));
    }
    let hub = admin.shared.live_hub().ok_or_else(hub_gone)?;
    let id = ConnId(id);
    if within(hub.connection(id)).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no live connection {id}"),
        ));
    }
    within(hub.kick(id, reason, text.as_str())).await?;
    info!(conn = %id, %reason, code = reason.0, text, "kicked through the admin API");
    let body =
        json!({ "kicked": id.0, "reason": reason.name().unwrap_or("game"), "code": reason.0 });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Announcement {
    text: String,
}

pub(super) async fn broadcast<S: Service>(
    State(admin): State<Admin<S>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let announcement: Announcement = json_body(&body.map_err(rejected)?)?;
    let text = announcement.text;
    if text.is_empty() || text.len() > MAX_ANNOUNCEMENT {
        return Err(bad_request(format!(
            "text must be 1 to {MAX_ANNOUNCEMENT} bytes"
        )));
    }
    let hub = admin.shared.live_hub().ok_or_else(hub_gone)?;
    let recipients = within(hub.count()).await?;
    // Through the handle: in a cluster the announcement reaches every node.
    let announce = admin
        .shared
        .handle
        .broadcast(ROUTE_ANNOUNCEMENT, Bytes::from(text.clone()));
    within(announce).await?;
    info!(
        recipients,
        text, "announcement broadcast through the admin API"
    );
    let body = json!({ "route": ROUTE_ANNOUNCEMENT, "recipients": recipients });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub(super) async fn drain<S: Service>(State(admin): State<Admin<S>>) -> Response {
    let shared: &Arc<Shared<S>> = &admin.shared;
    let already = shared.drain.is_cancelled();
    if !already {
        warn!("drain requested through the admin API: not ready now; after supervisor.drain_grace no new connections and everyone is kicked `shutdown`");
        shared.drain.cancel();
    }
    let supervisor = &shared.config.supervisor;
    let body = json!({
        "draining": true,
        "already": already,
        "drain_grace_seconds": supervisor.drain_grace.as_secs_f64(),
        "drain_timeout_seconds": supervisor.drain_timeout.as_secs_f64(),
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_reasons_are_taken_by_name_or_code_and_unknown_ones_are_refused() {
        assert_eq!(kick_reason(None).ok(), Some(KickReason::KICKED));
        let by_name = kick_reason(Some(ReasonName::Name("shutdown".into())));
        assert_eq!(by_name.ok(), Some(KickReason::SHUTDOWN));
        let by_code = kick_reason(Some(ReasonName::Code(6)));
        assert_eq!(by_code.ok(), Some(KickReason::DUPLICATE_LOGIN));
        assert_eq!(
            kick_reason(Some(ReasonName::Code(1234))).ok(),
            Some(KickReason(1234))
        );
        assert!(kick_reason(Some(ReasonName::Code(999))).is_err());
        assert!(kick_reason(Some(ReasonName::Name("game".into()))).is_err());
        assert!(kick_reason(Some(ReasonName::Name("nope".into()))).is_err());
    }
}
