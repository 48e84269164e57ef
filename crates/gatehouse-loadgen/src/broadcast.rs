//! The broadcast scenario: N listener connections and one sender. Each round the
//! sender issues a broadcast request (route 2) whose payload starts with the round
//! number; the round's time-to-all is from just before the sender's write until the
//! last listener has read the push. A listener that has not got it within the
//! round's timeout is counted lost for that round (a push arriving later is counted
//! late, not received).
//!
//! Before the first round the sender asks the server's count (route 3) until it
//! includes every listener, so that no listener misses a round for having been
//! registered late (the Erlang anchor registers connections asynchronously).
//!
//! Each listener is a task that records its arrival time per round in a shared
//! array and bumps the round's counter; the last one wakes the coordinator. Arrival
//! times are taken when the generator reads the push, so they include the
//! generator's own time to get to that connection: with one generator thread and
//! 15,000 listeners, a few tens of milliseconds (the same for every server measured).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_protocol::routes::bench as routes;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::net::{self, pong_frame};
use crate::transport::{Conn, Transport};
use crate::wire::{self, FrameReader, Incoming};
use crate::{LoadError, Progress, Sources};

/// What to run.
#[derive(Debug, Clone)]
pub struct BroadcastOptions {
    /// The server.
    pub addr: SocketAddr,
    /// Listener connections (the sender is one more).
    pub listeners: usize,
    /// Broadcasts, one at a time.
    pub rounds: usize,
    /// Payload bytes per broadcast (at least 4: the round number).
    pub payload: usize,
    /// A listener without the push this long after the send has lost it.
    pub timeout: Duration,
    /// Pause between rounds.
    pub pause: Duration,
    /// Connects in flight at once while setting up.
    pub parallel_connects: usize,
    /// Source addresses.
    pub sources: Sources,
    /// What the connections run over (TCP by default).
    pub transport: Transport,
    /// Other nodes of the server's cluster: the listeners are spread over `addr`
    /// and these, an equal share each (the sender stays on `addr`), so that each
    /// broadcast crosses to every other node.
    pub also: Vec<SocketAddr>,
}

impl BroadcastOptions {
    /// Options with 5 rounds of 64 bytes, a 5 s timeout and a 200 ms pause.
    pub fn new(addr: SocketAddr, listeners: usize) -> BroadcastOptions {
        BroadcastOptions {
            addr,
            listeners,
            rounds: 5,
            payload: 64,
            timeout: Duration::from_secs(5),
            pause: Duration::from_millis(200),
            parallel_connects: 512,
            sources: Sources::for_target(addr, Sources::DEFAULT_PER_ADDRESS),
            transport: Transport::Tcp,
            also: Vec::new(),
        }
    }
}

/// One round's results.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// Listeners that got the push in time.
    pub received: usize,
    /// Listeners that did not.
    pub lost: usize,
    /// Send → last listener, milliseconds, when none was lost.
    pub time_to_all_ms: Option<f64>,
    /// Send → median listener, milliseconds.
    pub p50_ms: Option<f64>,
    /// Send → 99th percentile listener, milliseconds.
    pub p99_ms: Option<f64>,
    /// Send → sender's response, milliseconds.
    pub response_ms: Option<f64>,
}

/// The results, one JSON object.
#[derive(Debug, Clone, Serialize)]
pub struct BroadcastReport {
    /// Always "broadcast".
    pub scenario: &'static str,
    /// The server.
    pub addr: SocketAddr,
    /// Listeners asked for.
    pub listeners: usize,
    /// Listeners opened.
    pub connected: usize,
    /// The server's count before the first round (listeners + sender, + others).
    pub server_count: Option<u32>,
    /// Rounds run.
    pub rounds: usize,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// Median over rounds of the time to all listeners, milliseconds (rounds with a
    /// loss have no time to all and are left out).
    pub median_time_to_all_ms: Option<f64>,
    /// Listener-rounds lost, over all rounds (listeners that failed to connect
    /// count as lost in each round).
    pub lost: usize,
    /// Pushes that came after their round's timeout.
    pub late: u64,
    /// Pushes received twice for one round by one listener.
    pub duplicates: u64,
    /// Pushes with a payload that is not one this run sent.
    pub wrong_payload: u64,
    /// Listeners whose connection ended during the run.
    pub listeners_closed: u64,
    /// Each round.
    pub per_round: Vec<RoundReport>,
}

/// What listeners and the coordinator share.
struct Shared {
    listeners: usize,
    rounds: usize,
    payload: usize,
    /// Nanoseconds since `base` (+1, so 0 means "not yet") at which listener `l` read
    /// round `r`: index `r * listeners + l`.
    arrivals: Vec<AtomicU64>,
    /// Listeners that got each round in time.
    received: Vec<AtomicUsize>,
    /// Rounds whose timeout has passed: their pushes count as late.
    closed_rounds: AtomicU32,
    /// Woken by the listener completing a round.
    round_complete: Notify,
    base: Instant,
    late: AtomicU64,
    duplicates: AtomicU64,
    wrong_payload: AtomicU64,
    closed: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// A listener read a push.
    fn arrived(&self, listener: usize, payload: &[u8]) {
        if payload.len() != self.payload || payload.len() < 4 {
            self.wrong_payload.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let round = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
        let Some(r) = usize::try_from(round).ok().filter(|r| *r < self.rounds) else {
            self.wrong_payload.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if payload[4..].iter().any(|b| *b != PAD) {
            self.wrong_payload.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if round < self.closed_rounds.load(Ordering::Acquire) {
            self.late.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let slot = &self.arrivals[r * self.listeners + listener];
        if slot
            .compare_exchange(0, self.now_ns(), Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.received[r].fetch_add(1, Ordering::AcqRel) + 1 == self.listeners {
            self.round_complete.notify_one();
        }
    }
}

/// The payload after the round number.
const PAD: u8 = 0x5a;

/// Request ids of the sender's count polls (rounds use their number).
const COUNT_ID: u32 = u32::MAX;

/// Runs the scenario.
pub async fn run(
    options: &BroadcastOptions,
    progress: &Progress,
) -> Result<BroadcastReport, LoadError> {
    if options.listeners == 0 || options.rounds == 0 {
        return Err(LoadError::Invalid(
            "need at least one listener and one round".into(),
        ));
    }
    if options.payload < 4 || 7 + options.payload > wire::MAX_BODY {
        return Err(LoadError::Invalid(format!(
            "payload must be 4 to {} bytes (it starts with the round number)",
            wire::MAX_BODY - 7
        )));
    }
    if u32::try_from(options.rounds).is_err() {
        return Err(LoadError::Invalid("too many rounds".into()));
    }
    progress.counted("connect", options.listeners as u64 + 1);
    // Each node's share of the listeners, the sender's node first.
    let nodes: Vec<SocketAddr> = std::iter::once(options.addr)
        .chain(options.also.iter().copied())
        .collect();
    let share = |node: usize| {
        options.listeners / nodes.len() + usize::from(node < options.listeners % nodes.len())
    };
    let mut listeners = Vec::with_capacity(options.listeners);
    let mut shares = Vec::with_capacity(nodes.len());
    for (node, addr) in nodes.iter().enumerate() {
        let (opened, _failed) = net::open_many(
            *addr,
            &options.transport,
            options.sources,
            share(node),
            options.parallel_connects,
            progress,
        )
        .await?;
        shares.push(opened.len());
        listeners.extend(opened);
    }
    let connected = listeners.len();
    let sender_source = options.sources.source(options.listeners);
    let mut sender = net::connect(options.addr, sender_source, &options.transport)
        .await
        .map_err(|e| LoadError::Connect {
            addr: options.addr,
            error: e.to_string(),
        })?;
    let mut sender_reader = FrameReader::new(4096);

    let shared = Arc::new(Shared {
        listeners: connected,
        rounds: options.rounds,
        payload: options.payload,
        arrivals: (0..connected * options.rounds)
            .map(|_| AtomicU64::new(0))
            .collect(),
        received: (0..options.rounds).map(|_| AtomicUsize::new(0)).collect(),
        closed_rounds: AtomicU32::new(0),
        round_complete: Notify::new(),
        base: Instant::now(),
        late: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        wrong_payload: AtomicU64::new(0),
        closed: AtomicU64::new(0),
    });
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (stream, reader)) in listeners.into_iter().enumerate() {
        tasks.spawn(listen(stream, reader, index, shared.clone(), stop.clone()));
    }

    progress.counted("registered", connected as u64 + 1);
    let patience = Duration::from_secs(10);
    // The other nodes' listeners, counted there (with the connection that asks).
    for (node, addr) in nodes.iter().enumerate().skip(1) {
        let source = options.sources.source(options.listeners + node);
        let mut counter = net::connect(*addr, source, &options.transport)
            .await
            .map_err(|e| LoadError::Connect {
                addr: *addr,
                error: e.to_string(),
            })?;
        let mut reader = FrameReader::new(4096);
        let count = wait_for_count(&mut counter, &mut reader, shares[node] + 1, patience);
        match tokio::time::timeout(patience + net::SETUP_TIMEOUT, count).await {
            Ok(Ok(_)) => {}
            _ => {
                return Err(LoadError::Server(format!(
                    "{addr} does not count its listeners"
                )))
            }
        }
    }
    let count = wait_for_count(&mut sender, &mut sender_reader, shares[0] + 1, patience);
    let server_count = match tokio::time::timeout(patience + net::SETUP_TIMEOUT, count).await {
        Ok(Ok(count)) => count,
        Ok(Err(e)) => return Err(LoadError::Server(format!("broadcast sender: {e}"))),
        Err(_) => return Err(LoadError::Server("the server does not answer count".into())),
    };

    progress.counted("rounds", options.rounds as u64);
    let mut payload = vec![PAD; options.payload];
    let mut frame = Vec::with_capacity(wire::request_len(options.payload));
    let mut per_round = Vec::with_capacity(options.rounds);
    for round in 0..options.rounds {
        // Invariant: rounds fit in a u32 (checked above).
        let round_id = u32::try_from(round).unwrap_or(u32::MAX);
        payload[..4].copy_from_slice(&round_id.to_be_bytes());
        frame.clear();
        wire::put_request(&mut frame, round_id, routes::BROADCAST, &payload);
        let sent_ns = shared.now_ns();
        sender
            .write_all(&frame)
            .await
            .map_err(|e| LoadError::Server(format!("broadcast sender: {e}")))?;
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut response_ns = None;
        loop {
            let complete = shared.received[round].load(Ordering::Acquire) >= connected;
            if complete && response_ns.is_some() {
                break;
            }
            tokio::select! {
                () = shared.round_complete.notified(), if !complete => {}
                read = sender_reader.read_from(&mut sender), if response_ns.is_none() => {
                    match read {
                        Ok(n) if n > 0 => {}
                        _ => return Err(LoadError::Server("the broadcast sender was closed".into())),
                    }
                    if sender_frames(&mut sender, &mut sender_reader, round_id).await? {
                        response_ns = Some(shared.now_ns());
                    }
                }
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        shared
            .closed_rounds
            .store(round_id.saturating_add(1), Ordering::Release);
        per_round.push(round_report(&shared, round, sent_ns, response_ns));
        progress.advance(1);
        if round + 1 < options.rounds {
            tokio::time::sleep(options.pause).await;
        }
    }
    stop.cancel();
    while tasks.join_next().await.is_some() {}

    let missing = options.listeners - connected;
    let lost = per_round.iter().map(|r| r.lost).sum::<usize>() + missing * options.rounds;
    let mut times: Vec<f64> = per_round.iter().filter_map(|r| r.time_to_all_ms).collect();
    Ok(BroadcastReport {
        scenario: "broadcast",
        addr: options.addr,
        listeners: options.listeners,
        connected,
        server_count: Some(server_count),
        rounds: options.rounds,
        payload_bytes: options.payload,
        median_time_to_all_ms: median(&mut times),
        lost,
        late: shared.late.load(Ordering::Relaxed),
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        wrong_payload: shared.wrong_payload.load(Ordering::Relaxed),
        listeners_closed: shared.closed.load(Ordering::Relaxed),
        per_round,
    })
}

/// The median of `values` (sorted in place), `None` if empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn round_report(
    shared: &Shared,
    round: usize,
    sent_ns: u64,
    response_ns: Option<u64>,
) -> RoundReport {
    let slots = &shared.arrivals[round * shared.listeners..(round + 1) * shared.listeners];
    let mut latencies: Vec<u64> = slots
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .filter(|ns| *ns != 0)
        .map(|ns| ns.saturating_sub(sent_ns))
        .collect();
    latencies.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    let at = |q: f64| {
        let last = latencies.len().checked_sub(1)?;
        let index = ((last as f64) * q).round() as usize;
        latencies.get(index.min(last)).copied().map(ms)
    };
    let received = latencies.len();
    let lost = shared.listeners - received;
    RoundReport {
        received,
        lost,
        time_to_all_ms: if lost == 0 {
            latencies.last().copied().map(ms)
        } else {
            None
        },
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        response_ms: response_ns.map(|ns| ms(ns.saturating_sub(sent_ns))),
    }
}

/// Asks the server's connection count until it reaches `want` (or `patience` runs
/// out); returns the last count.
async fn wait_for_count(
    sender: &mut Conn,
    reader: &mut FrameReader,
    want: usize,
    patience: Duration,
) -> io::Result<u32> {
    let give_up = Instant::now() + patience;
    let mut frame = Vec::with_capacity(wire::request_len(0));
    loop {
        frame.clear();
        wire::put_request(&mut frame, COUNT_ID, routes::COUNT, &[]);
        sender.write_all(&frame).await?;
        let count = loop {
            let mut answer = None;
            while let Some(body) = reader
                .next_frame()
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?
            {
                if let Incoming::Response {
                    id: COUNT_ID,
                    status: 0,
                    payload: &[a, b, c, d],
                } = wire::parse(body)
                {
                    answer = Some(u32::from_be_bytes([a, b, c, d]));
                }
            }
            if let Some(count) = answer {
                break count;
            }
            if reader.read_from(sender).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        if count as usize >= want || Instant::now() > give_up {
            return Ok(count);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Handles the sender's frames; true once the response to `round` arrived.
async fn sender_frames(
    sender: &mut Conn,
    reader: &mut FrameReader,
    round: u32,
) -> Result<bool, LoadError> {
    let mut answered = false;
    loop {
        let body = match reader.next_frame() {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(answered),
            Err(_) => return Err(LoadError::Server("oversized frame to the sender".into())),
        };
        match wire::parse(body) {
            Incoming::Response { id, status, .. } if id == round => {
                if status != 0 {
                    return Err(LoadError::Server(format!(
                        "broadcast answered with status {status}"
                    )));
                }
                answered = true;
            }
            Incoming::Ping(nonce) => {
                if let Some(pong) = pong_frame(nonce) {
                    let _ = sender
                        .write_all(&pong[..wire::HEADER + 1 + nonce.len()])
                        .await;
                }
            }
            Incoming::Kick { reason } => {
                return Err(LoadError::Server(format!(
                    "the broadcast sender was kicked ({reason})"
                )));
            }
            // Its own push (and anything else) is not what is measured.
            _ => {}
        }
    }
}

/// One listener: reads pushes until told to stop or the connection ends.
async fn listen(
    mut stream: Conn,
    mut reader: FrameReader,
    index: usize,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    reader.ensure_capacity(wire::HEADER + 3 + shared.payload);
    loop {
        let read = tokio::select! {
            () = stop.cancelled() => return,
            read = reader.read_from(&mut stream) => read,
        };
        if !matches!(read, Ok(n) if n > 0) {
            shared.closed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        loop {
            let body = match reader.next_frame() {
                Ok(Some(body)) => body,
                Ok(None) => break,
                Err(_) => {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            match wire::parse(body) {
                Incoming::Push {
                    route: routes::BROADCAST,
                    payload,
                } => shared.arrived(index, payload),
                Incoming::Ping(nonce) => {
                    let Some(pong) = pong_frame(nonce) else {
                        return;
                    };
                    let len = wire::HEADER + 1 + nonce.len();
                    if stream.write_all(&pong[..len]).await.is_err() {
                        shared.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                Incoming::Kick { .. } | Incoming::Unexpected => {
                    shared.closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                _ => {}
            }
        }
    }
}
