//! The `gatehouse` binary: thin on purpose (mini-redis's habit). It parses the
//! command line, loads and checks the configuration, sets up logging, binds the
//! listeners, and hands a service to the library's `Server::run` until SIGINT or
//! SIGTERM (SIGHUP reloads the TLS certificates).

mod bench;
mod bench_arena;
mod client;
mod config;
mod dev_cert;
mod pages;

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use arena::Arena;
use clap::{Args, Parser, Subcommand};
use config::{FileConfig, Game};
use gatehouse::bench_service::BenchService;
use gatehouse::{
    Certificates, Listener, ListenerConfig, Server, ServerError, Service, TransportKind,
};
use gatehouse_cluster::NatsLink;
use gatehouse_store::{AnyStore, SaveWriter};
use tokio::net::TcpListener;
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
    /// Write a self-signed certificate for local TLS and wss (development only).
    DevCert(dev_cert::DevCertArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; without it, the embedded defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Port of the TCP listener (the first `tcp` one; overrides the file and
    /// servers.csv; 0 picks one).
    #[arg(long, short)]
    port: Option<u16>,
    /// Port of the WebSocket listener (the first `ws` one; 0 picks one).
    #[arg(long)]
    ws_port: Option<u16>,
    /// Address every listener listens on (overrides the file's).
    #[arg(long)]
    host: Option<IpAddr>,
    /// Listen on these instead of the file's listeners: `tcp://ADDR`, `tls://ADDR`,
    /// `ws://ADDR`, `wss://ADDR` (repeatable; TLS ones take --cert and --key).
    #[arg(long, value_name = "URL")]
    listen: Vec<String>,
    /// Certificate chain (PEM) of the TLS listeners given with --listen.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of the TLS listeners given with --listen.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
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
    /// Port of the admin listener (health, metrics, the JSON API, the console;
    /// overrides `admin.address`'s port; 0 picks one).
    #[arg(long)]
    admin_port: Option<u16>,
    /// Serve no admin listener.
    #[arg(long, conflicts_with = "admin_port")]
    no_admin: bool,
    /// Count no frames or bytes and time no handler (`metrics.enabled = false`).
    #[arg(long)]
    no_metrics: bool,
    /// Join a cluster as this node (`cluster.enabled = true`, `cluster.node`).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// The NATS server of the cluster (`cluster.nats_url`).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Enable the fault-injection routes (crash the hub, panic a handler). Tests only.
    #[arg(long)]
    allow_fault_injection: bool,
    /// Log filter (tracing's EnvFilter syntax); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    log: String,
    /// `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines, colored on a terminal.
    Text,
    /// One JSON object per line: time, level, target, the event's fields flattened,
    /// and the connection's span (`id`, `peer`) under `span`.
    Json,
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
        Command::DevCert(args) => dev_cert::run(args).map(|()| Exit::Clean),
    };
    let exit = result.unwrap_or_else(|e| {
        eprint!("{}", error_report(&e));
        Exit::Failed
    });
    ExitCode::from(exit as u8)
}

/// An error as a person reads it: the error, then each cause on its own line, once
/// (a cause whose text the line above already holds is not repeated), and never a
/// stack trace: these are expected errors (a bad flag, a refused run, an unreachable
/// database), whatever `RUST_BACKTRACE` says.
fn error_report(error: &anyhow::Error) -> String {
    let mut report = format!("Error: {error}\n");
    let mut above = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !above.contains(&text) {
            report.push_str(&format!("  caused by: {text}\n"));
        }
        above = text;
    }
    report
}

/// The exit status of a server that ran: what stopped it (saves that did not land
/// are the worse news, so the server reports them over anything else).
fn exit_status(served: Result<(), ServerError>) -> Exit {
    match served {
        Ok(()) => Exit::Clean,
        Err(e) => {
            eprintln!("Error: {e}");
            match e {
                ServerError::TooManyRestarts { .. } => Exit::TooManyRestarts,
                ServerError::DrainTimedOut { .. } => Exit::DrainTimedOut,
                ServerError::Unsaved { .. } => Exit::Unsaved,
                // A reason a later gatehouse adds: a failure, whatever it is.
                _ => Exit::Failed,
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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    // A panic is logged like any error, inside the span of the task that panicked
    // (a connection's carries its id and peer); the library decides what it ends.
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));

    let mut config = match &args.config {
        Some(path) => FileConfig::from_file(path)?,
        None => FileConfig::default(),
    };
    apply_listen_args(&mut config.listeners, &args)?;
    if let Some(service) = args.service {
        config.game.service = service;
    }
    config.server.allow_fault_injection |= args.allow_fault_injection;
    if let Some(port) = args.admin_port {
        config.admin.address.set_port(port);
    }
    if args.no_admin {
        config.admin.enabled = false;
    }
    if args.no_metrics {
        config.metrics.enabled = false;
    }
    if let Some(node) = args.node {
        config.cluster.enabled = true;
        config.cluster.config.node = node;
    }
    if let Some(url) = args.nats {
        config.cluster.config.nats_url = url;
    }
    // Set and empty means no token (unset keeps the file's).
    if let Ok(token) = std::env::var("GATEHOUSE_ADMIN_TOKEN") {
        config.admin.token = Some(token).filter(|t| !t.is_empty());
    }
    config.validate()?;

    match config.game.service {
        Game::Arena => serve_arena(&config).await,
        Game::Bench => {
            let server = Server::new(config.runtime(), BenchService)?;
            Ok(exit_status(run(&config, "bench", server).await?))
        }
    }
}

/// The command line's say over the listeners: `--listen` replaces them; `--port`
/// (or servers.csv) and `--ws-port` set the first TCP and WebSocket listener's port;
/// `--host` every listener's address.
fn apply_listen_args(listeners: &mut Vec<ListenerConfig>, args: &ServeArgs) -> anyhow::Result<()> {
    if !args.listen.is_empty() {
        *listeners = args
            .listen
            .iter()
            .map(|url| listener_from_url(url, args))
            .collect::<anyhow::Result<_>>()?;
    }
    // A certificate nobody uses would mean a server taken for TLS serving plain TCP.
    // (With --listen, the listeners are exactly the ones it named.)
    let tls_listen = !args.listen.is_empty() && listeners.iter().any(|l| l.transport.is_tls());
    if args.cert.is_some() && !tls_listen {
        anyhow::bail!(
            "--cert and --key are for the TLS listeners given with --listen tls://ADDR or \
             wss://ADDR, and there is none (a file's TLS listeners take `cert` and `key`)"
        );
    }
    let mut set_port = |kind: TransportKind, port: u16, flag: &str| match listeners
        .iter_mut()
        .find(|l| l.transport == kind)
    {
        Some(listener) => {
            listener.address.set_port(port);
            Ok(())
        }
        None => anyhow::bail!("{flag}: there is no {kind} listener"),
    };
    if let Some(id) = &args.server_id {
        let port = config::port_from_servers_csv(&args.servers_csv, id)?;
        set_port(TransportKind::Tcp, port, "--server-id")?;
    }
    if let Some(port) = args.port {
        set_port(TransportKind::Tcp, port, "--port")?;
    }
    if let Some(port) = args.ws_port {
        set_port(TransportKind::Ws, port, "--ws-port")?;
    }
    if let Some(host) = args.host {
        for listener in listeners.iter_mut() {
            listener.address.set_ip(host);
        }
    }
    Ok(())
}

/// One `--listen` URL: `ws://127.0.0.1:7080`.
fn listener_from_url(url: &str, args: &ServeArgs) -> anyhow::Result<ListenerConfig> {
    let (scheme, address) = url.split_once("://").with_context(|| {
        format!("--listen {url}: write scheme://address, e.g. ws://127.0.0.1:7080")
    })?;
    let transport: TransportKind = scheme
        .parse()
        .map_err(|e| anyhow::anyhow!("--listen {url}: {e}"))?;
    let address = address
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--listen {url}: `{address}` is not IP:PORT"))?;
    let mut listener = ListenerConfig::new(transport, address);
    if transport.is_tls() {
        if args.cert.is_none() {
            anyhow::bail!("--listen {url}: give its certificate and key with --cert and --key");
        }
        listener.cert = args.cert.clone();
        listener.key = args.key.clone();
    }
    Ok(listener)
}

/// arena with its store and rooms, which the server owns: it stops the rooms once
/// the last disconnect hook has run, then closes the writer (`store.flush_timeout`).
async fn serve_arena(config: &FileConfig) -> anyhow::Result<Exit> {
    let (store, options) = (&config.store, config.arena());
    let opened = AnyStore::open(store)
        .await
        .with_context(|| format!("cannot open the {:?} store", store.backend))?;
    let writer = SaveWriter::start(opened, store.writer());
    let arena = Arena::with_options(writer.clone(), options)?;
    let (rooms, auth) = (arena.rooms().clone(), arena.auth_stats().collector());
    // Shared by the cluster's nodes when it is in one (`[cluster]`).
    let server = Server::new(config.runtime(), arena)?
        .with_shared_rooms("arena", &rooms)
        .with_store(&writer, store.flush_timeout);
    server.add_collector(auth);
    Ok(exit_status(run(config, "arena", server).await?))
}

/// Serves `server` on the configured listeners (and the admin listener) until SIGINT
/// or SIGTERM; SIGHUP reloads TLS certificates.
async fn run<S: Service>(
    file: &FileConfig,
    name: &str,
    mut server: Server<S>,
) -> anyhow::Result<Result<(), ServerError>> {
    let configs = &file.listeners;
    let fault_injection = file.server.allow_fault_injection;
    // WebSocket listeners serve the browser library, and arena's its browser client.
    let pages = if name == "arena" {
        pages::arena()
    } else {
        pages::client_library()
    };
    // Every socket is bound before anything is announced: a port that is taken
    // fails the start before a line says the server (or its admin API) listens.
    let mut listeners = Vec::with_capacity(configs.len());
    for config in configs {
        listeners.push(Listener::bind(config).await?.with_pages(pages.clone()));
    }
    let admin =
        if file.admin.enabled {
            let bound = TcpListener::bind(file.admin.address).await;
            Some(bound.with_context(|| {
                format!("cannot listen on admin.address {}", file.admin.address)
            })?)
        } else {
            None
        };
    let stats = server.stats();
    // Every signal's handler is in place before anyone is told the server listens:
    // their default actions would end the process without a single disconnect hook
    // (a SIGINT sent right after the "listening on" line once did, before `run` had
    // installed its handler).
    use tokio::signal::unix::{signal, SignalKind};
    let hangups = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let interrupts =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let terminations =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    // For scripts and tests, whatever the log filter: one line per listener on
    // stdout. Not when stdout and the log are the same terminal: the log's own line
    // says it there, and a person would read everything twice.
    use std::io::IsTerminal;
    let announce = !(std::io::stdout().is_terminal() && std::io::stderr().is_terminal());
    if let Some(admin) = admin {
        let address = admin.local_addr()?;
        server = server.with_admin(admin, file.admin.config())?;
        info!(%address, token = file.admin.token.is_some(), "admin listening");
        if announce {
            println!("admin listening on http://{address}");
        }
    }
    if file.cluster.enabled {
        let cluster = &file.cluster.config;
        // Returns at once: the node serves alone until NATS answers, then joins.
        let link = NatsLink::connect(&cluster.nats_url, &cluster.node).await?;
        server = server.with_cluster(link, cluster.clone())?;
        info!(node = %cluster.node, nats = %cluster.nats_url, "a node of the cluster");
    }
    for listener in &listeners {
        let url = listener.url()?;
        info!(%url, service = %name, fault_injection, "listening");
        if listener.transport().is_websocket() && name == "arena" {
            let scheme = if listener.transport().is_tls() {
                "https"
            } else {
                "http"
            };
            info!("the {name} page: {scheme}://{}/", listener.local_addr()?);
        }
        if announce {
            println!("listening on {url}");
        }
    }
    let certificates: Vec<(String, Certificates)> = listeners
        .iter()
        .filter_map(|l| Some((l.url().ok()?, l.certificates()?.clone())))
        .collect();
    let reloading = tokio::spawn(reload_on_sighup(hangups, certificates));
    let result = server
        .run(listeners, shutdown_signal(interrupts, terminations))
        .await;
    reloading.abort();
    let s = stats.snapshot();
    info!(
        accepted = s.accepted,
        closed = s.closed,
        disconnect_hooks = s.disconnect_hooks,
        hook_timeouts = s.hook_timeouts,
        checkpoints = s.checkpoints,
        hub_restarts = s.hub_restarts,
        refused = s.refused_server_full + s.refused_per_ip,
        handshake_failures = s.handshake_failures,
        handshake_timeouts = s.handshake_timeouts,
        pages_served = s.pages_served,
        "final stats"
    );
    Ok(result)
}

/// Reloads every TLS listener's certificate files on each SIGHUP; a reload that
/// fails keeps the certificate in use.
async fn reload_on_sighup(
    mut hangups: tokio::signal::unix::Signal,
    certificates: Vec<(String, Certificates)>,
) {
    while hangups.recv().await.is_some() {
        if certificates.is_empty() {
            info!("SIGHUP: no TLS listener, nothing to reload");
        }
        for (listener, certs) in &certificates {
            let file = certs
                .cert_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            match certs.reload() {
                Ok(()) => {
                    info!(%listener, %file, "SIGHUP: certificate reloaded; new handshakes use it")
                }
                Err(e) => tracing::error!(
                    %listener, %file, error = %e,
                    "SIGHUP: certificate reload failed; the old one stays"
                ),
            }
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn shutdown_signal(
    mut interrupts: tokio::signal::unix::Signal,
    mut terminations: tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = interrupts.recv() => info!(signal = "SIGINT", "shutdown requested"),
        _ = terminations.recv() => info!(signal = "SIGTERM", "shutdown requested"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_report_gives_each_cause_once_on_its_own_line() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let error = anyhow::Error::new(refused)
            .context("cannot reach the database: connection refused")
            .context("cannot open the postgres store");
        assert_eq!(
            error_report(&error),
            "Error: cannot open the postgres store\n  \
             caused by: cannot reach the database: connection refused\n"
        );
    }
}
