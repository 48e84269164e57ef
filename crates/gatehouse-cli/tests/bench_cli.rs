//! `gatehouse bench` end to end: the real binary generates load against a
//! `gatehouse serve --service bench` child process and prints exactly one JSON line
//! on stdout, whatever the scenario.

#![allow(clippy::unwrap_used)]

mod process;
#[path = "../../gatehouse/tests/support/resources.rs"]
mod resources;

use std::net::Ipv4Addr;
use std::process::Output;

use process::{arena_config, gatehouse, scratch, write_file, ServerProcess};
use serde_json::Value;

/// Whether `test` can run here: `gatehouse bench` connects from loopback addresses
/// other than 127.0.0.1 (a block of 127/8 chosen per run; 127.1.0.1 stands for it).
fn can_run(test: &str) -> bool {
    resources::needs()
        .address(Ipv4Addr::new(127, 1, 0, 1))
        .met(test)
}

/// A bench server whose limits let a pipelined client through.
fn bench_server(name: &str) -> ServerProcess {
    let dir = scratch(name);
    let config = write_file(
        &dir,
        "bench.toml",
        "[game]\nservice = \"bench\"\n[server]\nmax_connections_per_ip = 5000\n\
         [limits]\ninbound_frames_per_sec = 10000000\ninbound_frames_burst = 10000000\n",
    );
    ServerProcess::start(&[
        "--service",
        "bench",
        "--config",
        config.to_str().unwrap(),
        "--log",
        "warn",
    ])
}

/// Runs `gatehouse bench ARGS…` and returns its one JSON line, parsed.
fn bench(args: &[&str]) -> Value {
    let Output {
        status,
        stdout,
        stderr,
    } = gatehouse().arg("bench").args(args).output().unwrap();
    let stdout = String::from_utf8(stdout).unwrap();
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(status.success(), "{args:?}: {status}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {stdout:?}");
    // Progress bars go to stderr, and only on a terminal: none here.
    assert!(
        !stderr.contains('['),
        "no progress bars when not a terminal: {stderr}"
    );
    serde_json::from_str(lines[0]).unwrap()
}

#[test]
fn bench_echo_against_a_served_process_prints_one_json_line() {
    if !can_run("bench_echo_against_a_served_process_prints_one_json_line") {
        return;
    }
    let server = bench_server("bench-echo");
    let addr = server.addr.to_string();
    let report = bench(&[
        "echo",
        "--addr",
        &addr,
        "--connections",
        "10",
        "--depth",
        "4",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ]);
    assert_eq!(report["scenario"], "echo");
    assert_eq!(report["connected"], 10);
    let verified = report["verified"].as_u64().unwrap();
    assert!(report["measured_responses"].as_u64().unwrap() > 0);
    assert_eq!(report["sent"].as_u64().unwrap(), verified);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["lost"], 0);
    assert!(report["requests_per_sec"].as_f64().unwrap() > 0.0);
    assert!(report["latency"]["p99_us"].as_f64().unwrap() > 0.0);
}

#[test]
fn every_scenario_prints_its_json_line() {
    if !can_run("every_scenario_prints_its_json_line") {
        return;
    }
    let server = bench_server("bench-scenarios");
    let addr = server.addr.to_string();
    let pid = server.child.id().to_string();

    let storm = bench(&["storm", "--addr", &addr, "--count", "50", "--quiet"]);
    assert_eq!(
        (storm["scenario"].as_str(), storm["answered"].as_u64()),
        (Some("storm"), Some(50))
    );

    let idle = bench(&[
        "connections",
        "--addr",
        &addr,
        "--count",
        "20",
        "--hold",
        "0.3",
        "--settle",
        "0.1",
        "--server-pid",
        &pid,
        "--threads",
        "2",
    ]);
    assert_eq!(idle["alive"], 20);
    assert!(idle["rss_per_connection_bytes"].is_number());
    assert!(idle["cpu_percent_of_core"].is_number());

    let broadcast = bench(&[
        "broadcast",
        "--addr",
        &addr,
        "--listeners",
        "20",
        "--rounds",
        "2",
    ]);
    assert_eq!(broadcast["lost"], 0);
    assert_eq!(broadcast["per_round"].as_array().unwrap().len(), 2);
    assert!(broadcast["median_time_to_all_ms"].is_number());

    // Sessions with a replay of 64 KiB each, dropped and resumed at once: every one
    // comes back with its whole replay.
    let resume = bench(&[
        "resume",
        "--addr",
        &addr,
        "--connections",
        "20",
        "--replay-bytes",
        "65536",
        "--quiet",
    ]);
    assert_eq!(
        (resume["resumed"].as_u64(), resume["failed"].as_u64()),
        (Some(20), Some(0)),
        "{resume}"
    );
    assert_eq!(resume["replay_bytes"], 65536);
    assert_eq!(resume["latency"]["count"], 20);
}

#[test]
fn a_server_that_is_not_there_is_an_error_not_a_report() {
    // A port held by a socket that never listens: connects are refused, and no one
    // else can start listening on it while the test runs.
    let unused = tokio::net::TcpSocket::new_v4().unwrap();
    unused.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let addr = unused.local_addr().unwrap().to_string();
    let output = gatehouse()
        .args(["bench", "echo", "--addr", &addr, "--duration", "0.1"])
        .output()
        .unwrap();
    drop(unused);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

#[test]
fn bench_arena_refuses_to_split_rooms_of_one_over_two_nodes() {
    let output = gatehouse()
        .args([
            "bench",
            "arena",
            "--addr",
            "127.0.0.1:9",
            "--also",
            "127.0.0.1:9",
        ])
        .args(["--room-size", "1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--room-size of at least 2"), "{stderr}");
}

#[test]
fn bench_arena_drives_bots_in_rooms_and_reports_ticks_and_deltas() {
    if !can_run("bench_arena_drives_bots_in_rooms_and_reports_ticks_and_deltas") {
        return;
    }
    let dir = scratch("bench-arena");
    let config = arena_config(&dir, "");
    let server = ServerProcess::start(&["--config", config.to_str().unwrap(), "--log", "warn"]);
    let addr = server.addr.to_string();
    let pid = server.child.id().to_string();
    let report = bench(&[
        "arena",
        "--addr",
        &addr,
        "--players",
        "12",
        "--room-size",
        "4",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(
        (report["players"].as_u64(), report["rooms"].as_u64()),
        (Some(12), Some(3))
    );
    assert_eq!(report["missing"], 0);
    assert_eq!(report["dropped"], 0);
    // Three rooms at 20 Hz for 1.5 s, every bot walking: a delta nearly every tick.
    let ticks = report["ticks"].as_u64().unwrap();
    assert!((70..=100).contains(&ticks), "{report}");
    let deltas = report["deltas_per_bot_per_sec"].as_f64().unwrap();
    assert!(deltas > 10.0 && deltas <= 21.0, "{report}");
    assert!(report["lateness_p99_us"].is_u64());
    assert!(report["server_cpu_percent"].is_number());
    assert!(report["server_rss_bytes"].as_u64().unwrap() > 0);
}

/// Runs `gatehouse bench ARGS…` expecting it to refuse its run: the exit status, its
/// JSON line (printed all the same) and stderr.
fn bench_refused(args: &[&str]) -> (Value, String) {
    let output = gatehouse().arg("bench").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    (serde_json::from_str(stdout.trim()).unwrap(), stderr)
}

#[test]
fn a_run_whose_connections_were_kicked_exits_non_zero_saying_why() {
    if !can_run("a_run_whose_connections_were_kicked_exits_non_zero_saying_why") {
        return;
    }
    // The default limits: 16-deep pipelines from 20 connections are a flood to them.
    let server = ServerProcess::start(&["--service", "bench", "--log", "warn"]);
    let addr = server.addr.to_string();
    let (report, stderr) = bench_refused(&[
        "echo",
        "--addr",
        &addr,
        "--connections",
        "20",
        "--depth",
        "16",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--quiet",
    ]);
    assert!(
        report["connections_closed"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(stderr.contains("the run does not count"), "{stderr}");
    assert!(stderr.contains("ended early"), "{stderr}");
}

#[test]
fn echo_against_a_server_that_answers_bad_statuses_exits_non_zero() {
    if !can_run("echo_against_a_server_that_answers_bad_statuses_exits_non_zero") {
        return;
    }
    // arena answers the bench's echo route with an error status (it wants a login).
    let dir = scratch("bench-bad-status");
    let config = arena_config(&dir, "");
    let server = ServerProcess::start(&["--config", config.to_str().unwrap(), "--log", "warn"]);
    let addr = server.addr.to_string();
    let (report, stderr) = bench_refused(&[
        "echo",
        "--addr",
        &addr,
        "--connections",
        "2",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--quiet",
    ]);
    assert!(report["bad_status"].as_u64().unwrap() > 0, "{report}");
    // arena also closes a connection that keeps not logging in: either is the reason.
    assert!(stderr.contains("the run does not count"), "{stderr}");
}

#[test]
fn the_address_may_be_given_as_serve_prints_it() {
    if !can_run("the_address_may_be_given_as_serve_prints_it") {
        return;
    }
    let server = bench_server("bench-url");
    let url = format!("tcp://{}", server.addr);
    let report = bench(&["storm", "--addr", &url, "--count", "10", "--quiet"]);
    assert_eq!(report["answered"], 10);
    // A scheme that disagrees with --transport is refused before anything runs.
    let output = gatehouse()
        .args([
            "bench",
            "storm",
            "--addr",
            &url,
            "--transport",
            "ws",
            "--count",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("but --transport is ws"));
}
