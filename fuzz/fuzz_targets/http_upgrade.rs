//! The WebSocket listener's HTTP parsing on any bytes: a request head read in any
//! chunking (or refused), the decision on it (upgrade, page, refusal), and the
//! `X-Forwarded-For` it carries, from a trusted proxy or a stranger. The checks are
//! `gatehouse::fuzzing`'s (`crates/gatehouse/src/listener/http_checks.rs`).
#![no_main]

use std::net::SocketAddr;

use gatehouse::listener::{Pages, WebOptions};
use libfuzzer_sys::fuzz_target;

/// The peers a request may come from: our proxies (IPv4, IPv6) and strangers.
const PEERS: [&str; 4] = [
    "10.0.0.1:5000",
    "[fd00::1]:5000",
    "198.51.100.9:5000",
    "[2001:db8::9]:5000",
];

fuzz_target!(|input: (u8, bool, Vec<u16>, Vec<u8>)| {
    let (peer, secure, chunks, wire) = input;
    let Ok(peer) = PEERS[usize::from(peer) % PEERS.len()].parse::<SocketAddr>() else {
        return;
    };
    let options = WebOptions {
        allowed_origins: vec!["https://game.example".to_owned()],
        trusted_proxies: ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .filter_map(|net| net.parse().ok())
            .collect(),
        pages: Pages::new().with("/", "text/html", "<p>arena</p>"),
    };
    let chunks: Vec<usize> = chunks.into_iter().map(usize::from).collect();
    if let Some(head) = gatehouse::fuzzing::read_request(&wire, &chunks) {
        gatehouse::fuzzing::decide(&head, peer, secure, &options);
    }
    // Any bytes as a head, whether or not they end it.
    gatehouse::fuzzing::decide(&wire, peer, secure, &options);
    // The header on its own, as any text.
    let header = String::from_utf8_lossy(&wire);
    let _ = gatehouse::fuzzing::forwarded_for(peer, Some(&header), &options.trusted_proxies);
});
