//! The second, independent client (`clients/python`, standard library only) passes
//! the protocol's test vectors and plays an arena session against the real binary:
//! proof that docs/PROTOCOL.md is enough to write a client from.

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_client_passes_the_vectors_and_plays_an_arena_session() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = Command::new("python3").arg("--version").output();
    if python.is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is required in CI"
        );
        println!("python3 is not installed: skipping the Python client's tests");
        return;
    }
    let output = Command::new("python3")
        .args(["-m", "unittest", "discover", "-s", "clients/python", "-v"])
        .current_dir(&root)
        .env("GATEHOUSE_BIN", env!("CARGO_BIN_EXE_gatehouse"))
        .env_remove("GATEHOUSE_ADDR")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&output.stderr);
    println!("{report}");
    assert!(
        output.status.success(),
        "the Python client's tests failed:\n{report}"
    );
    assert!(
        !report.contains("... skipped") && !report.contains("skipped="),
        "no Python test may be skipped here:\n{report}"
    );
    assert!(
        report.contains("test_arena_session"),
        "the arena session ran:\n{report}"
    );
}
