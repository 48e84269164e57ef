//! gatehouse refuses to build with `panic = "abort"` (its fault isolation needs
//! panics to unwind), with a message that says why and what to do; a normal build and
//! a cargo-fuzz build (`--cfg fuzzing`) go through. The guard (`src/panic_strategy.rs`)
//! is compiled alone with rustc, which takes a second where building the crate and its
//! dependencies a second way would take minutes; `.ci/run` also checks the whole crate.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

const GUARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/panic_strategy.rs");

/// Compiles the guard with `flags`, into a directory of its own.
fn compile_guard(case: &str, flags: &[&str]) -> Output {
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(case);
    std::fs::create_dir_all(&out_dir).unwrap();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    Command::new(rustc)
        .args(["--crate-type", "lib", "--crate-name", "panic_strategy"])
        .args(["--edition", "2021", "--emit", "metadata", "--out-dir"])
        .arg(&out_dir)
        .args(flags)
        .arg(GUARD)
        .output()
        .unwrap()
}

#[test]
fn a_build_that_aborts_on_panic_is_refused_with_the_reason_and_the_remedy() {
    let output = compile_guard("abort", &["-C", "panic=abort"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "built with panic=abort");
    for said in [
        "gatehouse needs panics to unwind",
        "catch_unwind",
        "Remove `panic = \"abort\"`",
    ] {
        assert!(stderr.contains(said), "{said:?} not in:\n{stderr}");
    }
}

#[test]
fn a_build_that_unwinds_and_a_fuzzing_build_go_through() {
    for (case, flags) in [
        ("unwind", &[][..]),
        ("fuzzing", &["-C", "panic=abort", "--cfg", "fuzzing"][..]),
    ] {
        let output = compile_guard(case, flags);
        assert!(
            output.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
