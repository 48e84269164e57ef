//! The storm scenario: N connects started at once (no pacing), each followed by a
//! ping; the time until every connection has been accepted and has answered its
//! pong. Connections are held until the last one is answered (so the server holds
//! all N at once), then closed.
//!
//! The listen backlog is capped by `net.core.somaxconn` (4096 on current Linux): when
//! the server accepts more slowly than connects arrive, the kernel drops handshakes
//! and the clients retransmit their SYN after 1 s, which shows up as a jump in the
//! time. That is part of what the scenario measures: how fast a server drains its
//! accept queue.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::net::{self, ping_pong};
use crate::wire::FrameReader;
use crate::Transport;
use crate::{LoadError, Percentiles, Progress, Sources};

/// What to run.
#[derive(Debug, Clone)]
pub struct StormOptions {
    /// The server.
    pub addr: SocketAddr,
    /// Connects, all at once.
    pub count: usize,
    /// A connection not answered within this (from the start) counts as failed.
    pub timeout: Duration,
    /// Source addresses.
    pub sources: Sources,
    /// What the connections run over (TCP by default).
    pub transport: Transport,
}

impl StormOptions {
    /// Options with a 30 s timeout.
    pub fn new(addr: SocketAddr, count: usize) -> StormOptions {
        StormOptions {
            addr,
            count,
            timeout: Duration::from_secs(30),
            sources: Sources::for_target(addr, Sources::DEFAULT_PER_ADDRESS),
            transport: Transport::Tcp,
        }
    }
}

/// The results, one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Always "storm".
    pub scenario: &'static str,
    /// The server.
    pub addr: SocketAddr,
    /// Connects started.
    pub count: usize,
    /// Connects that completed (the handshake; the server may not have accepted yet).
    pub connected: usize,
    /// Connections that answered their ping: accepted and served.
    pub answered: usize,
    /// Connections that failed: refused, reset, closed, kicked or timed out.
    pub failed: usize,
    /// Seconds from the start until the last connection answered, when all did.
    pub all_answered_s: Option<f64>,
    /// Seconds from the start until the last answer, all or not.
    pub last_answer_s: f64,
    /// Seconds it took the generator to start every connect.
    pub started_in_s: f64,
    /// Per connection: start → pong.
    pub time_to_answer: Percentiles,
}

/// How one connection went.
enum Outcome {
    Answered(Duration),
    ConnectedOnly,
    Failed,
}

/// Runs the scenario.
pub async fn run(options: &StormOptions, progress: &Progress) -> Result<StormReport, LoadError> {
    if options.count == 0 {
        return Err(LoadError::Invalid("need at least one connection".into()));
    }
    progress.counted("storm", options.count as u64);
    let timeout = options.timeout;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..options.count {
        let addr = options.addr;
        let source = options.sources.source(index);
        let transport = options.transport.clone();
        tasks.spawn(async move {
            let attempt = async {
                let Ok(mut stream) = net::connect(addr, source, &transport).await else {
                    return (Outcome::Failed, None);
                };
                let mut reader = FrameReader::new(64);
                match ping_pong(&mut stream, &mut reader, 0).await {
                    Ok(()) => (Outcome::Answered(start.elapsed()), Some(stream)),
                    Err(_) => (Outcome::ConnectedOnly, None),
                }
            };
            tokio::time::timeout(timeout, attempt)
                .await
                .unwrap_or((Outcome::Failed, None))
        });
    }
    let started_in = start.elapsed();
    let mut histogram = crate::new_histogram();
    let (mut connected, mut answered, mut failed) = (0, 0, 0);
    let mut last_answer = Duration::ZERO;
    // Answered connections stay open until the last one is answered.
    let mut open = Vec::with_capacity(options.count);
    while let Some(joined) = tasks.join_next().await {
        let Ok((outcome, stream)) = joined else {
            failed += 1;
            continue;
        };
        match outcome {
            Outcome::Answered(at) => {
                connected += 1;
                answered += 1;
                last_answer = last_answer.max(at);
                crate::record(&mut histogram, at);
                progress.advance(1);
            }
            Outcome::ConnectedOnly => {
                connected += 1;
                failed += 1;
            }
            Outcome::Failed => failed += 1,
        }
        open.extend(stream);
    }
    drop(open);
    Ok(StormReport {
        scenario: "storm",
        addr: options.addr,
        count: options.count,
        connected,
        answered,
        failed,
        all_answered_s: (answered == options.count).then(|| crate::secs(last_answer)),
        last_answer_s: crate::secs(last_answer),
        started_in_s: crate::secs(started_in),
        time_to_answer: Percentiles::from_histogram(&histogram),
    })
}
