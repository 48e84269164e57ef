//! What nodes send each other, as bytes: the messages on subjects, the values of the
//! cluster's keys, and how names that are not subject tokens become them.
//!
//! Every decoder takes bytes from another process: it checks lengths before it
//! slices, bounds what it keeps, and says what was wrong instead of panicking (the
//! property tests throw arbitrary bytes at each).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use gatehouse_protocol::{KickReason, HEADER_LEN};

use crate::connection::ConnId;

/// Subjects and buckets, all under one prefix.
pub(crate) const ALL_SUBJECT: &str = "gatehouse.all";
/// The bucket of node heartbeats: a key per node.
pub(crate) const NODES_BUCKET: &str = "gatehouse_nodes";
/// The bucket of player ownership: a key per player.
pub(crate) const PLAYERS_BUCKET: &str = "gatehouse_players";

/// The bucket of the room directory: a key per shared room, naming its host.
pub(crate) const ROOMS_BUCKET: &str = "gatehouse_rooms";

/// The subject one node listens on for what is meant for it alone.
pub(crate) fn node_subject(node: &str) -> String {
    format!("gatehouse.node.{node}")
}

/// The subject of a group's broadcasts (the name, hex-encoded: any name is a token).
pub(crate) fn group_subject(group: &str) -> String {
    format!("gatehouse.group.{}", hex(group.as_bytes()))
}

/// A player's key in [`PLAYERS_BUCKET`] (hex-encoded, as keys allow few characters).
pub(crate) fn player_key(player: &str) -> String {
    hex(player.as_bytes())
}

/// The player a key of [`PLAYERS_BUCKET`] names, if it is one.
pub(crate) fn player_of_key(key: &str) -> Option<String> {
    let bytes = unhex(key)?;
    String::from_utf8(bytes).ok()
}

/// A shared room's key in [`ROOMS_BUCKET`]: its type and name, hex-encoded (`_`
/// is no hex digit, so the two never run together).
pub(crate) fn room_key(kind: &str, room: &str) -> String {
    format!("{}_{}", hex(kind.as_bytes()), hex(room.as_bytes()))
}

/// The room type and room a key of [`ROOMS_BUCKET`] names, if it is one.
pub(crate) fn room_of_key(key: &str) -> Option<(String, String)> {
    let (kind, room) = key.split_once('_')?;
    let text = |hex: &str| String::from_utf8(unhex(hex)?).ok();
    Some((text(kind)?, text(room)?))
}

/// The longest kick text carried to another node (a client sees at most this).
pub(crate) const MAX_KICK_TEXT: usize = 1024;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClusterMessage {
    /// A push frame for every connection of the receiving node.
    Broadcast { frame: Bytes },
    /// A push frame for every member of `group` on the receiving node.
    Group { group: Arc<str>, frame: Bytes },
    /// A push frame for the connection logged in as `player` there.
    PlayerPush { player: Arc<str>, frame: Bytes },
    /// Kick the connection logged in as `player` there.
    PlayerKick {
        player: Arc<str>,
        reason: KickReason,
        text: String,
    },
    /// A request: kick the connection logged in as `player` there `duplicate_login`
    /// and answer once its disconnect hook has run ([`TAKEN_OVER`]) or did not in
    /// time ([`STILL_ENDING`]).
    TakeOver { player: Arc<str> },
    /// A request to the host of room `room` of type `kind`: join connection
    /// `member` of node `node` (from `address`) with `join` (the type's codec);
    /// answered with a `JoinAnswer` (`room::shared`).
    RoomJoin {
        kind: Arc<str>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        address: IpAddr,
        join: Bytes,
    },
    /// A message from a remote member to its room, on the host.
    RoomInput {
        kind: Arc<str>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
        message: Bytes,
    },
    /// A remote member left its room.
    RoomLeave {
        kind: Arc<str>,
        room: Arc<str>,
        node: Arc<str>,
        member: ConnId,
    },
    /// A push frame for each of these connections of the receiving node (a room's
    /// broadcast to its members there: one message per node).
    ConnFrames { conns: Vec<ConnId>, frame: Bytes },
    /// Kick this connection of the receiving node.
    ConnKick {
        conn: ConnId,
        reason: KickReason,
        text: String,
    },
    /// The states a shared room recorded for its members on the receiving node
    /// (`RoomContext::set_member_state`, in the type's join encoding), one message
    /// per node after a hook.
    MemberStates {
        kind: Arc<str>,
        room: Arc<str>,
        states: Vec<(ConnId, Bytes)>,
    },
}

/// The most connections one [`ClusterMessage::ConnFrames`] names.
pub(crate) const MAX_CONNS: usize = u16::MAX as usize;

/// The rest of a message as a kick or refusal text.
pub(crate) fn text(bytes: Bytes) -> Result<String, Malformed> {
    if bytes.len() > MAX_KICK_TEXT {
        return Err(Malformed::KickTextTooLong(bytes.len()));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| Malformed::NotUtf8)
}

/// A shared room's host, as [`ROOMS_BUCKET`] holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomHost {
    pub(crate) node: Arc<str>,
}

impl RoomHost {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!("v1 {}", self.node))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<RoomHost> {
        let text = std::str::from_utf8(bytes).ok()?;
        let node = text.strip_prefix("v1 ")?;
        super::config::valid_name(node).then(|| RoomHost {
            node: Arc::from(node),
        })
    }
}

/// The answer to [`ClusterMessage::TakeOver`]: the session there has ended (or
/// there was none).
pub(crate) const TAKEN_OVER: &[u8] = b"ended";
/// The answer to [`ClusterMessage::TakeOver`]: the session there did not end in time.
pub(crate) const STILL_ENDING: &[u8] = b"busy";

const BROADCAST: u8 = 1;
const GROUP: u8 = 2;
const PLAYER_PUSH: u8 = 3;
const PLAYER_KICK: u8 = 4;
const TAKE_OVER: u8 = 5;
const ROOM_JOIN: u8 = 6;
const ROOM_INPUT: u8 = 7;
const ROOM_LEAVE: u8 = 8;
const CONN_FRAMES: u8 = 9;
const CONN_KICK: u8 = 10;
const MEMBER_STATES: u8 = 11;
/// Not a message: several, for one subject, published as one (see [`batch`]).
const BATCH: u8 = 12;

/// The most bytes of messages one [`batch`] carries (NATS' default payload limit
/// is 1 MiB); a message larger than this goes alone.
pub(crate) const MAX_BATCH_BYTES: usize = 64 * 1024;

/// The payload that carries these encoded messages (each from
/// [`ClusterMessage::encode`]) on one subject: the message itself when it is one,
/// else a batch of them, each after its length. The other end takes them apart
/// with [`unbatch`], in order.
pub(crate) fn batch(messages: &[Bytes]) -> Bytes {
    if let [one] = messages {
        return one.clone();
    }
    let len = messages
        .iter()
        .map(|message| 4 + message.len())
        .sum::<usize>();
    let mut out = BytesMut::with_capacity(1 + len);
    out.put_u8(BATCH);
    for message in messages {
        out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        out.put_slice(message);
    }
    out.freeze()
}

/// The messages a payload carries (one, or a batch's), each for
/// [`ClusterMessage::decode`].
pub(crate) fn unbatch(mut payload: Bytes) -> Result<Vec<Bytes>, Malformed> {
    if payload.first() != Some(&BATCH) {
        return Ok(vec![payload]);
    }
    payload.advance(1);
    let mut messages = Vec::new();
    while !payload.is_empty() {
        if payload.remaining() < 4 {
            return Err(Malformed::Truncated);
        }
        let len = payload.get_u32() as usize;
        if payload.remaining() < len {
            return Err(Malformed::Truncated);
        }
        let message = payload.split_to(len);
        if message.first() == Some(&BATCH) {
            return Err(Malformed::NestedBatch);
        }
        messages.push(message);
    }
    if messages.is_empty() {
        return Err(Malformed::Empty);
    }
    Ok(messages)
}

/// Why a message from another node was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("empty message")]
    Empty,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("truncated message")]
    Truncated,
    #[error("a name that is not UTF-8")]
    NotUtf8,
    #[error("a frame whose length header says {said} but carries {carried}")]
    FrameLength { said: usize, carried: usize },
    #[error("a frame of {len} bytes, over max_frame_bytes ({max})")]
    FrameTooLarge { len: usize, max: usize },
    #[error("a kick text of {0} bytes")]
    KickTextTooLong(usize),
    #[error("{0} bytes after the end of the message")]
    Trailing(usize),
    #[error("a message for no connection")]
    NoConnections,
    #[error("a batch inside a batch")]
    NestedBatch,
}

impl ClusterMessage {
    /// The message as bytes; `None` if a name in it is longer than [`MAX_NAME`].
    pub(crate) fn encode(&self) -> Option<Bytes> {
        let names: &[&str] = match self {
            ClusterMessage::Broadcast { .. }
            | ClusterMessage::ConnFrames { .. }
            | ClusterMessage::ConnKick { .. } => &[],
            ClusterMessage::Group { group: name, .. }
            | ClusterMessage::PlayerPush { player: name, .. }
            | ClusterMessage::PlayerKick { player: name, .. }
            | ClusterMessage::TakeOver { player: name } => &[name],
            ClusterMessage::RoomJoin {
                kind, room, node, ..
            }
            | ClusterMessage::RoomInput {
                kind, room, node, ..
            }
            | ClusterMessage::RoomLeave {
                kind, room, node, ..
            } => &[kind, room, node],
            ClusterMessage::MemberStates { kind, room, .. } => &[kind, room],
        };
        if names.iter().any(|name| name.len() > MAX_NAME) {
            return None;
        }
        if let ClusterMessage::ConnFrames { conns, .. } = self {
            if conns.is_empty() || conns.len() > MAX_CONNS {
                return None;
            }
        }
        if let ClusterMessage::MemberStates { states, .. } = self {
            let too_long = states
                .iter()
                .any(|(_, state)| state.len() > u32::MAX as usize);
            if states.is_empty() || states.len() > MAX_CONNS || too_long {
                return None;
            }
        }
        let mut out = BytesMut::new();
        match self {
            ClusterMessage::Broadcast { frame } => {
                out.put_u8(BROADCAST);
                out.put_slice(frame);
            }
            ClusterMessage::Group { group, frame } => {
                out.put_u8(GROUP);
                put_name(&mut out, group);
                out.put_slice(frame);
            }
            ClusterMessage::PlayerPush { player, frame } => {
                out.put_u8(PLAYER_PUSH);
                put_name(&mut out, player);
                out.put_slice(frame);
            }
            ClusterMessage::PlayerKick {
                player,
                reason,
                text,
            } => {
                out.put_u8(PLAYER_KICK);
                put_name(&mut out, player);
                out.put_u16(reason.0);
                let text = truncate(text, MAX_KICK_TEXT);
                out.put_slice(text.as_bytes());
            }
            ClusterMessage::TakeOver { player } => {
                out.put_u8(TAKE_OVER);
                put_name(&mut out, player);
            }
            ClusterMessage::RoomJoin {
                kind,
                room,
                node,
                member,
                address,
                join,
            } => {
                out.put_u8(ROOM_JOIN);
                put_seat(&mut out, kind, room, node, *member);
                let address = match address {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    IpAddr::V6(v6) => *v6,
                };
                out.put_slice(&address.octets());
                out.put_slice(join);
            }
            ClusterMessage::RoomInput {
                kind,
                room,
                node,
                member,
                message,
            } => {
                out.put_u8(ROOM_INPUT);
                put_seat(&mut out, kind, room, node, *member);
                out.put_slice(message);
            }
            ClusterMessage::RoomLeave {
                kind,
                room,
                node,
                member,
            } => {
                out.put_u8(ROOM_LEAVE);
                put_seat(&mut out, kind, room, node, *member);
            }
            ClusterMessage::ConnFrames { conns, frame } => {
                out.put_u8(CONN_FRAMES);
                // `encode` checked the count against MAX_CONNS.
                out.put_u16(u16::try_from(conns.len()).unwrap_or(u16::MAX));
                for conn in conns {
                    out.put_u64(conn.0);
                }
                out.put_slice(frame);
            }
            ClusterMessage::ConnKick { conn, reason, text } => {
                out.put_u8(CONN_KICK);
                out.put_u64(conn.0);
                out.put_u16(reason.0);
                out.put_slice(truncate(text, MAX_KICK_TEXT).as_bytes());
            }
            ClusterMessage::MemberStates { kind, room, states } => {
                out.put_u8(MEMBER_STATES);
                put_name(&mut out, kind);
                put_name(&mut out, room);
                // `encode` checked the count and each length.
                out.put_u16(u16::try_from(states.len()).unwrap_or(u16::MAX));
                for (conn, state) in states {
                    out.put_u64(conn.0);
                    out.put_u32(u32::try_from(state.len()).unwrap_or(u32::MAX));
                    out.put_slice(state);
                }
            }
        }
        Some(out.freeze())
    }

    /// Decodes a message whose frames may be at most `max_frame` bytes of body.
    pub(crate) fn decode(mut bytes: Bytes, max_frame: usize) -> Result<Self, Malformed> {
        if bytes.is_empty() {
            return Err(Malformed::Empty);
        }
        let kind = bytes.get_u8();
        match kind {
            BROADCAST => Ok(ClusterMessage::Broadcast {
                frame: frame(bytes, max_frame)?,
            }),
            GROUP => {
                let group = take_name(&mut bytes)?;
                let frame = frame(bytes, max_frame)?;
                Ok(ClusterMessage::Group { group, frame })
            }
            PLAYER_PUSH => {
                let player = take_name(&mut bytes)?;
                let frame = frame(bytes, max_frame)?;
                Ok(ClusterMessage::PlayerPush { player, frame })
            }
            PLAYER_KICK => {
                let player = take_name(&mut bytes)?;
                if bytes.remaining() < 2 {
                    return Err(Malformed::Truncated);
                }
                let reason = KickReason(bytes.get_u16());
                let text = text(bytes)?;
                Ok(ClusterMessage::PlayerKick {
                    player,
                    reason,
                    text,
                })
            }
            TAKE_OVER => {
                let player = take_name(&mut bytes)?;
                if !bytes.is_empty() {
                    return Err(Malformed::Trailing(bytes.len()));
                }
                Ok(ClusterMessage::TakeOver { player })
            }
            ROOM_JOIN => {
                let (kind, room, node, member) = take_seat(&mut bytes)?;
                if bytes.remaining() < 16 {
                    return Err(Malformed::Truncated);
                }
                let mut octets = [0; 16];
                bytes.copy_to_slice(&mut octets);
                let address = Ipv6Addr::from(octets).to_canonical();
                Ok(ClusterMessage::RoomJoin {
                    kind,
                    room,
                    node,
                    member,
                    address,
                    join: bytes,
                })
            }
            ROOM_INPUT => {
                let (kind, room, node, member) = take_seat(&mut bytes)?;
                Ok(ClusterMessage::RoomInput {
                    kind,
                    room,
                    node,
                    member,
                    message: bytes,
                })
            }
            ROOM_LEAVE => {
                let (kind, room, node, member) = take_seat(&mut bytes)?;
                if !bytes.is_empty() {
                    return Err(Malformed::Trailing(bytes.len()));
                }
                Ok(ClusterMessage::RoomLeave {
                    kind,
                    room,
                    node,
                    member,
                })
            }
            CONN_FRAMES => {
                if bytes.remaining() < 2 {
                    return Err(Malformed::Truncated);
                }
                let count = usize::from(bytes.get_u16());
                if count == 0 {
                    return Err(Malformed::NoConnections);
                }
                if bytes.remaining() < count * 8 {
                    return Err(Malformed::Truncated);
                }
                let conns = (0..count).map(|_| ConnId(bytes.get_u64())).collect();
                let frame = frame(bytes, max_frame)?;
                Ok(ClusterMessage::ConnFrames { conns, frame })
            }
            CONN_KICK => {
                if bytes.remaining() < 10 {
                    return Err(Malformed::Truncated);
                }
                let conn = ConnId(bytes.get_u64());
                let reason = KickReason(bytes.get_u16());
                let text = text(bytes)?;
                Ok(ClusterMessage::ConnKick { conn, reason, text })
            }
            MEMBER_STATES => {
                let kind = take_name(&mut bytes)?;
                let room = take_name(&mut bytes)?;
                if bytes.remaining() < 2 {
                    return Err(Malformed::Truncated);
                }
                let count = usize::from(bytes.get_u16());
                if count == 0 {
                    return Err(Malformed::NoConnections);
                }
                let mut states = Vec::with_capacity(count);
                for _ in 0..count {
                    if bytes.remaining() < 12 {
                        return Err(Malformed::Truncated);
                    }
                    let conn = ConnId(bytes.get_u64());
                    let len = bytes.get_u32() as usize;
                    if len > max_frame {
                        return Err(Malformed::FrameTooLarge {
                            len,
                            max: max_frame,
                        });
                    }
                    if bytes.remaining() < len {
                        return Err(Malformed::Truncated);
                    }
                    states.push((conn, bytes.split_to(len)));
                }
                if !bytes.is_empty() {
                    return Err(Malformed::Trailing(bytes.len()));
                }
                Ok(ClusterMessage::MemberStates { kind, room, states })
            }
            other => Err(Malformed::UnknownKind(other)),
        }
    }
}

fn put_name(out: &mut BytesMut, name: &str) {
    // `encode` checked the length against MAX_NAME.
    out.put_u16(u16::try_from(name.len()).unwrap_or(u16::MAX));
    out.put_slice(name.as_bytes());
}

/// A room seat: the room's type and name, the member's node and connection.
fn put_seat(out: &mut BytesMut, kind: &str, room: &str, node: &str, member: ConnId) {
    put_name(out, kind);
    put_name(out, room);
    put_name(out, node);
    out.put_u64(member.0);
}

type Seat = (Arc<str>, Arc<str>, Arc<str>, ConnId);

fn take_seat(bytes: &mut Bytes) -> Result<Seat, Malformed> {
    let kind = take_name(bytes)?;
    let room = take_name(bytes)?;
    let node = take_name(bytes)?;
    if bytes.remaining() < 8 {
        return Err(Malformed::Truncated);
    }
    Ok((kind, room, node, ConnId(bytes.get_u64())))
}

/// The longest group or player name that crosses to another node.
pub(crate) const MAX_NAME: usize = u16::MAX as usize;

fn take_name(bytes: &mut Bytes) -> Result<Arc<str>, Malformed> {
    if bytes.remaining() < 2 {
        return Err(Malformed::Truncated);
    }
    let len = usize::from(bytes.get_u16());
    if bytes.remaining() < len {
        return Err(Malformed::Truncated);
    }
    let name = bytes.split_to(len);
    let name = std::str::from_utf8(&name).map_err(|_| Malformed::NotUtf8)?;
    Ok(Arc::from(name))
}

/// The rest of a message as one push frame: its length header must say its length.
fn frame(bytes: Bytes, max_frame: usize) -> Result<Bytes, Malformed> {
    if bytes.len() < HEADER_LEN {
        return Err(Malformed::Truncated);
    }
    let said = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let carried = bytes.len() - HEADER_LEN;
    if said != carried {
        return Err(Malformed::FrameLength { said, carried });
    }
    if carried > max_frame {
        return Err(Malformed::FrameTooLarge {
            len: carried,
            max: max_frame,
        });
    }
    Ok(bytes)
}

pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A node's heartbeat: what it holds, for [`crate::ServerHandle::cluster_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) connections: u64,
    pub(crate) players: u64,
}

impl Heartbeat {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!("v1 {} {}", self.connections, self.players))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Heartbeat> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let connections = parts.next()?.parse().ok()?;
        let players = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(Heartbeat {
            connections,
            players,
        })
    }
}

/// A player's owner: the node and the connection there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) node: Arc<str>,
    pub(crate) conn: ConnId,
}

impl Claim {
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(format!("v1 {} {}", self.node, self.conn.0))
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Claim> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let node = parts.next()?;
        let conn = ConnId(parts.next()?.parse().ok()?);
        (parts.next().is_none() && super::config::valid_name(node)).then(|| Claim {
            node: Arc::from(node),
            conn,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use gatehouse_protocol::Message;
    use proptest::prelude::*;

    use super::*;

    fn push(payload: &[u8]) -> Bytes {
        Message::Push {
            route: 7,
            payload: Bytes::copy_from_slice(payload),
        }
        .to_frame()
    }

    fn message() -> impl Strategy<Value = ClusterMessage> {
        let name = "\\PC{0,40}".prop_map(|s: String| Arc::<str>::from(s));
        let frame = proptest::collection::vec(any::<u8>(), 0..300).prop_map(|p| push(&p));
        prop_oneof![
            frame
                .clone()
                .prop_map(|frame| ClusterMessage::Broadcast { frame }),
            (name.clone(), frame.clone())
                .prop_map(|(group, frame)| ClusterMessage::Group { group, frame }),
            (name.clone(), frame)
                .prop_map(|(player, frame)| ClusterMessage::PlayerPush { player, frame }),
            name.clone()
                .prop_map(|player| ClusterMessage::TakeOver { player }),
            (name.clone(), any::<u16>(), "\\PC{0,100}").prop_map(|(player, reason, text)| {
                ClusterMessage::PlayerKick {
                    player,
                    reason: KickReason(reason),
                    text,
                }
            }),
            room_message(),
        ]
    }

    /// The messages of shared rooms.
    fn room_message() -> impl Strategy<Value = ClusterMessage> {
        let name = || "\\PC{0,20}".prop_map(|s: String| Arc::<str>::from(s));
        let seat = (name(), name(), name(), any::<u64>().prop_map(ConnId));
        let bytes = proptest::collection::vec(any::<u8>(), 0..100).prop_map(Bytes::from);
        let frame = proptest::collection::vec(any::<u8>(), 0..300).prop_map(|p| push(&p));
        let address = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(|o| Ipv6Addr::from(o).to_canonical()),
        ];
        prop_oneof![
            (seat.clone(), address, bytes.clone()).prop_map(
                |((kind, room, node, member), address, join)| ClusterMessage::RoomJoin {
                    kind,
                    room,
                    node,
                    member,
                    address,
                    join,
                }
            ),
            (seat.clone(), bytes).prop_map(|((kind, room, node, member), message)| {
                ClusterMessage::RoomInput {
                    kind,
                    room,
                    node,
                    member,
                    message,
                }
            }),
            seat.prop_map(|(kind, room, node, member)| ClusterMessage::RoomLeave {
                kind,
                room,
                node,
                member,
            }),
            (
                proptest::collection::vec(any::<u64>().prop_map(ConnId), 1..20),
                frame
            )
                .prop_map(|(conns, frame)| ClusterMessage::ConnFrames { conns, frame }),
            (any::<u64>(), any::<u16>(), "\\PC{0,100}").prop_map(|(conn, reason, text)| {
                ClusterMessage::ConnKick {
                    conn: ConnId(conn),
                    reason: KickReason(reason),
                    text,
                }
            }),
            (
                name(),
                name(),
                proptest::collection::vec(
                    (
                        any::<u64>().prop_map(ConnId),
                        proptest::collection::vec(any::<u8>(), 0..50).prop_map(Bytes::from),
                    ),
                    1..10,
                ),
            )
                .prop_map(|(kind, room, states)| ClusterMessage::MemberStates {
                    kind,
                    room,
                    states
                }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_decodes_to_itself(message in message()) {
            let decoded = ClusterMessage::decode(message.encode().unwrap(), 1024);
            prop_assert_eq!(decoded, Ok(message));
        }

        #[test]
        fn arbitrary_bytes_decode_to_a_message_or_an_error_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            max in 0usize..300,
        ) {
            if let Ok(message) = ClusterMessage::decode(Bytes::from(bytes), max) {
                // What decodes is well formed: it encodes to a message that decodes
                // to the same.
                let again = ClusterMessage::decode(message.encode().unwrap(), max);
                prop_assert_eq!(again, Ok(message));
            }
        }

        #[test]
        fn a_truncated_message_is_refused(message in message(), cut in 1usize..8) {
            let bytes = message.encode().unwrap();
            if let ClusterMessage::PlayerKick { .. }
            | ClusterMessage::ConnKick { .. }
            | ClusterMessage::RoomJoin { .. }
            | ClusterMessage::RoomInput { .. } = message
            {
                // A kick's text, a join's or an input's payload is the rest of the
                // message: cutting it shortens that, which is still a message.
                return Ok(());
            }
            let cut = bytes.slice(..bytes.len().saturating_sub(cut));
            prop_assert!(ClusterMessage::decode(cut, 1024).is_err());
        }

        #[test]
        fn a_batch_carries_its_messages_in_order(
            messages in proptest::collection::vec(message(), 1..8),
        ) {
            let encoded: Vec<Bytes> = messages.iter().map(|m| m.encode().unwrap()).collect();
            let parts = unbatch(batch(&encoded)).unwrap();
            let decoded: Vec<ClusterMessage> = parts
                .into_iter()
                .map(|part| ClusterMessage::decode(part, 1024).unwrap())
                .collect();
            prop_assert_eq!(decoded, messages);
        }

        #[test]
        fn arbitrary_bytes_unbatch_to_parts_or_an_error_never_a_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            batched in any::<bool>(),
        ) {
            let mut payload = bytes;
            if batched {
                payload.insert(0, BATCH);
            }
            if let Ok(parts) = unbatch(Bytes::from(payload)) {
                for part in parts {
                    prop_assert_ne!(part.first(), Some(&BATCH));
                    let _ = ClusterMessage::decode(part, 1024);
                }
            }
        }

        #[test]
        fn names_survive_the_hex_of_keys(name in "\\PC{0,40}", kind in "\\PC{0,10}") {
            prop_assert_eq!(player_of_key(&player_key(&name)), Some(name.clone()));
            prop_assert_eq!(room_of_key(&room_key(&kind, &name)), Some((kind, name)));
        }

        #[test]
        fn claims_and_heartbeats_decode_arbitrary_text_without_panic(text in "\\PC{0,40}") {
            let _ = Claim::decode(text.as_bytes());
            let _ = Heartbeat::decode(text.as_bytes());
            let _ = RoomHost::decode(text.as_bytes());
        }

    }

    #[test]
    fn a_batch_inside_a_batch_or_an_empty_one_is_refused() {
        let one = ClusterMessage::Broadcast { frame: push(b"x") }
            .encode()
            .unwrap();
        let inner = batch(&[one.clone(), one.clone()]);
        assert_eq!(unbatch(batch(&[one, inner])), Err(Malformed::NestedBatch));
        assert_eq!(unbatch(Bytes::from_static(&[BATCH])), Err(Malformed::Empty));
        assert_eq!(
            unbatch(Bytes::from_static(&[BATCH, 0, 0, 0, 9, 1])),
            Err(Malformed::Truncated)
        );
    }

    #[test]
    fn a_frame_over_the_limit_or_with_a_lying_header_is_refused() {
        let frame = push(&[1; 100]);
        let big = ClusterMessage::Broadcast {
            frame: frame.clone(),
        };
        assert!(matches!(
            ClusterMessage::decode(big.encode().unwrap(), 50),
            Err(Malformed::FrameTooLarge { .. })
        ));
        let mut lying = BytesMut::from(&big.encode().unwrap()[..]);
        lying[4] ^= 1; // the header's low byte
        assert!(matches!(
            ClusterMessage::decode(lying.freeze(), 1000),
            Err(Malformed::FrameLength { .. })
        ));
    }

    #[test]
    fn claims_and_heartbeats_decode_to_themselves() {
        let claim = Claim {
            node: Arc::from("node-a"),
            conn: ConnId(42),
        };
        assert_eq!(Claim::decode(&claim.encode()), Some(claim));
        assert_eq!(Claim::decode(b"v1 bad.node 1"), None);
        let beat = Heartbeat {
            connections: 5,
            players: 3,
        };
        assert_eq!(Heartbeat::decode(&beat.encode()), Some(beat));
        assert_eq!(Heartbeat::decode(b"v1 5"), None);
    }
}

#[cfg(test)]
mod names {
    use super::*;

    #[test]
    fn a_name_longer_than_a_message_carries_is_not_encoded() {
        let long = ClusterMessage::Group {
            group: Arc::from("g".repeat(MAX_NAME + 1)),
            frame: Bytes::from_static(&[0, 0, 0, 0]),
        };
        assert_eq!(long.encode(), None);
    }
}
