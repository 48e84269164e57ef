//! Criterion micro-benchmarks of the envelope codec (`gatehouse_protocol`): encoding
//! and decoding request and push frames with 64-byte and 4-KiB payloads.
//!
//! `cargo bench -p gatehouse-protocol --bench codec`
//!
//! - `to_frame`: a whole frame into a fresh buffer (how a response, a push or a
//!   broadcast is encoded once).
//! - `encode_body`: the body into a reused buffer (no allocation).
//! - `decode`: a body into a `Message` (payloads are sliced, not copied).

#![allow(missing_docs)]

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gatehouse_protocol::{Message, HEADER_LEN};
use std::hint::black_box;

fn messages() -> Vec<(&'static str, usize, Message)> {
    let mut out = Vec::new();
    for size in [64usize, 4096] {
        let payload = Bytes::from(vec![0xa5; size]);
        out.push((
            "request",
            size,
            Message::Request {
                id: 7,
                route: 1,
                payload: payload.clone(),
            },
        ));
        out.push(("push", size, Message::Push { route: 2, payload }));
    }
    out
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for (kind, size, message) in messages() {
        let frame = message.to_frame();
        group.throughput(Throughput::Bytes(frame.len() as u64));
        let id = |op: &str| BenchmarkId::new(format!("{op}/{kind}"), size);

        group.bench_with_input(id("to_frame"), &message, |b, m| {
            b.iter(|| black_box(m).to_frame());
        });

        let mut buf = BytesMut::with_capacity(frame.len());
        group.bench_with_input(id("encode_body"), &message, |b, m| {
            b.iter(|| {
                buf.clear();
                black_box(m).encode_body(&mut buf);
                black_box(buf.len())
            });
        });

        let body = frame.slice(HEADER_LEN..);
        group.bench_with_input(id("decode"), &body, |b, body| {
            b.iter(|| Message::decode(black_box(body.clone())));
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
