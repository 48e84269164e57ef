//! What the real-browser tests share: finding their tools (Chromium, `node`, and
//! playwright-core in `clients/web/node_modules`) or skipping where they are missing
//! (a failure under `CI`, where `.ci/run` installs them), the `node` command for a
//! script in `clients/web/e2e/`, and the screenshots those scripts save under the
//! test's output directory (`target/tmp/`).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a browser test needs, or why it cannot run here.
fn browser_tools(root: &Path) -> Result<PathBuf, String> {
    let chromium = PathBuf::from(
        std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Err("no node".into());
    }
    if !root
        .join("clients/web/node_modules/playwright-core")
        .exists()
    {
        return Err(
            "clients/web/node_modules lacks playwright-core (npm ci --prefix clients/web)".into(),
        );
    }
    Ok(chromium)
}

/// Chromium's path when `test` (e.g. "the browser test") can run here. Otherwise
/// prints that it is skipped, and why, and returns `None`; under `CI` a missing tool
/// fails the test instead.
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    match browser_tools(&root()) {
        Ok(chromium) => Some(chromium),
        Err(missing) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test} must run in CI: {missing}"
            );
            println!("skipping {test}: {missing}");
            None
        }
    }
}

/// `node clients/web/e2e/<script>`, driving the Chromium at `chromium`.
pub fn e2e_script(script: &str, chromium: &Path) -> Command {
    let mut command = Command::new("node");
    command
        .arg(root().join("clients/web/e2e").join(script))
        .env("CHROMIUM_PATH", chromium);
    command
}

/// Where to save the screenshots `names` in `target/tmp/<dir>/`: the directory
/// exists, and no screenshot of an earlier run is left there.
pub fn fresh_screenshots<const N: usize>(dir: &str, names: [&str; N]) -> [PathBuf; N] {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir);
    std::fs::create_dir_all(&out).expect("the screenshots' directory");
    names.map(|name| {
        let shot = out.join(name);
        let _ = std::fs::remove_file(&shot);
        shot
    })
}

/// Asserts that a screenshot was saved at `shot`.
pub fn assert_screenshot(shot: &Path) {
    assert!(
        shot.metadata().is_ok_and(|m| m.len() > 1000),
        "a screenshot at {}",
        shot.display()
    );
}

/// Runs an e2e script to its end (off the async runtime's threads): whether it
/// passed, and what it printed (stdout, then stderr).
pub async fn run_e2e(mut script: Command) -> (bool, String) {
    script.stdout(Stdio::piped()).stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || script.output())
        .await
        .expect("the script's thread")
        .expect("run node");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}
