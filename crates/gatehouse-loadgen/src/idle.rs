//! The connections scenario (`gatehouse bench connections`): open N connections,
//! hold them idle for a while (each sends only a heartbeat ping, spread evenly over
//! the heartbeat interval), then prove every one is alive with a ping → pong. Given
//! the server's pid, it also measures what the idle connections cost the server: its
//! RSS growth per connection (after all are open, minus before the first) and its
//! CPU over the hold, as a percentage of one core.
//!
//! The CPU window starts after a short settle (the connect phase's work done) and
//! ends before the verification pings, so it holds nothing but the server's own
//! timers and whatever heartbeats fall inside it (counted in the report). A
//! connection's first heartbeat comes between ¾ and 1 interval after the scenario
//! starts holding, so a heartbeat at least 4/3 × (settle + hold) leaves the window
//! with no client traffic at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::net::{self, ping_pong, pong_frame};
use crate::procfs::{self, CpuSample};
use crate::transport::{Conn, Transport};
use crate::wire::{self, FrameReader, Incoming};
use crate::{LoadError, Progress, Sources};

/// What to run.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// The server.
    pub addr: SocketAddr,
    /// Connections to open.
    pub count: usize,
    /// How long to hold them idle (the CPU window).
    pub hold: Duration,
    /// Each connection pings this often while held.
    pub heartbeat: Duration,
    /// The server's pid, to read its RSS and CPU time (same machine).
    pub server_pid: Option<u32>,
    /// Pause between the last connect and the CPU window.
    pub settle: Duration,
    /// How long the final pongs may take.
    pub verify_timeout: Duration,
    /// Connects in flight at once.
    pub parallel_connects: usize,
    /// Source addresses.
    pub sources: Sources,
    /// What the connections run over (TCP by default).
    pub transport: Transport,
}

impl IdleOptions {
    /// Options with a 15 s heartbeat, 1 s settle, 10 s verify timeout.
    pub fn new(addr: SocketAddr, count: usize, hold: Duration) -> IdleOptions {
        IdleOptions {
            addr,
            count,
            hold,
            heartbeat: Duration::from_secs(15),
            server_pid: None,
            settle: Duration::from_secs(1),
            verify_timeout: Duration::from_secs(10),
            parallel_connects: 512,
            sources: Sources::for_target(addr, Sources::DEFAULT_PER_ADDRESS),
            transport: Transport::Tcp,
        }
    }
}

/// The results, one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Always "connections".
    pub scenario: &'static str,
    /// The server.
    pub addr: SocketAddr,
    /// Connections asked for.
    pub count: usize,
    /// Connections opened (and answered a first ping).
    pub connected: usize,
    /// Connections that could not be opened.
    pub failed_connects: usize,
    /// Connections that answered the final ping.
    pub alive: usize,
    /// Connections that did not (closed, kicked, or no pong in time).
    pub dead: usize,
    /// The hold, seconds.
    pub hold_s: f64,
    /// The heartbeat interval, seconds.
    pub heartbeat_s: f64,
    /// Heartbeat pings sent during the hold.
    pub heartbeats: u64,
    /// The server's pid, if given.
    pub server_pid: Option<u32>,
    /// Its RSS before the first connect, bytes.
    pub rss_before_bytes: Option<u64>,
    /// Its RSS at the end of the hold, bytes.
    pub rss_after_bytes: Option<u64>,
    /// (after − before) / connected.
    pub rss_per_connection_bytes: Option<f64>,
    /// Its CPU time over the hold, % of one core (resolution: one clock tick, 10 ms,
    /// over the hold).
    pub cpu_percent_of_core: Option<f64>,
}

/// Runs the scenario.
pub async fn run(options: &IdleOptions, progress: &Progress) -> Result<IdleReport, LoadError> {
    if options.count == 0 {
        return Err(LoadError::Invalid("need at least one connection".into()));
    }
    let pid = options.server_pid;
    let rss_before = match pid {
        Some(pid) => Some(procfs::rss_bytes(pid).map_err(|e| proc_error(pid, &e))?),
        None => None,
    };
    progress.counted("connect", options.count as u64);
    let (conns, failed_connects) = net::open_many(
        options.addr,
        &options.transport,
        options.sources,
        options.count,
        options.parallel_connects,
        progress,
    )
    .await?;
    let connected = conns.len();

    let verify = CancellationToken::new();
    let heartbeats = Arc::new(AtomicU64::new(0));
    let mut holders = tokio::task::JoinSet::new();
    for (index, (stream, reader)) in conns.into_iter().enumerate() {
        // Each connection last sent at connect (its first ping). Its first
        // heartbeat falls in the last quarter of the interval after that, spread
        // evenly over the connections so the server sees a trickle, not a wave.
        let spread = 0.75 + 0.25 * index as f64 / connected as f64;
        let offset = options.heartbeat.mul_f64(spread);
        let holder = Holder {
            stream,
            reader,
            heartbeat: options.heartbeat,
            first_heartbeat: offset,
            heartbeats: heartbeats.clone(),
        };
        holders.spawn(holder.run(verify.clone(), options.verify_timeout));
    }

    progress.timed("settle", options.settle);
    tokio::time::sleep(options.settle).await;
    let cpu_before = match pid {
        Some(pid) => Some(CpuSample::take(pid).map_err(|e| proc_error(pid, &e))?),
        None => None,
    };
    let heartbeats_before = heartbeats.load(Ordering::Relaxed);
    progress.timed("hold", options.hold);
    tokio::time::sleep(options.hold).await;
    let (cpu_percent, rss_after) = match (pid, cpu_before) {
        (Some(pid), Some(before)) => {
            let after = CpuSample::take(pid).map_err(|e| proc_error(pid, &e))?;
            let rss = procfs::rss_bytes(pid).map_err(|e| proc_error(pid, &e))?;
            (Some(before.percent_of_core_until(&after)), Some(rss))
        }
        _ => (None, None),
    };
    let held_heartbeats = heartbeats.load(Ordering::Relaxed) - heartbeats_before;

    progress.counted("verify", connected as u64);
    verify.cancel();
    let mut alive = 0;
    while let Some(joined) = holders.join_next().await {
        if matches!(joined, Ok(true)) {
            alive += 1;
            progress.advance(1);
        }
    }
    let rss_per_connection = match (rss_before, rss_after) {
        (Some(before), Some(after)) if connected > 0 => {
            Some((after as f64 - before as f64) / connected as f64)
        }
        _ => None,
    };
    Ok(IdleReport {
        scenario: "connections",
        addr: options.addr,
        count: options.count,
        connected,
        failed_connects,
        alive,
        dead: options.count - alive,
        hold_s: crate::secs(options.hold),
        heartbeat_s: crate::secs(options.heartbeat),
        heartbeats: held_heartbeats,
        server_pid: pid,
        rss_before_bytes: rss_before,
        rss_after_bytes: rss_after,
        rss_per_connection_bytes: rss_per_connection,
        cpu_percent_of_core: cpu_percent,
    })
}

fn proc_error(pid: u32, e: &std::io::Error) -> LoadError {
    LoadError::Invalid(format!("cannot read /proc/{pid}: {e}"))
}

/// One held connection.
struct Holder {
    stream: Conn,
    reader: FrameReader,
    heartbeat: Duration,
    first_heartbeat: Duration,
    heartbeats: Arc<AtomicU64>,
}

/// Nonces: heartbeats and the final check are told apart by their pongs.
const HEARTBEAT_NONCE: u8 = 1;
const VERIFY_NONCE: u8 = 2;

impl Holder {
    /// Holds the connection until `verify`, then proves it alive; false if it died.
    async fn run(mut self, verify: CancellationToken, verify_timeout: Duration) -> bool {
        let next = tokio::time::sleep(self.first_heartbeat);
        tokio::pin!(next);
        loop {
            tokio::select! {
                () = verify.cancelled() => break,
                () = &mut next => {
                    if self.stream.write_all(&wire::ping(HEARTBEAT_NONCE)).await.is_err() {
                        return false;
                    }
                    self.heartbeats.fetch_add(1, Ordering::Relaxed);
                    next.as_mut().reset(tokio::time::Instant::now() + self.heartbeat);
                }
                read = self.reader.read_from(&mut self.stream) => {
                    if !matches!(read, Ok(n) if n > 0) || !self.handle_frames().await {
                        return false;
                    }
                }
            }
        }
        let check = ping_pong(&mut self.stream, &mut self.reader, VERIFY_NONCE);
        matches!(
            tokio::time::timeout(verify_timeout, check).await,
            Ok(Ok(()))
        )
    }

    /// Skips pongs and answers pings; false if the server ends the connection.
    async fn handle_frames(&mut self) -> bool {
        loop {
            let body = match self.reader.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => return true,
                Err(_) => return false,
            };
            match wire::parse(body) {
                Incoming::Kick { .. } | Incoming::Unexpected => return false,
                Incoming::Ping(nonce) => {
                    let Some(pong) = pong_frame(nonce) else {
                        return false;
                    };
                    let len = wire::HEADER + 1 + nonce.len();
                    if self.stream.write_all(&pong[..len]).await.is_err() {
                        return false;
                    }
                }
                _ => {}
            }
        }
    }
}
