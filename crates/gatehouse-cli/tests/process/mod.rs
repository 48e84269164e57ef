//! Runs the real `gatehouse` binary as a child process and reads its log.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to print its "listening on" line.
pub const START_PATIENCE: Duration = Duration::from_secs(20);

/// A server child process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    /// The TCP listener's address.
    pub addr: SocketAddr,
    /// Every listener's address by scheme (`tcp`, `ws`, …), as printed.
    listeners: Arc<Mutex<Vec<(String, SocketAddr)>>>,
    log: Arc<Mutex<String>>,
    /// Copies stderr into `log` until the child's end of the pipe closes.
    log_reader: Option<JoinHandle<()>>,
}

/// A scratch directory for one test, unique to it (name, process, sequence) and
/// removed when dropped.
pub struct Scratch(PathBuf);

impl Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn scratch(name: &str) -> Scratch {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// An arena config in `dir` that saves to `dir/data`, after `extra` sections.
pub fn arena_config(dir: &Path, extra: &str) -> PathBuf {
    let data = dir.join("data");
    let text = format!("{extra}[store]\ndata_dir = {:?}\n", data.to_str().unwrap());
    write_file(dir, "arena.toml", &text)
}

pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

pub fn gatehouse() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command.env_remove("RUST_LOG");
    command
}

/// `gatehouse serve` with every default listener (and the admin listener) on a free
/// port: default ports would collide between tests.
pub const SERVE_ON_FREE_PORTS: [&str; 7] = [
    "serve",
    "--port",
    "0",
    "--ws-port",
    "0",
    "--admin-port",
    "0",
];

impl ServerProcess {
    /// Starts `gatehouse serve --port 0 --ws-port 0 --admin-port 0 ARGS…` and waits for its
    /// "listening on" lines.
    pub fn start(args: &[&str]) -> ServerProcess {
        let mut command = gatehouse();
        command.args(SERVE_ON_FREE_PORTS).args(args);
        ServerProcess::spawn(command)
    }

    /// Starts the server under a lower open-file limit (`ulimit -n`).
    pub fn start_with_fd_limit(limit: u32, args: &[&str]) -> ServerProcess {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_gatehouse"))
            .args(SERVE_ON_FREE_PORTS)
            .args(args)
            .env_remove("RUST_LOG");
        ServerProcess::spawn(command)
    }

    /// Spawns `command` (a `gatehouse serve`) and waits for its "listening on" line.
    pub fn spawn(command: Command) -> ServerProcess {
        ServerProcess::spawn_until(command, "tcp")
    }

    /// Spawns `command` and waits for its listener of `scheme`; `addr` is that
    /// listener's address.
    pub fn spawn_until(command: Command, scheme: &str) -> ServerProcess {
        match ServerProcess::try_spawn_until(command, scheme) {
            Ok(server) => server,
            Err(log) => panic!("server exited without listening:\n{log}"),
        }
    }

    /// Like [`spawn`](Self::spawn), but a server that exits before listening is an
    /// `Err` with its log, for the caller to judge.
    pub fn try_spawn(command: Command) -> Result<ServerProcess, String> {
        ServerProcess::try_spawn_until(command, "tcp")
    }

    fn try_spawn_until(mut command: Command, awaited: &str) -> Result<ServerProcess, String> {
        let awaited = awaited.to_owned();
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let mut server = ServerProcess {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            listeners: Arc::default(),
            log: Arc::default(),
            log_reader: None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = server.child.stdout.take().unwrap();
        let listeners = server.listeners.clone();
        std::thread::spawn(move || {
            // One "listening on SCHEME://ADDR" line per listener; the TCP one is the
            // server's address.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The admin listener's line comes first: "admin listening on http://ADDR".
                if let Some(addr) = line.strip_prefix("admin listening on http://") {
                    let addr: SocketAddr = addr.parse().expect("admin address");
                    listeners.lock().unwrap().push(("admin".to_owned(), addr));
                    continue;
                }
                let Some(url) = line.strip_prefix("listening on ") else {
                    continue;
                };
                let Some((scheme, addr)) = url.split_once("://") else {
                    continue;
                };
                let addr: SocketAddr = addr.parse().expect("listening address");
                listeners.lock().unwrap().push((scheme.to_owned(), addr));
                if scheme == awaited {
                    let _ = tx.send(addr);
                }
            }
        });
        let stderr = server.child.stderr.take().unwrap();
        let sink = server.log.clone();
        server.log_reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&strip_ansi(&line));
                log.push('\n');
            }
        }));
        match rx.recv_timeout(START_PATIENCE) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            // Stdout closed without the line: the server exited.
            Err(RecvTimeoutError::Disconnected) => {
                let _ = server.child.wait();
                server.join_log_reader();
                Err(server.log())
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "server did not start in {START_PATIENCE:?}:\n{}",
                    server.log()
                )
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The address of the first listener of `scheme` (`ws`, `tls`, …), waiting for
    /// its line.
    pub fn listener(&self, scheme: &str) -> SocketAddr {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            let found = self
                .listeners
                .lock()
                .unwrap()
                .iter()
                .find(|(s, _)| s == scheme)
                .map(|(_, a)| *a);
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no {scheme} listener:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The admin listener's address, if the server printed its line (it does so
    /// before the game's listeners, so by the time [`start`](Self::start) returns).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let listeners = self.listeners.lock().unwrap();
        listeners
            .iter()
            .find(|(s, _)| s == "admin")
            .map(|(_, a)| *a)
    }

    /// Waits until the log holds `text`, for at most `patience`, and returns it.
    pub fn wait_for_log(&self, text: &str, patience: Duration) -> String {
        let deadline = Instant::now() + patience;
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the log within {patience:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself; then the log is complete.
    pub fn wait(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.join_log_reader();
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit in time:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the stderr reader to reach the end of the pipe (the child has
    /// exited, so it comes), so that the log holds every last line.
    fn join_log_reader(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            reader.join().expect("the log reader does not panic");
        }
    }

    /// User + system CPU time the process has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which is in parentheses).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    /// The value of the sample `name` (without labels) on the admin listener's
    /// `/metrics`, if the server has one and reports it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = http_get(self.admin_addr()?, "/metrics");
        let line = text.lines().find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' '))
        })?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `GET path` over plain HTTP/1.1 on a fresh connection; the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP head");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "GET {path}: {head}");
    let mut body = &response[split + 4..];
    if !head.contains("\r\ntransfer-encoding: chunked") {
        return String::from_utf8(body.to_vec()).unwrap();
    }
    let mut text = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = std::str::from_utf8(&body[..line_end]).unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return String::from_utf8(text).unwrap();
        }
        let chunk = &body[line_end + 2..];
        text.extend_from_slice(&chunk[..size]);
        body = chunk[size..].strip_prefix(b"\r\n").unwrap();
    }
}
