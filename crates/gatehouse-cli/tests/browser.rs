//! arena in a real browser: Debian's headless Chromium, driven by playwright-core
//! (`clients/web/e2e/browser_e2e.mjs`), plays on the page the WebSocket listener
//! serves. Two browser players see each other's chat and moves, and a third player on
//! TCP (this test, through gatehouse-client) is in the same room: it answers the
//! first browser's hello, and sees the second browser walk. The page tells who
//! entered and left, answers /who and "List rooms" in the chat, and logs out (the
//! server must see that connection close cleanly); a fourth player on a phone-sized
//! page must fit its width. The desktop and phone screenshots are saved under the
//! test's output directory (`target/tmp/browser-e2e/`).
//!
//! Needs `node`, `clients/web/node_modules` (`npm ci --prefix clients/web`) and
//! Chromium (`CHROMIUM_PATH`, default /usr/bin/chromium). Without them it prints a
//! notice and passes, except under `CI`, where `.ci/run` installs them and a missing
//! one is a failure.

#![allow(clippy::unwrap_used)]

mod chromium;
mod process;

use std::time::Duration;

use arena::{pb, routes};
use chromium::{assert_screenshot, chromium_or_skip, e2e_script, fresh_screenshots, run_e2e};
use gatehouse_client::{Client, ClientConfig, Pushes};
use process::{arena_config, scratch, ServerProcess};
use prost::Message as _;

const ROOM: &str = "e2e-room";
const TCP_PLAYER: &str = "carol-tcp";
const TCP_SAYS: &str = "hello browsers, from tcp";
const PLAYER_B: &str = "bob-web";
const PHONE_PLAYER: &str = "dora-phone";

/// The TCP player: logs in, joins the room, answers the first browser's hello, and
/// returns (still connected, so that the browsers keep seeing it) once it has seen
/// `PLAYER_B` move.
async fn tcp_player(addr: std::net::SocketAddr) -> Result<Client, String> {
    let (client, mut pushes) = Client::connect(addr, ClientConfig::default())
        .await
        .map_err(|e| e.to_string())?;
    let login = pb::LoginRequest {
        name: TCP_PLAYER.into(),
        password: "tcp-player-secret".into(),
    };
    client
        .request(routes::LOGIN, login.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let join = pb::JoinRoom { room: ROOM.into() };
    client
        .request(routes::JOIN, join.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    watch(&client, &mut pushes).await?;
    Ok(client)
}

async fn watch(client: &Client, pushes: &mut Pushes) -> Result<(), String> {
    let (mut answered, mut b_at, mut b_moved) = (false, None, false);
    while !(answered && b_moved) {
        let Some(push) = pushes.next().await else {
            return Err(format!("connection ended: {:?}", client.ended()));
        };
        match push.route {
            routes::CHAT => {
                let chat = pb::Chat::decode(push.payload).map_err(|e| e.to_string())?;
                if chat.text.starts_with("hello from") && !answered {
                    let say = pb::Say {
                        text: TCP_SAYS.into(),
                    };
                    client
                        .request(routes::SAY, say.encode_to_vec())
                        .await
                        .map_err(|e| e.to_string())?;
                    answered = true;
                }
            }
            routes::ROOM_STATE => {
                let state = pb::RoomState::decode(push.payload).map_err(|e| e.to_string())?;
                if let Some(b) = state.players.iter().find(|p| p.name == PLAYER_B) {
                    b_at = Some((b.x, b.y));
                }
            }
            routes::DELTA => {
                let delta = pb::Delta::decode(push.payload).map_err(|e| e.to_string())?;
                for body in delta.entered.iter().chain(&delta.moved) {
                    if body.name == PLAYER_B {
                        let now = (body.x, body.y);
                        b_moved |= b_at.is_some_and(|at| at != now);
                        b_at = Some(now);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_players_and_a_tcp_player_see_each_other_in_one_room() {
    let Some(chromium) = chromium_or_skip("the browser test") else {
        return;
    };
    let dir = scratch("browser");
    let config = arena_config(&dir, "");
    let server = ServerProcess::start(&["--config", config.to_str().unwrap()]);
    let page = format!("http://{}/", server.listener("ws"));
    let tcp = tokio::spawn(tcp_player(server.addr));

    let [screenshot, phone_screenshot] =
        fresh_screenshots("browser-e2e", ["arena.png", "arena-phone.png"]);
    let mut browser = e2e_script("browser_e2e.mjs", &chromium);
    browser
        .env("GATEHOUSE_URL", &page)
        .env("ROOM", ROOM)
        .env("PLAYER_A", "alice-web")
        .env("PLAYER_B", PLAYER_B)
        .env("PHONE_PLAYER", PHONE_PLAYER)
        .env("PASSWORD", "browser-secret")
        .env("TCP_PLAYER", TCP_PLAYER)
        .env("TCP_SAYS", TCP_SAYS)
        .env("SCREENSHOT", &screenshot)
        .env("PHONE_SCREENSHOT", &phone_screenshot);
    let (passed, printed) = run_e2e(browser).await;
    println!(
        "browser: {printed}\nscreenshots: {} {}",
        screenshot.display(),
        phone_screenshot.display()
    );
    assert!(
        passed,
        "the browser players failed:\n{printed}\nserver log:\n{}",
        server.log()
    );
    assert_screenshot(&screenshot);
    assert_screenshot(&phone_screenshot);

    // B's Log out closed its connection (the server saw the peer close it, and took B
    // out of the room), and nothing logged B in again.
    let log = server.log();
    let lines = |text: &str| log.lines().filter(|line| line.contains(text)).count();
    assert_eq!(
        (
            lines(&format!("logged in player={PLAYER_B} ")),
            lines(&format!(
                "left; save queued player={PLAYER_B} reason=peer_closed"
            )),
        ),
        (1, 1),
        "{PLAYER_B} logs in once, and its logout closes the connection:\n{log}"
    );

    let seen = tokio::time::timeout(Duration::from_secs(20), tcp).await;
    match seen {
        Ok(Ok(Ok(client))) => client.close(),
        Ok(Ok(Err(e))) => panic!("the TCP player: {e}"),
        other => panic!("the TCP player did not finish: {}", other.is_ok()),
    }
}

/// The browser client (gatehouse.js in Chromium) resumes its session across cuts:
/// `clients/web/e2e/resume_e2e.mjs` loads the page through a proxy of its own, logs
/// in to the bench service, and cuts the proxy during 200 pushes and 50 increments:
/// every push once and in order, the increments 1 to 50, and a second cut resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_client_resumes_its_session_across_cuts() {
    let Some(chromium) = chromium_or_skip("the browser resume test") else {
        return;
    };
    let dir = scratch("browser-resume");
    let config = arena_config(&dir, "");
    let server =
        ServerProcess::start(&["--config", config.to_str().unwrap(), "--service", "bench"]);
    let [screenshot] = fresh_screenshots("browser-resume-e2e", ["failure.png"]);
    let mut browser = e2e_script("resume_e2e.mjs", &chromium);
    browser
        .env("SERVER", server.listener("ws").to_string())
        .env("SCREENSHOT", &screenshot);
    let (passed, printed) = run_e2e(browser).await;
    println!("browser: {printed}");
    assert!(
        passed && printed.contains("\"ok\":true"),
        "the browser client did not resume:\n{printed}\nserver log:\n{}",
        server.log()
    );
}
