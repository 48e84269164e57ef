//! `docs/GUIDE.md` quotes this example: every Rust block there names the file it
//! quotes in its first line and must be found in it, line for line and in order
//! (`// …` skips lines; indentation is free), so the guide cannot drift from the
//! code.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Rust blocks of `markdown`, each with the line its fence is on.
fn rust_blocks(markdown: &str) -> Vec<(usize, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Vec<&str>)> = None;
    for (n, line) in markdown.lines().enumerate() {
        match (&mut open, line.trim_start()) {
            (None, "```rust") => open = Some((n + 1, Vec::new())),
            (Some(_), "```") => blocks.extend(open.take()),
            (Some((_, block)), _) => block.push(line),
            (None, _) => {}
        }
    }
    assert!(open.is_none(), "a Rust block is never closed");
    blocks
}

/// Where `chunk` starts in `lines`, at `from` or later.
fn find(lines: &[&str], chunk: &[&str], from: usize) -> Option<usize> {
    (from..=lines.len().checked_sub(chunk.len())?).find(|&at| lines[at..at + chunk.len()] == *chunk)
}

#[test]
fn every_excerpt_in_the_guide_is_in_the_file_it_names() {
    let root = workspace();
    let guide = read(&root.join("docs/GUIDE.md"));
    let blocks = rust_blocks(&guide);
    assert!(blocks.len() >= 10, "the guide's excerpts were not found");
    for (fence, block) in blocks {
        let (first, quoted) = block.split_first().unwrap();
        let path = first
            .trim()
            .strip_prefix("// ")
            .filter(|path| path.starts_with("examples/connect-four/"))
            .unwrap_or_else(|| {
                panic!("GUIDE.md:{fence}: a Rust block starts with the file it quotes")
            });
        let source = read(&root.join(path));
        let lines: Vec<&str> = source.lines().map(str::trim).collect();
        let mut from = 0;
        for chunk in quoted.split(|line| line.trim() == "// …") {
            let chunk: Vec<&str> = chunk.iter().map(|line| line.trim()).collect();
            match find(&lines, &chunk, from) {
                Some(at) => from = at + chunk.len(),
                None => panic!(
                    "GUIDE.md:{fence}: these lines are not in {path} (after the excerpt's \
                     previous lines): update the guide with the code\n{}",
                    chunk.join("\n")
                ),
            }
        }
    }
}
