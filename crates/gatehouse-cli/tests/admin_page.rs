//! The admin listener's console in a real browser: Debian's headless Chromium,
//! driven by playwright-core (`clients/web/e2e/admin_page_e2e.mjs`), opens `/` of an
//! arena `gatehouse serve` that has an admin token. This test holds arena players
//! over TCP (through gatehouse-client), logged in and in one room. On a phone the
//! console asks for the token and follows the open connections live (this test
//! closes one); on a desktop it lists the players with their room and the room with
//! its members, finds a player by name, broadcasts, kicks one player (a cancelled
//! kick first), keeps its charts over a reload, and drains. This test then checks
//! what reached its players: the announcement, the kick with the page's message, the
//! shutdown; and that the server stopped. Screenshots (phone and desktop) are saved
//! under the test's output directory (`target/tmp/admin-page-e2e/`).
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

use arena::{pb, routes};
use chromium::{assert_screenshot, chromium_or_skip, e2e_script, fresh_screenshots};
use gatehouse::protocol::{KickReason, ROUTE_ANNOUNCEMENT};
use gatehouse_client::{Client, ClientConfig, ClientError, Pushes};
use process::{arena_config, gatehouse, scratch, ServerProcess, SERVE_ON_FREE_PORTS};
use prost::Message as _;
use tokio::sync::mpsc;

const TOKEN: &str = "admin-page-e2e-token-0123";
const ROOM: &str = "console-room";
/// Logged in and in `ROOM`; the last one is closed by this test while the phone
/// page watches, the first is kicked from the page.
const PLAYERS: [&str; 3] = ["ada", "bo", "cy"];
const KICK_TEXT: &str = "kicked from the console, sorry ada";
const ANNOUNCE: &str = "the console says: maintenance at noon";
/// How long the browser script may take, all steps together (it gives up at 90 s).
const BROWSER_PATIENCE: Duration = Duration::from_secs(100);
/// How long the server may take to stop after the drain (grace, kicks, saves).
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// What became of a player: whether the announcement reached it, and why its
/// connection ended.
type Fate = tokio::task::JoinHandle<(bool, Option<ClientError>)>;

/// An arena player over TCP, logged in as `name` and in `ROOM`, its pushes read as
/// they come (so that the server never finds it slow) until its connection ends.
async fn player(addr: std::net::SocketAddr, name: &str) -> (Client, Fate) {
    let (client, pushes) = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let login = pb::LoginRequest {
        name: name.into(),
        password: format!("{name}-console-secret"),
    };
    client
        .request(routes::LOGIN, login.encode_to_vec())
        .await
        .unwrap();
    let join = pb::JoinRoom { room: ROOM.into() };
    client
        .request(routes::JOIN, join.encode_to_vec())
        .await
        .unwrap();
    let fate = tokio::spawn(read_until_ended(client.clone(), pushes));
    (client, fate)
}

async fn read_until_ended(client: Client, mut pushes: Pushes) -> (bool, Option<ClientError>) {
    let mut announced = false;
    while let Some(push) = pushes.next().await {
        announced |= push.route == ROUTE_ANNOUNCEMENT && push.payload == ANNOUNCE.as_bytes();
    }
    (announced, client.ended())
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
async fn the_console_lists_players_and_rooms_and_its_kick_broadcast_and_drain_reach_tcp_players() {
    let Some(chromium) = chromium_or_skip("the admin console browser test") else {
        return;
    };
    let dir = scratch("admin-page");
    let config = arena_config(&dir, "");
    let mut command = gatehouse();
    command
        .args(SERVE_ON_FREE_PORTS)
        .args(["--config", config.to_str().unwrap()])
        .env("GATEHOUSE_ADMIN_TOKEN", TOKEN);
    let mut server = ServerProcess::spawn(command);
    let admin = server.admin_addr().expect("an admin listener");
    let mut players = Vec::new();
    for name in PLAYERS {
        players.push(player(server.addr, name).await);
    }

    let [phone, desktop] =
        fresh_screenshots("admin-page-e2e", ["admin-phone.png", "admin-desktop.png"]);
    let staying = PLAYERS[..PLAYERS.len() - 1].join(",");
    let mut browser = e2e_script("admin_page_e2e.mjs", &chromium)
        .env("ADMIN_URL", format!("http://{admin}/"))
        .env("ADMIN_TOKEN", TOKEN)
        .env("OPEN_BEFORE", PLAYERS.len().to_string())
        .env("OPEN_AFTER", (PLAYERS.len() - 1).to_string())
        .env("PLAYERS", &staying)
        .env("ROOM", ROOM)
        .env("KICK", PLAYERS[0])
        .env("KICK_TEXT", KICK_TEXT)
        .env("ANNOUNCE", ANNOUNCE)
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

    // The phone page shows every player: close one, and it must follow.
    let mut log = String::new();
    let counted = next_line(&mut lines, &mut log).await;
    assert!(
        counted.contains(r#""phase":"counted""#),
        "the console did not show {} open connections:\n{log}\nserver log:\n{}",
        PLAYERS.len(),
        server.log()
    );
    let (gone, _) = players.pop().unwrap();
    gone.close();
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
        "the console failed:\n{log}\nserver log:\n{}",
        server.log()
    );
    for shot in [&phone, &desktop] {
        assert_screenshot(shot);
    }

    // What the page did reached the players: the announcement both, the kick (with
    // the page's message) the first, the drain's shutdown the other.
    let mut ends = Vec::new();
    for (name, (_client, fate)) in PLAYERS.iter().zip(players) {
        let (announced, ended) = tokio::time::timeout(STOP_PATIENCE, fate)
            .await
            .unwrap_or_else(|_| panic!("{name}'s connection did not end"))
            .unwrap();
        assert!(announced, "no announcement {ANNOUNCE:?} reached {name}");
        ends.push(ended);
    }
    let kicked = |reason, text: &str| {
        Some(ClientError::Kicked {
            reason,
            text: text.into(),
        })
    };
    assert_eq!(ends[0], kicked(KickReason::KICKED, KICK_TEXT));
    assert!(
        matches!(&ends[1], Some(ClientError::Kicked { reason, .. }) if *reason == KickReason::SHUTDOWN),
        "{:?}",
        ends[1]
    );
    let stopped = server.wait(STOP_PATIENCE);
    assert!(
        stopped.success(),
        "the drained server: {stopped}\n{}",
        server.log()
    );
}
