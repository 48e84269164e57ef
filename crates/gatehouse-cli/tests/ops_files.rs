//! The ready-to-use operations files in `docs/ops/` agree with the binary: the
//! systemd unit's command line is one `gatehouse serve` accepts, its stop timeout
//! leaves room for the drain and the last saves, and its descriptor limit is above
//! the connection limit.

#![allow(clippy::unwrap_used)]

mod process;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

/// `[Section]` → key → values (a key may repeat), comments and blank lines skipped.
fn unit(text: &str) -> HashMap<String, HashMap<String, Vec<String>>> {
    let mut sections: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        sections
            .entry(current.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_runs_serve_stops_gracefully_and_allows_enough_descriptors() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ops/gatehouse.service");
    let unit = unit(&std::fs::read_to_string(path).unwrap());
    let service = &unit["Service"];
    let one = |key: &str| service[key].last().unwrap().as_str();

    // The command line: `gatehouse serve` with options the binary accepts (a missing
    // config file is exit 1, an unknown option would be clap's 2).
    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert!(
        exec[0].ends_with("/gatehouse") && exec[1] == "serve",
        "{exec:?}"
    );
    let missing = std::env::temp_dir().join("gatehouse-ops-test-missing.toml");
    let args: Vec<String> = exec[1..]
        .iter()
        .map(|a| {
            if a.ends_with(".toml") {
                missing.display().to_string()
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    let output = process::gatehouse().args(&args).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));

    // Stopping: SIGTERM, with time for the drain and the last saves.
    assert_eq!(one("KillSignal"), "SIGTERM");
    let stop = Duration::from_secs(one("TimeoutStopSec").parse().unwrap());
    let drain = gatehouse::config::SupervisorConfig::default().drain_timeout;
    let flush = gatehouse_store::StoreConfig::default().flush_timeout;
    assert!(
        stop > drain + flush,
        "TimeoutStopSec {stop:?} <= {drain:?} + {flush:?}"
    );
    assert!(
        one("ExecReload").contains("-HUP"),
        "reload is SIGHUP (certificates)"
    );
    assert_eq!(one("Restart"), "on-failure");

    // One descriptor per connection, and then some.
    let nofile: usize = one("LimitNOFILE").parse().unwrap();
    let max = gatehouse::config::ServerConfig::default().max_connections;
    assert!(
        nofile >= max + 1024,
        "LimitNOFILE {nofile} for {max} connections"
    );
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
}
