//! The `gatehouse` binary: thin on purpose (mini-redis's habit). It parses the
//! command line, loads and checks the configuration, sets up logging, and hands a
//! service to the library's `Server::run` until SIGINT or SIGTERM.

mod bench;
mod bench_arena;
mod client;
mod config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use arena::{Arena, ArenaOptions};
use clap::{Args, Parser, Subcommand};
use config::{FileConfig, Game};
use gatehouse::bench_service::BenchService;
use gatehouse::{Server, ServerError, Service};
use gatehouse_store::{AnyStore, SaveWriter, StoreConfig, Unsaved};
use tracing::info;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "A supervised connection front end for game servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a service until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Play arena from the terminal.
    Client(client::ClientArgs),
    /// Generate load against a bench-service server and measure it (one JSON line).
    Bench(bench::BenchArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; without it, the embedded defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Port to listen on (overrides `listen.port` and servers.csv; 0 picks one).
    #[arg(long, short)]
    port: Option<u16>,
    /// Address to listen on (overrides `listen.host`).
    #[arg(long)]
    host: Option<std::net::IpAddr>,
    /// The service to serve (overrides `game.service`).
    #[arg(long, short, value_enum)]
    service: Option<Game>,
    /// Take the port from the servers.csv row with this server_id (the seed's
    /// `server_csv:get_my_port()`).
    #[arg(long)]
    server_id: Option<String>,
    /// The server table read with --server-id.
    #[arg(long, default_value = "servers.csv")]
    servers_csv: PathBuf,
    /// Enable the fault-injection routes (crash the hub, panic a handler). Tests only.
    #[arg(long)]
    allow_fault_injection: bool,
    /// Log filter (tracing's EnvFilter syntax); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    log: String,
}

/// How `gatehouse` ends, for systemd, Kubernetes and scripts (README, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Stopped as asked, every connection closed and every save landed.
    Clean = 0,
    /// Could not start (configuration, address, store) or a client/bench error.
    Failed = 1,
    // 2 is clap's: a command line it could not parse.
    /// The hub crashed more often than the restart intensity allows.
    TooManyRestarts = 3,
    /// Shutdown abandoned connections at `supervisor.drain_timeout`.
    DrainTimedOut = 4,
    /// Saves had not landed when the writer closed (`store.flush_timeout`).
    Unsaved = 5,
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Serve(args) => serve(args).await,
        Command::Client(args) => client::run(args).await.map(|()| Exit::Clean),
        Command::Bench(args) => bench::run(args).await.map(|()| Exit::Clean),
    };
    let exit = result.unwrap_or_else(|e| {
        eprintln!("Error: {e:?}");
        Exit::Failed
    });
    ExitCode::from(exit as u8)
}

/// The exit status of a server that ran: what stopped it, then whether its saves
/// landed (unsaved data is the worse news, so it wins).
fn exit_status(served: Result<(), ServerError>, unsaved: Option<Unsaved>) -> Exit {
    if let Some(Unsaved(n)) = unsaved {
        eprintln!("Error: {n} saves had not landed at exit");
        return Exit::Unsaved;
    }
    match served {
        Ok(()) => Exit::Clean,
        Err(e) => {
            eprintln!("Error: {e}");
            match e {
                ServerError::TooManyRestarts { .. } => Exit::TooManyRestarts,
                ServerError::DrainTimedOut { .. } => Exit::DrainTimedOut,
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<Exit> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log))
        .context("--log")?;
    // Logs are written by a thread of their own and dropped (counted) when it falls
    // behind, so a slow stderr (a full pipe, journald under load) never stalls a
    // connection. The guard flushes what is buffered when serve returns.
    let (writer, _log_guard) = tracing_appender::non_blocking(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A panic is logged like any error, inside the span of the task that panicked
    // (a connection's carries its id and peer); the library decides what it ends.
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));

    let mut config = match &args.config {
        Some(path) => FileConfig::from_file(path)?,
        None => FileConfig::default(),
    };
    if let Some(id) = &args.server_id {
        config.listen.port = config::port_from_servers_csv(&args.servers_csv, id)?;
    }
    if let Some(port) = args.port {
        config.listen.port = port;
    }
    if let Some(host) = args.host {
        config.listen.host = host;
    }
    if let Some(service) = args.service {
        config.game.service = service;
    }
    config.server.allow_fault_injection |= args.allow_fault_injection;
    config.validate()?;

    let addr = SocketAddr::new(config.listen.host, config.listen.port);
    match config.game.service {
        Game::Arena => serve_arena(addr, &config.store, config.runtime(), config.arena()).await,
        Game::Bench => {
            let served = run(addr, "bench", config.runtime(), BenchService).await?;
            Ok(exit_status(served, None))
        }
    }
}

/// arena with its store and rooms, in the supervision tree's order: the save writer
/// and the rooms start before the server and outlive it (and every hub restart in
/// it); once the last disconnect hook has run, the rooms stop, then the writer lands
/// what was queued.
async fn serve_arena(
    addr: SocketAddr,
    store: &StoreConfig,
    config: gatehouse::Config,
    options: ArenaOptions,
) -> anyhow::Result<Exit> {
    let opened = AnyStore::open(store)
        .await
        .with_context(|| format!("cannot open the {:?} store", store.backend))?;
    let writer = SaveWriter::start(opened, store.writer());
    let drain_timeout = config.supervisor.drain_timeout;
    let arena = Arena::with_options(writer.clone(), options)?;
    let rooms = arena.rooms().clone();
    let served = run(addr, "arena", config, arena).await;
    if let Err(unfinished) = rooms.shutdown(drain_timeout).await {
        tracing::error!(unfinished, "rooms still running at the drain timeout");
    }
    // Whatever happened to the server, what was queued gets its chance to land.
    let flushed = writer.close(store.flush_timeout).await;
    Ok(exit_status(served?, flushed.err()))
}

async fn run<S: Service>(
    addr: SocketAddr,
    name: &str,
    config: gatehouse::Config,
    service: S,
) -> anyhow::Result<Result<(), ServerError>> {
    let fault_injection = config.server.allow_fault_injection;
    let server = Server::new(config, service)?;
    let stats = server.stats();
    let listener = gatehouse::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    info!(%addr, service = %name, fault_injection, "listening");
    // For scripts and tests, whatever the log filter: the one line on stdout.
    println!("listening on {addr}");
    let result = server.run(listener, shutdown_signal()).await;
    let s = stats.snapshot();
    info!(
        accepted = s.accepted,
        closed = s.closed,
        disconnect_hooks = s.disconnect_hooks,
        hook_timeouts = s.hook_timeouts,
        checkpoints = s.checkpoints,
        hub_restarts = s.hub_restarts,
        refused = s.refused_server_full + s.refused_per_ip,
        "final stats"
    );
    Ok(result)
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGTERM handler; SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "shutdown requested"),
        _ = term.recv() => info!(signal = "SIGTERM", "shutdown requested"),
    }
}
