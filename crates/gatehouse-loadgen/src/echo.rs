//! The echo scenario: C connections, each keeping D requests in flight on the echo
//! route (pipelined: a request is issued as soon as one is answered), for a warm-up
//! and then a measured duration. Every response is checked against its request: the
//! id must be one in flight on that connection and the payload must be the request's
//! (each payload carries its id in its first bytes, over a pattern that differs per
//! connection). Throughput and latency count only responses received inside the
//! measured window; after it, requests in flight are drained (up to a timeout) so
//! that every request sent is accounted for: answered and verified, answered wrongly
//! (an error), or never answered (lost).
//!
//! With `resume`, each connection first logs in to the bench service, which then
//! offers a resumable session: the server numbers and keeps its answers, and the
//! generator acknowledges them every 32, as a resuming client does. This measures
//! what resume costs the server per request.
//!
//! Each connection is one task with one socket, one read buffer and one output
//! buffer preallocated for its D requests, into which requests are encoded in place;
//! it waits for readability and (while output is pending) writability together, so
//! a deep pipeline of large payloads can never deadlock against a server that stops
//! reading while its writes are blocked.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_protocol::routes::bench as routes;
use gatehouse_protocol::Message;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

use crate::net::{self, pong_frame};
use crate::procfs::CpuSample;
use crate::transport::{Conn, Transport};
use crate::wire::{self, FrameReader, Incoming};
use crate::{LoadError, Percentiles, Progress, Sources};

/// What to run.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// The server.
    pub addr: SocketAddr,
    /// Connections.
    pub connections: usize,
    /// Requests each connection keeps in flight.
    pub depth: usize,
    /// Payload bytes per request.
    pub payload: usize,
    /// Load before measuring (not counted in throughput or latency).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// How long requests still in flight after the window may take to be answered
    /// before they count as lost.
    pub drain_timeout: Duration,
    /// Source addresses.
    pub sources: Sources,
    /// What the connections run over (TCP by default).
    pub transport: Transport,
    /// The server's pid, to read its CPU time over the measured window (same
    /// machine): the server's cost per request, whatever bounds the throughput.
    pub server_pid: Option<u32>,
    /// Log each connection in first (a resumable session), and acknowledge.
    pub resume: bool,
}

impl EchoOptions {
    /// Options with the usual warm-up (1 s), drain timeout (5 s) and sources.
    pub fn new(
        addr: SocketAddr,
        connections: usize,
        depth: usize,
        payload: usize,
        duration: Duration,
    ) -> EchoOptions {
        EchoOptions {
            addr,
            connections,
            depth,
            payload,
            warmup: Duration::from_secs(1),
            duration,
            drain_timeout: Duration::from_secs(5),
            sources: Sources::for_target(addr, Sources::DEFAULT_PER_ADDRESS),
            transport: Transport::Tcp,
            server_pid: None,
            resume: false,
        }
    }
}

/// Deepest pipeline accepted (ids are spread over the slots of a connection).
pub const MAX_DEPTH: usize = 65_536;

/// The results, one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct EchoReport {
    /// Always "echo".
    pub scenario: &'static str,
    /// The server.
    pub addr: SocketAddr,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that opened and answered a first ping.
    pub connected: usize,
    /// Requests in flight per connection.
    pub depth: usize,
    /// Whether the connections logged in to resumable sessions (and acknowledged).
    pub resume: bool,
    /// Payload bytes per request.
    pub payload_bytes: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured window, seconds.
    pub duration_s: f64,
    /// Verified responses received inside the window, per second.
    pub requests_per_sec: f64,
    /// Verified responses received inside the window.
    pub measured_responses: u64,
    /// Requests sent, warm-up and drain included.
    pub sent: u64,
    /// Responses whose id and payload matched a request in flight.
    pub verified: u64,
    /// Responses that were wrong: `wrong_payload + bad_status + unknown_id`.
    pub errors: u64,
    /// Responses whose payload was not the request's.
    pub wrong_payload: u64,
    /// Responses with a non-zero status.
    pub bad_status: u64,
    /// Responses whose id was not in flight on that connection (duplicates too).
    pub unknown_id: u64,
    /// Requests never answered (connection closed, or still in flight when the
    /// drain timed out).
    pub lost: u64,
    /// Connections that ended before the end (closed, reset, kicked, or spoke
    /// something that is not the protocol).
    pub connections_closed: u64,
    /// Frames that are not responses (pushes, pongs, empty frames), ignored.
    pub other_frames: u64,
    /// Latency of the measured responses, request encoded → response read.
    pub latency: Percentiles,
    /// The server's CPU over the measured window, % of one core (with its pid).
    pub server_cpu_percent: Option<f64>,
    /// The server's CPU time per measured response, microseconds (with its pid).
    pub server_cpu_us_per_request: Option<f64>,
}

/// What one connection counted.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    sent: u64,
    verified: u64,
    measured: u64,
    wrong_payload: u64,
    bad_status: u64,
    unknown_id: u64,
    lost: u64,
    closed: u64,
    other_frames: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.verified += o.verified;
        self.measured += o.measured;
        self.wrong_payload += o.wrong_payload;
        self.bad_status += o.bad_status;
        self.unknown_id += o.unknown_id;
        self.lost += o.lost;
        self.closed += o.closed;
        self.other_frames += o.other_frames;
    }
}

/// Runs the scenario.
pub async fn run(options: &EchoOptions, progress: &Progress) -> Result<EchoReport, LoadError> {
    if options.connections == 0 || options.depth == 0 || options.depth > MAX_DEPTH {
        return Err(LoadError::Invalid(format!(
            "need at least one connection and a depth of 1 to {MAX_DEPTH}"
        )));
    }
    if 7 + options.payload > wire::MAX_BODY {
        return Err(LoadError::Invalid(format!(
            "payload of {} bytes makes a frame over {} bytes",
            options.payload,
            wire::MAX_BODY
        )));
    }
    progress.counted("connect", options.connections as u64);
    let (conns, _failed) = net::open_many(
        options.addr,
        &options.transport,
        options.sources,
        options.connections,
        256,
        progress,
    )
    .await?;
    let mut conns = conns;
    if options.resume {
        for (index, (stream, reader)) in conns.iter_mut().enumerate() {
            net::log_in(stream, reader, index)
                .await
                .map_err(|e| LoadError::Server(format!("logging connection {index} in: {e}")))?;
        }
    }
    let connected = conns.len();

    let histogram = Arc::new(Mutex::new(crate::new_histogram()));
    let measure_from = Instant::now() + options.warmup;
    let window = Window {
        from: measure_from,
        until: measure_from + options.duration,
        drain_until: measure_from + options.duration + options.drain_timeout,
    };
    let mut workers = tokio::task::JoinSet::new();
    for (index, (stream, reader)) in conns.into_iter().enumerate() {
        let worker = Worker::new(stream, reader, index, options);
        workers.spawn(worker.run(window, histogram.clone()));
    }
    if !options.warmup.is_zero() {
        progress.timed("warmup", options.warmup);
        tokio::time::sleep_until(measure_from.into()).await;
    }
    progress.timed("measure", options.duration);
    let cpu_sample = |pid| {
        CpuSample::take(pid)
            .map_err(|e| LoadError::Invalid(format!("cannot read /proc/{pid}: {e}")))
    };
    let cpu_before = options.server_pid.map(cpu_sample).transpose()?;
    tokio::time::sleep_until(window.until.into()).await;
    let cpu_after = options.server_pid.map(cpu_sample).transpose()?;
    let mut total = Counts::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(counts) => total.add(&counts),
            Err(e) => return Err(LoadError::Server(format!("echo worker failed: {e}"))),
        }
    }
    let latency =
        Percentiles::from_histogram(&histogram.lock().unwrap_or_else(PoisonError::into_inner));
    let duration_s = crate::secs(options.duration);
    let server_cpu = cpu_before.zip(cpu_after).map(|(before, after)| {
        (
            before.percent_of_core_until(&after),
            before.cpu_until(&after),
        )
    });
    Ok(EchoReport {
        scenario: "echo",
        addr: options.addr,
        connections: options.connections,
        connected,
        depth: options.depth,
        resume: options.resume,
        payload_bytes: options.payload,
        warmup_s: crate::secs(options.warmup),
        duration_s,
        requests_per_sec: if duration_s > 0.0 {
            total.measured as f64 / duration_s
        } else {
            0.0
        },
        measured_responses: total.measured,
        sent: total.sent,
        verified: total.verified,
        errors: total.wrong_payload + total.bad_status + total.unknown_id,
        wrong_payload: total.wrong_payload,
        bad_status: total.bad_status,
        unknown_id: total.unknown_id,
        lost: total.lost,
        connections_closed: total.closed,
        other_frames: total.other_frames,
        latency,
        server_cpu_percent: server_cpu.map(|(percent, _)| percent),
        server_cpu_us_per_request: server_cpu
            .filter(|_| total.measured > 0)
            .map(|(_, cpu)| cpu.as_secs_f64() * 1e6 / total.measured as f64),
    })
}

/// When to measure and when to stop.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Responses received from here on are measured…
    from: Instant,
    /// … until here, when new requests stop.
    until: Instant,
    /// Requests still unanswered here are lost.
    drain_until: Instant,
}

/// One request slot of a connection's pipeline.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The id of the request in this slot; ids of slot `s` are `s`, `s + D`, `s + 2D`…
    /// so that `id % D` finds the slot whatever order responses come in.
    id: u32,
    /// When the request was encoded.
    sent_at: Instant,
    /// Whether it awaits its response.
    waiting: bool,
}

/// One connection.
struct Worker {
    stream: Conn,
    reader: FrameReader,
    /// Encoded output; `out[written..]` is not yet written.
    out: Vec<u8>,
    written: usize,
    slots: Vec<Slot>,
    in_flight: usize,
    /// The payload pattern of this connection; each request stamps its id over the
    /// first (up to) 4 bytes.
    pattern: Vec<u8>,
    counts: Counts,
    /// With a resumable session: the server's numbered frames received, and the
    /// count last acknowledged.
    session: Option<(u64, u64)>,
}

impl Worker {
    fn new(stream: Conn, mut reader: FrameReader, index: usize, options: &EchoOptions) -> Worker {
        let frame = wire::request_len(options.payload);
        reader.ensure_capacity((options.depth * frame).clamp(4096, 1 << 20));
        let seed = (index as u8).wrapping_mul(31);
        let pattern = (0..options.payload)
            .map(|i| seed.wrapping_add(i as u8))
            .collect();
        let now = Instant::now();
        Worker {
            stream,
            reader,
            out: Vec::with_capacity(2 * options.depth * frame),
            written: 0,
            slots: (0..options.depth)
                .map(|slot| Slot {
                    // Invariant: depth ≤ MAX_DEPTH, so slot numbers fit in a u32.
                    id: u32::try_from(slot).unwrap_or(u32::MAX),
                    sent_at: now,
                    waiting: false,
                })
                .collect(),
            in_flight: 0,
            pattern,
            counts: Counts::default(),
            // The login's answer was the server's frame 1.
            session: options.resume.then_some((1, 0)),
        }
    }

    /// Encodes the request of `slot` (its current id) into the output.
    fn issue(&mut self, slot: usize, now: Instant) {
        let id = self.slots[slot].id;
        let stamp = id.to_be_bytes();
        let stamped = self.pattern.len().min(4);
        let body = u32::try_from(7 + self.pattern.len()).unwrap_or(u32::MAX);
        self.out.extend_from_slice(&body.to_be_bytes());
        self.out.push(wire::kind::REQUEST);
        self.out.extend_from_slice(&stamp);
        self.out.extend_from_slice(&routes::ECHO.to_be_bytes());
        self.out.extend_from_slice(&stamp[..stamped]);
        self.out.extend_from_slice(&self.pattern[stamped..]);
        let s = &mut self.slots[slot];
        s.sent_at = now;
        s.waiting = true;
        self.in_flight += 1;
        self.counts.sent += 1;
    }

    async fn run(mut self, window: Window, histogram: Arc<Mutex<Histogram<u64>>>) -> Counts {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            self.issue(slot, now);
        }
        let ended = if self.stream.as_tcp().is_some() {
            self.run_tcp(&window, &histogram).await
        } else {
            self.run_stream(&window, &histogram).await
        };
        if ended.is_err() {
            self.counts.closed += 1;
        }
        self.counts.lost += self.in_flight as u64;
        self.counts
    }

    /// TCP: readiness and `try_read`/`try_write` straight on the socket, the
    /// cheapest the generator can be.
    async fn run_tcp(
        &mut self,
        window: &Window,
        histogram: &Mutex<Histogram<u64>>,
    ) -> io::Result<()> {
        let deadline = tokio::time::sleep_until(window.until.into());
        tokio::pin!(deadline);
        let mut issuing = true;
        loop {
            let Some(stream) = self.stream.as_tcp() else {
                return Err(io::ErrorKind::Unsupported.into());
            };
            if !issuing && self.in_flight == 0 {
                return Ok(());
            }
            let interest = if self.written < self.out.len() {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let ready = tokio::select! {
                biased;
                ready = stream.ready(interest) => match ready {
                    Ok(ready) => ready,
                    Err(e) => return Err(e),
                },
                () = &mut deadline => {
                    if issuing {
                        issuing = false;
                        deadline.as_mut().reset(window.drain_until.into());
                        continue;
                    }
                    return Ok(()); // drain timed out: what is in flight is lost
                }
            };
            if ready.is_writable() && self.written < self.out.len() {
                match stream.try_write(&self.out[self.written..]) {
                    Ok(n) => {
                        self.written += n;
                        if self.written == self.out.len() {
                            self.out.clear();
                            self.written = 0;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            if ready.is_readable() {
                match stream.try_read(self.reader.spare()) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => {
                        self.reader.filled(n);
                        self.handle_frames(window, issuing, histogram)?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// TLS and WebSocket: the same loop through the stream's own polling, flushing
    /// what the transport holds.
    async fn run_stream(
        &mut self,
        window: &Window,
        histogram: &Mutex<Histogram<u64>>,
    ) -> io::Result<()> {
        enum Step {
            Wrote(usize),
            Read(usize),
            Flushed,
            Deadline,
        }
        let deadline = tokio::time::sleep_until(window.until.into());
        tokio::pin!(deadline);
        let mut issuing = true;
        let mut unflushed = false;
        loop {
            if !issuing && self.in_flight == 0 {
                return Ok(());
            }
            let (stream, reader, pending) = (
                &mut self.stream,
                &mut self.reader,
                &self.out[self.written..],
            );
            let step = std::future::poll_fn(|cx| {
                if !pending.is_empty() {
                    if let Poll::Ready(written) = Pin::new(&mut *stream).poll_write(cx, pending) {
                        return Poll::Ready(written.map(Step::Wrote));
                    }
                } else if unflushed {
                    if let Poll::Ready(flushed) = Pin::new(&mut *stream).poll_flush(cx) {
                        return Poll::Ready(flushed.map(|()| Step::Flushed));
                    }
                }
                let mut buf = ReadBuf::new(reader.spare());
                if let Poll::Ready(read) = Pin::new(&mut *stream).poll_read(cx, &mut buf) {
                    return Poll::Ready(read.map(|()| Step::Read(buf.filled().len())));
                }
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(Step::Deadline));
                }
                Poll::Pending
            })
            .await?;
            match step {
                Step::Wrote(n) => {
                    self.written += n;
                    unflushed = true;
                    if self.written == self.out.len() {
                        self.out.clear();
                        self.written = 0;
                    }
                }
                Step::Flushed => unflushed = false,
                Step::Read(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Step::Read(n) => {
                    self.reader.filled(n);
                    self.handle_frames(window, issuing, histogram)?;
                }
                Step::Deadline if issuing => {
                    issuing = false;
                    deadline.as_mut().reset(window.drain_until.into());
                }
                Step::Deadline => return Ok(()), // drain timed out: what is in flight is lost
            }
        }
    }

    /// Handles every complete frame read; errors end the connection.
    fn handle_frames(
        &mut self,
        window: &Window,
        issuing: bool,
        shared_histogram: &Mutex<Histogram<u64>>,
    ) -> io::Result<()> {
        let now = Instant::now();
        let measured = window.from <= now && now < window.until;
        let issuing = issuing && now < window.until;
        let depth = self.slots.len();
        // Drop what was written, so that new requests append to a short buffer.
        if self.written > 0 {
            self.out.drain(..self.written);
            self.written = 0;
        }
        let mut histogram = None;
        loop {
            let frame = self
                .reader
                .next_frame()
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            let Some(body) = frame else { break };
            match wire::parse(body) {
                Incoming::Response {
                    id,
                    status,
                    payload,
                } => {
                    let slot = id as usize % depth;
                    let s = self.slots[slot];
                    if !s.waiting || s.id != id {
                        self.counts.unknown_id += 1;
                        continue;
                    }
                    if status != 0 {
                        self.counts.bad_status += 1;
                    } else if !payload_matches(&self.pattern, id, payload) {
                        self.counts.wrong_payload += 1;
                    } else {
                        self.counts.verified += 1;
                        if measured {
                            self.counts.measured += 1;
                            let h = histogram.get_or_insert_with(|| {
                                shared_histogram
                                    .lock()
                                    .unwrap_or_else(PoisonError::into_inner)
                            });
                            crate::record(h, now - s.sent_at);
                        }
                    }
                    self.slots[slot].waiting = false;
                    self.in_flight -= 1;
                    if let Some((received, acked)) = &mut self.session {
                        *received += 1;
                        if *received - *acked >= 32 {
                            *acked = *received;
                            self.out
                                .extend_from_slice(&Message::Ack { count: *received }.to_frame());
                        }
                    }
                    if issuing {
                        // Ids of a slot step by the depth; u32 wraps only after
                        // four billion requests on one connection.
                        self.slots[slot].id = id.wrapping_add(depth as u32);
                        self.issue(slot, now);
                    }
                }
                Incoming::Ping(nonce) => {
                    let pong = pong_frame(nonce)
                        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
                    self.out
                        .extend_from_slice(&pong[..wire::HEADER + 1 + nonce.len()]);
                }
                Incoming::Kick { .. } => {
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
                Incoming::Unexpected | Incoming::Resumed => {
                    return Err(io::ErrorKind::InvalidData.into())
                }
                Incoming::Push { .. }
                | Incoming::Pong(_)
                | Incoming::Empty
                | Incoming::Session { .. }
                | Incoming::Ack => {
                    self.counts.other_frames += 1;
                }
            }
        }
        Ok(())
    }
}

/// Whether an echoed payload is the one sent with `id`: the pattern with the id
/// stamped over its first (up to) 4 bytes.
fn payload_matches(pattern: &[u8], id: u32, payload: &[u8]) -> bool {
    let stamped = pattern.len().min(4);
    payload.len() == pattern.len()
        && payload[..stamped] == id.to_be_bytes()[..stamped]
        && payload[stamped..] == pattern[stamped..]
}
