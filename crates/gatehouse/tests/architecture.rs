//! The architecture, checked: the runtime's modules form no circle, the connection
//! core touches no I/O, and each crate depends only on what its role allows
//! (`docs/ARCHITECTURE.md`). A change that breaks one of these fails here, with the
//! offending path named, instead of eroding the structure quietly.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a source file belongs to (`src/driver/tcp.rs` → `driver`).
fn top_module(file: &Path) -> String {
    let relative = file.strip_prefix(SRC).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The code of a file without its comments and its `#[cfg(test)]` module (tests may
/// reach anywhere; comments may name what the code must not use). A file of tests
/// alone (`#![cfg(test)]`, such as the property tests) has none.
fn non_test_code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    if text.contains("\n#![cfg(test)]\n") {
        return String::new();
    }
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text,
    };
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level modules each module refers to through `crate::`.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = rust_files(Path::new(SRC))
        .iter()
        .map(|f| top_module(f))
        .filter(|m| m != "lib")
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(Path::new(SRC)) {
        let from = top_module(&file);
        if from == "lib" {
            continue;
        }
        let code = non_test_code(&file);
        let edges = graph.entry(from.clone()).or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&name) && name != from {
                edges.insert(name);
            }
        }
        // `use crate::{a, b::c}` lists several modules at once.
        for (at, _) in code.match_indices("crate::{") {
            let list = &code[at + "crate::{".len()..];
            let list = &list[..list.find('}').unwrap_or(list.len())];
            for item in list.split(',') {
                let name = item.trim().split("::").next().unwrap_or("").trim();
                if modules.contains(name) && name != from {
                    edges.insert(name.to_owned());
                }
            }
        }
    }
    graph
}

#[test]
fn the_runtime_modules_form_no_circle() {
    let graph = module_graph();
    assert!(graph.len() >= 10, "the module scan found only {graph:?}");
    // Kahn's algorithm: peel off modules that depend on nothing left.
    let mut remaining = graph.clone();
    let mut order = Vec::new();
    while !remaining.is_empty() {
        let leaves: Vec<String> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(
            !leaves.is_empty(),
            "these modules depend on each other in a circle: {remaining:#?}"
        );
        for leaf in leaves {
            remaining.remove(&leaf);
            order.push(leaf);
        }
    }
    println!("modules, bottom up: {}", order.join(" → "));
    // The layering the docs describe: the core below the hub and the service, the
    // driver above both, the supervisor above the driver.
    let position = |m: &str| order.iter().position(|o| o == m).unwrap();
    assert!(position("connection") < position("hub"));
    assert!(position("hub") < position("service"));
    assert!(position("service") < position("driver"));
    assert!(position("driver") < position("listener"));
    assert!(position("listener") < position("supervisor"));
    // The cluster's seam is below who is logged in and the hub; its task, which
    // awaits the link, above the handle it delivers through.
    assert!(position("cluster") < position("players"));
    assert!(position("handle") < position("cluster_task"));
    assert!(position("cluster_task") < position("supervisor"));
}

#[test]
fn the_connection_core_does_no_io_and_reads_no_clock() {
    let core = Path::new(SRC).join("connection");
    let files = rust_files(&core);
    assert!(files.len() >= 4, "the scan found only {files:?}");
    for file in files {
        let code = non_test_code(&file);
        for forbidden in [
            "tokio",
            "std::net",
            "std::fs",
            "Instant::now",
            "SystemTime",
            "std::thread",
        ] {
            assert!(
                !code.contains(forbidden),
                "{} names `{forbidden}`: the connection core must stay I/O-free",
                file.display()
            );
        }
    }
}

/// The packages `cargo tree` lists among `package`'s normal dependencies.
fn dependency_tree(package: &str, extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            // Not --offline: on a fresh cargo cache the feature resolution needs crates
            // a build of this platform never downloaded.
            "--locked", "--edges", "normal", "--prefix", "none", "-p", package,
        ])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn depends_on(tree: &str, crate_name: &str) -> bool {
    tree.lines()
        .any(|line| line.split_whitespace().next() == Some(crate_name))
}

#[test]
fn each_crate_depends_only_on_what_its_role_allows() {
    let protocol = dependency_tree("gatehouse-protocol", &[]);
    for banned in ["tokio", "sqlx", "gatehouse"] {
        assert!(
            !depends_on(&protocol, banned),
            "gatehouse-protocol depends on {banned}"
        );
    }
    for (package, banned) in [
        (
            "gatehouse-client",
            ["sqlx", "gatehouse", "gatehouse-store", "async-nats"],
        ),
        (
            "gatehouse-loadgen",
            ["sqlx", "gatehouse", "gatehouse-store", "async-nats"],
        ),
        // The runtime owns the store writer, but never a database driver, and
        // speaks to other nodes only through its ClusterLink seam.
        (
            "gatehouse",
            [
                "sqlx",
                "gatehouse-client",
                "gatehouse-loadgen",
                "async-nats",
            ],
        ),
        // The one crate with async-nats carries bytes; no database, no client.
        (
            "gatehouse-cluster",
            ["sqlx", "gatehouse-client", "gatehouse-loadgen", "arena"],
        ),
    ] {
        let tree = dependency_tree(package, &[]);
        assert!(
            depends_on(&tree, "gatehouse-protocol"),
            "{package} speaks the protocol"
        );
        for banned in banned {
            assert!(!depends_on(&tree, banned), "{package} depends on {banned}");
        }
    }
    let store_alone = dependency_tree("gatehouse-store", &["--no-default-features"]);
    assert!(
        !depends_on(&store_alone, "gatehouse"),
        "gatehouse-store is below the runtime"
    );
    assert!(
        !depends_on(&store_alone, "sqlx"),
        "gatehouse-store without its `sql` feature must not compile sqlx"
    );
    assert!(depends_on(&dependency_tree("gatehouse-store", &[]), "sqlx"));
    assert!(depends_on(
        &dependency_tree("gatehouse-cluster", &[]),
        "async-nats"
    ));
    let arena = dependency_tree("arena", &[]);
    assert!(
        !depends_on(&arena, "async-nats"),
        "arena is written against the runtime's seam"
    );
}

#[test]
fn each_feature_of_the_runtime_alone_brings_its_dependencies() {
    // (the feature, what only it may bring)
    let features = [
        ("tls", &["tokio-rustls", "rustls"][..]),
        ("websocket", &["tokio-tungstenite", "tungstenite"][..]),
        ("metrics", &["prometheus-client"][..]),
        ("admin", &["axum", "hyper", "hyper-util", "serde_json"][..]),
    ];
    let bare = dependency_tree("gatehouse", &["--no-default-features"]);
    for (feature, brings) in features {
        for dependency in brings {
            assert!(
                !depends_on(&bare, dependency),
                "gatehouse without features compiles {dependency} (feature `{feature}`'s)"
            );
        }
        let alone = dependency_tree(
            "gatehouse",
            &["--no-default-features", "--features", feature],
        );
        assert!(
            depends_on(&alone, brings[0]),
            "feature `{feature}` does not bring {}",
            brings[0]
        );
        for (other, theirs) in features {
            // `admin` serves `/metrics`: it brings `metrics` with it.
            if other == feature || (feature == "admin" && other == "metrics") {
                continue;
            }
            for dependency in theirs {
                assert!(
                    !depends_on(&alone, dependency),
                    "feature `{feature}` alone compiles {dependency} (feature `{other}`'s)"
                );
            }
        }
    }
    let store_alone = dependency_tree("gatehouse-store", &["--no-default-features"]);
    assert!(!depends_on(&store_alone, "prometheus-client"));
}
