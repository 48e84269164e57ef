//! A [`ConnectionCore`] driven as its driver and a game drive it, by a script of
//! arbitrary steps (bytes or messages from the client, reads and writes of any size,
//! handler answers and pushes, hub deliveries, kicks, time passing), with its
//! invariants checked along the way. Shared by the property tests (`properties.rs`)
//! and the `connection_core` fuzz target (through `crate::fuzzing`); the first broken
//! invariant panics, which is the finding for both.
//!
//! What must hold, whatever the script:
//! - no frame over `limits.max_frame_bytes` goes out, and the output stays well framed
//!   (a slow consumer's dropped frames and a half-written one included);
//! - the events are the requests and notifies the client sent, in order, all of them
//!   unless the connection closes, and a malformed or oversized frame stops them
//!   exactly there; pings are answered in order;
//! - responses and pushes go out unchanged, in the order they were queued;
//! - a close is decided once, with one reason; at most one kick goes out, last, with
//!   that reason (and no kick where the reason has none);
//! - a timer that fires early closes nothing, and one that fires on time leaves a
//!   deadline in the future or a close (the driver never spins);
//! - the connection's unsent-byte budget equals what is queued (zero once all is
//!   written), the server-wide memory budget equals what the output, the partial
//!   input and a session's replay charge, and it is back to zero once the core and its
//!   budget are dropped;
//! - a session offered a resume sends its `session` frame once (and once more after
//!   each resume), acknowledges with counts that only grow, and takes the client's
//!   acks (one beyond what was sent is a protocol error); a `resume` first is refused
//!   `resume_failed`, later it is a protocol error;
//! - a lost connection's session detaches (unless the client said it leaves: then it
//!   closes) and sends nothing while it waits; a resume on a new connection gets
//!   `resumed` first, then exactly the responses and pushes after what the client
//!   says it received, in order, then a fresh `session`; one claiming more than was
//!   sent is refused and the session waits on; one the replay cannot serve ends it,
//!   as does the window's end.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use gatehouse_protocol::{KickReason, Message, Status, HEADER_LEN, RESERVED_ROUTES_START};

/// The session a script may offer: its id, and its replay's byte limit at most.
const SESSION_ID: u64 = 1;

/// How long a lost connection's session waits for a resume.
const WINDOW: Duration = Duration::from_secs(30);

use super::budget::OutboundBudget;
use super::core::{Close, ConnectionCore, CoreConfig, Event};
use super::reason::DisconnectReason;
use super::resume::ReplayRefusal;
use super::staged::Staged;
use crate::config::{Config, LimitsConfig, ServerConfig, MAX_FRAME_FLOOR};
use crate::limits::memory::above_free;

/// A connection's settings and what happens to it.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct Script {
    /// The limits, and how the connection is carried.
    pub settings: Settings,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// Raw numbers, each mapped into the range a validated configuration allows (see
/// [`Settings::limits`]), so that every script runs a configuration a server could.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub struct Settings {
    /// `max_frame_bytes` above the least allowed, small or (with `large_frames`)
    /// past the 64 KiB free share.
    pub max_frame: u32,
    /// Frames up to 300,000 bytes rather than 2,048.
    pub large_frames: bool,
    /// `outbound_queue_bytes` above the least allowed.
    pub outbound_extra: u32,
    /// `inbound_bytes_per_sec`.
    pub bytes_per_sec: u32,
    /// `inbound_bytes_burst` above the least allowed.
    pub bytes_burst_extra: u32,
    /// `inbound_frames_per_sec`.
    pub frames_per_sec: u16,
    /// `inbound_frames_burst`.
    pub frames_burst: u16,
    /// `server.memory_budget_bytes` above the least allowed.
    pub memory_extra: u32,
    /// Milliseconds of the first-frame, idle, send, login and checkpoint timeouts.
    pub timeouts_ms: [u32; 5],
    /// The service requires a login.
    pub login_required: bool,
    /// A message transport (WebSocket: whole frames in and out) instead of a stream.
    pub messages: bool,
}

/// One thing that happens to the connection.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum Step {
    /// The client sends a frame (it waits in the socket until read).
    Send(ClientFrame),
    /// The client sends these bytes; on a message transport, one message of them.
    SendRaw(Vec<u8>),
    /// The transport reads what was sent (up to this many bytes, or 1 to 4 messages)
    /// and the driver handles the events, unless input is paused for memory.
    Read(u32),
    /// This many milliseconds pass (modulo two minutes); the timer fires if due.
    Wait(u32),
    /// The timer task wakes up before the deadline.
    EarlyTimer,
    /// A handler answers the oldest unanswered request (payload size modulo the
    /// maximum plus a little, so that some are too large).
    Respond {
        /// The status.
        status: u16,
        /// Payload bytes.
        size: u32,
    },
    /// A handler pushes.
    Push {
        /// The route.
        route: u16,
        /// Payload bytes, as for `Respond`.
        size: u32,
        /// The handler is one that waits: its push is staged, then moved into the
        /// core, as the driver does after each poll.
        waiting: bool,
    },
    /// The hub delivers a broadcast: reserved in the budget, then queued as is.
    Broadcast {
        /// Payload bytes (always within a frame: the hub refuses larger pushes).
        size: u32,
    },
    /// The transport writes up to this many bytes (a stream) or 1 to 4 frames.
    Write(u32),
    /// A handler kicks the connection.
    Kick {
        /// The kick code.
        reason: u16,
        /// Characters of text.
        text_len: u32,
        /// Characters of several bytes, so a cut must find a boundary.
        wide: bool,
    },
    /// A handler marks the session dirty.
    MarkDirty,
    /// A handler logs the session in.
    LogIn,
    /// The driver hands idle buffers to the thread's spares and lends one back.
    Shed,
    /// Other connections take this many bytes of the server-wide memory budget, or
    /// give back up to this many.
    OtherConnections {
        /// Bytes.
        bytes: u32,
        /// Given back rather than taken.
        give_back: bool,
    },
    /// The client closes its side.
    PeerClosed,
    /// A handler offers the session a resume (once; later offers are ignored), with
    /// this many of the client's frames already held behind it and a replay of at
    /// most this many bytes.
    OfferSession {
        /// Frames held (modulo 4).
        held: u8,
        /// The replay's limit, in bytes.
        buffer: u16,
    },
    /// The connection is lost (the socket failed): a session offered a resume
    /// detaches and waits, as the driver has it; otherwise the connection closes.
    Lose,
    /// The client asks to end its session (it leaves on purpose): a loss then closes.
    Leave,
    /// A new connection resumes a detached session, saying it received the frames it
    /// did, less `back` (modulo 4), or (`beyond`) more than were sent.
    Resume {
        /// Frames claimed fewer than received.
        back: u8,
        /// Claims more than were sent.
        beyond: bool,
    },
}

/// A frame a client may send, or one it may not.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "fuzzing", derive(arbitrary::Arbitrary))]
pub enum ClientFrame {
    /// A request.
    Request {
        /// Its id.
        id: u32,
        /// Its route (some reserved).
        route: u16,
        /// Payload bytes.
        size: u16,
    },
    /// A notify.
    Notify {
        /// Its route (some reserved: ignored).
        route: u16,
        /// Payload bytes.
        size: u16,
    },
    /// A ping with a nonce of this many bytes (some over the limit).
    Ping(u8),
    /// A pong, ignored.
    Pong(u8),
    /// An empty frame, a keepalive.
    Empty,
    /// A kind only the server sends: response, push or kick.
    ServerOnly(u8),
    /// A header (a stream) or a message over the maximum, by this many bytes.
    TooLarge(u16),
    /// An acknowledgement of this many of the server's numbered frames.
    Ack(u64),
    /// A resume of the session, having received this many frames.
    Resume(u64),
}

impl Settings {
    /// The limits these numbers stand for; always valid.
    pub fn limits(&self) -> LimitsConfig {
        let max_frame_bytes = MAX_FRAME_FLOOR
            + if self.large_frames {
                self.max_frame as usize % 300_000
            } else {
                self.max_frame as usize % 2048
            };
        let largest = max_frame_bytes + HEADER_LEN;
        let ms = |i: usize| Duration::from_millis(1 + u64::from(self.timeouts_ms[i]) % 120_000);
        LimitsConfig {
            max_frame_bytes,
            outbound_queue_bytes: largest + self.outbound_extra as usize % (2 * largest + 8192),
            inbound_bytes_per_sec: 1 + self.bytes_per_sec % 10_000_000,
            inbound_bytes_burst: u32::try_from(largest).unwrap_or(u32::MAX)
                + self.bytes_burst_extra % 1_000_000,
            inbound_frames_per_sec: 1 + u32::from(self.frames_per_sec) % 1000,
            inbound_frames_burst: 1 + u32::from(self.frames_burst) % 1000,
            first_frame_timeout: ms(0),
            idle_timeout: ms(1),
            send_timeout: ms(2),
            login_timeout: ms(3),
            checkpoint_interval: ms(4),
            ..LimitsConfig::default()
        }
    }

    /// The server-wide memory budget.
    pub fn memory_budget(&self) -> usize {
        self.limits().max_frame_bytes + HEADER_LEN + self.memory_extra as usize % 400_000
    }
}

/// The client's side: what it sent, and what the specification says the server must
/// make of it (an independent reading of the bytes the core was given).
struct Client {
    messages: bool,
    max: usize,
    /// Sent, not yet read by the transport: bytes (a stream) or message bodies.
    unread: VecDeque<Vec<u8>>,
    /// Read by the transport and not yet cut by the reference reading.
    cutting: Vec<u8>,
    /// The events the core must produce, in order.
    events: Vec<Event>,
    /// The nonces of the pongs the core must send, in order.
    pongs: Vec<Bytes>,
    /// Why the reading stopped: the close the core must decide at that point.
    violation: Option<DisconnectReason>,
    /// Frames cut so far (a `resume` may only be the first).
    frames_cut: u64,
    /// The numbered frames the server sent, once a session was offered (set before
    /// each read: nothing numbered is sent while a batch is cut).
    session_sent: Option<u64>,
}

impl Client {
    fn send(&mut self, bytes: Vec<u8>) {
        if self.messages {
            self.unread.push_back(bytes);
        } else if let Some(last) = self.unread.back_mut() {
            last.extend_from_slice(&bytes);
        } else {
            self.unread.push_back(bytes);
        }
    }

    fn send_frame(&mut self, frame: &ClientFrame) {
        let sized = |size: u16| Bytes::from(vec![0x5a; usize::from(size)]);
        let message = match *frame {
            ClientFrame::Request { id, route, size } => Message::Request {
                id,
                route,
                payload: sized(size),
            },
            ClientFrame::Notify { route, size } => Message::Notify {
                route,
                payload: sized(size),
            },
            ClientFrame::Ping(len) => Message::Ping(sized(u16::from(len) % 80)),
            ClientFrame::Pong(len) => Message::Pong(sized(u16::from(len) % 80)),
            ClientFrame::Empty => Message::Empty,
            ClientFrame::Ack(count) => Message::Ack { count },
            ClientFrame::Resume(received) => Message::Resume {
                id: SESSION_ID,
                received,
                token: [0; 32],
            },
            ClientFrame::ServerOnly(which) => match which % 3 {
                0 => Message::Response {
                    id: 1,
                    status: Status::OK,
                    payload: Bytes::new(),
                },
                1 => Message::Push {
                    route: 1,
                    payload: Bytes::new(),
                },
                _ => Message::Kick {
                    reason: KickReason::IDLE,
                    text: String::new(),
                },
            },
            ClientFrame::TooLarge(over) => {
                let announced = self.max + 1 + usize::from(over);
                if self.messages {
                    self.send(vec![0; announced]);
                } else {
                    let announced = u32::try_from(announced).unwrap_or(u32::MAX);
                    self.send(announced.to_be_bytes().to_vec());
                }
                return;
            }
        };
        let frame = message.to_frame();
        if self.messages {
            self.send(frame[HEADER_LEN..].to_vec());
        } else {
            self.send(frame.to_vec());
        }
    }

    /// Hands what was sent to the core, as the transport does.
    fn read(&mut self, core: &mut ConnectionCore, amount: u32) {
        if self.messages {
            for _ in 0..1 + amount % 4 {
                let Some(body) = self.unread.pop_front() else {
                    break;
                };
                core.receive_frame(&body);
                let announced = u32::try_from(body.len()).unwrap_or(u32::MAX);
                self.cutting.extend_from_slice(&announced.to_be_bytes());
                if body.len() <= self.max {
                    self.cutting.extend_from_slice(&body);
                }
            }
        } else if let Some(bytes) = self.unread.front_mut() {
            let n = bytes.len().min(amount as usize);
            let read: Vec<u8> = bytes.drain(..n).collect();
            core.recv_buffer().put_slice(&read);
            self.cutting.extend_from_slice(&read);
        }
        self.cut();
    }

    /// The reference reading: the frames of what was read, by the specification.
    fn cut(&mut self) {
        let mut at = 0;
        while self.violation.is_none() {
            let Some(header) = self.cutting.get(at..at + HEADER_LEN) else {
                break;
            };
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            if len > self.max {
                self.violation = Some(DisconnectReason::FrameTooLarge);
                break;
            }
            let Some(body) = self.cutting.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
                break;
            };
            at += HEADER_LEN + len;
            let first = self.frames_cut == 0;
            self.frames_cut += 1;
            match Message::decode(Bytes::copy_from_slice(body)) {
                Ok(Message::Ack { count }) => {
                    if self.session_sent.is_some_and(|sent| count > sent) {
                        self.violation = Some(DisconnectReason::ProtocolError);
                    }
                }
                Ok(Message::Resume { .. }) if first => {
                    self.violation = Some(DisconnectReason::Kicked(KickReason::RESUME_FAILED));
                }
                Ok(Message::Request { id, route, payload }) => {
                    self.events.push(Event::Request { id, route, payload });
                }
                Ok(Message::Notify { route, payload }) if route < RESERVED_ROUTES_START => {
                    self.events.push(Event::Notify { route, payload });
                }
                Ok(Message::Ping(nonce)) => self.pongs.push(nonce),
                Ok(Message::Notify { .. } | Message::Pong(_) | Message::Empty) => {}
                Ok(_) | Err(_) => self.violation = Some(DisconnectReason::ProtocolError),
            }
        }
        self.cutting.drain(..at);
    }
}

/// What the server sent, read back frame by frame, against what was queued.
#[derive(Default)]
struct Received {
    /// Written by the transport, not yet a whole frame.
    partial: Vec<u8>,
    /// Responses and pushes queued, in order (a slow consumer's may be missing).
    queued: Vec<Message>,
    /// How far `queued` has been matched.
    matched: usize,
    pongs: usize,
    kick: Option<(KickReason, String)>,
    /// A session was offered, and whether its frame came.
    offered: bool,
    session_frames: usize,
    /// The last acknowledgement's count.
    acked: u64,
    /// Where in `queued` the session's numbered frames start (its offer).
    offered_at: usize,
    /// The session's numbered frames (responses and pushes after its first
    /// `session` frame) received whole, as the client counts them.
    numbered: u64,
    /// Resumes taken: each is answered `resumed` first, and renews the session.
    resumes: usize,
    /// A resume was taken and its `resumed` has not come yet.
    awaiting_resumed: bool,
    /// Up to here `queued` is a resume's replay: each must come, in order.
    replayed_until: usize,
}

impl Received {
    fn wrote(&mut self, bytes: &[u8], max: usize, client: &Client) {
        assert!(
            self.kick.is_none() || bytes.is_empty(),
            "output after the kick"
        );
        self.partial.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(header) = self.partial.get(at..at + HEADER_LEN) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            assert!(
                len <= max,
                "a frame of {len} bytes went out; the maximum is {max}"
            );
            let Some(body) = self.partial.get(at + HEADER_LEN..at + HEADER_LEN + len) else {
                break;
            };
            at += HEADER_LEN + len;
            assert!(self.kick.is_none(), "a frame after the kick");
            let message = Message::decode(Bytes::copy_from_slice(body))
                .unwrap_or_else(|e| panic!("the server sent a malformed frame: {e}"));
            // First `resumed`, unless a slow consumer's kick dropped it with the rest.
            if self.awaiting_resumed && !matches!(message, Message::Kick { .. }) {
                assert!(
                    matches!(message, Message::Resumed { .. }),
                    "a resume answered first with a {}",
                    message.kind_name()
                );
                self.awaiting_resumed = false;
                continue;
            }
            match message {
                Message::Pong(nonce) => {
                    assert_eq!(
                        client.pongs.get(self.pongs),
                        Some(&nonce),
                        "pongs out of order"
                    );
                    self.pongs += 1;
                }
                Message::Kick { reason, text } => self.kick = Some((reason, text)),
                Message::Session { id, .. } => {
                    assert!(self.offered && id == SESSION_ID, "a session never offered");
                    self.session_frames += 1;
                    assert!(
                        self.session_frames <= 1 + self.resumes,
                        "the session offered twice"
                    );
                }
                Message::Ack { count } => {
                    assert!(self.offered, "an ack without a session");
                    assert!(count > self.acked, "acks that do not grow");
                    self.acked = count;
                }
                Message::Response { .. } | Message::Push { .. } => {
                    if self.session_frames > 0 {
                        self.numbered += 1;
                    }
                    if self.matched < self.replayed_until {
                        assert!(
                            self.queued[self.matched] == message,
                            "the replay is not the frames the client lacks, in order"
                        );
                        self.matched += 1;
                        continue;
                    }
                    // Later frames may have been dropped (a slow consumer), never reordered.
                    let Some(skip) = self.queued[self.matched..]
                        .iter()
                        .position(|q| *q == message)
                    else {
                        panic!("{} went out unqueued or out of order", message.kind_name());
                    };
                    self.matched += skip + 1;
                }
                other => panic!("the server sent a {}", other.kind_name()),
            }
        }
        self.partial.drain(..at);
    }
}

/// The driver's and the game's side of one run.
struct Run {
    core: ConnectionCore,
    budget: Arc<OutboundBudget>,
    config: Arc<CoreConfig>,
    client: Client,
    received: Received,
    /// Requests handed to the game and not yet answered.
    unanswered: VecDeque<u32>,
    /// The events the core produced.
    events: Vec<Event>,
    now: Instant,
    armed: Instant,
    /// Bytes of the memory budget other connections hold.
    others: usize,
    /// Payloads are filled with a counter, so that each is told from the others.
    serial: u8,
    /// The close, once decided (and its kick queued).
    closed: Option<Close>,
    /// The connection is gone and its session waits for a resume: nothing is read
    /// or written, and what is queued is discarded.
    lost: bool,
}

/// Runs `script` from `start` and checks every invariant; panics on the first broken.
pub(crate) fn run(script: &Script, start: Instant) {
    let limits = script.settings.limits();
    let whole = Config {
        limits: limits.clone(),
        server: ServerConfig {
            memory_budget_bytes: script.settings.memory_budget(),
            ..ServerConfig::default()
        },
        ..Config::default()
    };
    if let Err(invalid) = whole.validate() {
        panic!("the script's settings map to an invalid configuration: {invalid}");
    }
    let config = Arc::new(CoreConfig::new(
        limits.clone(),
        whole.server.memory_budget_bytes,
        script.settings.login_required,
    ));
    let budget = Arc::new(OutboundBudget::new(
        limits.outbound_queue_bytes,
        config.memory.clone(),
    ));
    let mut core = ConnectionCore::new(config.clone(), budget.clone(), start);
    let armed = core.poll_timeout(start, false);
    let mut run = Run {
        core,
        budget,
        config,
        client: Client {
            messages: script.settings.messages,
            max: limits.max_frame_bytes,
            unread: VecDeque::new(),
            cutting: Vec::new(),
            events: Vec::new(),
            pongs: Vec::new(),
            violation: None,
            frames_cut: 0,
            session_sent: None,
        },
        received: Received::default(),
        unanswered: VecDeque::new(),
        events: Vec::new(),
        now: start,
        armed,
        others: 0,
        serial: 0,
        closed: None,
        lost: false,
    };
    for step in &script.steps {
        run.step(step);
        run.check_budgets();
    }
    run.finish();
}

impl Run {
    fn limits(&self) -> &LimitsConfig {
        &self.config.limits
    }

    fn payload(&mut self, size: u32) -> Bytes {
        self.serial = self.serial.wrapping_add(1);
        let len = size as usize % (self.limits().max_frame_bytes + 64);
        Bytes::from(vec![self.serial; len])
    }

    fn step(&mut self, step: &Step) {
        // Once closing, the driver only writes what is left (within the linger).
        if self.closed.is_some() {
            if let (Step::Write(n), false) = (step, self.lost) {
                self.write(*n);
            }
            return;
        }
        match step {
            // Into the void while the connection is lost.
            Step::Send(_) | Step::SendRaw(_) | Step::Read(_) | Step::Write(_) if self.lost => {}
            Step::Send(frame) => self.client.send_frame(frame),
            Step::SendRaw(bytes) => self.client.send(bytes.clone()),
            Step::Read(amount) => {
                if !self.core.input_paused() {
                    self.client.session_sent = self.core.session_sent();
                    self.client.read(&mut self.core, *amount);
                    self.handle_events();
                }
            }
            Step::Wait(ms) => {
                self.now += Duration::from_millis(u64::from(*ms) % 120_000);
                if self.now >= self.armed {
                    self.fire_timer();
                }
            }
            Step::EarlyTimer => {
                let due = self.core.poll_timeout(self.now, false);
                if self.now < due {
                    self.core.handle_timeout(self.now, false);
                    assert!(!self.core.is_closing(), "closed before its deadline");
                    assert!(
                        !self.core.take_checkpoint(self.now),
                        "checkpoint before its time"
                    );
                }
            }
            Step::Respond { status, size } => {
                if let Some(id) = self.unanswered.pop_front() {
                    let payload = self.payload(*size);
                    let max = self.limits().max_frame_bytes;
                    let status = Status(*status);
                    self.core.respond(id, status, &payload);
                    self.received.queued.push(if 7 + payload.len() <= max {
                        Message::Response {
                            id,
                            status,
                            payload,
                        }
                    } else {
                        Message::Response {
                            id,
                            status: Status::INTERNAL_ERROR,
                            payload: Bytes::from_static(b"response too large"),
                        }
                    });
                }
            }
            Step::Push {
                route,
                size,
                waiting,
            } => {
                let payload = self.payload(*size);
                let push = Message::Push {
                    route: *route,
                    payload: payload.clone(),
                };
                let fits = push.body_len() <= self.limits().max_frame_bytes;
                let was_closing = self.core.is_closing();
                let queued = if *waiting {
                    let staged = Staged::new(self.core.max_frame_bytes(), self.budget.clone());
                    let queued = staged.push(*route, payload);
                    staged.apply(&mut self.core);
                    queued
                } else {
                    self.core.push(*route, payload)
                };
                if queued {
                    assert!(fits, "a push over the maximum was queued");
                    self.received.queued.push(push);
                } else {
                    assert!(
                        !fits || self.core.is_closing(),
                        "a push refused for nothing"
                    );
                    assert!(
                        fits || self.core.is_closing() == was_closing,
                        "too large closes"
                    );
                }
            }
            Step::Broadcast { size } => {
                // Within a frame: the hub refuses larger pushes before they get here.
                let mut payload = self.payload(*size);
                payload.truncate(self.limits().max_frame_bytes - 3);
                let push = Message::Push {
                    route: 0x7fff,
                    payload,
                };
                let frame = push.to_frame();
                // As the mailbox does: reserve, or mark a slow consumer.
                if self.budget.reserve(frame.len()) {
                    self.core.queue_reserved_frame(frame);
                    self.received.queued.push(push);
                } else {
                    self.core.close(DisconnectReason::SlowConsumer, None);
                }
            }
            Step::Write(n) => self.write(*n),
            Step::Kick {
                reason,
                text_len,
                wide,
            } => {
                let len = *text_len as usize % (2 * self.limits().max_frame_bytes + 16);
                let text: String = if *wide {
                    "é😀".chars().cycle().take(len).collect()
                } else {
                    "k".repeat(len)
                };
                self.core.kick(KickReason(*reason), text);
            }
            Step::MarkDirty => self.core.mark_dirty(),
            Step::LogIn => self.core.set_logged_in(),
            Step::Shed => {
                let (recv, send) = self.core.take_spare_buffers();
                if let Some(spare) = send.or(recv) {
                    let _ = self.core.lend_send_buffer(spare);
                }
            }
            Step::OtherConnections { bytes, give_back } => {
                let bytes = *bytes as usize % 400_000;
                if *give_back {
                    let back = bytes.min(self.others);
                    self.config.memory.refund(back);
                    self.others -= back;
                } else {
                    self.config.memory.force(bytes);
                    self.others += bytes;
                }
            }
            Step::PeerClosed => self.core.close(DisconnectReason::PeerClosed, None),
            Step::OfferSession { held, buffer } => {
                if !self.received.offered {
                    self.received.offered = true;
                    let held = u64::from(*held % 4);
                    self.received.offered_at = self.received.queued.len();
                    self.core
                        .offer_session(SESSION_ID, 1_000, [0; 32], held, usize::from(*buffer));
                }
            }
            Step::Lose => self.lose(),
            Step::Leave => self.core.leave_session(),
            Step::Resume { back, beyond } => {
                if self.lost {
                    self.resume(*back, *beyond);
                }
            }
        }
        if self.lost {
            // As the driver does while the session waits: its output goes nowhere.
            self.core.discard_output();
        }
        self.after_step();
    }

    /// The connection is lost: the session detaches, or the connection closes.
    fn lose(&mut self) {
        let reason = DisconnectReason::PeerClosed;
        if !self.core.may_detach(&reason) {
            self.core.close(reason, None);
            return;
        }
        self.core.detach(Close::from(reason), self.now, WINDOW);
        assert!(
            self.core.is_detached() && !self.core.has_output(),
            "a detached session keeps output"
        );
        self.lost = true;
        // What was in flight either way is gone with the connection.
        self.client.unread.clear();
        self.client.cutting.clear();
        self.received.partial.clear();
        // Pongs not yet written went with it too: the next is for a later ping.
        self.received.pongs = self.client.pongs.len();
        self.armed = self.core.poll_timeout(self.now, false);
        assert!(
            self.armed <= self.now + WINDOW,
            "the window is not the session's deadline"
        );
    }

    /// A new connection resumes the lost one's session, as the driver hands it over.
    fn resume(&mut self, back: u8, beyond: bool) {
        let sent = self
            .core
            .session_sent()
            .unwrap_or_else(|| panic!("detached without a session"));
        let claimed = if beyond {
            sent + 1 + u64::from(back % 4)
        } else {
            self.received.numbered.saturating_sub(u64::from(back % 4))
        };
        match self.core.resume(claimed, BytesMut::new(), self.now) {
            Ok(()) => {
                assert!(claimed <= sent, "a resume beyond what was sent was taken");
                self.lost = false;
                // The new connection's first frame was the resume: another is an error.
                self.client.frames_cut += 1;
                self.received.resumes += 1;
                self.received.awaiting_resumed = true;
                self.received.numbered = claimed;
                let from =
                    self.received.offered_at + usize::try_from(claimed).unwrap_or(usize::MAX);
                self.received.matched = from.min(self.received.queued.len());
                self.received.replayed_until = self.received.queued.len();
                self.core.renew_session(SESSION_ID, 1_000, |_| [1; 32]);
            }
            Err(ReplayRefusal::BeyondSent { received, .. }) => {
                assert!(received > sent, "a resume within what was sent refused");
                assert!(
                    self.core.is_detached(),
                    "a refused resume ended the session"
                );
            }
            Err(ReplayRefusal::Gap { received, .. }) => {
                assert!(
                    received <= sent,
                    "a claim beyond what was sent taken for a gap"
                );
                assert!(
                    !self.core.replay_serves(received),
                    "a gap the replay could serve"
                );
                self.core.end_with_gap();
            }
        }
    }

    /// What the driver does after each wakeup: takes a close decision, or re-arms
    /// the timer if the deadline moved closer.
    fn after_step(&mut self) {
        if self.closed.is_some() {
            return;
        }
        if self.core.is_closing() {
            self.close();
            return;
        }
        let due = self.core.poll_timeout(self.now, false);
        if due < self.armed {
            self.armed = due;
        }
    }

    /// The driver's loop over events: each is handed to the game.
    fn handle_events(&mut self) {
        while let Some(event) = self.core.poll_event(self.now) {
            if let Event::Request { id, .. } = event {
                self.unanswered.push_back(id);
            }
            self.events.push(event);
        }
        let expected = &self.client.events;
        assert!(
            self.events.len() <= expected.len() && self.events[..] == expected[..self.events.len()],
            "events differ from what the client sent: {:?} vs {:?}",
            self.events,
            expected
        );
        match self.core.take_close() {
            None => {
                assert_eq!(self.events.len(), expected.len(), "an event was lost");
                assert_eq!(self.client.violation, None, "a violation went unnoticed");
                if !self.core.input_paused() {
                    assert_eq!(
                        self.core.charged_input(),
                        above_free(self.core.buffered_input()),
                        "the partial frame's charge is not what it holds"
                    );
                }
            }
            Some(close) => {
                if matches!(
                    close.reason,
                    DisconnectReason::ProtocolError
                        | DisconnectReason::FrameTooLarge
                        | DisconnectReason::Kicked(KickReason::RESUME_FAILED)
                ) {
                    assert_eq!(self.client.violation.as_ref(), Some(&close.reason));
                    assert_eq!(
                        self.events.len(),
                        expected.len(),
                        "events before it were lost"
                    );
                }
                self.closing(close);
            }
        }
    }

    fn fire_timer(&mut self) {
        self.core.handle_timeout(self.now, false);
        let checkpoint = self.core.take_checkpoint(self.now);
        if self.core.is_closing() {
            return;
        }
        assert!(
            !self.core.take_checkpoint(self.now),
            "a checkpoint taken twice"
        );
        self.armed = self.core.poll_timeout(self.now, false);
        assert!(
            self.armed > self.now,
            "the timer fired and left a deadline not in the future (checkpoint: {checkpoint})"
        );
    }

    /// The close decision, taken as the driver takes it.
    fn close(&mut self) {
        let close = self.core.take_close();
        let close = close.unwrap_or_else(|| panic!("closing, but no decision to take"));
        self.closing(close);
    }

    fn closing(&mut self, close: Close) {
        assert!(self.closed.is_none(), "a second close decision");
        assert!(
            self.core.take_close().is_none(),
            "a close decision taken twice"
        );
        self.core.queue_kick(&close);
        self.closed = Some(close);
    }

    /// The transport writes.
    fn write(&mut self, amount: u32) {
        let max = self.limits().max_frame_bytes;
        if self.client.messages {
            for _ in 0..1 + amount % 4 {
                let Some(body) = self.core.take_output_frame() else {
                    break;
                };
                let mut frame = BytesMut::with_capacity(HEADER_LEN + body.len());
                frame.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
                frame.put_slice(&body);
                self.received.wrote(&frame, max, &self.client);
            }
        } else {
            let queued = self.queued_output();
            let n = queued.len().min(amount as usize);
            self.core.consume_output(n);
            self.received.wrote(&queued[..n], max, &self.client);
        }
    }

    /// Everything queued for the transport, in order.
    fn queued_output(&self) -> Vec<u8> {
        let mut slices = vec![IoSlice::new(&[]); 2 * self.received.queued.len() + 4];
        let n = self.core.output_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    fn check_budgets(&self) {
        let queued = self.queued_output().len();
        assert_eq!(
            self.budget.unsent(),
            queued,
            "the budget is not what is queued"
        );
        let kick_allowance = if self.closed.is_some() {
            HEADER_LEN + self.limits().max_frame_bytes
        } else {
            0
        };
        assert!(
            queued <= self.limits().outbound_queue_bytes + kick_allowance,
            "{queued} bytes queued, over the outbound budget"
        );
        assert_eq!(
            self.config.memory.used(),
            above_free(queued)
                + self.core.charged_input()
                + self.core.replay_charged()
                + self.others,
            "the memory budget is not what the connection holds"
        );
    }

    fn finish(mut self) {
        if self.closed.is_none() {
            self.core.close(DisconnectReason::Shutdown, None);
            self.close();
        }
        if self.lost {
            // Nowhere to write: nothing goes out since the loss, a kick included.
            self.core.discard_output();
        }
        while self.core.has_output() {
            self.write(u32::MAX);
        }
        self.check_budgets();
        assert!(self.received.partial.is_empty(), "a frame was cut short");
        assert_eq!(
            self.budget.unsent(),
            0,
            "all written, yet bytes are reserved"
        );
        let close = self.closed.take().unwrap_or_else(|| panic!("never closed"));
        match close.reason.kick().filter(|_| !self.lost) {
            Some(code) => {
                let (reason, text) = self
                    .received
                    .kick
                    .take()
                    .unwrap_or_else(|| panic!("no kick for {}", close.reason));
                assert_eq!(reason, code, "the kick's code is not its reason's");
                let full = close.kick_text(self.limits());
                assert!(
                    full.starts_with(&text),
                    "the kick's text is not its reason's"
                );
            }
            None => assert!(self.received.kick.is_none(), "a kick for {}", close.reason),
        }
        let Run {
            core,
            budget,
            config,
            others,
            ..
        } = self;
        drop(core);
        assert_eq!(
            config.memory.used(),
            others,
            "the core kept a charge after it was dropped"
        );
        config.memory.refund(others);
        drop(budget);
        assert_eq!(config.memory.used(), 0, "memory charged for nothing");
    }
}
