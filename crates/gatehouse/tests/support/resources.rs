//! What a test needs from the machine beyond a socket or two: many descriptors,
//! loopback addresses besides 127.0.0.1. A test checks first and, if something is
//! missing, skips with a one-line notice on stderr; when the `CI` variable is set,
//! where everything is provided, a missing resource fails the test instead.
//!
//! Standard library only, so that any test crate can include it by path.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

/// Descriptors a test keeps free for whatever else this process has open, including
/// another test of the same binary running at the same time.
pub const HEADROOM: u64 = 512;

/// The soft limit on open files of this process, from `/proc/self/limits`; `None`
/// where that cannot be read (not Linux).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX)
    } else {
        soft.parse().ok()
    }
}

/// Whether this process can bind a TCP socket to `ip` (a loopback alias such as
/// 127.0.0.2 exists on Linux, not everywhere).
pub fn can_bind(ip: IpAddr) -> bool {
    TcpListener::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// The resources a test needs, checked together.
#[derive(Debug, Default)]
#[must_use = "call `met` to check"]
pub struct Needs {
    missing: Vec<String>,
}

/// Starts a list of needs.
pub fn needs() -> Needs {
    Needs::default()
}

impl Needs {
    /// `n` descriptors in this process (and in any child it starts, which inherits
    /// the limit), plus [`HEADROOM`].
    pub fn open_files(mut self, n: u64) -> Needs {
        let wanted = n + HEADROOM;
        match open_files_limit() {
            Some(limit) if limit >= wanted => {}
            Some(limit) => self
                .missing
                .push(format!("{wanted} open files (soft limit is {limit})")),
            None => self.missing.push(format!(
                "{wanted} open files (no /proc/self/limits to check)"
            )),
        }
        self
    }

    /// A local address to bind to.
    pub fn address(mut self, ip: Ipv4Addr) -> Needs {
        if !can_bind(IpAddr::V4(ip)) {
            self.missing.push(format!("loopback address {ip}"));
        }
        self
    }

    /// Whether `test` may run. If not, says what is missing on stderr (written to
    /// the process's stderr directly, so that the test harness's capture does not
    /// hide it) and returns false; with `CI` set, panics instead.
    pub fn met(self, test: &str) -> bool {
        if self.missing.is_empty() {
            return true;
        }
        let missing = self.missing.join(", ");
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: this machine lacks {missing}, which CI must provide"
        );
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIPPED {test}: this machine lacks {missing} (with CI set this fails)"
        );
        false
    }
}
