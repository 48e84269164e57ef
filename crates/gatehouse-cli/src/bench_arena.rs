//! `gatehouse bench arena`: a game-shaped load. N bot players log in to an arena
//! server and fill rooms of M; each bot changes its walking direction R times a
//! second (so every room changes every tick) and follows its room through the
//! deltas, checking that each one follows the last (`since`). Over the measured
//! window it reports the deltas each bot received per second, the deltas missed, and
//! from the server (arena's STATS route) how late the rooms' ticks started: p50, p99,
//! max and how many were late; with `--server-pid`, the server's CPU and RSS.
//!
//! With `--also ADDR` every room is split over two nodes of a cluster: its first
//! half (the near players, the first of whom makes the room) on `--addr`, its second
//! half (the far ones) on ADDR. Each delta's arrival is timed at every bot, and the
//! report gives how much later the far half got it than the near half: the latency a
//! room's second node adds. Without `--also` the same halves on one server give
//! the baseline.
//!
//! Lives in the binary rather than in `gatehouse-loadgen`, which speaks only the
//! bench service: this one needs arena's messages.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
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
    /// Another node of the cluster: the far half of every room plays there.
    pub(crate) also: Option<SocketAddr>,
    pub(crate) players: usize,
    pub(crate) room_size: usize,
    /// Direction changes per bot per second.
    pub(crate) input_rate: f64,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    /// The server's processes (every node, and NATS): their CPU and RSS, summed.
    pub(crate) server_pids: Vec<u32>,
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
    /// Whether the far half of every room played on another node (`--also`).
    pub(crate) split: bool,
    /// How much later a room's far half got its deltas than its near half: for each
    /// delta and far bot, its arrival minus the near half's median arrival (µs;
    /// percentiles over the window, negative when the far bot was first; `None`
    /// when no delta reached both halves in the window).
    pub(crate) far_after_near_p50_us: Option<i64>,
    pub(crate) far_after_near_p99_us: Option<i64>,
    /// The server processes' CPU over the window, in % of one core (summed), and
    /// their RSS at the end.
    pub(crate) server_cpu_percent: Option<f64>,
    pub(crate) server_rss_bytes: Option<u64>,
}

/// Counters every bot adds to.
#[derive(Default)]
struct Counters {
    deltas: AtomicU64,
    missing: AtomicU64,
    dropped: AtomicU64,
    /// Whether the window is on: arrivals are timed only then.
    measuring: AtomicBool,
    arrivals: Mutex<HashMap<(usize, u64), Arrivals>>,
}

/// When one delta (a room's tick) reached the room's near and far bots.
#[derive(Default)]
struct Arrivals {
    near: Vec<Instant>,
    far: Vec<Instant>,
}

/// Which half of its room a bot is in.
#[derive(Clone, Copy, PartialEq)]
enum Half {
    /// On `--addr`, the node its room runs on.
    Near,
    /// On `--also` (or, without it, the same server: the baseline).
    Far,
}

impl Counters {
    /// Per delta and far bot: its arrival minus the near half's median (µs), sorted.
    fn far_after_near_us(&self) -> Vec<i64> {
        let arrivals = self.arrivals.lock().expect("arrivals");
        let mut lags = Vec::new();
        for tick in arrivals.values() {
            let mut near = tick.near.clone();
            if near.is_empty() {
                continue;
            }
            near.sort();
            let median = near[near.len() / 2];
            for &far in &tick.far {
                lags.push(if far >= median {
                    (far - median).as_micros() as i64
                } else {
                    -((median - far).as_micros() as i64)
                });
            }
        }
        lags.sort_unstable();
        lags
    }
}

fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[((sorted.len() - 1) as f64 * p).round() as usize])
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
    if options.also.is_some() && options.room_size < 2 {
        bail!("--also needs --room-size of at least 2: a room's far half plays there");
    }
    if !(options.input_rate > 0.0 && options.input_rate.is_finite()) {
        bail!("--input-rate must be above zero");
    }
    let run_id = std::process::id();
    let counters = Arc::new(Counters::default());

    // Log in and join, a few at a time (each login hashes or checks a password). The
    // first bot of every room joins first, so that each room runs on `--addr`.
    progress.counted("join", options.players as u64);
    let half = options.room_size.div_ceil(2);
    let (firsts, rest): (Vec<usize>, Vec<usize>) =
        (0..options.players).partition(|i| i % options.room_size == 0);
    let mut joined: Vec<Option<Joined>> = (0..options.players).map(|_| None).collect();
    for chunk in firsts.chunks(32).chain(rest.chunks(32)) {
        let mut logins = Vec::new();
        for &i in chunk {
            let near = i % options.room_size < half;
            let addr = match options.also {
                Some(also) if !near => also,
                _ => options.addr,
            };
            let source = options.sources.source(i);
            let name = format!("bot{run_id:x}-{i}");
            let room = format!("bench-{}", i / options.room_size);
            logins.push((i, tokio::spawn(join(addr, source, name, room))));
        }
        for (i, login) in logins {
            joined[i] = Some(login.await.context("a bot panicked")??);
            progress.advance(1);
        }
    }
    let joined: Vec<Joined> = joined.into_iter().flatten().collect();
    let stats_client = joined[0].0.clone();
    let every = Duration::from_secs_f64(1.0 / options.input_rate);
    let mut bots = Vec::with_capacity(2 * options.players);
    let mut players = Vec::with_capacity(options.players);
    for (i, (client, pushes, room, tick)) in joined.into_iter().enumerate() {
        let follower = Follower {
            room,
            room_index: i / options.room_size,
            half: if i % options.room_size < half {
                Half::Near
            } else {
                Half::Far
            },
            counters: counters.clone(),
        };
        players.push(client.clone());
        bots.push(tokio::spawn(follower.follow(pushes, tick)));
        bots.push(tokio::spawn(walk(client, every, i as u64 + 1)));
    }

    progress.timed("warmup", options.warmup);
    tokio::time::sleep(options.warmup).await;
    let _ = server_stats(&stats_client).await?; // starts the server's window
    let cpu_before = cpu_samples(&options.server_pids)?;
    counters.measuring.store(true, Relaxed);
    let deltas_before = counters.deltas.load(Relaxed);
    let missing_before = counters.missing.load(Relaxed);
    let started = Instant::now();
    progress.timed("measure", options.duration);
    tokio::time::sleep(options.duration).await;
    counters.measuring.store(false, Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let stats = server_stats(&stats_client).await?;
    let cpu_after = cpu_samples(&options.server_pids)?;
    let cpu = (!cpu_after.is_empty()).then(|| {
        let (before, after) = (cpu_before.iter(), cpu_after.iter());
        before
            .zip(after)
            .map(|(before, after)| before.percent_of_core_until(after))
            .sum()
    });
    let rss = (!options.server_pids.is_empty())
        .then(|| {
            options
                .server_pids
                .iter()
                .map(|&pid| procfs::rss_bytes(pid))
                .sum()
        })
        .transpose()?;
    let lags = counters.far_after_near_us();
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
        split: options.also.is_some(),
        far_after_near_p50_us: percentile(&lags, 0.5),
        far_after_near_p99_us: percentile(&lags, 0.99),
        server_cpu_percent: cpu,
        server_rss_bytes: rss,
    })
}

fn cpu_samples(pids: &[u32]) -> anyhow::Result<Vec<CpuSample>> {
    Ok(pids
        .iter()
        .map(|&pid| CpuSample::take(pid))
        .collect::<Result<_, _>>()?)
}

/// A bot once joined: its client, its pushes, its room, and its room state's tick.
type Joined = (Client, Pushes, String, u64);

/// One bot: connects (from `source`), logs in (creating its account), joins `room`;
/// returns its client, its pushes, its room, and the tick its room state was at.
async fn join(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    name: String,
    room: String,
) -> anyhow::Result<Joined> {
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

/// What a bot's pushes are checked and timed against.
struct Follower {
    room: String,
    room_index: usize,
    half: Half,
    counters: Arc<Counters>,
}

impl Follower {
    /// Reads a bot's pushes: counts its room's deltas and the ones missed, and times
    /// each one's arrival while the window is on.
    async fn follow(self, mut pushes: Pushes, mut tick: u64) {
        let counters = &self.counters;
        while let Some(push) = pushes.next().await {
            let arrived = Instant::now();
            if push.route != routes::DELTA {
                continue;
            }
            let Ok(delta) = pb::Delta::decode(push.payload) else {
                continue;
            };
            if delta.room != self.room {
                continue; // the lobby's last ones
            }
            if delta.since != tick {
                counters.missing.fetch_add(1, Relaxed);
            }
            tick = delta.tick;
            counters.deltas.fetch_add(1, Relaxed);
            if counters.measuring.load(Relaxed) {
                let mut arrivals = counters.arrivals.lock().expect("arrivals");
                let times = arrivals.entry((self.room_index, tick)).or_default();
                match self.half {
                    Half::Near => times.near.push(arrived),
                    Half::Far => times.far.push(arrived),
                }
            }
        }
        counters.dropped.fetch_add(1, Relaxed);
    }
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
