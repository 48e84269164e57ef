//! `gatehouse bench arena`: a game-shaped load. N bot players log in to an arena
//! server and fill rooms of M; each bot changes its walking direction R times a
//! second (so every room changes every tick) and follows its room through the
//! deltas, checking that each one follows the last (`since`). Over the measured
//! window it reports the deltas each bot received per second, the deltas missed, and
//! from the server (arena's STATS route) how late the rooms' ticks started: p50, p99,
//! max and how many were late; with `--server-pid`, the server's CPU and RSS.
//!
//! Lives in the binary rather than in `gatehouse-loadgen`, which speaks only the
//! bench service: this one needs arena's messages.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use arena::{pb, routes};
use gatehouse_client::{Client, ClientConfig, Pushes};
use gatehouse_loadgen::procfs::{self, CpuSample};
use gatehouse_loadgen::{Progress, Sources};
use prost::Message as _;
use serde::Serialize;
use tokio::net::TcpSocket;

/// What to run.
pub(crate) struct ArenaBenchOptions {
    pub(crate) addr: SocketAddr,
    pub(crate) players: usize,
    pub(crate) room_size: usize,
    /// Direction changes per bot per second.
    pub(crate) input_rate: f64,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) server_pid: Option<u32>,
    pub(crate) sources: Sources,
}

/// The one JSON line.
#[derive(Debug, Serialize)]
pub(crate) struct ArenaBenchReport {
    pub(crate) players: usize,
    pub(crate) room_size: usize,
    pub(crate) rooms: usize,
    pub(crate) input_rate: f64,
    pub(crate) seconds: f64,
    /// Bots that logged in and joined.
    pub(crate) joined: usize,
    /// Deltas per bot per second, over the window (at most the tick rate).
    pub(crate) deltas_per_bot_per_sec: f64,
    /// Deltas whose `since` was not the last tick seen: missed ones.
    pub(crate) missing: u64,
    /// Bots whose connection ended during the run.
    pub(crate) dropped: u64,
    /// Ticks the server ran in the window, and per room per second.
    pub(crate) ticks: u64,
    pub(crate) ticks_per_room_per_sec: f64,
    /// Ticks that started more than 5 ms late, and the lateness percentiles (µs).
    pub(crate) late_ticks: u64,
    pub(crate) lateness_p50_us: u64,
    pub(crate) lateness_p99_us: u64,
    pub(crate) lateness_max_us: u64,
    /// The server's CPU over the window, in % of one core, and RSS at the end.
    pub(crate) server_cpu_percent: Option<f64>,
    pub(crate) server_rss_bytes: Option<u64>,
}

/// Counters every bot adds to.
#[derive(Default)]
struct Counters {
    deltas: AtomicU64,
    missing: AtomicU64,
    dropped: AtomicU64,
}

/// xorshift: a bot's directions, cheap and reproducible per bot.
struct Dice(u64);

impl Dice {
    fn direction(&mut self) -> (i32, i32) {
        loop {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let dx = (self.0 % 3) as i32 - 1;
            let dy = ((self.0 / 3) % 3) as i32 - 1;
            if (dx, dy) != (0, 0) {
                return (dx, dy);
            }
        }
    }
}

pub(crate) async fn run(
    options: &ArenaBenchOptions,
    progress: &Progress,
) -> anyhow::Result<ArenaBenchReport> {
    if options.players == 0 || options.room_size == 0 {
        bail!("--players and --room-size must be at least 1");
    }
    if !(options.input_rate > 0.0 && options.input_rate.is_finite()) {
        bail!("--input-rate must be above zero");
    }
    let run_id = std::process::id();
    let counters = Arc::new(Counters::default());

    // Log in and join, a few at a time (each login hashes or checks a password).
    progress.counted("join", options.players as u64);
    let mut bots = Vec::with_capacity(options.players);
    let mut joined = Vec::new();
    for chunk in (0..options.players).collect::<Vec<_>>().chunks(32) {
        let mut logins = Vec::new();
        for &i in chunk {
            let source = options.sources.source(i);
            let name = format!("bot{run_id:x}-{i}");
            let room = format!("bench-{}", i / options.room_size);
            logins.push(tokio::spawn(join(options.addr, source, name, room)));
        }
        for login in logins {
            let joined_room = login.await.context("a bot panicked")??;
            joined.push(joined_room);
            progress.advance(1);
        }
    }
    let stats_client = joined[0].0.clone();
    let every = Duration::from_secs_f64(1.0 / options.input_rate);
    let mut players = Vec::with_capacity(options.players);
    for (i, (client, pushes, room, tick)) in joined.into_iter().enumerate() {
        players.push(client.clone());
        bots.push(tokio::spawn(follow(pushes, room, tick, counters.clone())));
        bots.push(tokio::spawn(walk(client, every, i as u64 + 1)));
    }

    progress.timed("warmup", options.warmup);
    tokio::time::sleep(options.warmup).await;
    let _ = server_stats(&stats_client).await?; // starts the server's window
    let cpu_before = options.server_pid.map(CpuSample::take).transpose()?;
    let deltas_before = counters.deltas.load(Relaxed);
    let missing_before = counters.missing.load(Relaxed);
    let started = Instant::now();
    progress.timed("measure", options.duration);
    tokio::time::sleep(options.duration).await;
    let seconds = started.elapsed().as_secs_f64();
    let stats = server_stats(&stats_client).await?;
    let cpu = match (options.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(before.percent_of_core_until(&CpuSample::take(pid)?)),
        _ => None,
    };
    let rss = options.server_pid.map(procfs::rss_bytes).transpose()?;
    let deltas = counters.deltas.load(Relaxed) - deltas_before;
    let missing = counters.missing.load(Relaxed) - missing_before;
    for bot in bots {
        bot.abort();
    }
    // Leaving on purpose: arena would keep each bot's session (and its room ticking)
    // for the resume window, into whatever runs next against this server.
    let mut leaving = tokio::task::JoinSet::new();
    for player in players {
        leaving.spawn(async move { player.leave().await });
    }
    leaving.join_all().await;

    let rooms = options.players.div_ceil(options.room_size);
    Ok(ArenaBenchReport {
        players: options.players,
        room_size: options.room_size,
        rooms,
        input_rate: options.input_rate,
        seconds,
        joined: options.players,
        deltas_per_bot_per_sec: deltas as f64 / options.players as f64 / seconds,
        missing,
        dropped: counters.dropped.load(Relaxed),
        ticks: stats.ticks,
        ticks_per_room_per_sec: stats.ticks as f64 / rooms as f64 / seconds,
        late_ticks: stats.late_ticks,
        lateness_p50_us: stats.lateness_p50_us,
        lateness_p99_us: stats.lateness_p99_us,
        lateness_max_us: stats.lateness_max_us,
        server_cpu_percent: cpu,
        server_rss_bytes: rss,
    })
}

/// One bot: connects (from `source`), logs in (creating its account), joins `room`;
/// returns its client, its pushes, its room, and the tick its room state was at.
async fn join(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    name: String,
    room: String,
) -> anyhow::Result<(Client, Pushes, String, u64)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let config = ClientConfig {
        push_buffer: 4096,
        ..ClientConfig::default()
    };
    let (client, mut pushes) = Client::from_stream(stream, config)?;
    let login = pb::LoginRequest {
        password: format!("{name}-bench"),
        name,
    };
    client.request(routes::LOGIN, login.encode_to_vec()).await?;
    let join = pb::JoinRoom { room: room.clone() };
    client.request(routes::JOIN, join.encode_to_vec()).await?;
    // The room's state for this room (the lobby's came first, at login).
    loop {
        let Some(push) = pushes.next().await else {
            bail!("the server closed a bot's connection while it joined");
        };
        if push.route == routes::ROOM_STATE {
            let state = pb::RoomState::decode(push.payload)?;
            if state.room == room {
                return Ok((client, pushes, room, state.tick));
            }
        }
    }
}

/// Reads a bot's pushes: counts its room's deltas and the ones missed.
async fn follow(mut pushes: Pushes, room: String, mut tick: u64, counters: Arc<Counters>) {
    while let Some(push) = pushes.next().await {
        if push.route != routes::DELTA {
            continue;
        }
        let Ok(delta) = pb::Delta::decode(push.payload) else {
            continue;
        };
        if delta.room != room {
            continue; // the lobby's last ones
        }
        if delta.since != tick {
            counters.missing.fetch_add(1, Relaxed);
        }
        tick = delta.tick;
        counters.deltas.fetch_add(1, Relaxed);
    }
    counters.dropped.fetch_add(1, Relaxed);
}

/// A bot's inputs: a new direction every `every`, the first at a random point of
/// that period so that the bots do not all send at once. Runs until aborted.
async fn walk(client: Client, every: Duration, seed: u64) {
    let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let offset = every.mul_f64((seed % 1000) as f64 / 1000.0);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + offset, every);
    loop {
        interval.tick().await;
        let (dx, dy) = dice.direction();
        let input = pb::Input {
            dx,
            dy,
            target: None,
        };
        if client
            .notify(routes::INPUT, input.encode_to_vec())
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn server_stats(client: &Client) -> anyhow::Result<pb::ServerStats> {
    let reply = client
        .request(routes::STATS, Vec::new())
        .await
        .context("arena's STATS route")?;
    Ok(pb::ServerStats::decode(reply)?)
}
