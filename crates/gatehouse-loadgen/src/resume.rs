//! The resume scenario (`gatehouse bench resume`): what taking a session over costs
//! the server (`docs/PROTOCOL.md`, "session, resume, resumed and ack"). C
//! connections log in to the bench service, whose sessions resume, and each leaves
//! `replay` bytes of echo answers unacknowledged (it reads them, and says it did
//! not). Then every connection is dropped and, all at once, each session is resumed
//! on a new connection: the server sends `resumed` and replays those answers. It
//! reports, per session, the time from its `resume` written to the last frame of
//! its replay read, and for all of them, the time from the first connect to the last
//! replay done.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gatehouse_protocol::routes::bench as routes;
use gatehouse_protocol::Message;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::net::{self, log_in, Session};
use crate::transport::{Conn, Transport};
use crate::wire::{self, FrameReader, Incoming};
use crate::{LoadError, Percentiles, Progress, Sources};

/// Largest echo payload used to fill a replay: one frame of 16 KiB in all.
const CHUNK: usize = 16 * 1024 - wire::HEADER - 7;

/// What to run.
#[derive(Debug, Clone)]
pub struct ResumeOptions {
    /// The server.
    pub addr: SocketAddr,
    /// Sessions resumed at once.
    pub connections: usize,
    /// Bytes of answers each session leaves unacknowledged, for its replay (at most
    /// the server's `resume.buffer_bytes`).
    pub replay_bytes: usize,
    /// How long the whole run may take before what is unfinished counts as failed.
    pub timeout: Duration,
    /// Source addresses.
    pub sources: Sources,
}

impl ResumeOptions {
    /// Options with a 30 s timeout and the usual sources.
    pub fn new(addr: SocketAddr, connections: usize, replay_bytes: usize) -> ResumeOptions {
        ResumeOptions {
            addr,
            connections,
            replay_bytes,
            timeout: Duration::from_secs(30),
            sources: Sources::for_target(addr, Sources::DEFAULT_PER_ADDRESS),
        }
    }
}

/// The results, one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    /// Always "resume".
    pub scenario: &'static str,
    /// The server.
    pub addr: SocketAddr,
    /// Sessions asked for.
    pub connections: usize,
    /// Sessions logged in with their replay filled.
    pub prepared: usize,
    /// Sessions resumed with their whole replay.
    pub resumed: usize,
    /// Sessions whose resume failed (refused, cut short, or not done in time).
    pub failed: usize,
    /// Bytes of each replay (whole frames).
    pub replay_bytes: usize,
    /// Frames of each replay.
    pub replay_frames: usize,
    /// From a session's `resume` written to the last frame of its replay read.
    pub latency: Percentiles,
    /// From the first new connect to the last replay done, milliseconds.
    pub all_resumed_ms: f64,
}

/// Runs the scenario (over TCP).
pub async fn run(options: &ResumeOptions, progress: &Progress) -> Result<ResumeReport, LoadError> {
    if options.connections == 0 || options.replay_bytes < wire::HEADER + 7 {
        return Err(LoadError::Invalid(
            "need at least one connection and a replay of at least one frame".into(),
        ));
    }
    // Whole frames of at most CHUNK payload, adding up to at most replay_bytes.
    let mut payloads = Vec::new();
    let mut left = options.replay_bytes;
    while left >= wire::HEADER + 7 {
        let payload = (left - wire::HEADER - 7).min(CHUNK);
        payloads.push(payload);
        left -= wire::HEADER + 7 + payload;
    }
    let replay_bytes = options.replay_bytes - left;
    let deadline = tokio::time::Instant::now() + options.timeout;

    progress.counted("prepare", options.connections as u64);
    let (conns, _failed) = net::open_many(
        options.addr,
        &Transport::Tcp,
        options.sources,
        options.connections,
        256,
        progress,
    )
    .await?;
    let payloads = Arc::new(payloads);
    let mut preparing = tokio::task::JoinSet::new();
    for (index, (stream, reader)) in conns.into_iter().enumerate() {
        let payloads = payloads.clone();
        preparing.spawn(tokio::time::timeout_at(
            deadline,
            prepare(stream, reader, index, payloads),
        ));
    }
    let mut sessions = Vec::new();
    while let Some(prepared) = preparing.join_next().await {
        if let Ok(Ok(Ok(session))) = prepared {
            sessions.push(session);
        }
    }
    let prepared = sessions.len();

    // Every connection was dropped; now all of them come back at once.
    progress.counted("resume", prepared as u64);
    let histogram = Arc::new(Mutex::new(crate::new_histogram()));
    let started = Instant::now();
    let mut resuming = tokio::task::JoinSet::new();
    for (index, session) in sessions.into_iter().enumerate() {
        let (histogram, frames, transport) = (histogram.clone(), payloads.len(), Transport::Tcp);
        let (addr, source) = (options.addr, options.sources.source(index));
        resuming.spawn(tokio::time::timeout_at(deadline, async move {
            let mut stream = net::connect(addr, source, &transport).await.ok()?;
            let took = resume(&mut stream, &session, frames).await?;
            crate::record(
                &mut histogram.lock().unwrap_or_else(PoisonError::into_inner),
                took,
            );
            Some(Instant::now())
        }));
    }
    let (mut resumed, mut last) = (0, started);
    while let Some(done) = resuming.join_next().await {
        if let Ok(Ok(Some(at))) = done {
            resumed += 1;
            last = last.max(at);
        }
    }
    let latency =
        Percentiles::from_histogram(&histogram.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(ResumeReport {
        scenario: "resume",
        addr: options.addr,
        connections: options.connections,
        prepared,
        resumed,
        failed: options.connections - resumed,
        replay_bytes,
        replay_frames: payloads.len(),
        latency,
        all_resumed_ms: (last - started).as_secs_f64() * 1e3,
    })
}

/// Logs connection `index` in, acknowledges the login's answer, and reads the echo
/// answers of `payloads` without acknowledging them: they are the session's replay.
/// The connection is dropped when this returns.
async fn prepare(
    mut stream: Conn,
    mut reader: FrameReader,
    index: usize,
    payloads: Arc<Vec<usize>>,
) -> std::io::Result<Session> {
    let session = log_in(&mut stream, &mut reader, index).await?;
    let mut out = Message::Ack { count: 1 }.to_frame().to_vec();
    let filler = vec![0x5a; CHUNK];
    for (id, &payload) in payloads.iter().enumerate() {
        let id = u32::try_from(id).unwrap_or(u32::MAX);
        wire::put_request(&mut out, id, routes::ECHO, &filler[..payload]);
    }
    stream.write_all(&out).await?;
    reader.ensure_capacity(2 * CHUNK);
    let mut answered = 0;
    while answered < payloads.len() {
        while let Some(body) = reader.next_frame().map_err(invalid)? {
            match wire::parse(body) {
                Incoming::Response { status: 0, .. } => answered += 1,
                Incoming::Ack | Incoming::Pong(_) | Incoming::Empty => {}
                _ => return Err(invalid(())),
            }
        }
        if reader.read_from(&mut stream).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(session)
}

/// Resumes `session` over `stream` as a client that has only the login's answer:
/// how long from the `resume` written to the last of the `frames` replayed read.
async fn resume(stream: &mut Conn, session: &Session, frames: usize) -> Option<Duration> {
    let mut reader = FrameReader::new(2 * CHUNK);
    let frame = Message::Resume {
        id: session.id,
        received: 1,
        token: session.token,
    }
    .to_frame();
    let sent = Instant::now();
    stream.write_all(&frame).await.ok()?;
    let (mut resumed, mut replayed) = (false, 0);
    loop {
        while let Some(body) = reader.next_frame().ok()? {
            match wire::parse(body) {
                Incoming::Resumed => resumed = true,
                Incoming::Response { status: 0, .. } if resumed => replayed += 1,
                Incoming::Session { .. } | Incoming::Ack | Incoming::Empty => {}
                _ => return None, // refused, or not the protocol
            }
            if replayed == frames {
                return Some(sent.elapsed());
            }
        }
        if reader.read_from(stream).await.ok()? == 0 {
            return None;
        }
    }
}

fn invalid<E>(_: E) -> std::io::Error {
    std::io::ErrorKind::InvalidData.into()
}
