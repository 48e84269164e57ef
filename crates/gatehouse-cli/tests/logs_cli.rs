//! The server's log as a log shipper and an operator under attack see it: JSON lines
//! with the reason code and the peer of every kick and refusal, and floods of
//! refusals cut to a budget with a count of what was left out.

#![allow(clippy::unwrap_used)]

mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use process::{scratch, write_file, ServerProcess};

/// Every line of `log` as JSON (the test fails on a line that is not).
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[test]
fn json_logs_carry_the_reason_code_and_peer_of_every_kick() {
    let mut server = ServerProcess::start(&["--service", "bench", "--log-format", "json"]);
    // A header announcing a frame far over the limit: kicked frame_too_large (9).
    let mut client = TcpStream::connect(server.addr).unwrap();
    let local = client.local_addr().unwrap();
    client.write_all(&[0x7f, 0xff, 0xff, 0xff]).unwrap();
    let mut sink = Vec::new();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = client.read_to_end(&mut sink);
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(20)).success());

    let lines = json_lines(&server.log());
    let closed = lines
        .iter()
        .find(|l| l["message"] == "closed" && l["reason"] == "frame_too_large")
        .unwrap_or_else(|| panic!("no close line: {lines:#?}"));
    assert_eq!(closed["code"], 9);
    assert_eq!(closed["level"], "WARN");
    assert_eq!(closed["span"]["peer"], local.to_string(), "{closed}");
    assert!(lines.iter().any(|l| l["message"] == "final stats"));
}

#[test]
fn a_flood_of_refusals_is_logged_within_a_budget_and_counted() {
    let dir = scratch("refusal-flood");
    let config = write_file(&dir, "full.toml", "[server]\nmax_connections = 1\n");
    let mut server = ServerProcess::start(&[
        "--service",
        "bench",
        "--log-format",
        "json",
        "--config",
        config.to_str().unwrap(),
    ]);
    // The holder is answered (a ping, its pong) before the flood: it has the slot.
    let mut holder = TcpStream::connect(server.addr).unwrap();
    holder.write_all(&[0, 0, 0, 1, 5]).unwrap();
    let mut pong = [0u8; 5];
    holder.read_exact(&mut pong).unwrap();
    assert_eq!(pong, [0, 0, 0, 1, 6]);
    let flood = Instant::now();
    let mut refused = Vec::new();
    for _ in 0..300 {
        refused.push(TcpStream::connect(server.addr).unwrap());
    }
    // One more once the log's budget (per second) has renewed: its line says how
    // many were left out.
    let renewed = flood + Duration::from_millis(1100);
    std::thread::sleep(renewed.saturating_duration_since(Instant::now()));
    refused.push(TcpStream::connect(server.addr).unwrap());
    let windows = flood.elapsed().as_secs() + 2;
    server.wait_for_log("suppressed", Duration::from_secs(20));
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(20)).success());

    let lines = json_lines(&server.log());
    let refusals: Vec<_> = lines.iter().filter(|l| l["message"] == "refused").collect();
    // 50 lines in each second's budget, over the seconds the flood took.
    assert!(
        refusals.len() as u64 <= 50 * windows && refusals.len() >= 2,
        "{} refusal lines for 301 refusals in {windows} windows",
        refusals.len()
    );
    assert!(
        refusals
            .iter()
            .all(|l| l["code"] == 3 && l["peer"].is_string()),
        "{refusals:?}"
    );
    let left_out: u64 = lines.iter().filter_map(|l| l["suppressed"].as_u64()).sum();
    assert_eq!(
        left_out + refusals.len() as u64,
        301,
        "every refusal is a line or counted"
    );
}
