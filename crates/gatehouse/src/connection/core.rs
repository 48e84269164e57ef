//! [`ConnectionCore`]: one connection's protocol logic, without I/O (quinn-proto's
//! habit). It is given bytes (or whole frames) that arrived, the time, and what
//! handlers and the hub produce; it gives back the events handlers must see, the
//! bytes to send, the one deadline to arm, and the decision to close with its reason.
//! Every limit of a connection is enforced here, so every transport behaves the same:
//!
//! | limit | where |
//! |---|---|
//! | frame cap (`max_frame_bytes`), decided from the header alone | [`ConnectionCore::poll_event`], [`ConnectionCore::receive_frame`] |
//! | inbound bytes/s and frames/s (DoS) | `poll_event` → [`InboundRates`] |
//! | malformed envelopes, kinds a client may not send | `poll_event` |
//! | first-frame and idle deadlines, the send stall | [`ConnectionCore::poll_timeout`], [`ConnectionCore::handle_timeout`] |
//! | the checkpoint of a dirty session | [`ConnectionCore::mark_dirty`], [`ConnectionCore::take_checkpoint`] |
//! | outbound byte budget (slow consumer) | every enqueue, through the shared [`OutboundBudget`] |
//! | the server-wide memory budget | output: [`OutboundBudget`]; a large partial frame: `poll_event` pauses input |
//! | largest frame the server may send | [`ConnectionCore::respond`], [`ConnectionCore::push`] |
//!
//! The driver (`crate::driver`) owns the socket and the clock and feeds this; the
//! tests below drive it with made-up instants and byte strings.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse_protocol::envelope::kind;
use gatehouse_protocol::{
    FrameDecoder, FrameTooLarge, KickReason, Message, Status, Token, HEADER_LEN,
    RESERVED_ROUTES_START,
};
use tracing::{debug, warn};

use super::budget::OutboundBudget;
use super::outbound::{reusable, OutputQueue};
use super::reason::DisconnectReason;
use super::resume::{AckBeyondSent, Inbound, Replay, ReplayRefusal};
use crate::config::LimitsConfig;
use crate::limits::memory::above_free;
use crate::limits::{nanos_since, InboundRates, MemoryBudget, RateLimits};

/// What a handler must see: the requests and notifies that arrived, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Answer with [`ConnectionCore::respond`] using the same id.
    Request { id: u32, route: u16, payload: Bytes },
    /// No answer expected.
    Notify { route: u16, payload: Bytes },
}

/// Whether `push` may be sent under `max_frame_bytes`; a push too large for the
/// protocol is dropped, and logged here.
pub(crate) fn push_fits(push: &Message, max_frame_bytes: usize) -> bool {
    let fits = push.body_len() <= max_frame_bytes;
    if !fits {
        let route = match push {
            Message::Push { route, .. } => Some(*route),
            _ => None,
        };
        warn!(
            route,
            len = push.body_len(),
            "push over max_frame_bytes; dropped"
        );
    }
    fits
}

impl Event {
    /// The length of the frame body it came in.
    pub(crate) fn body_len(&self) -> usize {
        match self {
            Event::Request { payload, .. } => 7 + payload.len(),
            Event::Notify { payload, .. } => 3 + payload.len(),
        }
    }
}

/// What a "length" that is really the start of another protocol says, for the log of
/// a client that came to the wrong listener: a TLS ClientHello (`16 03 0x`) or an
/// HTTP request line (a WebSocket or a browser on a TCP listener).
fn wrong_protocol(announced: u32) -> &'static str {
    let [first, second, ..] = announced.to_be_bytes();
    match (first, second) {
        (0x16, 0x03) => "a TLS handshake: this listener is plain TCP",
        (b'G', b'E') | (b'P', b'O') | (b'H', b'E') => "an HTTP request: this listener is plain TCP",
        _ => "nothing known",
    }
}

/// What cutting the input gave.
enum Cut {
    Event(Event),
    /// No whole frame (or the connection is closing).
    Waiting,
    /// The next frame is over the room given.
    NoRoom,
}

/// The next frame in the input is larger than what may still be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoRoom;

/// The decision to close: why, and the text of the kick if the closer gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Close {
    pub(crate) reason: DisconnectReason,
    pub(crate) text: Option<String>,
}

impl Close {
    /// The text the kick carries: the closer's, or the reason's own description.
    pub(crate) fn kick_text(&self, limits: &LimitsConfig) -> String {
        match &self.text {
            Some(text) => text.clone(),
            None => self.reason.describe(limits),
        }
    }
}

impl From<DisconnectReason> for Close {
    fn from(reason: DisconnectReason) -> Close {
        Close { reason, text: None }
    }
}

/// Bytes of a kick's body before its text: kind and code.
const KICK_FIXED: usize = 3;

/// The longest start of `text` within `max_bytes` that ends at a character boundary.
pub(crate) fn cut_at_char(text: &str, max_bytes: usize) -> &str {
    let mut end = text.len().min(max_bytes);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Unknown routes logged at warn per connection; past this, at debug, so that no
/// client can flood the log.
const LOUD_UNKNOWN_ROUTES: u8 = 3;

/// What every connection core of a server shares: the configured limits, and what is
/// derived from them once rather than per connection.
#[derive(Debug)]
pub(crate) struct CoreConfig {
    pub(crate) limits: LimitsConfig,
    rates: RateLimits,
    /// `server.memory_budget_bytes`, charged by every connection.
    pub(crate) memory: Arc<MemoryBudget>,
    /// The service requires a login within `limits.login_timeout`.
    pub(crate) login_required: bool,
    /// The service's sessions can be resumed: a `resume` first frame is left for
    /// the driver ([`ConnectionCore::first_frame`]) instead of refused `unknown`.
    pub(crate) resumable: bool,
}

impl CoreConfig {
    pub(crate) fn new(
        limits: LimitsConfig,
        memory_budget_bytes: usize,
        login_required: bool,
    ) -> CoreConfig {
        CoreConfig {
            rates: RateLimits::new(&limits),
            limits,
            memory: Arc::new(MemoryBudget::new(memory_budget_bytes)),
            login_required,
            resumable: false,
        }
    }

    /// The service's sessions can be resumed.
    pub(crate) fn resumable(mut self, resumable: bool) -> CoreConfig {
        self.resumable = resumable;
        self
    }
}

/// How soon a connection whose input is paused for memory tries again.
const MEMORY_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

/// One connection's state machine. Every idle connection holds one, so it is kept
/// small: what all connections share lives in [`CoreConfig`].
#[derive(Debug)]
pub(crate) struct ConnectionCore {
    config: Arc<CoreConfig>,
    /// Received bytes not yet cut into frames.
    recv: BytesMut,
    rates: InboundRates,
    /// The last instant seen, and nanoseconds from `accepted` to it: a batch of
    /// frames shares one instant, so the subtraction is done once per batch.
    clock: (Instant, u64),
    out: OutputQueue,
    budget: Arc<OutboundBudget>,
    accepted: Instant,
    /// The last inbound frame; `None` until the first (the first-frame timeout
    /// applies until then, the idle timeout after).
    last_input: Option<Instant>,
    /// Since when queued output has made no progress.
    stalled_since: Option<Instant>,
    /// Output was consumed since the stall clock was last looked at.
    progressed: bool,
    /// When the session's game marked it dirty, plus the checkpoint interval.
    checkpoint_at: Option<Instant>,
    /// Bytes of buffered input charged to the server-wide memory budget (a partial
    /// frame, so at most 16 MiB: a `u32` keeps the core, and every idle task, 8
    /// bytes smaller).
    charged_input: u32,
    /// The memory budget refused the partial frame more room: no reading until it
    /// has some.
    input_paused: bool,
    /// The service said who this connection is; the login deadline is off.
    logged_in: bool,
    close: Option<Close>,
    unknown_routes: u8,
    /// A session offered a resume: what it sent that the client has not
    /// acknowledged, and what it owes acknowledgements for. Boxed: most connections
    /// have none, and each idle one holds this field.
    session: Option<Box<SessionLog>>,
}

/// A resumable session's bookkeeping (see `super::resume`). A quiet session
/// (everything acknowledged both ways, its replay's buffer given back, connected,
/// not ending) keeps only its counts: its [`Active`] part is made again when a
/// numbered frame goes either way, and let go when all is quiet again (at once
/// after a few frames, a second later after a burst: [`SETTLE_AFTER`]). So an idle
/// session costs one allocation of 32 bytes, not a replay.
#[derive(Debug)]
struct SessionLog {
    /// Numbered frames sent, while `active` is `None` (all acknowledged).
    sent: u64,
    /// Numbered frames received, while `active` is `None` (all acknowledged).
    received: u64,
    active: Option<Box<Active>>,
    /// `resume.buffer_bytes` (at most `MAX_RESUME_BUFFER`, 64 MiB).
    limit: u32,
    /// Tokens issued so far, less one: the current token is the server's for this.
    epoch: u32,
}

/// What a session keeps while something is unacknowledged or its connection is lost.
#[derive(Debug)]
struct Active {
    replay: Replay,
    inbound: Inbound,
    /// The connection was lost: the session waits for a resume.
    detached: Option<Detached>,
    /// Why the session ended without its client coming back, once it has.
    lost: Option<Lost>,
    /// The client is leaving on purpose: the session ends with this connection.
    leaving: bool,
    /// It was quiet at an acknowledgement: it is let go if it is quiet at this.
    settle_at: Option<Instant>,
}

/// How long a session that went quiet waits before it lets its active part go: a
/// busy one goes quiet at every acknowledgement, and would make it again at once.
const SETTLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A session whose active part carried at most this many numbered frames (both ways)
/// lets it go as soon as it is quiet: a login's answer, a lone request. A burst
/// waits [`SETTLE_AFTER`], so that a thousand logins do not hold a thousand replays
/// for a second, nor a busy session make its replay again at every ack.
const SETTLE_AT_ONCE_FRAMES: u64 = 2;

impl Active {
    /// Whether nothing is owed either way and nothing ends it: then a
    /// [`SessionLog`] keeps only its counts.
    fn is_quiet(&self) -> bool {
        self.lost.is_none()
            && !self.leaving
            && self.detached.is_none()
            && self.replay.is_quiet()
            && self.inbound.is_quiet()
    }

    /// The active part of a quiet session that sent `sent` and received `received`
    /// numbered frames; `queued` bytes of output wait already, none of them a
    /// numbered frame not acknowledged.
    #[cold]
    fn continuing(
        sent: u64,
        received: u64,
        limit: u32,
        memory: &Arc<MemoryBudget>,
        queued: usize,
    ) -> Box<Active> {
        Box::new(Active {
            replay: Replay::continuing(sent, limit as usize, memory.clone(), queued),
            inbound: Inbound::continuing(received),
            detached: None,
            lost: None,
            leaving: false,
            settle_at: None,
        })
    }
}

impl SessionLog {
    /// Its active part, made again if the session was quiet (`queued` bytes of
    /// output wait already).
    fn activate(&mut self, memory: &Arc<MemoryBudget>, queued: usize) -> &mut Active {
        let (sent, received, limit) = (self.sent, self.received, self.limit);
        self.active
            .get_or_insert_with(|| Active::continuing(sent, received, limit, memory, queued))
    }

    /// A numbered frame was queued after `queued` bytes of output. (On the path of
    /// every answer: the session's counts are read only if it was quiet.)
    #[inline(always)]
    fn numbered_queued(&mut self, memory: &Arc<MemoryBudget>, queued: usize) {
        if let Some(active) = self.active.as_deref_mut() {
            active.replay.numbered_queued();
        } else {
            self.activate(memory, queued).replay.numbered_queued();
        }
    }

    /// One of the client's numbered frames arrived at `now` after `queued` bytes of
    /// output; true if an acknowledgement is due at once.
    #[inline(always)]
    fn received_one(&mut self, memory: &Arc<MemoryBudget>, queued: usize, now: Instant) -> bool {
        if let Some(active) = self.active.as_deref_mut() {
            active.inbound.on_frame(now)
        } else {
            self.activate(memory, queued).inbound.on_frame(now)
        }
    }

    /// After an acknowledgement either way, at `now`: if all is quiet, the active
    /// part is let go now if it carried only a few frames, else [`SETTLE_AFTER`]
    /// from now if it is quiet then too.
    fn quiet_at(&mut self, now: Instant) {
        let Some(active) = &mut self.active else {
            return;
        };
        if active.settle_at.is_some() || !active.is_quiet() {
            return;
        }
        // While active, the counts here are those it was made with.
        let carried =
            (active.replay.sent() - self.sent) + (active.inbound.received() - self.received);
        if carried <= SETTLE_AT_ONCE_FRAMES {
            self.let_go();
        } else {
            active.settle_at = Some(now + SETTLE_AFTER);
        }
    }

    /// At `now`: lets the active part go if it was due to and is quiet (see
    /// [`SessionLog`]); if it is busy again, it waits for the next quiet moment.
    fn settle(&mut self, now: Instant) {
        let Some(active) = &mut self.active else {
            return;
        };
        if active.settle_at.is_none_or(|at| now < at) {
            return;
        }
        active.settle_at = None;
        if active.is_quiet() {
            self.let_go();
        }
    }

    /// Keeps the active part's counts and lets it go (it is quiet).
    fn let_go(&mut self) {
        if let Some(active) = self.active.take() {
            (self.sent, self.received) = (active.replay.sent(), active.inbound.received());
        }
    }

    fn replay(&mut self) -> Option<&mut Replay> {
        self.active.as_mut().map(|a| &mut a.replay)
    }

    fn detached(&self) -> Option<&Detached> {
        self.active.as_ref().and_then(|a| a.detached.as_ref())
    }

    fn lost(&self) -> Option<Lost> {
        self.active.as_ref().and_then(|a| a.lost)
    }

    fn leaving(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.leaving)
    }

    /// When an acknowledgement is owed, or the active part may be let go.
    fn due(&self) -> Option<Instant> {
        let active = self.active.as_ref()?;
        match (active.inbound.deadline(), active.settle_at) {
            (Some(ack), Some(settle)) => Some(ack.min(settle)),
            (ack, settle) => ack.or(settle),
        }
    }

    #[cfg(any(test, feature = "fuzzing"))]
    fn sent(&self) -> u64 {
        self.active.as_ref().map_or(self.sent, |a| a.replay.sent())
    }
}

/// A session whose connection was lost.
#[derive(Debug)]
struct Detached {
    /// The end of the resume window.
    until: Instant,
    /// How the connection was lost: the session's close if it is not resumed.
    close: Close,
    /// Numbered frames sent before it was lost: the most the client can have.
    sent: u64,
}

/// Why a session whose connection was lost ended without being resumed; a resume
/// that comes later is refused with this (`resume_failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The window passed.
    Expired,
    /// The replay let go of frames sent after the connection was lost.
    Gap,
}

/// What a resumable service's connection sent first, as far as it has arrived
/// (see [`ConnectionCore::first_frame`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FirstFrame {
    /// Not enough of it to tell.
    Pending,
    /// A whole `resume`: take it with [`ConnectionCore::take_resume`].
    Resume,
    /// Anything else (or nothing more will come: the connection is closing).
    Other,
}

/// A `resume` a new connection opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResumeRequest {
    pub(crate) id: u64,
    pub(crate) received: u64,
    pub(crate) token: Token,
}

impl ConnectionCore {
    /// A connection accepted at `now`.
    pub(crate) fn new(config: Arc<CoreConfig>, budget: Arc<OutboundBudget>, now: Instant) -> Self {
        ConnectionCore {
            config,
            rates: InboundRates::default(),
            clock: (now, 0),
            recv: BytesMut::new(),
            out: OutputQueue::default(),
            budget,
            accepted: now,
            last_input: None,
            stalled_since: None,
            progressed: false,
            checkpoint_at: None,
            charged_input: 0,
            input_paused: false,
            logged_in: false,
            close: None,
            unknown_routes: 0,
            session: None,
        }
    }

    // ---- input ----------------------------------------------------------------

    /// The buffer a stream transport appends received bytes to. Empty (no
    /// allocation) while nothing is in flight; the transport gives it room.
    pub(crate) fn recv_buffer(&mut self) -> &mut BytesMut {
        &mut self.recv
    }

    /// A whole frame body from a message transport (one WebSocket message). It is
    /// queued framed, behind what came before, so that both kinds of transport share
    /// one input path. The transport caps the message size before buffering it; a
    /// body over the maximum is queued as its header alone, so that it closes the
    /// connection as on a stream: after the frames received before it are handled.
    pub(crate) fn receive_frame(&mut self, body: &[u8]) {
        let announced = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let body = if body.len() > self.config.limits.max_frame_bytes {
            &[][..]
        } else {
            body
        };
        self.recv.reserve(HEADER_LEN + body.len());
        self.recv.put_u32(announced);
        self.recv.put_slice(body);
    }

    /// For a resumable service, before its connect hook: whether the connection
    /// opened with a `resume` (which takes a session over instead of starting one).
    pub(crate) fn first_frame(&self) -> FirstFrame {
        if self.last_input.is_some() || self.close.is_some() {
            return FirstFrame::Other;
        }
        let Some(header) = self.recv.first_chunk::<HEADER_LEN>() else {
            return FirstFrame::Pending;
        };
        let len = u32::from_be_bytes(*header) as usize;
        // Empty, or over the maximum (refused from the header alone): not a resume.
        if len == 0 || len > self.config.limits.max_frame_bytes {
            return FirstFrame::Other;
        }
        match self.recv.get(HEADER_LEN) {
            None => FirstFrame::Pending,
            Some(&kind::RESUME) if self.recv.len() < HEADER_LEN + len => FirstFrame::Pending,
            Some(&kind::RESUME) => FirstFrame::Resume,
            Some(_) => FirstFrame::Other,
        }
    }

    /// Takes the `resume` [`ConnectionCore::first_frame`] found; `None` (with the
    /// close decided) if it is malformed. What arrived behind it stays in the input
    /// ([`ConnectionCore::take_input`]).
    #[cold]
    pub(crate) fn take_resume(&mut self, now: Instant) -> Option<ResumeRequest> {
        let frame =
            match FrameDecoder::new(self.config.limits.max_frame_bytes).decode(&mut self.recv) {
                Ok(Some(frame)) => frame,
                Ok(None) | Err(_) => return None, // first_frame said it is whole and fits
            };
        self.last_input = Some(now);
        self.budget.meter.received(frame.len() + HEADER_LEN);
        match Message::decode(frame) {
            Ok(Message::Resume {
                id,
                received,
                token,
            }) => Some(ResumeRequest {
                id,
                received,
                token,
            }),
            other => {
                debug!(?other, "a malformed resume");
                self.close(DisconnectReason::ProtocolError, None);
                None
            }
        }
    }

    /// What arrived and was not cut into frames yet, taken (for the session a
    /// resume moves this connection's transport to).
    pub(crate) fn take_input(&mut self) -> BytesMut {
        let input = std::mem::take(&mut self.recv);
        self.charge_input(); // gives the charge back
        input
    }

    /// The next request or notify that arrived, handling on the way everything that
    /// needs no handler (pings, empty frames, pongs) and every violation (which
    /// closes the connection and stops the events). `now` is when the bytes were
    /// read: one clock reading serves a whole batch.
    pub(crate) fn poll_event(&mut self, now: Instant) -> Option<Event> {
        match self.cut(now, None) {
            Cut::Event(event) => Some(event),
            Cut::Waiting | Cut::NoRoom => None,
        }
    }

    /// As [`ConnectionCore::poll_event`], for a connection whose handler waits and
    /// which holds what arrives meanwhile: a frame whose body is over `room` bytes is
    /// left in the input, uncut (where it is charged as input is), and `NoRoom` says
    /// so.
    pub(crate) fn poll_event_within(
        &mut self,
        now: Instant,
        room: usize,
    ) -> Result<Option<Event>, NoRoom> {
        match self.cut(now, Some(room)) {
            Cut::Event(event) => Ok(Some(event)),
            Cut::Waiting => Ok(None),
            Cut::NoRoom => Err(NoRoom),
        }
    }

    /// The loop of [`ConnectionCore::poll_event`] and
    /// [`ConnectionCore::poll_event_within`]; inlined into each, so that the first
    /// (the hot path) has no room to check.
    #[inline(always)]
    fn cut(&mut self, now: Instant, room: Option<usize>) -> Cut {
        let max = self.config.limits.max_frame_bytes;
        let decoder = FrameDecoder::new(max);
        while self.close.is_none() {
            if let (Some(room), Some(header)) = (room, self.recv.first_chunk::<HEADER_LEN>()) {
                let len = u32::from_be_bytes(*header) as usize;
                if len > room && len <= max {
                    self.charge_input();
                    return Cut::NoRoom;
                }
            }
            let frame = match decoder.decode(&mut self.recv) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    self.charge_input();
                    return Cut::Waiting;
                }
                Err(too_large) => {
                    self.frame_too_large(too_large);
                    return Cut::Waiting;
                }
            };
            if let Some(event) = self.on_frame(frame, now) {
                return Cut::Event(event);
            }
        }
        Cut::Waiting
    }

    /// The driver does not read, holding what it has behind a handler that waits:
    /// the peer is not idle at `now` (we are), so the idle deadline runs from here.
    pub(crate) fn input_held(&mut self, now: Instant) {
        if self.last_input.is_some() {
            self.last_input = Some(now);
        }
    }

    /// The connection's outbound budget, for what reserves in it beside the core.
    pub(crate) fn budget(&self) -> &Arc<OutboundBudget> {
        &self.budget
    }

    /// Charges what is buffered above the free share to the memory budget (or gives
    /// back what was, once frames were cut from it). If the budget has no room, input
    /// pauses: the partial frame waits, unread, until memory is given back.
    fn charge_input(&mut self) {
        let wanted = u32::try_from(above_free(self.recv.len())).unwrap_or(u32::MAX);
        let charged = self.charged_input;
        let memory = &self.config.memory;
        if wanted <= charged {
            memory.refund((charged - wanted) as usize);
        } else if !memory.try_charge((wanted - charged) as usize) {
            self.input_paused = true;
            return;
        }
        self.charged_input = wanted;
        self.input_paused = false;
    }

    /// Whether the transport must not read: this connection's large partial frame
    /// waits for room in the server-wide memory budget.
    pub(crate) fn input_paused(&self) -> bool {
        self.input_paused
    }

    fn frame_too_large(&mut self, error: FrameTooLarge) {
        // At debug: the close line (budgeted against floods) says why at warn.
        debug!(
            announced = error.announced,
            max = error.max,
            looks_like = wrong_protocol(error.announced),
            "frame header over the maximum"
        );
        self.close(DisconnectReason::FrameTooLarge, None);
    }

    /// Accounts, decodes and routes one frame. Inlined into the input loop: it runs
    /// once per frame, and a call costs a tenth of a pipelined request.
    #[inline(always)]
    fn on_frame(&mut self, frame: Bytes, now: Instant) -> Option<Event> {
        let first = self.last_input.is_none();
        self.last_input = Some(now);
        if now != self.clock.0 {
            self.clock = (now, nanos_since(self.accepted, now));
        }
        let wire = frame.len() + HEADER_LEN;
        self.budget.meter.received(wire);
        if let Err(violation) = self.rates.on_frame(&self.config.rates, wire, self.clock.1) {
            debug!(?violation, "inbound rate exceeded");
            self.close(DisconnectReason::Dos, None);
            return None;
        }
        let message = match Message::decode(frame) {
            Ok(message) => message,
            Err(error) => {
                debug!(%error, "malformed envelope");
                self.close(DisconnectReason::ProtocolError, None);
                return None;
            }
        };
        if matches!(message, Message::Request { .. } | Message::Notify { .. }) {
            self.count_inbound(now);
        }
        match message {
            Message::Empty | Message::Pong(_) => None,
            Message::Ping(nonce) => {
                self.enqueue(&Message::Pong(nonce));
                None
            }
            Message::Request { id, route, payload } => Some(Event::Request { id, route, payload }),
            Message::Notify { route, payload } if route >= RESERVED_ROUTES_START => {
                self.unknown_route("notify", route, payload.len());
                None
            }
            Message::Notify { route, payload } => Some(Event::Notify { route, payload }),
            Message::Ack { count } => {
                self.on_ack(count, now);
                None
            }
            Message::Resume { .. } if first => {
                let text = "unknown: no such session on this server".to_owned();
                self.close(
                    DisconnectReason::Kicked(KickReason::RESUME_FAILED),
                    Some(text),
                );
                None
            }
            other @ (Message::Response { .. }
            | Message::Push { .. }
            | Message::Kick { .. }
            | Message::Session { .. }
            | Message::Resume { .. }
            | Message::Resumed { .. }) => {
                debug!(
                    kind = other.kind_name(),
                    "a client may not send this kind (here)"
                );
                self.close(DisconnectReason::ProtocolError, None);
                None
            }
        }
    }

    /// The seed's "Unknown msg": a warning naming what arrived; after a few from one
    /// connection, at debug level.
    pub(crate) fn unknown_route(&mut self, kind: &'static str, route: u16, len: usize) {
        if self.unknown_routes < LOUD_UNKNOWN_ROUTES {
            self.unknown_routes += 1;
            warn!(kind, route, len, "unknown route");
            if self.unknown_routes == LOUD_UNKNOWN_ROUTES {
                warn!("further unknown routes from this connection are logged at debug level");
            }
        } else {
            debug!(kind, route, len, "unknown route");
        }
    }

    // ---- output ---------------------------------------------------------------

    /// Answers request `id`. A response too large for the protocol is replaced by an
    /// `internal_error` response: the server never sends a frame over the maximum.
    pub(crate) fn respond(&mut self, id: u32, mut status: Status, mut payload: &[u8]) {
        const FIXED: usize = 7; // kind, id, status
        if FIXED + payload.len() > self.config.limits.max_frame_bytes {
            warn!(
                id,
                len = FIXED + payload.len(),
                "response over max_frame_bytes; sent as an error"
            );
            // Fits: validation keeps max_frame_bytes at least MAX_FRAME_FLOOR.
            (status, payload) = (Status::INTERNAL_ERROR, b"response too large");
        }
        // Written field by field: the one frame every request produces.
        let len = HEADER_LEN + FIXED + payload.len();
        if !self.budget.reserve(len) {
            self.close(DisconnectReason::SlowConsumer, None);
            return;
        }
        let tail = self.out.tail_for(len);
        tail.put_u32(u32::try_from(FIXED + payload.len()).unwrap_or(u32::MAX));
        tail.put_u8(kind::RESPONSE);
        tail.put_u32(id);
        tail.put_u16(status.0);
        tail.put_slice(payload);
        if let Some(session) = &mut self.session {
            session.numbered_queued(&self.config.memory, self.out.len());
        }
        self.out.commit(len);
        self.budget.meter.queued();
    }

    /// Pushes to this connection. False if it was not queued: too large for the
    /// protocol (dropped, logged), or over the outbound budget (then the connection
    /// closes as a slow consumer).
    pub(crate) fn push(&mut self, route: u16, payload: Bytes) -> bool {
        let push = Message::Push { route, payload };
        push_fits(&push, self.config.limits.max_frame_bytes) && self.enqueue(&push)
    }

    /// The largest frame body this connection may send or receive.
    pub(crate) fn max_frame_bytes(&self) -> usize {
        self.config.limits.max_frame_bytes
    }

    /// Encodes `message` into the output within the budget; over it, the connection
    /// is marked a slow consumer.
    fn enqueue(&mut self, message: &Message) -> bool {
        if !self.budget.reserve(HEADER_LEN + message.body_len()) {
            self.close(DisconnectReason::SlowConsumer, None);
            return false;
        }
        self.queue_reserved(message);
        true
    }

    /// Encodes `message`, whose bytes the caller has already reserved from the budget
    /// (a push staged by a handler that waits).
    pub(crate) fn queue_reserved(&mut self, message: &Message) {
        let len = HEADER_LEN + message.body_len();
        let tail = self.out.tail_for(len);
        message.encode_frame_into(tail);
        if let (Some(session), Message::Push { .. }) = (&mut self.session, message) {
            session.numbered_queued(&self.config.memory, self.out.len());
        }
        self.out.commit(len);
        self.budget.meter.queued();
    }

    /// Queues a frame encoded elsewhere (a broadcast), whose bytes the deliverer has
    /// already reserved from the budget.
    pub(crate) fn queue_reserved_frame(&mut self, frame: Bytes) {
        if let Some(session) = &mut self.session {
            session.numbered_queued(&self.config.memory, self.out.len());
        }
        self.out.push_shared(frame);
        self.budget.meter.queued();
    }

    /// Whether output is waiting for the transport.
    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Fills `dst` with the queued output, in order, for one vectored write.
    pub(crate) fn output_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out.slices(dst)
    }

    /// The transport took the first `n` bytes of [`ConnectionCore::output_slices`].
    /// A session keeps them in its replay until they are acknowledged.
    pub(crate) fn consume_output(&mut self, n: usize) {
        if n > 0 {
            if let Some(replay) = self.session.as_mut().and_then(|s| s.replay()) {
                if !replay.written_all(self.out.front(n)) {
                    self.replay_let_go();
                }
            }
            self.out.consume(n);
            self.budget.release(n);
            self.budget.meter.sent(n);
            self.progressed = true;
        }
    }

    /// The next whole frame's body (no length header), for a transport that sends
    /// one message per frame; its bytes count as sent.
    pub(crate) fn take_output_frame(&mut self) -> Option<Bytes> {
        let (body, taken) = self.out.take_frame()?;
        if let Some(replay) = self.session.as_mut().and_then(|s| s.replay()) {
            let header = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
            if !replay.written_all([&header[..], &body[..]]) {
                self.replay_let_go();
            }
        }
        self.budget.release(taken);
        self.budget.meter.sent(taken);
        self.progressed = true;
        Some(body)
    }

    // ---- time -----------------------------------------------------------------

    /// The one instant at which [`ConnectionCore::handle_timeout`] must be called: the
    /// first-frame or idle deadline, the send stall's or a checkpoint, whichever is
    /// first. Call it after each round of I/O; it also starts and stops the stall
    /// clock, which runs while output is queued here or `transport_backlog` (the
    /// transport holds output it took and could not send: TLS records, WebSocket
    /// frames). A parameter, not a field: every idle connection would carry it.
    pub(crate) fn poll_timeout(&mut self, now: Instant, transport_backlog: bool) -> Instant {
        if let Some(detached) = self.session.as_ref().and_then(|s| s.detached()) {
            // No connection: no input, output, stall or acks; the window and the
            // checkpoint.
            return self
                .checkpoint_at
                .map_or(detached.until, |at| at.min(detached.until));
        }
        self.update_stall(now, transport_backlog);
        let mut due = self.input_deadline();
        if let Some(since) = self.stalled_since {
            due = due.min(since + self.config.limits.send_timeout);
        }
        if let Some(at) = self.checkpoint_at {
            due = due.min(at);
        }
        if let Some(at) = self.login_deadline() {
            due = due.min(at);
        }
        if self.input_paused {
            due = due.min(now + MEMORY_RETRY);
        }
        if let Some(at) = self.session.as_ref().and_then(|s| s.due()) {
            due = due.min(at);
        }
        due
    }

    /// The session changed: a checkpoint is due within the checkpoint interval of
    /// the first change since the last one (later changes ride along with it).
    pub(crate) fn mark_dirty(&mut self) {
        if self.checkpoint_at.is_none() {
            self.checkpoint_at = Some(self.clock.0 + self.config.limits.checkpoint_interval);
        }
    }

    /// Whether the checkpoint is due at `now`; if so, it is taken (the session is
    /// clean until it is marked dirty again).
    pub(crate) fn take_checkpoint(&mut self, now: Instant) -> bool {
        let due = self.checkpoint_at.is_some_and(|at| now >= at);
        if due {
            self.checkpoint_at = None;
        }
        due
    }

    /// Starts, restarts or stops the stall clock: output that is all sent, or that
    /// moved since the last look, is not stalled.
    fn update_stall(&mut self, now: Instant, transport_backlog: bool) {
        if self.out.is_empty() && !transport_backlog {
            self.stalled_since = None;
        } else if self.progressed || self.stalled_since.is_none() {
            self.stalled_since = Some(now);
        }
        self.progressed = false;
    }

    /// The connection is logged in: no login deadline from now on.
    pub(crate) fn set_logged_in(&mut self) {
        self.logged_in = true;
    }

    /// For a service that requires a login, when this connection must have logged in.
    fn login_deadline(&self) -> Option<Instant> {
        (self.config.login_required && !self.logged_in)
            .then(|| self.accepted + self.config.limits.login_timeout)
    }

    fn input_deadline(&self) -> Instant {
        match self.last_input {
            None => self.accepted + self.config.limits.first_frame_timeout,
            Some(at) => at + self.config.limits.idle_timeout,
        }
    }

    /// The timer fired at `now`: closes the connection if a deadline has passed
    /// (`transport_backlog` as for [`ConnectionCore::poll_timeout`]).
    pub(crate) fn handle_timeout(&mut self, now: Instant, transport_backlog: bool) {
        if let Some(detached) = self.session.as_ref().and_then(|s| s.detached()) {
            if now >= detached.until {
                self.end_session(Lost::Expired, None);
            }
            return;
        }
        if self.input_paused {
            self.charge_input();
        }
        if let Some(session) = &self.session {
            let owed = session.active.as_ref().and_then(|a| a.inbound.deadline());
            if owed.is_some_and(|at| now >= at) {
                self.send_ack(now);
            }
        }
        if let Some(session) = &mut self.session {
            session.settle(now);
        }
        // Output may have drained since the deadline was computed.
        self.update_stall(now, transport_backlog);
        if now >= self.input_deadline() {
            let reason = match self.last_input {
                None => DisconnectReason::LoginTimeout,
                Some(_) => DisconnectReason::Idle,
            };
            self.close(reason, None);
        } else if self.login_deadline().is_some_and(|at| now >= at) {
            let text = format!(
                "not logged in within {:?}",
                self.config.limits.login_timeout
            );
            self.close(DisconnectReason::LoginTimeout, Some(text));
        } else if self
            .stalled_since
            .is_some_and(|since| now >= since + self.config.limits.send_timeout)
        {
            self.close(DisconnectReason::SendTimeout, None);
        }
    }

    // ---- session resume -------------------------------------------------------

    /// Offers this connection's session a resume: queues the `session` frame, then
    /// numbers and keeps (within `buffer_bytes`) every response and push after it,
    /// and counts the client's requests and notifies from here, `held` of which
    /// arrived already (behind the request being handled, which offers it). See
    /// PROTOCOL.md, "Where numbering starts".
    /// `token` is the session's first (its epoch 0); `buffer_bytes` is at most
    /// `MAX_RESUME_BUFFER`.
    pub(crate) fn offer_session(
        &mut self,
        id: u64,
        window_ms: u32,
        token: Token,
        held: u64,
        buffer_bytes: usize,
    ) {
        self.enqueue(&Message::Session {
            id,
            window_ms,
            token,
        });
        let limit = u32::try_from(buffer_bytes).unwrap_or(u32::MAX);
        // What is queued already (the `session` frame last) is not the session's.
        let mut active = Active::continuing(0, 0, limit, &self.config.memory, self.out.len());
        active.inbound = Inbound::starting_at(held);
        self.session = Some(Box::new(SessionLog {
            sent: 0,
            received: 0,
            active: Some(active),
            limit,
            epoch: 0,
        }));
    }

    /// The epoch of the session's current token (how many were issued before it),
    /// if it can be resumed: offered, not ended and not leaving.
    pub(crate) fn resumable_epoch(&self) -> Option<u32> {
        self.session
            .as_ref()
            .filter(|s| s.lost().is_none() && !s.leaving())
            .map(|s| s.epoch)
    }

    /// The replay let go of unacknowledged frames to keep the last one. A session
    /// whose connection is lost ends once the replay lets go of a frame its client
    /// cannot have had: no resume could be served.
    #[cold]
    fn replay_let_go(&mut self) {
        let Some(Active {
            detached: Some(detached),
            replay,
            ..
        }) = self.session.as_ref().and_then(|s| s.active.as_deref())
        else {
            return;
        };
        if !replay.serves(detached.sent) {
            let text = "not resumed, and its replay passed resume.buffer_bytes";
            self.end_session(Lost::Gap, Some(text.to_owned()));
        }
    }

    /// Whether a close for `reason` may leave the session waiting for a resume
    /// instead: the connection was lost (not closed by either side on purpose) and
    /// the session is resumable and was not lost before.
    pub(crate) fn may_detach(&self, reason: &DisconnectReason) -> bool {
        let lost_transport = matches!(
            reason,
            DisconnectReason::PeerClosed
                | DisconnectReason::SocketError(_)
                | DisconnectReason::SendTimeout
                | DisconnectReason::Idle
        );
        lost_transport
            && self
                .session
                .as_ref()
                .is_some_and(|s| s.detached().is_none() && s.lost().is_none() && !s.leaving())
    }

    /// The client is leaving on purpose (it asked to end its session, or closed its
    /// WebSocket with a close frame): when this connection closes, the session ends
    /// with it, at once, instead of waiting for a resume.
    pub(crate) fn leave_session(&mut self) {
        if let Some(session) = &mut self.session {
            session
                .activate(&self.config.memory, self.out.len())
                .leaving = true;
        }
    }

    /// The connection was lost (`close`) at `now`: the session waits `window` for
    /// its client to resume, numbering and keeping what it sends meanwhile (the
    /// output is discarded: [`ConnectionCore::discard_output`]). If nobody comes,
    /// it closes with `close`.
    pub(crate) fn detach(&mut self, close: Close, now: Instant, window: std::time::Duration) {
        let Some(session) = &mut self.session else {
            self.close = Some(close);
            return;
        };
        let active = session.activate(&self.config.memory, self.out.len());
        active.detached = Some(Detached {
            until: now + window,
            close,
            sent: active.replay.sent(),
        });
        self.discard_output();
        self.stalled_since = None;
        // A partial frame from the lost connection will never be completed.
        self.recv.clear();
        self.charge_input();
    }

    /// Whether the connection is gone: the session waits for a resume, or ended
    /// waiting. Then nothing more can be sent.
    pub(crate) fn is_detached(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.detached().is_some() || s.lost().is_some())
    }

    /// A resume came for frames the replay no longer has: the session ends (its
    /// client must log in again).
    pub(crate) fn end_with_gap(&mut self) {
        self.end_session(Lost::Gap, None);
    }

    /// The session ends for `why` without its client coming back (the one place
    /// that decides it): a waiting one closes as its connection was lost (with
    /// `text`, if given, for the log), one still attached (a gap found at a resume)
    /// is kicked `resume_failed`.
    fn end_session(&mut self, why: Lost, text: Option<String>) {
        let Some(session) = &mut self.session else {
            return;
        };
        let active = session.activate(&self.config.memory, self.out.len());
        active.lost = Some(why);
        let close = match active.detached.take() {
            Some(detached) => Close {
                reason: detached.close.reason,
                text: text.or(detached.close.text),
            },
            // Still attached: the client left this connection for the new one.
            None => Close {
                reason: DisconnectReason::Kicked(KickReason::RESUME_FAILED),
                text: Some(
                    "gap: resumed on another connection without the frames it lacked".into(),
                ),
            },
        };
        self.close(close.reason, close.text);
    }

    /// Why the session ended without its client coming back, if it did.
    pub(crate) fn lost(&self) -> Option<Lost> {
        self.session.as_ref().and_then(|s| s.lost())
    }

    /// Takes every queued frame off the queue (nothing can send them: the connection
    /// was lost or replaced); a session keeps them in its replay, for the connection
    /// that resumes it.
    pub(crate) fn discard_output(&mut self) {
        let replay = self.session.as_mut().and_then(|s| s.replay());
        let whole = take_unsent(&mut self.out, &self.budget, replay);
        if !whole {
            self.replay_let_go();
        }
    }

    /// A new connection resumed the session at `now`: its client `received` so many
    /// numbered frames and sent `input` behind its `resume`. Queues `resumed`, then
    /// the frames the client lacks, in order; the old connection's output and
    /// partial input are dropped. Refused if the client claims more than was sent
    /// (then nothing changes), or lacks frames that were not kept.
    pub(crate) fn resume(
        &mut self,
        received: u64,
        input: BytesMut,
        now: Instant,
    ) -> Result<(), ReplayRefusal> {
        let Some(session) = &mut self.session else {
            return Err(ReplayRefusal::Gap {
                received,
                first_kept: u64::MAX,
            });
        };
        let active = session.activate(&self.config.memory, self.out.len());
        active.replay.check(received)?;
        // What the old connection had not written goes to the replay first (a gap,
        // below, if keeping it let go of frames this client lacks).
        take_unsent(&mut self.out, &self.budget, Some(&mut active.replay));
        let replay = active.replay.resume_from(received)?;
        active.detached = None;
        let resumed = Message::Resumed {
            received: active.inbound.received(),
        };
        self.stalled_since = None;
        self.recv = input;
        self.charge_input();
        self.last_input = Some(now);
        // The replay was charged to memory when kept; it must go out whatever the
        // queue's limit (it is at most `resume.buffer_bytes`).
        self.budget.force(HEADER_LEN + resumed.body_len());
        self.queue_reserved(&resumed);
        for frame in replay {
            self.budget.force(frame.len());
            self.out.push_shared(frame);
            self.budget.meter.queued();
        }
        Ok(())
    }

    /// Queues a fresh `session` frame for the session's next resume: a new token,
    /// `token_for` the session's next epoch.
    pub(crate) fn renew_session(
        &mut self,
        id: u64,
        window_ms: u32,
        token_for: impl FnOnce(u32) -> Token,
    ) {
        if let Some(session) = &mut self.session {
            session.epoch = session.epoch.wrapping_add(1);
            let token = token_for(session.epoch);
            self.enqueue(&Message::Session {
                id,
                window_ms,
                token,
            });
        }
    }

    /// Whether a session is due an offer: the connection logged in, and none was
    /// offered yet (the driver asks only for a service that resumes).
    pub(crate) fn session_due(&self) -> bool {
        self.logged_in && self.session.is_none()
    }

    /// One more of the client's numbered frames, received at `now`. (Inlined into
    /// the read path: one branch without a session, a count with one.)
    #[inline(always)]
    fn count_inbound(&mut self, now: Instant) {
        if let Some(session) = &mut self.session {
            if session.received_one(&self.config.memory, self.out.len(), now) {
                self.send_ack(now);
            }
        }
    }

    /// Acknowledges what the client sent, if anything is owed, at `now` (once per
    /// 32 frames at most: kept out of the read path).
    #[cold]
    fn send_ack(&mut self, now: Instant) {
        let Some(session) = &mut self.session else {
            return;
        };
        let owed = session.active.as_mut().and_then(|a| a.inbound.take_ack());
        session.quiet_at(now);
        if let Some(count) = owed {
            self.enqueue(&Message::Ack { count });
        }
    }

    /// The client acknowledged the first `count` numbered frames. Without a session
    /// there is nothing to acknowledge, and the ack is ignored.
    fn on_ack(&mut self, count: u64, now: Instant) {
        let Some(session) = &mut self.session else {
            return;
        };
        let acked = match session.active.as_mut() {
            Some(active) => active.replay.ack(count),
            None if count > session.sent => Err(AckBeyondSent {
                count,
                sent: session.sent,
            }),
            None => Ok(()),
        };
        session.quiet_at(now);
        if let Err(beyond) = acked {
            debug!(
                count = beyond.count,
                sent = beyond.sent,
                "ack beyond what was sent"
            );
            self.close(DisconnectReason::ProtocolError, None);
        }
    }

    // ---- close ----------------------------------------------------------------

    /// Decides to close (the first decision wins): no more events are produced.
    pub(crate) fn close(&mut self, reason: DisconnectReason, text: Option<String>) {
        if self.close.is_none() {
            self.close = Some(Close { reason, text });
        }
    }

    /// Kicks this connection with a game's reason and text.
    pub(crate) fn kick(&mut self, reason: KickReason, text: String) {
        self.close(DisconnectReason::Kicked(reason), Some(text));
    }

    /// Whether the connection has decided to close.
    pub(crate) fn is_closing(&self) -> bool {
        self.close.is_some()
    }

    /// The close decision, taken (once).
    pub(crate) fn take_close(&mut self) -> Option<Close> {
        self.close.take()
    }

    /// Queues the kick for `close` (if its reason has one) as the last frame. A slow
    /// consumer's unsent frames are dropped first, since they cannot be delivered in
    /// time and the kick can.
    pub(crate) fn queue_kick(&mut self, close: &Close) {
        let Some(kick) = close.reason.kick() else {
            return;
        };
        if close.reason == DisconnectReason::SlowConsumer {
            let dropped = self.out.discard_unstarted();
            self.budget.release(dropped);
        }
        // The kick is a frame like any other: a long text (a game's, an operator's)
        // is cut to fit the maximum rather than sent in a frame the client refuses.
        let mut text = close.kick_text(&self.config.limits);
        let fits = cut_at_char(
            &text,
            self.config
                .limits
                .max_frame_bytes
                .saturating_sub(KICK_FIXED),
        )
        .len();
        text.truncate(fits);
        let message = Message::Kick { reason: kick, text };
        self.budget.force(HEADER_LEN + message.body_len()); // the kick must always get through
        self.queue_reserved(&message);
    }

    // ---- memory ---------------------------------------------------------------

    /// Hands back the receive and send buffers that hold nothing in flight, so an
    /// idle connection keeps no buffer; the driver lends them to the next busy one.
    #[inline]
    pub(crate) fn take_spare_buffers(&mut self) -> (Option<BytesMut>, Option<BytesMut>) {
        (reusable(&mut self.recv), self.out.take_spare_buffer())
    }

    /// Lends a spare buffer for output, if the core has none; gives it back otherwise.
    pub(crate) fn lend_send_buffer(&mut self, buffer: BytesMut) -> Option<BytesMut> {
        self.out.lend_buffer(buffer)
    }

    /// Bytes received but not yet cut into frames.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered_input(&self) -> usize {
        self.recv.len()
    }

    /// Bytes of buffered input charged to the server-wide memory budget.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn charged_input(&self) -> usize {
        self.charged_input as usize
    }

    /// The numbered frames sent since a session was offered, if one was.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn session_sent(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.sent())
    }

    /// Whether a session's replay can serve a client that received `received` frames.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn replay_serves(&self, received: u64) -> bool {
        self.session.as_ref().is_some_and(|s| match &s.active {
            Some(active) => active.replay.serves(received),
            None => received >= s.sent,
        })
    }

    /// Bytes a session's replay charges to the memory budget.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn replay_charged(&self) -> usize {
        self.session
            .as_ref()
            .and_then(|s| s.active.as_ref())
            .map_or(0, |a| a.replay.charged())
    }
}

/// Takes everything queued off `out`, into `replay` if there is one (for the
/// connection that resumes the session). False if the replay let go of a numbered
/// frame to keep it.
fn take_unsent(
    out: &mut OutputQueue,
    budget: &OutboundBudget,
    replay: Option<&mut Replay>,
) -> bool {
    let whole = replay.is_none_or(|replay| replay.written_all(out.front(usize::MAX)));
    budget.release(out.clear());
    whole
}

impl Drop for ConnectionCore {
    fn drop(&mut self) {
        self.config.memory.refund(self.charged_input as usize);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const T: Duration = Duration::from_millis(1);

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_frame_bytes: 1000,
            inbound_bytes_per_sec: 100_000,
            inbound_bytes_burst: 10_000,
            inbound_frames_per_sec: 100,
            inbound_frames_burst: 10,
            first_frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            outbound_queue_bytes: 2_000,
            send_timeout: Duration::from_secs(30),
            ..LimitsConfig::default()
        }
    }

    struct Harness {
        core: ConnectionCore,
        budget: Arc<OutboundBudget>,
        t0: Instant,
    }

    fn harness(limits: LimitsConfig) -> Harness {
        harness_with_memory(limits, usize::MAX)
    }

    fn harness_with_memory(limits: LimitsConfig, memory_budget: usize) -> Harness {
        harness_with(CoreConfig::new(limits, memory_budget, false))
    }

    fn harness_with(config: CoreConfig) -> Harness {
        let t0 = Instant::now();
        let config = Arc::new(config);
        let budget = Arc::new(OutboundBudget::new(
            config.limits.outbound_queue_bytes,
            config.memory.clone(),
        ));
        Harness {
            core: ConnectionCore::new(config, budget.clone(), t0),
            budget,
            t0,
        }
    }

    impl Harness {
        fn at(&self, d: Duration) -> Instant {
            self.t0 + d
        }

        fn receive(&mut self, bytes: &[u8]) {
            self.core.recv_buffer().put_slice(bytes);
        }

        fn events(&mut self, now: Instant) -> Vec<Event> {
            std::iter::from_fn(|| self.core.poll_event(now)).collect()
        }

        /// Everything queued for the transport, taken as if all of it was written.
        fn sent(&mut self) -> Vec<Message> {
            let mut iov = [IoSlice::new(&[]); 64];
            let n = self.core.output_slices(&mut iov);
            let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
            self.core.consume_output(bytes.len());
            let mut buf = BytesMut::from(&bytes[..]);
            let decoder = FrameDecoder::new(1 << 20);
            std::iter::from_fn(|| decoder.decode(&mut buf).ok().flatten())
                .map(|body| Message::decode(body).expect("the core sends valid frames"))
                .collect()
        }

        fn closed(&mut self) -> Option<DisconnectReason> {
            self.core.take_close().map(|c| c.reason)
        }

        /// The session's replay; it must be active.
        fn replay(&self) -> &Replay {
            let session = self.core.session.as_ref().expect("a session");
            &session.active.as_ref().expect("active").replay
        }
    }

    fn wire(message: &Message) -> Vec<u8> {
        message.to_frame().to_vec()
    }

    fn request(id: u32, route: u16, payload: &'static [u8]) -> Message {
        Message::Request {
            id,
            route,
            payload: Bytes::from_static(payload),
        }
    }

    /// A session offered as the first request is handled (the login), with `held`
    /// frames behind it already cut.
    fn offered(h: &mut Harness, held: u64, buffer_bytes: usize) {
        h.core.offer_session(9, 30_000, [7; 32], held, buffer_bytes);
    }

    #[test]
    fn a_quiet_session_keeps_only_its_counts_and_numbers_on_when_either_side_sends_again() {
        // What an idle resumable session costs: one allocation of this size.
        assert!(std::mem::size_of::<SessionLog>() <= 32);
        let is_quiet = |h: &Harness| h.core.session.as_ref().is_some_and(|s| s.active.is_none());
        let mut h = harness(limits());
        offered(&mut h, 0, 10_000);
        h.core.respond(1, Status::OK, b"logged in");
        h.sent();
        assert!(!is_quiet(&h), "the answer is not acknowledged");
        h.receive(&wire(&Message::Ack { count: 1 }));
        assert!(h.events(h.at(T)).is_empty());
        assert!(is_quiet(&h), "a login's answer alone: quiet at once");
        // A pong on a quiet session is kept nowhere.
        h.receive(&wire(&Message::Ping(Bytes::from_static(b"n"))));
        assert!(h.events(h.at(T)).is_empty());
        assert!(matches!(h.sent()[..], [Message::Pong(_)]));
        assert!(is_quiet(&h));

        // Requests make it active again: counted on from 0, their answers numbered
        // on from 2. A burst lets its replay go only a second after it went quiet.
        let mut burst = Vec::new();
        for id in 7..10 {
            burst.extend(wire(&request(id, 1, b"")));
        }
        h.receive(&burst);
        for event in h.events(h.at(2 * T)) {
            let Event::Request { id, .. } = event else {
                panic!("{event:?}");
            };
            h.core.respond(id, Status::OK, b"x");
        }
        assert_eq!(h.core.session_sent(), Some(4));
        let due = h.core.poll_timeout(h.at(2 * T), false);
        assert_eq!(due, h.at(2 * T) + super::super::resume::ACK_WITHIN);
        h.core.handle_timeout(due, false);
        let sent = h.sent();
        assert!(
            matches!(sent.last(), Some(Message::Ack { count: 3 })),
            "{sent:?}"
        );
        h.receive(&wire(&Message::Ack { count: 4 }));
        assert!(h.events(due).is_empty());
        assert!(!is_quiet(&h), "not at once after a burst");
        let settle = h.core.poll_timeout(due, false);
        assert_eq!(settle, due + SETTLE_AFTER);
        h.core.handle_timeout(settle, false);
        assert!(is_quiet(&h), "still quiet a second later");

        // Lost while quiet, it resumes: nothing to replay, and it counts on.
        h.core.detach(
            Close::from(DisconnectReason::PeerClosed),
            settle,
            Duration::from_secs(30),
        );
        assert!(h.core.is_detached());
        h.core
            .resume(4, BytesMut::new(), settle + T)
            .expect("served");
        assert!(matches!(h.sent()[..], [Message::Resumed { received: 3 }]));
        h.core.push(5, Bytes::from_static(b"p"));
        assert_eq!(h.core.session_sent(), Some(5));
        h.sent();
        h.receive(&wire(&Message::Ack { count: 5 }));
        assert!(h.events(settle + 2 * T).is_empty());
        assert!(is_quiet(&h), "one push: quiet at once");
        // An ack beyond what was sent is refused, quiet or not.
        h.receive(&wire(&Message::Ack { count: 6 }));
        assert!(h.events(settle + 2 * T).is_empty());
        assert_eq!(h.closed(), Some(DisconnectReason::ProtocolError));
    }

    #[test]
    fn an_offered_session_numbers_and_keeps_responses_and_pushes_not_pongs_until_acked() {
        let mut h = harness(limits());
        offered(&mut h, 0, 10_000);
        h.core.respond(1, Status::OK, b"logged in");
        h.core.push(5, Bytes::from_static(b"p"));
        let broadcast = Message::Push {
            route: 6,
            payload: Bytes::from_static(b"b"),
        }
        .to_frame();
        assert!(h.budget.reserve(broadcast.len()), "as the mailbox does");
        h.core.queue_reserved_frame(broadcast);
        h.receive(&wire(&Message::Ping(Bytes::from_static(b"n"))));
        assert!(h.events(h.at(T)).is_empty());
        let sent = h.sent();
        assert!(matches!(
            sent[0],
            Message::Session {
                id: 9,
                window_ms: 30_000,
                ..
            }
        ));
        assert_eq!(sent.len(), 5, "{sent:?}");
        let replay = h.replay();
        assert_eq!(
            replay.sent(),
            3,
            "the response and two pushes; no session, no pong"
        );
        let kept: Vec<Message> = replay
            .kept()
            .map(|(_, frame)| {
                Message::decode(Bytes::copy_from_slice(&frame[HEADER_LEN..])).expect("a frame")
            })
            .collect();
        assert_eq!(kept[..], sent[1..4], "kept as sent");

        h.receive(&wire(&Message::Ack { count: 2 }));
        assert!(h.events(h.at(T)).is_empty());
        let replay = h.replay();
        assert_eq!(
            replay.kept().map(|(number, _)| number).collect::<Vec<_>>(),
            [3]
        );
        h.receive(&wire(&Message::Ack { count: 4 }));
        assert!(h.events(h.at(T)).is_empty());
        assert_eq!(
            h.closed(),
            Some(DisconnectReason::ProtocolError),
            "beyond what was sent"
        );
    }

    #[test]
    fn the_first_frame_is_told_a_resume_only_once_whole_and_anything_else_at_its_kind_or_header() {
        let mut h = harness(limits());
        assert_eq!(h.core.first_frame(), FirstFrame::Pending);
        let resume = wire(&Message::Resume {
            id: 1,
            received: 0,
            token: [0; 32],
        });
        h.receive(&resume[..20]);
        assert_eq!(h.core.first_frame(), FirstFrame::Pending);
        h.receive(&resume[20..]);
        assert_eq!(h.core.first_frame(), FirstFrame::Resume);
        let taken = h.core.take_resume(h.at(T)).expect("a resume");
        assert_eq!((taken.id, taken.received), (1, 0));
        assert_eq!(h.core.first_frame(), FirstFrame::Other, "one first frame");
        for first in [
            &[0, 0, 0, 0][..],               // empty
            &[0x7f, 0xff, 0xff, 0xff],       // over the maximum: refused from the header
            &[0, 0, 0, 7, kind::REQUEST, 0], // its kind is enough
        ] {
            let mut h = harness(limits());
            h.receive(first);
            assert_eq!(h.core.first_frame(), FirstFrame::Other, "{first:?}");
        }
    }

    #[test]
    fn a_session_whose_client_leaves_on_purpose_does_not_wait_for_a_resume() {
        let mut h = harness(limits());
        h.receive(&wire(&request(1, 1, b"login")));
        assert_eq!(h.events(h.at(T)).len(), 1);
        offered(&mut h, 0, 10_000);
        assert!(h.core.may_detach(&DisconnectReason::PeerClosed));
        h.core.leave_session();
        assert!(!h.core.may_detach(&DisconnectReason::PeerClosed));
        assert!(!h.core.may_detach(&DisconnectReason::SocketError(
            std::io::ErrorKind::ConnectionReset
        )));
    }

    #[test]
    fn a_lost_connection_detaches_discards_output_keeps_numbering_and_waits_only_for_the_window() {
        let mut h = harness(limits());
        h.receive(&wire(&request(1, 1, b"login")));
        assert_eq!(h.events(h.at(T)).len(), 1);
        offered(&mut h, 0, 10_000);
        h.core.respond(1, Status::OK, b"welcome");
        h.receive(&wire(&request(2, 1, b"x"))); // read, then the connection goes
        assert_eq!(h.events(h.at(T)).len(), 1);
        h.receive(&[0, 0, 0, 9, 1]); // a partial frame that will never be whole
        assert!(h.events(h.at(T)).is_empty());
        assert!(h.core.may_detach(&DisconnectReason::PeerClosed));
        assert!(
            !h.core.may_detach(&DisconnectReason::ProtocolError),
            "on purpose"
        );
        h.core.detach(
            Close::from(DisconnectReason::PeerClosed),
            h.at(2 * T),
            Duration::from_secs(30),
        );
        assert!(h.core.is_detached() && !h.core.has_output());
        assert_eq!((h.budget.unsent(), h.core.buffered_input()), (0, 0));
        // Meanwhile: an answer and a push, numbered 2 and 3, go nowhere.
        h.core.respond(2, Status::OK, b"x");
        h.core.push(5, Bytes::from_static(b"p"));
        h.core.discard_output();
        assert_eq!(h.core.session_sent(), Some(3));
        // Neither the idle timeout nor the ack owed fires: only the window.
        let due = h.core.poll_timeout(h.at(3 * T), false);
        assert_eq!(due, h.at(2 * T) + Duration::from_secs(30));
        h.core.handle_timeout(h.at(Duration::from_secs(29)), false);
        assert_eq!(h.closed(), None);
        h.core.handle_timeout(due, false);
        assert_eq!(
            h.closed(),
            Some(DisconnectReason::PeerClosed),
            "as it was lost"
        );
        assert_eq!(h.core.lost(), Some(Lost::Expired));
        assert!(!h.core.may_detach(&DisconnectReason::PeerClosed), "once");
    }

    #[test]
    fn a_resume_answers_resumed_then_replays_what_the_client_lacks_and_takes_its_input() {
        let mut h = harness(limits());
        offered(&mut h, 0, 10_000);
        h.core.respond(1, Status::OK, b"welcome");
        h.receive(&wire(&request(2, 1, b"x")));
        assert_eq!(h.events(h.at(T)).len(), 1);
        h.core.respond(2, Status::OK, b"two");
        h.core.push(5, Bytes::from_static(b"three"));
        h.sent();
        h.core.detach(
            Close::from(DisconnectReason::SocketError(
                std::io::ErrorKind::ConnectionReset,
            )),
            h.at(T),
            Duration::from_secs(30),
        );
        h.core.push(5, Bytes::from_static(b"four"));
        h.core.discard_output();
        // Beyond what was sent, or before what is kept: refused, and nothing changes.
        assert!(matches!(
            h.core.resume(5, BytesMut::new(), h.at(2 * T)),
            Err(ReplayRefusal::BeyondSent {
                received: 5,
                sent: 4
            })
        ));
        assert!(h.core.is_detached());
        // The client had frames 1 and 2; it sent a request behind its resume.
        let behind = BytesMut::from(&wire(&request(3, 1, b"y"))[..]);
        h.core.resume(2, behind, h.at(2 * T)).expect("resumed");
        assert!(!h.core.is_detached());
        let sent = h.sent();
        assert_eq!(sent[0], Message::Resumed { received: 1 });
        let payloads: Vec<&[u8]> = sent[1..]
            .iter()
            .map(|m| match m {
                Message::Push { payload, .. } => &payload[..],
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(payloads, [&b"three"[..], b"four"]);
        assert!(matches!(
            &h.events(h.at(2 * T))[..],
            [Event::Request { id: 3, .. }]
        ));
        // A fresh token for the next resume; acks and the idle deadline as before.
        h.core.renew_session(9, 30_000, |_| [8; 32]);
        assert!(matches!(
            h.sent()[..],
            [Message::Session {
                id: 9,
                token: [8, ..],
                ..
            }]
        ));
        assert!(
            h.core.may_detach(&DisconnectReason::Idle),
            "it may be lost again"
        );
    }

    #[test]
    fn a_detached_session_whose_replay_lets_go_of_a_frame_after_the_loss_ends_with_gap() {
        let mut h = harness(limits());
        offered(&mut h, 0, 100);
        h.core.respond(1, Status::OK, b"welcome");
        h.sent();
        h.core.detach(
            Close::from(DisconnectReason::PeerClosed),
            h.at(T),
            Duration::from_secs(30),
        );
        for _ in 0..10 {
            h.core.push(5, Bytes::from_static(b"0123456789"));
            h.core.discard_output();
        }
        assert_eq!(h.closed(), Some(DisconnectReason::PeerClosed));
        assert_eq!(h.core.lost(), Some(Lost::Gap));
        assert!(h.core.is_detached(), "no connection to close");
    }

    #[test]
    fn the_client_is_acked_after_32_frames_or_a_second_and_an_idle_session_arms_no_timer() {
        let mut h = harness(LimitsConfig {
            inbound_frames_burst: 1000,
            ..limits()
        });
        let idle_deadline = h.core.poll_timeout(h.at(T), false);
        offered(&mut h, 2, 10_000);
        let _ = h.sent();
        assert_eq!(
            h.core.poll_timeout(h.at(T), false),
            idle_deadline,
            "nothing owed"
        );

        h.receive(&wire(&Message::Notify {
            route: 1,
            payload: Bytes::new(),
        }));
        assert_eq!(h.events(h.at(T)).len(), 1);
        let due = h.core.poll_timeout(h.at(T), false);
        assert_eq!(due, h.at(T) + super::super::resume::ACK_WITHIN);
        h.core.handle_timeout(due, false);
        assert_eq!(
            h.sent(),
            [Message::Ack { count: 3 }],
            "the two held ones and this one"
        );
        // Quiet: once more, a second later, to let its active part go; then nothing
        // but the idle deadline.
        let settle = h.core.poll_timeout(due, false);
        assert_eq!(settle, due + SETTLE_AFTER);
        h.core.handle_timeout(settle, false);
        assert!(h.sent().is_empty());
        assert_eq!(
            h.core.poll_timeout(settle, false),
            h.at(T) + limits().idle_timeout,
            "acked: the idle deadline again"
        );

        let mut bytes = Vec::new();
        for id in 0..32 {
            bytes.extend(wire(&request(id, 1, b"")));
        }
        h.receive(&bytes);
        assert_eq!(h.events(h.at(T * 2)).len(), 32);
        assert_eq!(
            h.sent(),
            [Message::Ack { count: 35 }],
            "at the 32nd, not later"
        );
        assert!(h.closed().is_none());
    }

    #[test]
    fn without_a_session_acks_are_ignored_and_nothing_is_kept() {
        let mut h = harness(limits());
        h.receive(&wire(&Message::Ack { count: 1_000 }));
        h.receive(&wire(&request(1, 1, b"")));
        assert_eq!(h.events(h.at(T)).len(), 1);
        h.core.respond(1, Status::OK, b"");
        assert!(h.core.session.is_none());
        assert!(h.closed().is_none());
    }

    #[test]
    fn pipelined_requests_come_out_in_order_and_pings_are_answered_without_a_handler() {
        let mut h = harness(limits());
        let now = h.at(T);
        let mut bytes = wire(&request(1, 7, b"a"));
        bytes.extend(wire(&Message::Ping(Bytes::from_static(b"n"))));
        bytes.extend(wire(&Message::Empty));
        bytes.extend(wire(&Message::Notify {
            route: 8,
            payload: Bytes::from_static(b"b"),
        }));
        bytes.extend(wire(&request(2, 9, b"")));
        h.receive(&bytes);
        let events = h.events(now);
        assert_eq!(
            events,
            [
                Event::Request {
                    id: 1,
                    route: 7,
                    payload: Bytes::from_static(b"a")
                },
                Event::Notify {
                    route: 8,
                    payload: Bytes::from_static(b"b")
                },
                Event::Request {
                    id: 2,
                    route: 9,
                    payload: Bytes::new()
                },
            ]
        );
        h.core.respond(1, Status::OK, b"A");
        h.core.respond(2, Status::UNKNOWN_ROUTE, b"");
        let sent = h.sent();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0], Message::Pong(Bytes::from_static(b"n")));
        assert!(matches!(sent[1], Message::Response { id: 1, .. }));
        assert!(matches!(
            sent[2],
            Message::Response {
                id: 2,
                status: Status::UNKNOWN_ROUTE,
                ..
            }
        ));
        assert!(h.closed().is_none());
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_becomes_one_event_when_whole() {
        let mut h = harness(limits());
        let bytes = wire(&request(5, 1, b"hello"));
        for (i, byte) in bytes.iter().enumerate() {
            h.receive(&[*byte]);
            let events = h.events(h.at(T));
            assert_eq!(
                events.len(),
                usize::from(i == bytes.len() - 1),
                "after byte {i}"
            );
        }
        assert_eq!(h.core.buffered_input(), 0);
    }

    #[test]
    fn the_maximum_frame_passes_and_one_byte_more_closes_from_the_header_alone() {
        let mut h = harness(limits());
        let max_payload = vec![0u8; 1000 - 7];
        let ok = Message::Request {
            id: 1,
            route: 1,
            payload: Bytes::from(max_payload),
        };
        h.receive(&wire(&ok));
        assert_eq!(h.events(h.at(T)).len(), 1);
        h.receive(&1001u32.to_be_bytes()); // the header alone, no body
        assert!(h.events(h.at(T)).is_empty());
        assert_eq!(h.closed(), Some(DisconnectReason::FrameTooLarge));
    }

    #[test]
    fn a_message_transport_frame_over_the_maximum_closes_too() {
        let mut h = harness(limits());
        h.core.receive_frame(&[0u8; 1001]);
        assert!(h.events(h.at(T)).is_empty());
        assert_eq!(h.closed(), Some(DisconnectReason::FrameTooLarge));
        let mut h = harness(limits());
        h.core
            .receive_frame(&request(3, 1, b"x").to_frame()[HEADER_LEN..]);
        assert_eq!(h.events(h.at(T)).len(), 1);
    }

    #[test]
    fn requests_before_an_oversized_message_are_handled_before_it_closes() {
        // Found by the property tests: the oversized message closed at once, and the
        // request before it in the same batch was never handled.
        let mut h = harness(limits());
        h.core
            .receive_frame(&request(3, 1, b"x").to_frame()[HEADER_LEN..]);
        h.core.receive_frame(&[0u8; 1001]);
        assert_eq!(h.events(h.at(T)).len(), 1, "the request comes first");
        assert_eq!(h.closed(), Some(DisconnectReason::FrameTooLarge));
        assert_eq!(h.core.buffered_input(), HEADER_LEN, "no body was kept");
    }

    #[test]
    fn a_kick_text_longer_than_a_frame_is_cut_to_fit_at_a_character() {
        // Found by the property tests: a game's long kick text made a frame over
        // max_frame_bytes, which the client refuses instead of reading the kick.
        let mut h = harness(limits());
        h.core.kick(KickReason::DOS, "é".repeat(1000));
        let close = h.core.take_close().expect("kicked");
        h.core.queue_kick(&close);
        let sent = h.sent();
        let [Message::Kick { reason, text }] = &sent[..] else {
            panic!("one kick expected, got {sent:?}");
        };
        assert_eq!(*reason, KickReason::DOS);
        assert_eq!(
            text.len(),
            996,
            "the frame's 1000 bytes less kind and code, cut at a whole character"
        );
        assert!(text.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_frame_flood_is_cut_at_the_burst_and_a_steady_client_never_is() {
        let mut h = harness(limits());
        for _ in 0..11 {
            h.receive(&wire(&Message::Empty));
        }
        h.events(h.at(T));
        assert_eq!(
            h.closed(),
            Some(DisconnectReason::Dos),
            "11 frames at once, burst 10"
        );
        let mut h = harness(limits());
        for i in 0..1000u32 {
            h.receive(&wire(&Message::Empty));
            h.events(h.at(Duration::from_millis(10 * u64::from(i)))); // 100/s
        }
        assert_eq!(h.closed(), None);
    }

    #[test]
    fn a_byte_flood_is_kicked_dos() {
        let mut h = harness(limits());
        let big = Message::Notify {
            route: 1,
            payload: Bytes::from(vec![0u8; 900]),
        };
        for _ in 0..11 {
            h.receive(&wire(&big));
        }
        h.events(h.at(T));
        assert_eq!(
            h.closed(),
            Some(DisconnectReason::Dos),
            "over 10,000 bytes at once"
        );
    }

    #[test]
    fn malformed_bodies_and_server_only_kinds_are_protocol_errors() {
        let bad: [&[u8]; 2] = [&[0, 0, 0, 1, 99], &[0, 0, 0, 2, 1, 0]];
        for bytes in bad {
            let mut h = harness(limits());
            h.receive(bytes);
            assert!(h.events(h.at(T)).is_empty());
            assert_eq!(h.closed(), Some(DisconnectReason::ProtocolError));
        }
        for server_only in [
            Message::Push {
                route: 1,
                payload: Bytes::new(),
            },
            Message::Kick {
                reason: KickReason::IDLE,
                text: String::new(),
            },
            Message::Response {
                id: 1,
                status: Status::OK,
                payload: Bytes::new(),
            },
            Message::Session {
                id: 1,
                window_ms: 1,
                token: [0; 32],
            },
            Message::Resumed { received: 0 },
        ] {
            let mut h = harness(limits());
            h.receive(&wire(&server_only));
            h.receive(&wire(&request(1, 1, b"after")));
            assert!(h.events(h.at(T)).is_empty(), "nothing after the violation");
            assert_eq!(h.closed(), Some(DisconnectReason::ProtocolError));
        }
    }

    #[test]
    fn a_resume_first_is_refused_unknown_a_resume_later_is_a_protocol_error_and_acks_pass() {
        let resume = Message::Resume {
            id: 1,
            received: 0,
            token: [0; 32],
        };
        let mut h = harness(limits());
        h.receive(&wire(&resume));
        assert!(h.events(h.at(T)).is_empty());
        let close = h.core.take_close().expect("refused");
        assert_eq!(
            close.reason,
            DisconnectReason::Kicked(KickReason::RESUME_FAILED)
        );
        assert!(close.text.is_some_and(|t| t.starts_with("unknown")));

        let mut h = harness(limits());
        h.receive(&wire(&Message::Ack { count: 3 }));
        h.receive(&wire(&request(1, 1, b"after an ack")));
        assert_eq!(h.events(h.at(T)).len(), 1, "an ack is no event");
        h.receive(&wire(&resume));
        assert!(h.events(h.at(T)).is_empty());
        assert_eq!(h.closed(), Some(DisconnectReason::ProtocolError));
    }

    #[test]
    fn notifies_on_framework_routes_are_ignored_not_events() {
        let mut h = harness(limits());
        h.receive(&wire(&Message::Notify {
            route: RESERVED_ROUTES_START,
            payload: Bytes::new(),
        }));
        assert!(h.events(h.at(T)).is_empty());
        assert_eq!(h.closed(), None);
    }

    #[test]
    fn a_service_requiring_login_closes_a_talkative_connection_that_never_logs_in() {
        let limits = LimitsConfig {
            login_timeout: Duration::from_secs(30),
            ..limits()
        };
        let mut h = harness_with(CoreConfig::new(limits, usize::MAX, true));
        // Pings every 5 s keep the idle timer happy, but not the login deadline.
        for second in (5..30).step_by(5) {
            let now = h.at(Duration::from_secs(second));
            h.receive(&wire(&Message::Ping(Bytes::new())));
            let _ = h.events(now);
            assert_eq!(
                h.core.poll_timeout(now, false),
                h.at(Duration::from_secs(30))
            );
            h.core.handle_timeout(now, false);
            assert_eq!(h.closed(), None);
        }
        h.core.handle_timeout(h.at(Duration::from_secs(30)), false);
        assert_eq!(h.closed(), Some(DisconnectReason::LoginTimeout));
    }

    #[test]
    fn a_logged_in_connection_has_no_login_deadline() {
        let mut h = harness_with(CoreConfig::new(limits(), usize::MAX, true));
        h.receive(&wire(&Message::Ping(Bytes::new())));
        let _ = h.events(h.at(T));
        let _pong = h.sent();
        h.core.set_logged_in();
        // Only the idle deadline is left.
        assert_eq!(
            h.core.poll_timeout(h.at(T), false),
            h.at(T + Duration::from_secs(60))
        );
        h.core.handle_timeout(h.at(Duration::from_secs(45)), false);
        assert_eq!(h.closed(), None);
    }

    #[test]
    fn silence_until_the_first_frame_timeout_is_a_login_timeout() {
        let mut h = harness(limits());
        let deadline = h.core.poll_timeout(h.at(T), false);
        assert_eq!(deadline, h.at(Duration::from_secs(10)));
        h.core.handle_timeout(deadline - T, false);
        assert_eq!(h.closed(), None, "not a moment early");
        h.core.handle_timeout(deadline, false);
        assert_eq!(h.closed(), Some(DisconnectReason::LoginTimeout));
    }

    #[test]
    fn only_inbound_frames_move_the_idle_deadline() {
        let mut h = harness(limits());
        let first = h.at(Duration::from_secs(5));
        h.receive(&wire(&Message::Empty));
        h.events(first);
        assert_eq!(
            h.core.poll_timeout(first, false),
            first + Duration::from_secs(60)
        );
        // Output, and its progress, do not count as activity.
        assert!(h.core.push(1, Bytes::from_static(b"x")));
        h.sent();
        let later = first + Duration::from_secs(59);
        assert_eq!(
            h.core.poll_timeout(later, false),
            first + Duration::from_secs(60)
        );
        h.receive(&wire(&Message::Ping(Bytes::new())));
        h.events(later);
        h.sent(); // the pong
        let deadline = h.core.poll_timeout(later, false);
        assert_eq!(deadline, later + Duration::from_secs(60));
        h.core
            .handle_timeout(first + Duration::from_secs(61), false);
        assert_eq!(h.closed(), None, "the ping moved it");
        h.core.handle_timeout(deadline, false);
        assert_eq!(h.closed(), Some(DisconnectReason::Idle));
    }

    #[test]
    fn output_that_makes_no_progress_for_the_send_timeout_closes() {
        let mut h = harness(limits());
        h.receive(&wire(&Message::Empty));
        h.events(h.at(T));
        assert!(h.core.push(1, Bytes::from_static(b"stuck")));
        let start = h.at(Duration::from_secs(1));
        let deadline = h.core.poll_timeout(start, false);
        assert_eq!(
            deadline,
            start + Duration::from_secs(30),
            "sooner than the idle deadline"
        );
        // Some progress restarts the stall clock.
        h.core.consume_output(2);
        let later = start + Duration::from_secs(20);
        assert_eq!(
            h.core.poll_timeout(later, false),
            later + Duration::from_secs(30)
        );
        h.core
            .handle_timeout(start + Duration::from_secs(31), false);
        assert_eq!(h.closed(), None);
        // The idle deadline (61 s after the first frame) comes first now; keep the
        // connection alive and let the stall run out.
        h.receive(&wire(&Message::Empty));
        h.events(later);
        h.core.poll_timeout(later + Duration::from_secs(5), false);
        h.core
            .handle_timeout(later + Duration::from_secs(30), false);
        assert_eq!(h.closed(), Some(DisconnectReason::SendTimeout));
    }

    #[test]
    fn a_tls_or_http_client_on_the_tcp_listener_is_named_in_the_log() {
        assert!(wrong_protocol(0x1603_0100).contains("TLS"));
        assert!(wrong_protocol(u32::from_be_bytes(*b"GET ")).contains("HTTP"));
        assert_eq!(wrong_protocol(0x0004_0001), "nothing known");
    }

    #[test]
    fn output_the_transport_holds_without_progress_is_a_send_timeout_too() {
        let mut h = harness(limits());
        h.receive(&wire(&Message::Empty));
        h.events(h.at(T));
        // The core's queue is empty; the transport (TLS, WebSocket) still holds some.
        let start = h.at(Duration::from_secs(1));
        assert_eq!(
            h.core.poll_timeout(start, true),
            start + Duration::from_secs(30)
        );
        h.core.handle_timeout(start + Duration::from_secs(30), true);
        assert_eq!(h.closed(), Some(DisconnectReason::SendTimeout));
        // Once the transport has sent it, nothing is stalled.
        let mut h = harness(limits());
        h.receive(&wire(&Message::Empty));
        h.events(h.at(T));
        h.core.poll_timeout(start, true);
        h.core
            .handle_timeout(start + Duration::from_secs(30), false);
        assert_eq!(h.closed(), None);
    }

    #[test]
    fn output_that_drained_after_the_stall_clock_started_is_not_a_send_timeout() {
        let mut h = harness(limits());
        h.receive(&wire(&Message::Empty));
        h.events(h.at(T));
        assert!(h.core.push(1, Bytes::from_static(b"slow")));
        let start = h.at(Duration::from_secs(1));
        let deadline = h.core.poll_timeout(start, false);
        assert_eq!(deadline, start + Duration::from_secs(30));
        // The transport sends it all while the driver waits, then the timer fires.
        h.sent();
        h.core.handle_timeout(deadline, false);
        assert_eq!(h.closed(), None, "nothing is stuck");
        assert_eq!(
            h.core.poll_timeout(deadline, false),
            h.at(T) + Duration::from_secs(60)
        );
    }

    #[test]
    fn a_reader_that_does_not_read_is_a_slow_consumer_and_gets_only_its_kick() {
        let mut h = harness(limits());
        let mut pushed = 0;
        while h.core.push(1, Bytes::from(vec![7u8; 100])) {
            pushed += 1;
        }
        assert_eq!(pushed, 2_000 / 107, "the budget bounds the queue");
        let close = h.core.take_close().expect("marked slow consumer");
        assert_eq!(close.reason, DisconnectReason::SlowConsumer);
        h.core.queue_kick(&close);
        let sent = h.sent();
        assert_eq!(sent.len(), 1, "unsent pushes are dropped, the kick goes");
        assert!(matches!(
            sent[0],
            Message::Kick {
                reason: KickReason::SLOW_CONSUMER,
                ..
            }
        ));
        assert_eq!(h.budget.unsent(), 0, "every byte is given back");
    }

    #[test]
    fn hub_deliveries_share_the_budget_with_the_connections_own_output() {
        let mut h = harness(limits());
        let broadcast = Message::Push {
            route: 2,
            payload: Bytes::from(vec![1u8; 1500]),
        }
        .to_frame();
        assert!(h.budget.reserve(broadcast.len()), "as the mailbox does");
        h.core.queue_reserved_frame(broadcast);
        assert!(!h.core.push(1, Bytes::from(vec![0u8; 600])), "no room left");
        assert_eq!(h.closed(), Some(DisconnectReason::SlowConsumer));
    }

    #[test]
    fn a_dirty_session_is_checkpointed_once_an_interval_after_its_first_change() {
        let mut h = harness(LimitsConfig {
            checkpoint_interval: Duration::from_secs(5),
            ..limits()
        });
        h.receive(&wire(&request(1, 7, b"")));
        assert_eq!(h.events(h.at(Duration::from_secs(1))).len(), 1);
        let idle = h.core.poll_timeout(h.at(Duration::from_secs(1)), false);
        h.core.mark_dirty();
        h.core.mark_dirty(); // a second change does not push the checkpoint back
        let due = h.core.poll_timeout(h.at(Duration::from_secs(2)), false);
        assert_eq!(due, h.at(Duration::from_secs(6)));
        assert!(due < idle);
        assert!(!h.core.take_checkpoint(h.at(Duration::from_secs(5))));
        assert!(h.core.take_checkpoint(due));
        assert!(!h.core.take_checkpoint(due), "taken once");
        assert_eq!(
            h.core.poll_timeout(due, false),
            idle,
            "clean: only the idle deadline"
        );
        assert_eq!(h.closed(), None);
    }

    #[test]
    fn a_large_partial_frame_waits_for_memory_and_goes_on_once_there_is_some() {
        let free = crate::limits::FREE_PER_CONNECTION;
        let limits = LimitsConfig {
            max_frame_bytes: 4 * free,
            inbound_bytes_burst: 1 << 20,
            inbound_bytes_per_sec: 1 << 20,
            outbound_queue_bytes: 8 * free,
            ..limits()
        };
        let mut h = harness_with_memory(limits, 2000);
        let memory = h.core.config.memory.clone();
        memory.force(1000); // another connection's share of the budget
        let body = wire(&request(1, 7, &[7u8; 3 * 65536]));
        // The free share and the 1000 bytes left fit; past that, input pauses.
        h.receive(&body[..free + 1000]);
        assert!(h.events(h.at(T)).is_empty());
        assert!(!h.core.input_paused());
        assert_eq!(memory.used(), 2000);
        h.receive(&body[free + 1000..free + 2000]);
        assert!(h.events(h.at(T)).is_empty());
        assert!(h.core.input_paused(), "no room: the frame waits, unread");
        let retry = h.core.poll_timeout(h.at(T), false);
        assert_eq!(retry, h.at(T) + MEMORY_RETRY);
        h.core.handle_timeout(retry, false);
        assert!(h.core.input_paused(), "still no room");
        // The other connection gives its share back: the retry takes it.
        memory.refund(1000);
        h.core.handle_timeout(retry + MEMORY_RETRY, false);
        assert!(!h.core.input_paused());
        assert_eq!(memory.used(), 2000);
        h.receive(&body[free + 2000..]);
        let events = h.events(h.at(2 * T));
        assert_eq!(events.len(), 1, "the whole frame arrived");
        assert_eq!(memory.used(), 0, "cut from the buffer: charged no more");
        assert_eq!(h.closed(), None, "paused, never closed");
    }

    #[test]
    fn the_server_never_sends_a_frame_over_the_maximum() {
        let mut h = harness(LimitsConfig {
            outbound_queue_bytes: 1 << 20,
            ..limits()
        });
        h.core.respond(9, Status::OK, &[0u8; 1000]);
        assert!(!h.core.push(1, Bytes::from(vec![0u8; 1000])));
        let sent = h.sent();
        assert_eq!(sent.len(), 1);
        assert!(matches!(
            sent[0],
            Message::Response {
                id: 9,
                status: Status::INTERNAL_ERROR,
                ..
            }
        ));
        assert_eq!(h.closed(), None, "the connection goes on");
    }

    #[test]
    fn the_first_close_decision_wins_and_carries_its_text_into_the_kick() {
        let mut h = harness(limits());
        h.core
            .kick(KickReason::DUPLICATE_LOGIN, "logged in elsewhere".into());
        h.core.close(DisconnectReason::Shutdown, None);
        let close = h.core.take_close().expect("closing");
        assert_eq!(
            close.reason,
            DisconnectReason::Kicked(KickReason::DUPLICATE_LOGIN)
        );
        h.core.queue_kick(&close);
        assert_eq!(
            h.sent(),
            [Message::Kick {
                reason: KickReason::DUPLICATE_LOGIN,
                text: "logged in elsewhere".into()
            }]
        );
        let mut h = harness(limits());
        h.core.queue_kick(&Close {
            reason: DisconnectReason::Idle,
            text: None,
        });
        let sent = h.sent();
        assert!(
            matches!(&sent[0], Message::Kick { reason: KickReason::IDLE, text } if text.contains("60s"))
        );
        let mut h = harness(limits());
        h.core.queue_kick(&Close {
            reason: DisconnectReason::PeerClosed,
            text: None,
        });
        assert!(!h.core.has_output(), "no kick for a peer that left");
    }

    #[test]
    fn message_transports_take_whole_frames_without_headers() {
        let mut h = harness(limits());
        h.core.respond(1, Status::OK, b"a");
        h.core.queue_reserved_frame({
            let f = Message::Push {
                route: 2,
                payload: Bytes::from_static(b"b"),
            }
            .to_frame();
            h.budget.reserve(f.len());
            f
        });
        let bodies: Vec<_> = std::iter::from_fn(|| h.core.take_output_frame()).collect();
        assert_eq!(bodies.len(), 2);
        assert!(matches!(
            Message::decode(bodies[0].clone()),
            Ok(Message::Response { id: 1, .. })
        ));
        assert!(matches!(
            Message::decode(bodies[1].clone()),
            Ok(Message::Push { route: 2, .. })
        ));
        assert_eq!(h.budget.unsent(), 0);
    }

    #[test]
    fn an_idle_connection_gives_its_buffers_back() {
        let mut h = harness(limits());
        h.receive(&wire(&request(1, 1, b"x")));
        let half = wire(&request(2, 1, b"y"));
        h.receive(&half[..3]);
        h.events(h.at(T));
        let (recv, _) = h.core.take_spare_buffers();
        assert!(recv.is_none(), "a partial frame is kept");
        h.receive(&half[3..]);
        h.events(h.at(T));
        h.core.respond(1, Status::OK, b"");
        h.sent();
        let (recv, send) = h.core.take_spare_buffers();
        assert!(
            recv.is_some() && send.is_some(),
            "both buffers go back when idle"
        );
        let (recv, send) = h.core.take_spare_buffers();
        assert!(recv.is_none() && send.is_none());
    }
}
