//! The server-wide memory budget, from outside: clients that each send most of a
//! large frame and stop cannot make the server's resident memory grow past the
//! budget (plus each connection's free share), and the server goes on serving.

#![allow(clippy::unwrap_used)]

mod process;
#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use gatehouse::bench_service::routes;
use process::{scratch, write_file, ServerProcess};
use support::Client;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_large_frames_cannot_grow_the_server_past_its_memory_budget() {
    const CLIENTS: usize = 100;
    const SENT: usize = 900 * 1024; // of a 1 MiB frame
    const BUDGET: u64 = 8 << 20;
    let dir = scratch("memory");
    let config = write_file(
        &dir,
        "gatehouse.toml",
        &format!(
            "[server]\nmemory_budget_bytes = {BUDGET}\nmax_connections_per_ip = 1000\n\
             [limits]\nmax_frame_bytes = 1048576\ninbound_bytes_burst = 4194304\n\
             inbound_bytes_per_sec = 4194304\noutbound_queue_bytes = 2097152\n"
        ),
    );
    let server =
        ServerProcess::start(&["--service", "bench", "--config", config.to_str().unwrap()]);
    let mut streams = Vec::new();
    for _ in 0..CLIENTS {
        streams.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    // Every connection accepted and idle before the baseline.
    let mut probe = Client::connect(server.addr).await;
    assert_eq!(probe.request(routes::ECHO, "ready").await.1, "ready");
    let before = server.rss_bytes();

    let mut partial = Vec::with_capacity(4 + SENT);
    partial.extend_from_slice(&(1u32 << 20).to_be_bytes());
    partial.resize(4 + SENT, 7);
    for stream in &mut streams {
        stream.write_all(&partial).await.unwrap();
    }
    // Measured once the server has read nearly all it will: its free shares, and
    // the budget nearly spent (all of it, without the budget).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let used = server.metric("gatehouse_memory_budget_used_bytes");
        if used.is_some_and(|used| used >= 0.9 * BUDGET as f64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the budget is never used: {used:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = server.rss_bytes().saturating_sub(before);
    let unbounded = (CLIENTS * SENT) as u64;
    // Each connection holds its free share and at most one read beyond it; the
    // allocator keeps some of what buffers grew out of (16 MiB of slack for that).
    let bound = BUDGET + CLIENTS as u64 * (64 + 16) * 1024 + (16 << 20);
    println!(
        "RSS grew {} KiB with {CLIENTS} half-sent 1 MiB frames ({} KiB if all were buffered; bound {} KiB)",
        grown / 1024,
        unbounded / 1024,
        bound / 1024
    );
    assert!(grown < bound, "RSS grew {grown} bytes, over {bound}");
    assert!(bound < unbounded / 2, "the test must tell the two apart");
    // The server goes on serving.
    let mut fresh = Client::connect(server.addr).await;
    assert_eq!(
        fresh.request(routes::ECHO, "still here").await.1,
        "still here"
    );
}
