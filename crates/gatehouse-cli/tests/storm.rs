//! Many connections against the real binary, client and server in separate
//! processes (one process may hold at most ~19,900 sockets here): a storm of 15,000
//! simultaneous connects is accepted and answered in well under 2 s, and 15,000 idle
//! connections then cost the server next to no CPU.

#![allow(clippy::unwrap_used)]

mod process;
#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse::bench_service::routes;
use gatehouse::Message;
use process::{scratch, write_file, ServerProcess};
use support::Client;

const CONNECTIONS: usize = 15_000;

/// Connects from 127.0.0.2… so no one source address runs short of ports.
async fn connect_and_ping(addr: SocketAddr, i: usize) -> Client {
    let source: IpAddr = [127, 0, 0, 2 + (i % 4) as u8].into();
    let mut client = Client::connect_from(source, addr).await;
    client.send(&Message::Ping(Bytes::new())).await;
    assert_eq!(client.recv().await, Some(Message::Pong(Bytes::new())));
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_15000_connects_is_answered_fast_and_then_idles_cheaply() {
    let dir = scratch("storm");
    let config = write_file(
        &dir,
        "storm.toml",
        "[server]\nmax_connections = 16000\nmax_connections_per_ip = 16000\n",
    );
    let server = ServerProcess::start(&[
        "--service",
        "bench",
        "--config",
        config.to_str().unwrap(),
        "--log",
        "warn",
    ]);
    let rss_before = server.rss_bytes();

    let started = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|i| tokio::spawn(connect_and_ping(server.addr, i)))
        .collect();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    let storm = started.elapsed();

    let (status, count) = clients[0].request(routes::COUNT, "").await;
    assert!(status.is_ok());
    assert_eq!(count[..], (CONNECTIONS as u32).to_be_bytes());

    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = server.cpu_time();
    let idle_for = Duration::from_secs(3);
    tokio::time::sleep(idle_for).await;
    let idle_cpu = server.cpu_time() - cpu_before;
    let rss_per_conn = server.rss_bytes().saturating_sub(rss_before) / CONNECTIONS as u64;
    let idle_share = idle_cpu.as_secs_f64() / idle_for.as_secs_f64();
    println!(
        "storm: {CONNECTIONS} connects answered in {storm:?}; idle: {:.2}% of a core, \
         {rss_per_conn} bytes RSS per connection",
        idle_share * 100.0
    );
    assert!(storm < Duration::from_secs(2), "storm took {storm:?}");
    // The seed wakes every connection every second; here nothing runs while idle.
    // (/proc counts in 10 ms ticks: 3 ticks in 3 s is 1 %.)
    assert!(
        idle_share < 0.02,
        "idle server used {:.2}% of a core",
        idle_share * 100.0
    );
    drop(clients);
}
