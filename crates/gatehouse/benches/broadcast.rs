//! Criterion micro-benchmarks of broadcast: encoding the push once, and the hub
//! handing it to 1,000 and 10,000 connection mailboxes.
//!
//! `cargo bench -p gatehouse --bench broadcast`
//!
//! The fan-out runs the hub's real `Command::Broadcast` handling and
//! `Mailbox::deliver` through `gatehouse::bench_support::FanOut` (a hub with
//! detached mailboxes: no runtime, tasks or sockets). Waking the connection tasks is
//! not included; the end-to-end broadcast scenario of `scripts/bench.sh` is.

#![allow(missing_docs)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gatehouse::bench_support::FanOut;
use gatehouse::Message;
use std::hint::black_box;

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
        let mut hub = FanOut::new(n);
        group.throughput(Throughput::Elements(n));
        group.bench_function(BenchmarkId::new("fan_out", n), |b| {
            // Time the fan-out only; the connections' draining happens between
            // iterations, as it would between two broadcasts.
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    hub.broadcast(black_box(&frame));
                    timed += started.elapsed();
                    hub.drain();
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(broadcast_benches, benches);
criterion_main!(broadcast_benches);
