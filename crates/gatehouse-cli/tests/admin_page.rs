//! The admin listener's live page in a real browser: Debian's headless Chromium,
//! driven by playwright-core (`clients/web/e2e/admin_page_e2e.mjs`), opens `/` of a
//! `gatehouse serve --service bench` that has an admin token, enters the token in the
//! page's form, and reads the open connections this test holds over TCP (through
//! gatehouse-client); when this test closes one, the page must follow. Screenshots
//! (phone and desktop sized) are saved under the test's output directory
//! (`target/tmp/admin-page-e2e/`).
//!
//! Needs `node`, `clients/web/node_modules` (`npm ci --prefix clients/web`) and
//! Chromium (`CHROMIUM_PATH`, default /usr/bin/chromium). Without them it prints a
//! notice and passes, except under `CI`, where `.ci/run` installs them and a missing
//! one is a failure.

#![allow(clippy::unwrap_used)]

mod chromium;
mod process;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use chromium::{assert_screenshot, chromium_or_skip, e2e_script, fresh_screenshots};
use gatehouse::bench_service::routes;
use gatehouse_client::{Client, ClientConfig};
use process::{gatehouse, ServerProcess, SERVE_ON_FREE_PORTS};
use tokio::sync::mpsc;

const TOKEN: &str = "admin-page-e2e-token-0123";
const CLIENTS: usize = 3;
/// How long the browser script may take, all steps together (it gives up at 50 s).
const BROWSER_PATIENCE: Duration = Duration::from_secs(60);

/// A TCP client that the server has seen: its echo request was answered. Its
/// heartbeat pings keep it open.
async fn connected_client(addr: std::net::SocketAddr) -> Client {
    let (client, _pushes) = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let echoed = client.request(routes::ECHO, "here").await.unwrap();
    assert_eq!(&echoed[..], b"here");
    client
}

/// Next line of the browser script's output, within the script's patience.
async fn next_line(lines: &mut mpsc::UnboundedReceiver<String>, log: &mut String) -> String {
    let line = tokio::time::timeout(BROWSER_PATIENCE, lines.recv())
        .await
        .unwrap_or_else(|_| panic!("the browser script went silent:\n{log}"))
        .unwrap_or_else(|| panic!("the browser script ended early:\n{log}"));
    log.push_str(&line);
    log.push('\n');
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_asks_for_the_token_and_follows_open_connections_live() {
    let Some(chromium) = chromium_or_skip("the admin page browser test") else {
        return;
    };
    let mut command = gatehouse();
    command
        .args(SERVE_ON_FREE_PORTS)
        .args(["--service", "bench"])
        .env("GATEHOUSE_ADMIN_TOKEN", TOKEN);
    let server = ServerProcess::spawn(command);
    let admin = server.admin_addr().expect("an admin listener");
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connected_client(server.addr).await);
    }

    let [phone, desktop] =
        fresh_screenshots("admin-page-e2e", ["admin-phone.png", "admin-desktop.png"]);
    let mut browser = e2e_script("admin_page_e2e.mjs", &chromium)
        .env("ADMIN_URL", format!("http://{admin}/"))
        .env("ADMIN_TOKEN", TOKEN)
        .env("OPEN_BEFORE", CLIENTS.to_string())
        .env("OPEN_AFTER", (CLIENTS - 1).to_string())
        .env("SCREENSHOT", &phone)
        .env("SCREENSHOT_DESKTOP", &desktop)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let stdout = browser.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The page shows all the clients: close one, and it must follow.
    let mut log = String::new();
    let counted = next_line(&mut lines, &mut log).await;
    assert!(
        counted.contains(r#""phase":"counted""#),
        "the page did not show {CLIENTS} open connections:\n{log}\nserver log:\n{}",
        server.log()
    );
    clients.pop().unwrap().close();
    let verdict = next_line(&mut lines, &mut log).await;
    let status = tokio::task::spawn_blocking(move || browser.wait())
        .await
        .unwrap()
        .unwrap();
    println!(
        "browser:\n{log}screenshots: {}, {}",
        phone.display(),
        desktop.display()
    );
    assert!(
        status.success() && verdict.contains(r#""ok":true"#),
        "the page did not follow to {} open connections:\n{log}\nserver log:\n{}",
        CLIENTS - 1,
        server.log()
    );
    for shot in [&phone, &desktop] {
        assert_screenshot(shot);
    }
    for client in clients {
        client.close();
    }
}
