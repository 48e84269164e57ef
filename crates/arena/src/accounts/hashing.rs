//! The threads that hash passwords, and their queue, served fairly between
//! addresses: each address (an IPv4 address, an IPv6 /64) has its own line, and the
//! threads take one hash from each waiting address in turn. A flood of hashes from
//! one address (account creations, guesses) then delays another address's login by
//! at most one hash per busy address, not by everything the flood queued.
//!
//! Also the Argon2id hashes themselves: made and checked in memory the thread keeps.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use super::Refused;

/// Threads that hash: Argon2 is made to be slow (about 20 ms and 19 MiB each), so a
/// few long-lived threads do it, one hash at a time each, each in memory of its own
/// that it keeps. (Argon2's own allocation per hash, freed and allocated again in
/// the allocator's many per-thread arenas, kept 360 MB resident after 20 logins; two
/// threads keep 38 MiB.)
pub(super) const HASHING_THREADS: usize = 2;

/// Hashes one address may have waiting; one more is refused at once. The budgets
/// keep an address far below it (20 guesses in flight, and its account creations);
/// it bounds the queue whatever they are configured to.
pub(super) const QUEUE_PER_ADDRESS: usize = 64;

/// Hashes waiting in all; one more is refused at once.
pub(super) const QUEUE_TOTAL: usize = 4096;

/// The most memory a stored hash may ask for (its `m` parameter, in KiB blocks): a
/// hash made with more is refused rather than allocated.
const MAX_BLOCKS: usize = 64 * 1024;

/// One hash to make or check, given its thread's memory; it answers for itself.
pub(super) type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The queue is full (in all, or for that address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct QueueFull;

/// The hashing threads and their queue. Dropping it stops the threads; jobs still
/// waiting are dropped unrun.
pub(super) struct Hashing {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or the queue closes.
    work: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Each waiting address's line, oldest first.
    lines: HashMap<IpAddr, VecDeque<Job>>,
    /// The addresses with a line, in the order they are served.
    turns: VecDeque<IpAddr>,
    waiting: usize,
    closed: bool,
}

impl Queue {
    /// The next job: the first of the address whose turn it is, which then goes to
    /// the back of the turns if it has more.
    fn next(&mut self) -> Option<Job> {
        let address = self.turns.pop_front()?;
        let line = self.lines.get_mut(&address)?;
        let job = line.pop_front();
        if line.is_empty() {
            self.lines.remove(&address);
        } else {
            self.turns.push_back(address);
        }
        if job.is_some() {
            self.waiting = self.waiting.saturating_sub(1);
        }
        job
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // No code that can panic runs under this lock (jobs run outside it).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Hashing {
    /// Starts the threads.
    pub(super) fn start() -> Self {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
        });
        for _ in 0..HASHING_THREADS {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("arena-hashing".into())
                .spawn(move || serve(&shared))
                .expect("a thread to hash passwords");
        }
        Hashing { shared }
    }

    /// Queues `job` in `address`'s line.
    pub(super) fn submit(&self, address: IpAddr, job: Job) -> Result<(), QueueFull> {
        let mut queue = self.shared.queue();
        let line_len = queue.lines.get(&address).map_or(0, VecDeque::len);
        if queue.closed || line_len >= QUEUE_PER_ADDRESS || queue.waiting >= QUEUE_TOTAL {
            return Err(QueueFull);
        }
        if line_len == 0 {
            queue.turns.push_back(address);
        }
        queue.lines.entry(address).or_default().push_back(job);
        queue.waiting += 1;
        drop(queue);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Hashes waiting for a thread.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.shared.queue().waiting
    }

    /// A reader of the queue's length, for the metrics.
    pub(super) fn depth(&self) -> QueueDepth {
        QueueDepth(self.shared.clone())
    }
}

/// Reads how many hashes wait (without keeping the threads running).
#[derive(Clone)]
pub(super) struct QueueDepth(Arc<Shared>);

impl QueueDepth {
    pub(super) fn read(&self) -> usize {
        self.0.queue().waiting
    }
}

impl Drop for Hashing {
    fn drop(&mut self) {
        let lines = {
            let mut queue = self.shared.queue();
            queue.closed = true;
            queue.turns.clear();
            queue.waiting = 0;
            std::mem::take(&mut queue.lines)
        };
        self.shared.work.notify_all();
        // Outside the lock: a dropped job gives its reservation back.
        drop(lines);
    }
}

/// A hashing thread: jobs, in turn, until the queue closes.
fn serve(shared: &Shared) {
    let mut memory = Vec::new();
    loop {
        let job = {
            let mut queue = shared.queue();
            loop {
                if queue.closed {
                    return;
                }
                if let Some(job) = queue.next() {
                    break job;
                }
                queue = shared
                    .work
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        job(&mut memory);
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
pub(super) fn make(password: &[u8], memory: &mut Vec<Block>) -> Result<String, Refused> {
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
pub(super) fn check(password: &[u8], phc: &str, memory: &mut Vec<Block>) -> Result<(), Refused> {
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A queue without threads, filled and then served by hand.
    #[test]
    fn addresses_are_served_in_turn_whatever_one_of_them_queued() {
        let mut queue = Queue::default();
        let (done, order) = mpsc::channel();
        let flood: IpAddr = "192.0.2.1".parse().unwrap();
        let player: IpAddr = "198.51.100.2".parse().unwrap();
        let push = |queue: &mut Queue, address: IpAddr, tag: &'static str| {
            let done = done.clone();
            if !queue.lines.contains_key(&address) {
                queue.turns.push_back(address);
            }
            let job: Job = Box::new(move |_| done.send(tag).unwrap());
            queue.lines.entry(address).or_default().push_back(job);
            queue.waiting += 1;
        };
        for _ in 0..10 {
            push(&mut queue, flood, "flood");
        }
        push(&mut queue, player, "player");
        let mut memory = Vec::new();
        let mut served = Vec::new();
        while let Some(job) = queue.next() {
            job(&mut memory);
            served.push(order.recv().unwrap());
        }
        assert_eq!(served.len(), 11);
        assert_eq!(served[1], "player", "second, not eleventh: {served:?}");
        assert_eq!((queue.waiting, queue.lines.len()), (0, 0));
    }

    #[test]
    fn one_address_cannot_queue_past_its_line() {
        let hashing = Hashing::start();
        // Held by the one job each thread runs, so nothing else starts.
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let blocker = |gate: Arc<Mutex<()>>| -> Job {
            Box::new(move |_| drop(gate.lock().unwrap_or_else(PoisonError::into_inner)))
        };
        let flood: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..HASHING_THREADS {
            hashing.submit(flood, blocker(gate.clone())).unwrap();
        }
        // Wait until both threads hold a job.
        while hashing.waiting() > 0 {
            std::thread::yield_now();
        }
        for _ in 0..QUEUE_PER_ADDRESS {
            hashing.submit(flood, Box::new(|_| {})).unwrap();
        }
        assert_eq!(hashing.submit(flood, Box::new(|_| {})), Err(QueueFull));
        let other: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(hashing.submit(other, Box::new(|_| {})), Ok(()));
        assert_eq!(hashing.waiting(), QUEUE_PER_ADDRESS + 1);
        drop(held);
    }
}
