//! What a player keeps when the server process dies or stops badly, from outside:
//! a SIGKILL loses at most the checkpoint interval of acknowledged moves, and a
//! shutdown that leaves work undone says so in its exit status.

#![allow(clippy::unwrap_used)]

mod process;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arena::{pb, routes};
use gatehouse_client::{Client, ClientConfig};
use process::{scratch, write_file, ServerProcess};
use prost::Message as _;

/// The move number `k`, written into a position (arena's world is ±1000 wide).
fn position(k: u32) -> pb::Move {
    let k = i32::try_from(k).unwrap();
    pb::Move {
        x: k % 1000,
        y: k / 1000,
    }
}

fn move_number(state: &pb::PlayerState) -> u32 {
    u32::try_from(state.y * 1000 + state.x).unwrap()
}

async fn login(addr: SocketAddr, name: &str) -> (Client, pb::PlayerState) {
    let (client, _pushes) = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let reply = client
        .request(
            routes::LOGIN,
            pb::LoginRequest {
                name: name.into(),
                password: format!("{name}-secret"),
            }
            .encode_to_vec(),
        )
        .await
        .unwrap();
    let state = pb::LoginReply::decode(reply).unwrap().state.unwrap();
    (client, state)
}

/// Moves `name` to position 1, 2, 3, … until `stop`, about 50 times a second (well
/// under the inbound rate limit), counting them in `made`; returns when each move
/// was acknowledged.
async fn keep_moving(
    addr: SocketAddr,
    name: String,
    stop: Arc<AtomicBool>,
    made: Arc<AtomicU32>,
) -> Vec<(Instant, u32)> {
    let (client, _) = login(addr, &name).await;
    let mut acknowledged = Vec::new();
    for k in 1.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(reply) = client
            .request(routes::MOVE, position(k).encode_to_vec())
            .await
        else {
            break; // the server is gone
        };
        let state = pb::PlayerState::decode(reply).unwrap();
        assert_eq!(move_number(&state), k);
        acknowledged.push((Instant::now(), k));
        made.store(k, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    acknowledged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_at_most_the_checkpoint_interval_of_acknowledged_moves() {
    const PLAYERS: usize = 20;
    let interval = Duration::from_secs(1);
    // What a checkpoint may take beyond its interval on a busy machine: the timer
    // firing late and the save's commit.
    let slack = Duration::from_secs(1);
    let dir = scratch("sigkill");
    let config = write_file(
        &dir,
        "gatehouse.toml",
        &format!(
            "[limits]\ncheckpoint_interval = \"1s\"\n[store]\ndata_dir = {:?}\n",
            dir.join("data")
        ),
    );
    let config = config.to_str().unwrap();
    let mut server = ServerProcess::start(&["--config", config]);
    let stop = Arc::new(AtomicBool::new(false));
    let made: Vec<_> = (0..PLAYERS).map(|_| Arc::new(AtomicU32::new(0))).collect();
    let players: Vec<_> = made
        .iter()
        .enumerate()
        .map(|(i, made)| {
            let name = format!("runner{i}");
            tokio::spawn(keep_moving(server.addr, name, stop.clone(), made.clone()))
        })
        .collect();
    // Every player has moves acknowledged longer than interval + slack before the
    // kill: at least ENOUGH of them, however slowly the machine got there.
    const ENOUGH: u32 = 60;
    let deadline = Instant::now() + Duration::from_secs(120);
    while made.iter().any(|m| m.load(Ordering::SeqCst) < ENOUGH) {
        assert!(Instant::now() < deadline, "the players did not get moving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(interval + slack).await;
    let killed_at = Instant::now();
    server.child.kill().unwrap(); // SIGKILL: no hook, no drain, no flush
    let _ = server.child.wait();
    stop.store(true, Ordering::SeqCst);
    let mut histories = Vec::new();
    for player in players {
        histories.push(player.await.unwrap());
    }

    let restarted = ServerProcess::start(&["--config", config]);
    let mut worst = Duration::ZERO;
    for (i, acknowledged) in histories.iter().enumerate() {
        let (_client, state) = login(restarted.addr, &format!("runner{i}")).await;
        let kept = move_number(&state);
        let sent = acknowledged.last().map_or(0, |&(_, k)| k) + 1;
        assert!(
            kept <= sent,
            "runner{i} kept move {kept}, but only {sent} were sent"
        );
        // Every move acknowledged longer than interval + slack before the kill is kept.
        let must_keep = acknowledged
            .iter()
            .filter(|&&(at, _)| at + interval + slack <= killed_at)
            .map(|&(_, k)| k)
            .max()
            .unwrap_or(0);
        assert!(
            kept >= must_keep,
            "runner{i} kept move {kept}, lost {must_keep} acknowledged {:?} before the kill",
            interval + slack
        );
        if let Some(&(at, _)) = acknowledged.iter().find(|&&(_, k)| k == kept + 1) {
            worst = worst.max(killed_at - at);
        }
        assert!(must_keep >= ENOUGH, "moves made before the wait count");
    }
    println!("the oldest acknowledged move lost to the kill was {worst:?} old");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_abandons_connections_exits_4() {
    // A client that never closes after its kick keeps its connection lingering
    // (close_linger) past the drain timeout.
    let dir = scratch("exit4");
    let config = write_file(
        &dir,
        "gatehouse.toml",
        "[limits]\nclose_linger = \"10s\"\n[supervisor]\ndrain_timeout = \"200ms\"\n",
    );
    let config = config.to_str().unwrap();
    let mut server =
        ServerProcess::start(&["--service", "bench", "--config", config, "--log", "debug"]);
    let stubborn = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    server.wait_for_log("accepted", Duration::from_secs(10));
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(15));
    let log = server.log();
    assert_eq!(status.code(), Some(4), "{log}");
    assert!(log.contains("within the drain timeout"), "{log}");
    drop(stubborn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_that_cannot_land_by_exit_make_it_exit_5_naming_how_many() {
    let dir = scratch("exit5");
    let data = dir.join("data");
    let config = write_file(
        &dir,
        "gatehouse.toml",
        &format!(
            "[store]\ndata_dir = {data:?}\nflush_timeout = \"500ms\"\ncall_timeout = \"300ms\"\nmax_attempts = 1000\n"
        ),
    );
    let mut server = ServerProcess::start(&["--config", config.to_str().unwrap()]);
    let mut players = Vec::new();
    for i in 0..3 {
        let (client, _) = login(server.addr, &format!("stuck{i}")).await;
        client
            .request(routes::MOVE, position(7).encode_to_vec())
            .await
            .unwrap();
        players.push(client);
    }
    // Another process holds the database's write lock, and keeps it.
    let lock = hold_write_lock(&data.join("gatehouse.db")).await;
    server.signal("TERM");
    let status = server.wait(Duration::from_secs(20));
    let log = server.log();
    assert_eq!(status.code(), Some(5), "{log}");
    assert!(log.contains("3 saves had not landed"), "{log}");
    drop(lock);
}

/// Opens the SQLite file as another writer would and takes its write lock.
async fn hold_write_lock(path: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection as _;
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut connection)
        .await
        .unwrap();
    connection
}
