//! What arena counts and logs about logins: results, lockouts, hashes and the
//! hashing queue, as counters a Prometheus scrape reads
//! ([`AuthStats`] is a collector for gatehouse's `Server::add_collector`), and the
//! log lines of failed logins and lockouts, which a flood of guesses causes and so
//! are budgeted like gatehouse's own ([`LogLimiter`]: 50 lines a second each, then
//! counted, the next line saying how many were left out).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::logs::{Admit, LogLimiter};
use gatehouse::metrics::prometheus_client::collector::Collector;
use gatehouse::metrics::prometheus_client::encoding::DescriptorEncoder;
use gatehouse::metrics::prometheus_client::metrics::MetricType;
use gatehouse::metrics::{encode_labelled, encode_one};
use tracing::{info, warn};

use super::hashing::QueueDepth;

/// How a login ended, as `gatehouse_arena_logins_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginResult {
    /// A player logged in with the right password.
    Ok,
    /// A login that set the player's password: a new account (or one saved before
    /// passwords).
    Created,
    /// Not the player's password.
    WrongPassword,
    /// Refused before any hash: the name or the address is locked out, or its
    /// guesses in flight used its budget.
    TooManyAttempts,
    /// Refused before any hash: the address made its share of new accounts.
    TooManyNewAccounts,
    /// Refused: the hashing queue was full (for that address, or in all).
    Busy,
}

impl LoginResult {
    const ALL: [LoginResult; 6] = [
        LoginResult::Ok,
        LoginResult::Created,
        LoginResult::WrongPassword,
        LoginResult::TooManyAttempts,
        LoginResult::TooManyNewAccounts,
        LoginResult::Busy,
    ];

    fn label(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Created => "created",
            LoginResult::WrongPassword => "wrong_password",
            LoginResult::TooManyAttempts => "too_many_attempts",
            LoginResult::TooManyNewAccounts => "too_many_new_accounts",
            LoginResult::Busy => "busy",
        }
    }
}

/// What a lockout locked: a player name, or an address (an IPv4 address, an IPv6
/// /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Name,
    Address,
}

/// Login counters and log budgets, shared by every login and the hashing threads.
/// Cheap to clone.
#[derive(Clone)]
pub struct AuthStats {
    inner: Arc<Counters>,
    queue: QueueDepth,
}

struct Counters {
    logins: [AtomicU64; LoginResult::ALL.len()],
    name_lockouts: AtomicU64,
    address_lockouts: AtomicU64,
    hashes: AtomicU64,
    failure_lines: LogLimiter,
    lockout_lines: LogLimiter,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthSnapshot {
    /// Logins with the right password.
    pub ok: u64,
    /// Logins that set a password (new accounts).
    pub created: u64,
    /// Logins refused: wrong password.
    pub wrong_password: u64,
    /// Logins refused before any hash: locked out, or too many guesses in flight.
    pub too_many_attempts: u64,
    /// Logins refused before any hash: too many new accounts from the address.
    pub too_many_new_accounts: u64,
    /// Logins refused: the hashing queue was full.
    pub busy: u64,
    /// Player names locked out.
    pub name_lockouts: u64,
    /// Addresses locked out.
    pub address_lockouts: u64,
    /// Argon2 hashes made or checked.
    pub hashes: u64,
    /// Hashes waiting for a thread now.
    pub hashing_queue: u64,
}

impl AuthStats {
    pub(super) fn new(queue: QueueDepth) -> Self {
        AuthStats {
            inner: Arc::new(Counters {
                logins: Default::default(),
                name_lockouts: AtomicU64::new(0),
                address_lockouts: AtomicU64::new(0),
                hashes: AtomicU64::new(0),
                failure_lines: LogLimiter::default(),
                lockout_lines: LogLimiter::default(),
            }),
            queue,
        }
    }

    /// The counters now.
    pub fn read(&self) -> AuthSnapshot {
        let login = |result: LoginResult| self.inner.logins[result as usize].load(Relaxed);
        AuthSnapshot {
            ok: login(LoginResult::Ok),
            created: login(LoginResult::Created),
            wrong_password: login(LoginResult::WrongPassword),
            too_many_attempts: login(LoginResult::TooManyAttempts),
            too_many_new_accounts: login(LoginResult::TooManyNewAccounts),
            busy: login(LoginResult::Busy),
            name_lockouts: self.inner.name_lockouts.load(Relaxed),
            address_lockouts: self.inner.address_lockouts.load(Relaxed),
            hashes: self.inner.hashes.load(Relaxed),
            hashing_queue: self.queue.read() as u64,
        }
    }

    /// The collector of `gatehouse_arena_*` (`docs/OPERATIONS.md`), for
    /// `Server::add_collector`.
    pub fn collector(&self) -> Arc<dyn Collector> {
        Arc::new(self.clone())
    }

    /// Counts a login's end.
    pub(crate) fn login(&self, result: LoginResult) {
        self.inner.logins[result as usize].fetch_add(1, Relaxed);
    }

    /// Counts a failed login and logs it (within the budget).
    pub(crate) fn failed(&self, player: &str, peer: SocketAddr, result: LoginResult) {
        self.login(result);
        if admit(&self.inner.failure_lines, "failed login") {
            info!(player, %peer, result = result.label(), "login refused");
        }
    }

    /// Counts a hash about to be made or checked.
    pub(super) fn hashed(&self) {
        self.inner.hashes.fetch_add(1, Relaxed);
    }

    /// Counts a lockout and logs it (within the budget).
    pub(super) fn locked_out(&self, scope: Scope, key: Key<'_>, block_for: Duration) {
        let counter = match scope {
            Scope::Name => &self.inner.name_lockouts,
            Scope::Address => &self.inner.address_lockouts,
        };
        counter.fetch_add(1, Relaxed);
        if !admit(&self.inner.lockout_lines, "lockout") {
            return;
        }
        let block_for_secs = block_for.as_secs();
        match key {
            Key::Name(player) => {
                warn!(
                    player,
                    block_for_secs, "too many wrong passwords for this player: locked out"
                );
            }
            Key::Address(address) => {
                warn!(%address, block_for_secs, "too many wrong passwords from this address: locked out");
            }
        }
    }
}

/// Whether a line of `limiter`'s kind may be written now; if lines were left out
/// before it, says how many first.
fn admit(limiter: &LogLimiter, kind: &str) -> bool {
    match limiter.admit(Instant::now()) {
        Admit::Skip => false,
        Admit::Write { suppressed } => {
            if suppressed > 0 {
                warn!(
                    suppressed,
                    kind, "log lines left out in the last second (a flood)"
                );
            }
            true
        }
    }
}

/// What a lockout locked, for its log line.
#[derive(Debug, Clone, Copy)]
pub(super) enum Key<'a> {
    Name(&'a str),
    Address(IpAddr),
}

impl fmt::Debug for AuthStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AuthStats").field(&self.read()).finish()
    }
}

impl Collector for AuthStats {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        use MetricType::{Counter, Gauge};
        let read = self.read();
        let logins = LoginResult::ALL.map(|r| {
            (
                r.label(),
                self.inner.logins[r as usize].load(Relaxed) as f64,
            )
        });
        encode_labelled(
            &mut e,
            "gatehouse_arena_logins",
            "arena logins by how they ended",
            Counter,
            "result",
            logins,
        )?;
        encode_labelled(
            &mut e,
            "gatehouse_arena_lockouts",
            "Player names and addresses locked out after too many wrong passwords",
            Counter,
            "scope",
            [
                ("name", read.name_lockouts as f64),
                ("address", read.address_lockouts as f64),
            ],
        )?;
        encode_one(
            &mut e,
            "gatehouse_arena_password_hashes",
            "Argon2 password hashes made or checked",
            Counter,
            read.hashes as f64,
        )?;
        encode_one(
            &mut e,
            "gatehouse_arena_hashing_queue",
            "Password hashes waiting for a hashing thread",
            Gauge,
            read.hashing_queue as f64,
        )
    }
}
