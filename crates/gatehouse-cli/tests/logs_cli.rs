//! The server's log as a log shipper and an operator under attack see it: JSON lines
//! with the reason code and the peer of every kick and refusal, and floods of
//! refusals cut to a budget with a count of what was left out.

#![allow(clippy::unwrap_used)]

mod process;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
    let _holder = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = Vec::new();
    for _ in 0..300 {
        refused.push(TcpStream::connect(server.addr).unwrap());
    }
    // A second later, one more: its line says how many were left out.
    std::thread::sleep(Duration::from_millis(1100));
    refused.push(TcpStream::connect(server.addr).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(20)).success());

    let lines = json_lines(&server.log());
    let refusals: Vec<_> = lines.iter().filter(|l| l["message"] == "refused").collect();
    assert!(
        refusals.len() <= 2 * 50 + 1 && refusals.len() >= 2,
        "{} refusal lines for 301 refusals",
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
