//! `gatehouse bench`: the load generator's command line. The engine is
//! `gatehouse_loadgen`; this file parses options, runs the engine on a
//! runtime of its own (by default a current-thread runtime, so the generator takes
//! at most one core of a machine it shares with the server), draws progress bars on
//! stderr (only on a terminal, never with `--quiet`), and prints exactly one JSON
//! line of results on stdout. A run that measured nothing, or whose server kicked
//! connections, answered with bad statuses or lost work, exits non-zero saying why
//! (its JSON line is printed all the same), so a script cannot take it for a result.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use gatehouse_loadgen::broadcast::{self, BroadcastOptions};
use gatehouse_loadgen::echo::{self, EchoOptions};
use gatehouse_loadgen::idle::{self, IdleOptions};
use gatehouse_loadgen::resume::{self, ResumeOptions};
use gatehouse_loadgen::storm::{self, StormOptions};
use gatehouse_loadgen::{Progress, Sources, Transport};

use crate::bench_arena::{self, ArenaBenchOptions};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// C connections keep D echo requests each in flight: requests/s, latency.
    Echo(EchoArgs),
    /// Hold N idle connections (heartbeats only), check each is alive; with
    /// --server-pid, the server's RSS per connection and idle CPU.
    Connections(ConnectionsArgs),
    /// N simultaneous connects: time until every one is accepted and answered.
    Storm(StormArgs),
    /// N listeners, one sender: time until every listener has each broadcast.
    Broadcast(BroadcastArgs),
    /// N sessions with a replay each, dropped and resumed at once: each resume's
    /// time to its last replayed frame, and all of them (TCP, the bench service).
    Resume(ResumeArgs),
    /// N arena bots in rooms of M, walking: tick lateness, deltas per bot, missed
    /// deltas (needs an arena server).
    Arena(ArenaArgs),
}

/// Options every scenario takes.
#[derive(Args)]
struct Common {
    /// The server (the bench service of gatehouse, or an anchor in bench/): IP:PORT,
    /// or a URL as `serve` prints it (tcp://, tls://, ws://, wss://), whose scheme
    /// is the transport.
    #[arg(long, value_name = "ADDRESS")]
    addr: String,
    /// No progress bars (they are drawn only when stderr is a terminal anyway).
    #[arg(long)]
    quiet: bool,
    /// Generator threads: 1 runs a current-thread runtime (at most one core); more
    /// runs a multi-thread runtime with that many workers.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Connections per source address (127.x.y.z, a random block per run) when the
    /// server is on loopback.
    #[arg(long, default_value_t = Sources::DEFAULT_PER_ADDRESS)]
    per_source: usize,
    /// What to connect over: tcp, tls, ws or wss (WebSocket at /ws); by default the
    /// --addr URL's scheme, else tcp. `bench arena` runs over tcp only.
    #[arg(long)]
    transport: Option<String>,
    /// tls, wss: the server's certificate (PEM), the only one trusted.
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
}

impl Common {
    /// The server's address and the transport's name, from --addr and --transport.
    fn target(&self) -> anyhow::Result<(SocketAddr, String)> {
        let (scheme, address) = match self.addr.split_once("://") {
            Some((scheme, address)) => (Some(scheme), address.trim_end_matches('/')),
            None => (None, self.addr.as_str()),
        };
        let addr = address
            .parse()
            .with_context(|| format!("--addr {}: `{address}` is not IP:PORT", self.addr))?;
        let transport = match (scheme, self.transport.as_deref()) {
            (Some(scheme), Some(flag)) if scheme != flag => {
                bail!(
                    "--addr {} is {scheme}:// but --transport is {flag}",
                    self.addr
                )
            }
            (Some(scheme), _) => scheme,
            (None, flag) => flag.unwrap_or("tcp"),
        };
        Ok((addr, transport.to_owned()))
    }

    /// Where and how to connect: the address, the source addresses, the transport.
    fn connect(&self) -> anyhow::Result<(SocketAddr, Sources, Transport)> {
        let (addr, name) = self.target()?;
        let transport = Transport::new(&name, self.ca.as_deref()).map_err(anyhow::Error::msg)?;
        Ok((addr, Sources::for_target(addr, self.per_source), transport))
    }
}

#[derive(Args)]
struct EchoArgs {
    #[command(flatten)]
    common: Common,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Requests in flight per connection (pipelining depth).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Payload bytes per request.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds requests in flight at the end may take before they count as lost.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// The server's pid, for its CPU time over the measured window (/proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Log each connection in first (the bench service then offers a resumable
    /// session) and acknowledge the answers: what session resume costs.
    #[arg(long)]
    resume: bool,
}

#[derive(Args)]
struct ConnectionsArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(long)]
    count: usize,
    /// Seconds to hold them idle (the CPU window).
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Seconds between a connection's heartbeat pings.
    #[arg(long, default_value_t = 15.0)]
    heartbeat: f64,
    /// The server's pid, for its RSS (/proc/PID/status) and CPU (/proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds between the last connect and the CPU window.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
}

#[derive(Args)]
struct StormArgs {
    #[command(flatten)]
    common: Common,
    /// Connects, all at once.
    #[arg(long)]
    count: usize,
    /// Seconds after which an unanswered connection counts as failed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

#[derive(Args)]
struct ResumeArgs {
    #[command(flatten)]
    common: Common,
    /// Sessions, resumed all at once.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Bytes of answers each session leaves unacknowledged: its replay (at most the
    /// server's resume.buffer_bytes).
    #[arg(long, default_value_t = 262_144)]
    replay_bytes: usize,
    /// Seconds after which what is not done counts as failed.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

#[derive(Args)]
struct BroadcastArgs {
    #[command(flatten)]
    common: Common,
    /// Listener connections (the sender is one more).
    #[arg(long)]
    listeners: usize,
    /// Broadcasts, one at a time.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Payload bytes (at least 4).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds a listener may take to get a push before it counts as lost.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Another node of the server's cluster (IP:PORT, repeatable): the listeners
    /// are spread over --addr and these, so each broadcast crosses to every node.
    #[arg(long, value_name = "ADDRESS")]
    also: Vec<SocketAddr>,
}

#[derive(Args)]
struct ArenaArgs {
    #[command(flatten)]
    common: Common,
    /// Bot players.
    #[arg(long, default_value_t = 100)]
    players: usize,
    /// Players per room.
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Direction changes per bot per second.
    #[arg(long, default_value_t = 2.0)]
    input_rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of play before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// The server's pid, for its CPU over the window and its RSS (repeatable: every
    /// node and the nats-server of a cluster, summed).
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Another node of the server's cluster: the second half of every room's players
    /// play there (the first half, who make the rooms, on --addr), and the report
    /// times how much later they get each delta.
    #[arg(long, value_name = "ADDRESS")]
    also: Option<SocketAddr>,
}

impl Scenario {
    fn common(&self) -> &Common {
        match self {
            Scenario::Arena(a) => &a.common,
            Scenario::Echo(a) => &a.common,
            Scenario::Connections(a) => &a.common,
            Scenario::Storm(a) => &a.common,
            Scenario::Broadcast(a) => &a.common,
            Scenario::Resume(a) => &a.common,
        }
    }
}

/// Seconds from the command line as a duration (rejects negative and NaN).
fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("--{name} {value}"))
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let common = args.scenario.common();
    let threads = common.threads;
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    let show_bars = !common.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let progress = Arc::new(Progress::default());
    let engine_progress = progress.clone();
    // The engine gets a runtime of its own, so its threads are exactly --threads; the
    // binary's runtime only waits (and draws the bars).
    let engine = tokio::task::spawn_blocking(move || -> anyhow::Result<Measured> {
        let runtime = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
        };
        runtime.block_on(run_scenario(args.scenario, &engine_progress))
    });
    let (engine_done, done) = tokio::sync::oneshot::channel();
    let bars = show_bars.then(|| tokio::spawn(draw(progress, done)));
    let result = engine.await.context("the load generator panicked");
    let _ = engine_done.send(());
    if let Some(bars) = bars {
        let _ = bars.await;
    }
    let measured = result??;
    println!("{}", measured.json);
    match measured.problem {
        Some(problem) => bail!("the run does not count: {problem}"),
        None => Ok(()),
    }
}

/// A scenario's JSON line, and what makes it no measurement, if anything.
struct Measured {
    json: String,
    problem: Option<String>,
}

/// `Some(what)` when `bad`.
fn problem(bad: bool, what: impl FnOnce() -> String) -> Option<String> {
    bad.then(what)
}

/// Runs one scenario; returns its JSON line and what spoils it.
async fn run_scenario(scenario: Scenario, progress: &Progress) -> anyhow::Result<Measured> {
    let (json, problem) = match scenario {
        Scenario::Echo(a) => {
            let (addr, sources, transport) = a.common.connect()?;
            let mut options = EchoOptions::new(
                addr,
                a.connections,
                a.depth,
                a.payload,
                seconds("duration", a.duration)?,
            );
            options.warmup = seconds("warmup", a.warmup)?;
            options.drain_timeout = seconds("drain-timeout", a.drain_timeout)?;
            options.sources = sources;
            options.transport = transport;
            options.server_pid = a.server_pid;
            options.resume = a.resume;
            let report = echo::run(&options, progress).await?;
            // The most telling first: a server that closed connections explains both
            // an empty measurement and lost requests.
            let (opened, closed) = (report.connected, report.connections_closed);
            let problem = problem(opened < report.connections || closed > 0, || {
                format!(
                    "{opened} of {} connections opened, {closed} ended early \
                     (kicked or closed by the server: see its limits)",
                    report.connections
                )
            })
            .or_else(|| {
                problem(report.measured_responses == 0, || {
                    "no response was measured".to_owned()
                })
            })
            .or_else(|| {
                problem(report.errors > 0 || report.lost > 0, || {
                    format!(
                        "{} bad answers ({} bad statuses, {} wrong payloads, {} unknown ids), \
                         {} lost",
                        report.errors,
                        report.bad_status,
                        report.wrong_payload,
                        report.unknown_id,
                        report.lost
                    )
                })
            });
            (serde_json::to_string(&report)?, problem)
        }
        Scenario::Connections(a) => {
            let (addr, sources, transport) = a.common.connect()?;
            let mut options = IdleOptions::new(addr, a.count, seconds("hold", a.hold)?);
            options.heartbeat = seconds("heartbeat", a.heartbeat)?;
            options.settle = seconds("settle", a.settle)?;
            options.server_pid = a.server_pid;
            options.sources = sources;
            options.transport = transport;
            let report = idle::run(&options, progress).await?;
            let problem = problem(report.dead > 0, || {
                format!("{} of {} connections dead", report.dead, report.count)
            });
            (serde_json::to_string(&report)?, problem)
        }
        Scenario::Storm(a) => {
            let (addr, sources, transport) = a.common.connect()?;
            let mut options = StormOptions::new(addr, a.count);
            options.timeout = seconds("timeout", a.timeout)?;
            options.sources = sources;
            options.transport = transport;
            let report = storm::run(&options, progress).await?;
            let problem = problem(report.failed > 0, || {
                format!("{} of {} connects failed", report.failed, report.count)
            });
            (serde_json::to_string(&report)?, problem)
        }
        Scenario::Resume(a) => {
            let (addr, sources, transport) = a.common.connect()?;
            if !matches!(transport, Transport::Tcp) {
                bail!("the resume scenario runs over TCP");
            }
            let mut options = ResumeOptions::new(addr, a.connections, a.replay_bytes);
            options.timeout = seconds("timeout", a.timeout)?;
            options.sources = sources;
            let report = resume::run(&options, progress).await?;
            let problem = problem(report.failed > 0, || {
                format!(
                    "{} of {} sessions not resumed ({} prepared)",
                    report.failed, report.connections, report.prepared
                )
            });
            (serde_json::to_string(&report)?, problem)
        }
        Scenario::Broadcast(a) => {
            let (addr, sources, transport) = a.common.connect()?;
            let mut options = BroadcastOptions::new(addr, a.listeners);
            options.rounds = a.rounds;
            options.payload = a.payload;
            options.timeout = seconds("timeout", a.timeout)?;
            options.sources = sources;
            options.transport = transport;
            options.also = a.also;
            let report = broadcast::run(&options, progress).await?;
            let problem = problem(report.lost > 0, || {
                format!("{} listener-rounds lost", report.lost)
            });
            (serde_json::to_string(&report)?, problem)
        }
        Scenario::Arena(a) => {
            let (addr, transport) = a.common.target()?;
            if transport != "tcp" {
                bail!("bench arena runs over tcp only (not {transport})");
            }
            let options = ArenaBenchOptions {
                addr,
                also: a.also,
                players: a.players,
                room_size: a.room_size,
                input_rate: a.input_rate,
                duration: seconds("duration", a.duration)?,
                warmup: seconds("warmup", a.warmup)?,
                server_pids: a.server_pid.clone(),
                sources: Sources::for_target(addr, a.common.per_source),
            };
            let report = bench_arena::run(&options, progress).await?;
            let problem = problem(report.missing > 0 || report.dropped > 0, || {
                format!(
                    "{} deltas missed, {} bots dropped",
                    report.missing, report.dropped
                )
            });
            (serde_json::to_string(&report)?, problem)
        }
    };
    Ok(Measured { json, problem })
}

/// Draws the engine's phases as progress bars on stderr, ten times a second, until
/// the engine is `done`.
async fn draw(progress: Arc<Progress>, mut done: tokio::sync::oneshot::Receiver<()>) {
    let mut generation = 0;
    let mut bar: Option<ProgressBar> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let counted = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} ({per_sec})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let timed = ProgressStyle::with_template("{prefix:>10} [{bar:40}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    loop {
        let finished = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut done => true,
        };
        let phase = progress.snapshot();
        if phase.generation != generation {
            generation = phase.generation;
            if let Some(old) = bar.take() {
                old.finish();
            }
            let new = ProgressBar::with_draw_target(
                Some(phase.total),
                ProgressDrawTarget::stderr_with_hz(10),
            );
            new.set_style(if phase.timed {
                timed.clone()
            } else {
                counted.clone()
            });
            new.set_prefix(phase.name);
            bar = Some(new);
        }
        if let Some(bar) = &bar {
            bar.set_position(phase.done);
            if phase.timed {
                bar.set_message(format!(
                    "{:.1}/{:.1} s",
                    phase.done as f64 / 1e3,
                    phase.total as f64 / 1e3
                ));
            }
        }
        if finished {
            if let Some(bar) = bar.take() {
                bar.finish();
            }
            return;
        }
    }
}
