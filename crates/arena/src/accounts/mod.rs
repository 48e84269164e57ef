//! Passwords, and who may try them. Argon2id hashes (PHC strings) are made and checked
//! on a few threads of their own, served fairly between addresses; every hash is
//! paid for in advance from a budget, so that guessing is slow and a flood of guesses
//! or new accounts costs the server little and other players nothing.
//!
//! What holds (the defaults in brackets; an address is an IPv4 address or an IPv6
//! /64):
//!
//! - **Guesses.** A password is only checked once a place is reserved for it in the
//!   budget of its player name (5) and of its address (20): each allows that many
//!   wrong passwords at once, then gets one back every minute divided by its limit
//!   [12 s for a name, 3 s for an address]. A check in flight holds its place, so however
//!   many logins arrive at once, no more are checked than the budgets have left;
//!   logins beyond that wait (at most 5 s, then status 1006: try again) for the
//!   checks ahead of them. A check
//!   that finds the right password gives its place back: only wrong passwords are
//!   charged. The wrong password that empties a budget locks its name or address
//!   out for `block_for` [1 min]: every login of that name, or from that address,
//!   is refused (status 1008) before any hash.
//! - **New accounts.** A login that sets a password (a new name, or a player saved
//!   before passwords) reserves a place in its address's budget of new accounts
//!   [60: that many at once, then one back a minute]; a hash made is charged, one
//!   that never ran is given back. Past it, status 1011 until a place comes back.
//! - **Fair hashing.** Each address waits in its own line; the threads take one hash
//!   from each waiting address in turn. A login therefore waits for at most one hash
//!   per other address with hashes waiting (plus the ones running), however many one
//!   address queued. An address may have 64 hashes waiting, and 4096 may wait in all;
//!   past either, status 1006 (try again).
//! - A login abandoned before its hash starts (its handler dropped: the connection
//!   kicked or closed, the handler timed out, the server stopping) gives its place
//!   back at once and is never hashed; one whose hash ran is charged by its result.
//! - Failed logins are logged (`login refused`, at info) and lockouts (at warn), each
//!   at most 50 lines a second, and counted (`gatehouse_arena_logins_total`,
//!   `gatehouse_arena_lockouts_total`).

mod budget;
mod hashing;
mod stats;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use argon2::Block;
use gatehouse::limits::counted_as;
use tokio::sync::{oneshot, Notify};

use self::budget::{Budgets, Rule, Verdict};
use self::hashing::{check, make, Hashing, Job};
pub(crate) use self::stats::LoginResult;
pub use self::stats::{AuthSnapshot, AuthStats};
use self::stats::{Key, Scope};

/// Shortest and longest password, in bytes.
pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=128;

/// How many wrong passwords are tolerated, and for how long a key is refused after.
#[derive(Debug, Clone, Copy)]
pub struct Guessing {
    /// Wrong passwords for one player name, at once and then per minute.
    pub per_name_per_minute: NonZeroU32,
    /// Wrong passwords from one address, at once and then per minute.
    pub per_ip_per_minute: NonZeroU32,
    /// How long a name or address whose budget a wrong password emptied is refused
    /// every login.
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

/// Accounts one address may create, at once and then per hour, by default.
pub const NEW_ACCOUNTS_PER_IP_PER_HOUR: u32 = 60;

/// How long a login waits for the checks in flight ahead of it to give back a place.
const WAIT_FOR_PLACE: Duration = Duration::from_secs(5);

/// IPv6 clients count by their /64, as the server's per-IP cap does by default.
const IPV6_PREFIX: u8 = 64;

/// Why a password was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Locked out, or the guesses in flight used the budget of this name or address.
    Blocked,
    /// Not the player's password.
    Wrong,
    /// This address made its share of new accounts.
    TooManyAccounts,
    /// The hashing queue is full (for this address, or in all), or the checks in
    /// flight ahead held every place for longer than a login waits.
    Busy,
    /// The stored hash cannot be read, or hashing failed.
    Broken,
}

impl Refused {
    /// How the login ended, for the counters; `None` for a fault of the server.
    pub(crate) fn result(self) -> Option<LoginResult> {
        match self {
            Refused::Blocked => Some(LoginResult::TooManyAttempts),
            Refused::Wrong => Some(LoginResult::WrongPassword),
            Refused::TooManyAccounts => Some(LoginResult::TooManyNewAccounts),
            Refused::Busy => Some(LoginResult::Busy),
            Refused::Broken => None,
        }
    }
}

/// The password checker.
pub(crate) struct Accounts {
    hashing: Hashing,
    guards: Arc<Guards>,
}

/// The budgets, under one lock so that a guess reserves in both its name's and its
/// address's at once.
struct Guards {
    budgets: Mutex<Keyed>,
    /// Woken whenever a reservation is settled: a waiting login may get its place.
    settled: Notify,
    block_for: Duration,
    stats: AuthStats,
}

struct Keyed {
    names: Budgets<String>,
    addresses: Budgets<IpAddr>,
    new_accounts: Budgets<IpAddr>,
}

impl Guards {
    fn budgets(&self) -> MutexGuard<'_, Keyed> {
        // No code that can panic runs under this lock.
        self.budgets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a reservation is for.
#[derive(Debug, Clone)]
enum Place {
    Guess { name: String, address: IpAddr },
    NewAccount { address: IpAddr },
}

impl Place {
    /// Why a login without a place is refused.
    fn refused(&self) -> Refused {
        match self {
            Place::Guess { .. } => Refused::Blocked,
            Place::NewAccount { .. } => Refused::TooManyAccounts,
        }
    }
}

/// A place held in the budgets while a hash waits or runs. Settled by the hash's
/// result; dropped unsettled (the hash never ran), it is given back.
struct Reservation {
    guards: Arc<Guards>,
    place: Place,
    settled: bool,
}

impl Reservation {
    fn settle(mut self, charge: bool) {
        self.settled = true;
        settle(&self.guards, &self.place, charge);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            settle(&self.guards, &self.place, false);
        }
    }
}

fn settle(guards: &Guards, place: &Place, charge: bool) {
    let now = Instant::now();
    let mut budgets = guards.budgets();
    let (name_locked, address_locked) = match place {
        Place::Guess { name, address } => (
            budgets.names.settle(name, charge, now),
            budgets.addresses.settle(address, charge, now),
        ),
        Place::NewAccount { address } => (false, budgets.new_accounts.settle(address, charge, now)),
    };
    drop(budgets);
    guards.settled.notify_waiters();
    if let (true, Place::Guess { name, .. }) = (name_locked, place) {
        guards
            .stats
            .locked_out(Scope::Name, Key::Name(name), guards.block_for);
    }
    if let (true, Place::Guess { address, .. }) = (address_locked, place) {
        guards
            .stats
            .locked_out(Scope::Address, Key::Address(*address), guards.block_for);
    }
}

impl Accounts {
    pub(crate) fn new(guessing: Guessing, new_accounts_per_ip_per_hour: NonZeroU32) -> Self {
        let minute = Duration::from_secs(60);
        let block = Some(guessing.block_for);
        let hashing = Hashing::start();
        let stats = AuthStats::new(hashing.depth());
        let budgets = Keyed {
            names: Budgets::new(Rule::new(guessing.per_name_per_minute.get(), minute, block)),
            addresses: Budgets::new(Rule::new(guessing.per_ip_per_minute.get(), minute, block)),
            new_accounts: Budgets::new(Rule::new(
                new_accounts_per_ip_per_hour.get(),
                Duration::from_secs(3600),
                None,
            )),
        };
        Accounts {
            hashing,
            guards: Arc::new(Guards {
                budgets: Mutex::new(budgets),
                settled: Notify::new(),
                block_for: guessing.block_for,
                stats,
            }),
        }
    }

    /// The login counters.
    pub(crate) fn stats(&self) -> &AuthStats {
        &self.guards.stats
    }

    /// Whether a login for `name` from `ip` may try a password now: not if either is
    /// locked out. (A cheap early answer; the place is reserved by [`Accounts::verify`].)
    pub(crate) fn admit(&self, name: &str, ip: IpAddr) -> Result<(), Refused> {
        let now = Instant::now();
        let budgets = self.guards.budgets();
        if budgets.names.locked(name, now) || budgets.addresses.locked(&address_of(ip), now) {
            return Err(Refused::Blocked);
        }
        Ok(())
    }

    /// Checks `password` against a stored PHC `hash`, once the name and the address
    /// have a place for it; a wrong one is charged to both.
    pub(crate) async fn verify(
        &self,
        name: &str,
        ip: IpAddr,
        password: &str,
        hash: &str,
    ) -> Result<(), Refused> {
        let address = address_of(ip);
        let place = Place::Guess {
            name: name.to_owned(),
            address,
        };
        let reservation = self.reserve(place).await?;
        let (password, hash) = (password.to_owned(), hash.to_owned());
        self.hash(
            address,
            reservation,
            |checked| checked == &Err(Refused::Wrong),
            move |memory| check(password.as_bytes(), &hash, memory),
        )
        .await
    }

    /// A new PHC hash of `password` (with a fresh random salt) for a new account,
    /// once `ip`'s budget of new accounts has a place for it.
    pub(crate) async fn create(&self, ip: IpAddr, password: &str) -> Result<String, Refused> {
        let address = address_of(ip);
        let reservation = self.reserve(Place::NewAccount { address }).await?;
        let password = password.to_owned();
        self.hash(address, reservation, Result::is_ok, move |memory| {
            make(password.as_bytes(), memory)
        })
        .await
    }

    /// Reserves `place`, waiting (within [`WAIT_FOR_PLACE`]) while the hashes in
    /// flight hold every place left.
    async fn reserve(&self, place: Place) -> Result<Reservation, Refused> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_PLACE;
        loop {
            // Listening before asking: a settlement between the two is not missed.
            let settled = self.guards.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            match self.try_reserve(&place) {
                Verdict::Reserved => {
                    return Ok(Reservation {
                        guards: self.guards.clone(),
                        place,
                        settled: false,
                    })
                }
                Verdict::Refused => return Err(place.refused()),
                Verdict::Wait => {}
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                // Nothing was wrong with this login: the checks ahead took too long.
                return Err(Refused::Busy);
            }
        }
    }

    fn try_reserve(&self, place: &Place) -> Verdict {
        let now = Instant::now();
        let mut budgets = self.guards.budgets();
        match place {
            Place::Guess { name, address } => {
                let name = name.clone();
                let verdicts = [
                    budgets.names.verdict(&name, now),
                    budgets.addresses.verdict(address, now),
                ];
                if verdicts.contains(&Verdict::Refused) {
                    Verdict::Refused
                } else if verdicts.contains(&Verdict::Wait) {
                    Verdict::Wait
                } else {
                    budgets.names.reserve(name, now);
                    budgets.addresses.reserve(*address, now);
                    Verdict::Reserved
                }
            }
            Place::NewAccount { address } => {
                let verdict = budgets.new_accounts.verdict(address, now);
                if verdict == Verdict::Reserved {
                    budgets.new_accounts.reserve(*address, now);
                }
                verdict
            }
        }
    }

    /// Runs `work` on a hashing thread, in `address`'s line, and settles
    /// `reservation` by its result (`charge` says which results are charged) before
    /// answering. If the login is gone before its turn, nothing is hashed.
    async fn hash<T: Send + 'static>(
        &self,
        address: IpAddr,
        reservation: Reservation,
        charge: impl FnOnce(&Result<T, Refused>) -> bool + Send + 'static,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T, Refused> + Send + 'static,
    ) -> Result<T, Refused> {
        let (answer, answered) = oneshot::channel();
        let stats = self.guards.stats.clone();
        // The reservation waits in line with the job, which takes it when its turn
        // comes; a login dropped before that gives it back at once (`Abandoned`),
        // so that a dead login holds no place while its job waits behind others.
        let slot = Arc::new(Mutex::new(Some(reservation)));
        let _abandoned = Abandoned(slot.clone());
        let job: Job = Box::new(move |memory| {
            let Some(reservation) = lock(&slot).take() else {
                return; // the login is gone: nothing to hash
            };
            stats.hashed();
            // A panic in the hash is an error for this login, not a dead thread.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(memory)))
                .unwrap_or(Err(Refused::Broken));
            reservation.settle(charge(&result));
            let _ = answer.send(result);
        });
        // Refused, the job is dropped and the reservation with it: given back.
        self.hashing
            .submit(address, job)
            .map_err(|_| Refused::Busy)?;
        answered.await.map_err(|_| Refused::Broken)?
    }
}

/// Gives a queued hash's reservation back if its login is dropped before the job
/// took it.
struct Abandoned(Arc<Mutex<Option<Reservation>>>);

impl Drop for Abandoned {
    fn drop(&mut self) {
        // Dropped outside the lock: giving a place back takes the budgets' lock.
        let reservation = lock(&self.0).take();
        drop(reservation);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only a take() runs under this lock.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The address budgets and hashing lines count by.
fn address_of(ip: IpAddr) -> IpAddr {
    counted_as(ip, IPV6_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts(per_name: u32, per_ip: u32, new_accounts: u32) -> Accounts {
        Accounts::new(
            Guessing {
                per_name_per_minute: NonZeroU32::new(per_name).unwrap(),
                per_ip_per_minute: NonZeroU32::new(per_ip).unwrap(),
                block_for: Duration::from_secs(60),
            },
            NonZeroU32::new(new_accounts).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let accounts = accounts(5, 20, 10);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let hash = accounts.create(ip, "correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
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
        use argon2::password_hash::rand_core::OsRng;
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        let theirs = argon2::Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        assert_eq!(
            accounts.verify("ada", ip, "correct horse", &theirs).await,
            Ok(())
        );
        let read = accounts.stats().read();
        assert_eq!(read.hashes, 5);
    }

    #[tokio::test]
    async fn wrong_passwords_use_up_the_name_and_the_address_and_lock_them_out() {
        let accounts = accounts(2, 3, 10);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let hash = accounts.create(ip, "ada's password").await.unwrap();
        let wrong = |name: &'static str, ip: IpAddr| {
            let (accounts, hash) = (&accounts, hash.clone());
            async move { accounts.verify(name, ip, "a wrong guess", &hash).await }
        };
        assert_eq!(wrong("ada", ip).await, Err(Refused::Wrong));
        assert_eq!(accounts.admit("ada", ip), Ok(()));
        // The second wrong one empties ada's budget: locked out, right password too.
        assert_eq!(wrong("ada", ip).await, Err(Refused::Wrong));
        assert_eq!(accounts.admit("ada", ip), Err(Refused::Blocked));
        assert_eq!(
            accounts.verify("ada", ip, "ada's password", &hash).await,
            Err(Refused::Blocked)
        );
        // The address has one wrong password left: bob's takes it and locks it.
        assert_eq!(accounts.admit("bob", ip), Ok(()));
        assert_eq!(wrong("bob", ip).await, Err(Refused::Wrong));
        assert_eq!(accounts.admit("bob", ip), Err(Refused::Blocked));
        assert_eq!(accounts.admit("bob", IpAddr::from([10, 0, 0, 2])), Ok(()));
        let read = accounts.stats().read();
        assert_eq!((read.name_lockouts, read.address_lockouts), (1, 1));
        // IPv6 counts per /64.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for name in ["c1", "c2", "c3"] {
            assert_eq!(wrong(name, a).await, Err(Refused::Wrong));
        }
        assert_eq!(accounts.admit("carol", b), Err(Refused::Blocked));
        assert_eq!(
            accounts.admit("carol", "2001:db8:1:3::1".parse().unwrap()),
            Ok(())
        );
    }

    /// Logins beyond the budget wait for the checks ahead of them: right passwords
    /// all get through, wrong ones stop at the budget.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logins_past_the_budget_wait_so_right_ones_all_pass_and_wrong_ones_stop_at_it() {
        let accounts = Arc::new(accounts(100, 3, 10));
        let ip = IpAddr::from([10, 0, 0, 1]);
        let hash = accounts.create(ip, "the password").await.unwrap();
        let all_at_once = |password: &'static str| {
            let mut logins = tokio::task::JoinSet::new();
            for i in 0..10 {
                let (accounts, hash) = (accounts.clone(), hash.clone());
                logins.spawn(async move {
                    accounts.verify(&format!("p{i}"), ip, password, &hash).await
                });
            }
            logins.join_all()
        };
        let right = all_at_once("the password").await;
        assert_eq!(right, vec![Ok(()); 10]);
        let wrong = all_at_once("not the password").await;
        let count = |r: Result<(), Refused>| wrong.iter().filter(|w| **w == r).count();
        assert_eq!(
            (count(Err(Refused::Wrong)), count(Err(Refused::Blocked))),
            (3, 7)
        );
        assert_eq!(accounts.stats().read().hashes, 1 + 10 + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_kept_waiting_past_its_wait_by_the_checks_ahead_is_busy_not_blocked() {
        let accounts = accounts(100, 2, 10);
        let address = IpAddr::from([10, 0, 0, 1]);
        let guess = |name: &str| Place::Guess {
            name: name.to_owned(),
            address,
        };
        // Two checks in flight hold the address's two places, and never settle.
        let _ahead = [
            accounts.reserve(guess("a")).await.unwrap(),
            accounts.reserve(guess("b")).await.unwrap(),
        ];
        let waited = tokio::time::Instant::now();
        assert_eq!(
            accounts.reserve(guess("c")).await.err(),
            Some(Refused::Busy),
            "try again (1006), not 'too many wrong passwords' (1008)"
        );
        assert_eq!(waited.elapsed(), WAIT_FOR_PLACE);
    }

    #[tokio::test]
    async fn a_login_dropped_while_its_hash_waits_in_line_gives_its_place_back_at_once() {
        let accounts = Arc::new(accounts(100, 1, 10));
        let guess = |address: IpAddr| Place::Guess {
            name: "ada".to_owned(),
            address,
        };
        // Both hashing threads busy with jobs that wait for the test.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut busy = tokio::task::JoinSet::new();
        for last in 1..=2u8 {
            let address = IpAddr::from([10, 0, 0, last]);
            let reservation = accounts.reserve(guess(address)).await.unwrap();
            let (accounts, released, running) =
                (accounts.clone(), released.clone(), running.clone());
            busy.spawn(async move {
                let work = move |_: &mut Vec<Block>| {
                    running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = lock(&released).recv();
                    Ok(())
                };
                accounts.hash(address, reservation, |_| false, work).await
            });
        }
        while running.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // A third address's login: its one place is reserved, its job waits in line.
        let third = IpAddr::from([10, 0, 0, 3]);
        let reservation = accounts.reserve(guess(third)).await.unwrap();
        let login = {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let work = |_: &mut Vec<Block>| Ok(());
                accounts.hash(third, reservation, |_| true, work).await
            })
        };
        while accounts.hashing.depth().read() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(accounts.try_reserve(&guess(third)), Verdict::Wait);
        // Its connection goes: the place comes back before the job's turn.
        login.abort();
        let _ = login.await;
        assert_eq!(accounts.try_reserve(&guess(third)), Verdict::Reserved);
        for _ in 0..2 {
            let _ = release.send(());
        }
        while busy.join_next().await.is_some() {}
        assert_eq!(
            accounts.stats().read().hashes,
            2,
            "the dropped login hashed nothing"
        );
    }

    #[tokio::test]
    async fn an_address_makes_its_share_of_new_accounts_and_no_more() {
        let accounts = accounts(5, 20, 2);
        let ip = IpAddr::from([10, 0, 0, 1]);
        accounts.create(ip, "password 1").await.unwrap();
        accounts.create(ip, "password 2").await.unwrap();
        assert_eq!(
            accounts.create(ip, "password 3").await,
            Err(Refused::TooManyAccounts)
        );
        accounts
            .create(IpAddr::from([10, 0, 0, 2]), "password 4")
            .await
            .unwrap();
        assert_eq!(
            accounts.stats().read().hashes,
            3,
            "the refused one hashed nothing"
        );
    }
}
