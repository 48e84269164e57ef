//! For tests only (this crate's and other crates'): a real `nats-server` of the
//! test's own, on a free loopback port with JetStream and a store directory of its
//! own, that the test can kill, restart on the same port and store, and pause.
//!
//! The binary's path comes from [`SERVER_ENV`] (`GATEHOUSE_TEST_NATS_SERVER`); a test
//! run without it prints a notice and passes:
//!
//! ```no_run
//! # async fn test() {
//! use gatehouse_cluster::testing::NatsServer;
//!
//! let Some(nats) = NatsServer::from_env() else {
//!     return; // skipped, with a notice
//! };
//! let link = gatehouse_cluster::NatsLink::connect(&nats.url(), "a").await;
//! # }
//! ```
//!
//! Only the process a [`NatsServer`] started is ever signalled, by its PID; nothing
//! else on the machine (a shared server on 4222, say) is touched. Dropping it kills
//! the process and removes its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The variable that names the `nats-server` binary the tests run.
pub const SERVER_ENV: &str = "GATEHOUSE_TEST_NATS_SERVER";

/// How long a server may take to be ready. Generous: the machine may be busy with
/// builds, and a restart recovers its streams first.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// How often readiness (and [`wait_until`]'s condition) is looked at.
const POLL: Duration = Duration::from_millis(20);

/// Distinguishes the directories of the servers one test process starts.
static STARTED: AtomicU64 = AtomicU64::new(0);

/// A `nats-server` of one test: started with `-a 127.0.0.1 -p PORT -js -sd DIR`,
/// its output in a log file beside the store. Killed (SIGKILL) and its directory
/// removed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    /// The binary named by [`SERVER_ENV`]; when it is unset, prints that the test is
    /// skipped and returns `None`.
    ///
    /// # Panics
    ///
    /// When it is unset under `CI=true`: CI sets it (`.ci/run`), so a missing
    /// nats-server fails there instead of skipping.
    pub fn binary_from_env() -> Option<PathBuf> {
        match std::env::var_os(SERVER_ENV) {
            Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
            _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                panic!("{SERVER_ENV} is unset under CI=true: .ci/run must set it")
            }
            _ => {
                eprintln!("skipped: {SERVER_ENV} is unset");
                None
            }
        }
    }

    /// A server of the binary named by [`SERVER_ENV`], started and ready; `None`
    /// (with a notice) when the variable is unset.
    ///
    /// # Panics
    ///
    /// When the server cannot start or is not ready in time: the test fails, with
    /// the server's log.
    pub fn from_env() -> Option<NatsServer> {
        let binary = Self::binary_from_env()?;
        let mut server = match NatsServer::new(binary) {
            Ok(server) => server,
            Err(e) => panic!("cannot prepare a nats-server: {e}"),
        };
        if let Err(e) = server.start() {
            panic!("nats-server did not start: {e}\n{}", server.log());
        }
        Some(server)
    }

    /// A server of `binary` with a free port and an empty store directory, not
    /// started yet (its [`url`](Self::url) is known: a client may try it before it
    /// runs).
    pub fn new(binary: impl Into<PathBuf>) -> io::Result<NatsServer> {
        let port = free_port()?;
        let n = STARTED.fetch_add(1, Relaxed);
        let dir =
            std::env::temp_dir().join(format!("gatehouse-nats-{}-{n}-{port}", std::process::id()));
        // A leftover of an earlier process that had the same PID.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("store"))?;
        Ok(NatsServer {
            binary: binary.into(),
            port,
            dir,
            child: None,
        })
    }

    /// Starts the server and waits until it accepts clients (its log says it is
    /// ready and its port answers with `INFO`). An error if it already runs, exits,
    /// or is not ready within a generous deadline (then it is killed).
    pub fn start(&mut self) -> io::Result<()> {
        if self.child.is_some() {
            return Err(io::Error::other("nats-server already runs"));
        }
        let log_path = self.log_path();
        let log_before = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        match self.wait_ready(log_before) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.kill();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, log_before: u64) -> io::Result<()> {
        let deadline = Instant::now() + READY_DEADLINE;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!("nats-server exited: {status}")));
                }
            }
            // The log says ready once JetStream has recovered its streams; the port
            // answering proves the listener is this server's.
            if self.log_since(log_before).contains("Server is ready") && answers(address) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nats-server not ready within {READY_DEADLINE:?}"),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The running server's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server was started and not killed.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The JetStream store directory (the same across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// Everything the server logged, across restarts (for a failing test's message).
    pub fn log(&self) -> String {
        self.log_since(0)
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let _ = io::Seek::seek(&mut file, io::SeekFrom::Start(offset));
            let mut bytes = Vec::new();
            let _ = file.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    }

    /// Kills the server with SIGKILL (no goodbye to its clients: as a crash) and
    /// reaps it. Nothing if it does not run.
    pub fn kill(&mut self) -> io::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SIGKILL, to this child only; it also ends a paused one.
        let _ = child.kill();
        child.wait().map(drop)
    }

    /// Kills the server if it runs, and starts it again on the same port and store
    /// directory (its streams, so the buckets, are still there).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill()?;
        self.start()
    }

    /// Stops the server with SIGSTOP: its connections stay open but nothing
    /// answers (a hung server, or a network that silently drops everything).
    pub fn pause(&self) -> io::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("nats-server does not run"))?;
        let pid = i32::try_from(pid).map_err(io::Error::other)?;
        kill(Pid::from_raw(pid), signal).map_err(io::Error::from)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether a server listens at `address` and greets with `INFO`.
fn answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut greeting = [0; 4];
    stream.read_exact(&mut greeting).is_ok() && &greeting == b"INFO"
}

/// A loopback port nothing listens on, below the kernel's range of ephemeral ports
/// (`/proc/sys/net/ipv4/ip_local_port_range`, 32768 and up by default). A client
/// that keeps trying a port where no server runs yet gets an ephemeral source port
/// each time; were the server's port in that range, one attempt could take it as
/// its own source port (a TCP self-connect) and the server could not bind it.
fn free_port() -> io::Result<u16> {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let seed = nanos ^ std::process::id().wrapping_mul(2_654_435_761);
    let mut last = None;
    for attempt in 0..COUNT {
        let offset = seed.wrapping_add(attempt.wrapping_mul(7_919)) % COUNT;
        let Ok(port) = u16::try_from(FIRST + offset) else {
            continue;
        };
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(_) => return Ok(port),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// Waits until `condition` holds, looking every few milliseconds; whether it held
/// within `deadline`.
pub async fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}
