//! Passwords: Argon2id hashes (PHC strings) made and checked off the async threads,
//! a few at a time, and wrong passwords limited per address and per player name so
//! that guessing is slow and a flood of guesses costs the server little.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{mpsc, oneshot};

/// Shortest and longest password, in bytes.
pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=128;

/// How many wrong passwords are tolerated, and for how long a key is refused after.
#[derive(Debug, Clone, Copy)]
pub struct Guessing {
    /// Wrong passwords for one player name, in a burst and then per minute.
    pub per_name_per_minute: NonZeroU32,
    /// Wrong passwords from one IP address, in a burst and then per minute.
    pub per_ip_per_minute: NonZeroU32,
    /// How long a name or address that went over is refused every login.
    pub block_for: Duration,
}

impl Default for Guessing {
    fn default() -> Self {
        Guessing {
            per_name_per_minute: NonZeroU32::new(5).expect("not zero"),
            per_ip_per_minute: NonZeroU32::new(20).expect("not zero"),
            block_for: Duration::from_secs(60),
        }
    }
}

/// Why a password was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Too many wrong passwords lately for this name or from this address.
    Blocked,
    /// Not the player's password.
    Wrong,
    /// The stored hash cannot be read, or hashing failed.
    Broken,
}

/// Threads that hash: Argon2 is made to be slow (about 20 ms and 19 MiB each), so a
/// few long-lived threads do it, one hash at a time each, each in memory of its own
/// that it keeps. (Argon2's own allocation per hash, freed and allocated again in
/// the allocator's many per-thread arenas, kept 360 MB resident after 20 logins; two
/// threads keep 38 MiB.)
const HASHING_THREADS: usize = 2;

/// Hashes waiting for a thread; a login beyond them waits.
const HASHING_QUEUE: usize = 256;

/// The most memory a stored hash may ask for (its `m` parameter, in KiB blocks): a
/// hash made with more is refused rather than allocated.
const MAX_BLOCKS: usize = 64 * 1024;

/// One hash to make or check, given its thread's memory, and where its answer goes.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The password checker.
pub(crate) struct Accounts {
    hashing: mpsc::Sender<Job>,
    names: FailureLimit<String>,
    addresses: FailureLimit<IpAddr>,
}

impl Accounts {
    pub(crate) fn new(guessing: Guessing) -> Self {
        let (hashing, jobs) = mpsc::channel::<Job>(HASHING_QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..HASHING_THREADS {
            let jobs = jobs.clone();
            // The threads end when the Accounts (the only sender) is dropped.
            std::thread::Builder::new()
                .name("arena-hashing".into())
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        let job = jobs
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .blocking_recv();
                        match job {
                            Some(job) => job(&mut memory),
                            None => return,
                        }
                    }
                })
                .expect("a thread to hash passwords");
        }
        Accounts {
            hashing,
            names: FailureLimit::new(guessing.per_name_per_minute, guessing.block_for),
            addresses: FailureLimit::new(guessing.per_ip_per_minute, guessing.block_for),
        }
    }

    /// Whether a login for `name` from `ip` may try a password now.
    pub(crate) fn admit(&self, name: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.names.blocked(name) || self.addresses.blocked(&network(ip)) {
            return Err(Refused::Blocked);
        }
        Ok(())
    }

    /// Checks `password` against a stored PHC `hash`; a wrong one counts against the
    /// name and the address.
    pub(crate) async fn verify(
        &self,
        name: &str,
        ip: IpAddr,
        password: &str,
        hash: &str,
    ) -> Result<(), Refused> {
        let (password, hash) = (password.to_owned(), hash.to_owned());
        let checked = self
            .hashing(move |memory| check(password.as_bytes(), &hash, memory))
            .await;
        if checked == Err(Refused::Wrong) {
            self.names.failed(name.to_owned());
            self.addresses.failed(network(ip));
        }
        checked
    }

    /// A new PHC hash of `password`, with a fresh random salt.
    pub(crate) async fn hash(&self, password: &str) -> Result<String, Refused> {
        let password = password.to_owned();
        self.hashing(move |memory| make(password.as_bytes(), memory))
            .await
    }

    /// Runs `work` on a hashing thread.
    async fn hashing<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, Refused> + Send + 'static,
    ) -> Result<T, Refused> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // A panic in the hash is an error for this login, not a dead thread.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(memory)))
                .unwrap_or(Err(Refused::Broken));
            let _ = answer.send(result);
        });
        self.hashing.send(job).await.map_err(|_| Refused::Broken)?;
        answered.await.map_err(|_| Refused::Broken)?
    }
}

/// The address wrong passwords count against: an IPv4 address, or an IPv6 /64 (one
/// host usually has a whole /64, as the server's admission counts it).
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

/// Any error of the hashing crates: the hash cannot be made or read.
fn broken<E>(_: E) -> Refused {
    Refused::Broken
}

/// `blocks` of the thread's memory, grown if needed (within [`MAX_BLOCKS`]).
fn blocks(memory: &mut Vec<Block>, count: usize) -> Result<&mut [Block], Refused> {
    if count > MAX_BLOCKS {
        return Err(Refused::Broken);
    }
    if memory.len() < count {
        memory.resize(count, Block::default());
    }
    Ok(&mut memory[..count])
}

/// A new Argon2id PHC string for `password`, with a fresh random salt and the
/// default parameters (m = 19 MiB, t = 2, p = 1).
fn make(password: &[u8], memory: &mut Vec<Block>) -> Result<String, Refused> {
    let params = Params::DEFAULT;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(broken)?;
    let blocks = blocks(memory, params.block_count())?;
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon2
            .hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks)
            .map_err(|_| password_hash::Error::Crypto)
    })
    .map_err(broken)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(broken)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` is the one `phc` was made from (compared in constant time).
fn check(password: &[u8], phc: &str, memory: &mut Vec<Block>) -> Result<(), Refused> {
    let parsed = PasswordHash::new(phc).map_err(broken)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(broken)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(broken)?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(broken)?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(Refused::Broken);
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(broken)?;
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let blocks = blocks(memory, params.block_count())?;
    let actual = Output::init_with(expected.len(), |out| {
        argon2
            .hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks)
            .map_err(|_| password_hash::Error::Crypto)
    })
    .map_err(broken)?;
    // Output's equality is constant-time.
    if actual == expected {
        Ok(())
    } else {
        Err(Refused::Wrong)
    }
}

/// Failures per key within a GCRA quota (governor); a key that goes over is refused
/// for `block_for`. Both maps are pruned as they grow, so a flood of new keys costs
/// bounded memory.
struct FailureLimit<K: Hash + Eq + Clone> {
    failures: DefaultKeyedRateLimiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
    block_for: Duration,
}

/// Keys kept before the maps are pruned of forgotten ones.
const PRUNE_AT: usize = 10_000;

impl<K: Hash + Eq + Clone> FailureLimit<K> {
    fn new(per_minute: NonZeroU32, block_for: Duration) -> Self {
        FailureLimit {
            failures: RateLimiter::keyed(Quota::per_minute(per_minute)),
            blocked: Mutex::new(HashMap::new()),
            block_for,
        }
    }

    fn blocked<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        blocked
            .get(key)
            .is_some_and(|until| Instant::now() < *until)
    }

    fn failed(&self, key: K) {
        if self.failures.len() > PRUNE_AT {
            self.failures.retain_recent();
        }
        if self.failures.check_key(&key).is_ok() {
            return;
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() > PRUNE_AT {
            blocked.retain(|_, until| now < *until);
        }
        blocked.insert(key, now + self.block_for);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let accounts = Accounts::new(Guessing::default());
        let hash = accounts.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let ip = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(
            accounts.verify("ada", ip, "correct horse", &hash).await,
            Ok(())
        );
        assert_eq!(
            accounts.verify("ada", ip, "battery staple", &hash).await,
            Err(Refused::Wrong)
        );
        assert_eq!(
            accounts.verify("ada", ip, "x", "not a hash").await,
            Err(Refused::Broken)
        );
        // A hash made by the argon2 crate's own API (any PHC string) checks too.
        use argon2::password_hash::PasswordHasher as _;
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            accounts.verify("ada", ip, "correct horse", &theirs).await,
            Ok(())
        );
    }

    #[test]
    fn wrong_passwords_past_the_quota_block_the_name_and_the_address() {
        let accounts = Accounts::new(Guessing {
            per_name_per_minute: NonZeroU32::new(2).unwrap(),
            per_ip_per_minute: NonZeroU32::new(3).unwrap(),
            block_for: Duration::from_secs(60),
        });
        let ip = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..2 {
            accounts.names.failed("ada".to_owned());
        }
        assert_eq!(accounts.admit("ada", ip), Ok(()));
        accounts.names.failed("ada".to_owned());
        assert_eq!(accounts.admit("ada", ip), Err(Refused::Blocked));
        assert_eq!(accounts.admit("bob", ip), Ok(()));
        for _ in 0..4 {
            accounts.addresses.failed(ip);
        }
        assert_eq!(accounts.admit("bob", ip), Err(Refused::Blocked));
        assert_eq!(accounts.admit("bob", IpAddr::from([10, 0, 0, 2])), Ok(()));
        // IPv6 counts per /64.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for _ in 0..4 {
            accounts.addresses.failed(network(a));
        }
        assert_eq!(accounts.admit("carol", b), Err(Refused::Blocked));
        assert_eq!(
            accounts.admit("carol", "2001:db8:1:3::1".parse().unwrap()),
            Ok(())
        );
    }
}
