//! The browser client library (`clients/web`, plain ES modules) passes its own
//! tests under Node's test runner: the protocol's hex vectors read from
//! docs/PROTOCOL.md, arena's protobuf codec, and the client's behaviour (request ids,
//! timeouts, pushes, heartbeats, typed kicks, reconnect delays by kick reason)
//! against a fake WebSocket. Needs `node`; skipped with a notice without it, except
//! under `CI`.

use std::path::Path;
use std::process::Command;

#[test]
fn the_browser_client_passes_its_node_tests() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/web");
    if Command::new("node").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "node is required in CI");
        println!("node is not installed: skipping the browser client's tests");
        return;
    }
    let tests: Vec<String> = std::fs::read_dir(web.join("test"))
        .expect("clients/web/test")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("test/{name}"))
        .collect();
    assert!(tests.len() >= 4, "the test files: {tests:?}");
    let output = Command::new("node")
        .arg("--test")
        .args(&tests)
        .current_dir(&web)
        .output()
        .expect("run node");
    let report = String::from_utf8_lossy(&output.stdout);
    println!("{report}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the browser client's tests failed:\n{report}"
    );
    assert!(report.contains("# fail 0"), "{report}");
    assert!(!report.contains("# pass 0\n"), "some tests ran: {report}");
}
