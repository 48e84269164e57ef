//! Criterion micro-benchmarks of broadcast: encoding the push once, and handing it
//! to 1,000 and 10,000 connection mailboxes.
//!
//! `cargo bench -p gatehouse --bench broadcast`
//!
//! The hub and the mailboxes are crate-private (`hub::spawn`, `outbound::Mailbox`),
//! so the fan-out is measured on a replica: the hub's `Command::Broadcast` loop over
//! a `HashMap<ConnId, Entry>` and `Mailbox::deliver` for a frame (lock, closed check,
//! byte budget reservation, `VecDeque::push_back`, a `Notify` for the first
//! delivery), copied from `src/hub.rs` and `src/outbound.rs`. It keeps their data
//! structures and atomics exactly, so it measures the same work, but it would not
//! notice a change to them: benchmarking the real code needs a public hook (a
//! `#[doc(hidden)]` constructor of a hub with N detached mailboxes). What is public
//! is measured directly: `Message::to_frame`, the encode-once that
//! `HubHandle::broadcast` does before handing the frame to the hub.

#![allow(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gatehouse::{ConnId, Message};
use std::hint::black_box;
use tokio::sync::Notify;

/// Replica of `outbound::Delivery` (same variants, so the same size).
#[allow(dead_code)]
enum Delivery {
    Frame(Bytes),
    Message(()),
    Kick(u16, String),
}

/// Replica of `outbound::MailboxState`.
struct MailboxState {
    queue: VecDeque<Delivery>,
    overflowed: bool,
    closed: bool,
}

/// Replica of `outbound::Mailbox` (minus the interrupt token, unused for frames).
struct Mailbox {
    state: Mutex<MailboxState>,
    unsent: AtomicUsize,
    limit: usize,
    notify: Notify,
}

impl Mailbox {
    fn new(limit: usize) -> Mailbox {
        Mailbox {
            state: Mutex::new(MailboxState {
                queue: VecDeque::new(),
                overflowed: false,
                closed: false,
            }),
            unsent: AtomicUsize::new(0),
            limit,
            notify: Notify::new(),
        }
    }

    /// `Mailbox::deliver` for a frame.
    fn deliver(&self, delivery: Delivery) -> bool {
        let cost = match &delivery {
            Delivery::Frame(frame) => frame.len(),
            Delivery::Message(()) => 64,
            Delivery::Kick(..) => 0,
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return false;
        }
        if cost > 0 && !self.reserve(cost) {
            state.overflowed = true;
            drop(state);
            self.notify.notify_one();
            return false;
        }
        state.queue.push_back(delivery);
        let first = state.queue.len() == 1;
        drop(state);
        if first {
            self.notify.notify_one();
        }
        true
    }

    fn reserve(&self, n: usize) -> bool {
        let before = self.unsent.fetch_add(n, Ordering::AcqRel);
        if before + n > self.limit {
            self.unsent.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// What the connection task does when it takes its queue (not timed).
    fn drain(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let taken: usize = state
            .queue
            .drain(..)
            .map(|d| match d {
                Delivery::Frame(f) => f.len(),
                _ => 0,
            })
            .sum();
        self.unsent.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// Replica of the hub's registry entry.
struct Entry {
    mailbox: Arc<Mailbox>,
    #[allow(dead_code)]
    groups: Vec<Arc<str>>,
}

/// The hub's `Command::Broadcast` arm.
fn broadcast(conns: &HashMap<ConnId, Entry>, frame: &Bytes, except: Option<ConnId>) {
    for (id, entry) in conns {
        if Some(*id) != except {
            entry.mailbox.deliver(Delivery::Frame(frame.clone()));
        }
    }
}

fn registry(n: u64) -> HashMap<ConnId, Entry> {
    (0..n)
        .map(|i| {
            let entry = Entry {
                mailbox: Arc::new(Mailbox::new(1 << 20)),
                groups: Vec::new(),
            };
            (ConnId(i), entry)
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let payload = Bytes::from(vec![0x5a; 64]);
    let mut group = c.benchmark_group("broadcast");
    group.bench_function("encode_once/64", |b| {
        b.iter(|| {
            Message::Push {
                route: 2,
                payload: black_box(payload.clone()),
            }
            .to_frame()
        });
    });
    let frame = Message::Push { route: 2, payload }.to_frame();
    for n in [1_000u64, 10_000] {
        let conns = registry(n);
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(
            BenchmarkId::new("fan_out_replica", n),
            &conns,
            |b, conns| {
                // Time the fan-out only; the connections' draining happens between
                // iterations, as it would between two broadcasts.
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        broadcast(conns, black_box(&frame), None);
                        timed += started.elapsed();
                        for entry in conns.values() {
                            entry.mailbox.drain();
                        }
                    }
                    timed
                });
            },
        );
    }
    group.finish();
}

criterion_group!(broadcast_benches, benches);
criterion_main!(broadcast_benches);
