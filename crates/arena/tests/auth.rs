//! arena's accounts under pressure, over real sockets: guesses sent all at once from
//! one address are checked no more than its budget allows, and lock it out (logged
//! and counted); one address creates its share of accounts and no more; a flood of
//! account creations from one address does not hold up another address's login;
//! one address cannot take every seat of the lobby, and a full lobby at login is
//! status 1010.

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arena::accounts::AuthStats;
use arena::{pb, routes, status, Arena, ArenaOptions};
use gatehouse::{Message, Status};
use gatehouse_store::{sqlite, Record, SaveWriter, Store, Write as StoreWrite, WriterConfig};
use prost::Message as _;
use support::{resources, test_config, Client, Scratch, TestServer, PATIENCE};
use tokio::time::Instant;

struct Served {
    server: TestServer,
    stats: AuthStats,
    _writer: SaveWriter<sqlite::SqliteStore>,
    _dir: Scratch,
}

/// An arena server on a fresh SQLite store, first given `players` (each with the
/// password `password`).
async fn serve(name: &str, options: ArenaOptions, players: &[String], password: &str) -> Served {
    let dir = Scratch::new(name);
    let store = sqlite::open(dir.path()).await.unwrap();
    if !players.is_empty() {
        let hash = phc(password);
        let writes: Vec<StoreWrite> = players
            .iter()
            .map(|name| StoreWrite {
                record: Record {
                    key: name.clone(),
                    version: 1,
                    data: pb::PlayerState {
                        name: name.clone(),
                        room: arena::LOBBY.into(),
                        password_hash: hash.clone(),
                        ..Default::default()
                    }
                    .encode_to_vec()
                    .into(),
                },
                expected: 0,
            })
            .collect();
        store.save_batch(&writes).await.unwrap();
    }
    let writer = SaveWriter::start(store, WriterConfig::default());
    let arena = Arena::with_options(writer.clone(), options).unwrap();
    let stats = arena.auth_stats();
    let server = TestServer::start_service(test_config(), arena, Arc::default()).await;
    Served {
        server,
        stats,
        _writer: writer,
        _dir: dir,
    }
}

/// An Argon2id PHC string of `password`, as arena stores it.
fn phc(password: &str) -> String {
    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

fn login_request(name: &str, password: &str) -> Message {
    Message::Request {
        id: 1,
        route: routes::LOGIN,
        payload: pb::LoginRequest {
            name: name.into(),
            password: password.into(),
        }
        .encode_to_vec()
        .into(),
    }
}

/// Connects from `from` and logs in: the connection, the status and its text.
async fn try_login(
    from: IpAddr,
    addr: SocketAddr,
    name: &str,
    password: &str,
) -> (Client, Status, String) {
    let mut client = Client::connect_from(from, addr).await;
    let request = pb::LoginRequest {
        name: name.into(),
        password: password.into(),
    };
    let (status, payload) = client.request(routes::LOGIN, request.encode_to_vec()).await;
    let text = if status.is_ok() {
        String::new()
    } else {
        String::from_utf8_lossy(&payload).into_owned()
    };
    (client, status, text)
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Whether the loopback aliases 127.0.0.2..=`last` can be bound here.
fn aliases(test: &str, last: u8) -> bool {
    (2..=last)
        .fold(resources::needs(), |needs, n| {
            needs.address(Ipv4Addr::new(127, 0, 0, n))
        })
        .met(test)
}

/// What this test binary logs, for the tests that read their log lines. (One
/// subscriber for the whole process: the server's tasks run on other threads.)
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(logs))
            .init();
        logs
    })
}

struct Capture(&'static Mutex<Vec<u8>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines (JSON objects) for which `wanted` holds.
fn log_lines(wanted: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
    let text = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    text.lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(|line| wanted(line))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_wrong_guesses_sent_at_once_from_one_address_check_at_most_its_twenty() {
    captured_logs();
    let players: Vec<String> = (0..60).map(|i| format!("p{i}")).collect();
    let served = serve(
        "guess60",
        ArenaOptions::default(),
        &players,
        "the-right-one",
    )
    .await;
    let addr = served.server.addr;

    // One wrong guess per player, all from 127.0.0.1, all sent before any answer.
    let mut clients = Vec::new();
    for _ in &players {
        clients.push(Client::connect(addr).await);
    }
    for (client, name) in clients.iter_mut().zip(&players) {
        client.send(&login_request(name, "a-wrong-guess")).await;
    }
    let mut statuses = Vec::new();
    for client in &mut clients {
        match client.recv().await {
            Some(Message::Response { status, .. }) => statuses.push(status),
            other => panic!("expected an answer, got {other:?}"),
        }
    }
    let wrong = statuses
        .iter()
        .filter(|s| **s == status::WRONG_PASSWORD)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == status::TOO_MANY_ATTEMPTS)
        .count();
    assert_eq!(
        (wrong, refused),
        (20, 40),
        "the address's 20 guesses a minute, not one more: {statuses:?}"
    );
    let read = served.stats.read();
    assert_eq!(read.hashes, 20, "only the guesses with a place were hashed");
    assert_eq!((read.wrong_password, read.too_many_attempts), (20, 40));
    assert_eq!((read.address_lockouts, read.name_lockouts), (1, 0));

    // The address is locked out, even with the right password; another is not.
    let (_, status, text) = try_login(loopback(1), addr, "p0", "the-right-one").await;
    assert_eq!(status, status::TOO_MANY_ATTEMPTS, "{text}");
    if aliases("guesses: another address", 2) {
        let (_, status, text) = try_login(loopback(2), addr, "p0", "the-right-one").await;
        assert_eq!(status, Status::OK, "{text}");
    }

    // The lockout and the failed logins are in the log.
    let lockouts = log_lines(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("locked out"))
            && l["fields"]["address"] == "127.0.0.1"
    });
    assert_eq!(lockouts.len(), 1, "one lockout line");
    assert_eq!(lockouts[0]["level"], "WARN");
    let failures = log_lines(|l| {
        l["fields"]["message"] == "login refused"
            && l["fields"]["player"]
                .as_str()
                .is_some_and(|p| players.iter().any(|n| n == p))
    });
    // One line per failed login (61), but at most 50 a second: a flood of guesses
    // cannot flood the log.
    assert!(
        (20..=61).contains(&failures.len()),
        "{} lines: {failures:?}",
        failures.len()
    );
    assert!(failures
        .iter()
        .any(|l| l["fields"]["result"] == "wrong_password"));
    assert!(served.server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_creates_its_share_of_accounts_and_then_gets_1011() {
    if !aliases("new accounts", 3) {
        return;
    }
    let options = ArenaOptions {
        new_accounts_per_ip_per_hour: NonZeroU32::new(3).unwrap(),
        ..ArenaOptions::default()
    };
    let served = serve("accounts", options, &[], "").await;
    let addr = served.server.addr;
    let mut online = Vec::new();
    for i in 0..3 {
        let (client, status, text) =
            try_login(loopback(2), addr, &format!("new{i}"), "a-password").await;
        assert_eq!(status, Status::OK, "{text}");
        online.push(client);
    }
    let (_, status, text) = try_login(loopback(2), addr, "new3", "a-password").await;
    assert_eq!(status, status::TOO_MANY_ACCOUNTS, "{text}");
    // Another address still creates; the first still logs in to its accounts.
    let (_other, status, text) = try_login(loopback(3), addr, "new4", "a-password").await;
    assert_eq!(status, Status::OK, "{text}");
    drop(online.remove(0));
    let (_again, status, text) = eventually_logged_in(loopback(2), addr, "new0").await;
    assert_eq!(status, Status::OK, "{text}");
    let read = served.stats.read();
    assert_eq!(
        (read.created, read.too_many_new_accounts, read.ok),
        (4, 1, 1)
    );
    assert_eq!(read.hashes, 5, "the refused creation hashed nothing");
    assert!(served.server.shutdown().await.is_ok());
}

/// Logs `name` in (password `a-password`), again while its previous connection
/// is still leaving (LOGIN_BUSY is not expected, but tolerated until the deadline).
async fn eventually_logged_in(
    from: IpAddr,
    addr: SocketAddr,
    name: &str,
) -> (Client, Status, String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (client, status, text) = try_login(from, addr, name, "a-password").await;
        if status != status::LOGIN_BUSY || Instant::now() > deadline {
            return (client, status, text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_fill_the_lobby_and_a_full_lobby_at_login_is_1010() {
    if !aliases("lobby seats", 3) {
        return;
    }
    let options = ArenaOptions {
        max_room_players: 4,
        max_room_players_per_ip: 2,
        ..ArenaOptions::default()
    };
    let served = serve("seats", options, &[], "").await;
    let addr = served.server.addr;
    let mut seated = Vec::new();
    for name in ["a1", "a2"] {
        let (client, status, text) = try_login(loopback(1), addr, name, "a-password").await;
        assert_eq!(status, Status::OK, "{text}");
        seated.push(client);
    }
    // The third from 127.0.0.1 finds its address's share of the lobby taken.
    let (_, status, text) = try_login(loopback(1), addr, "a3", "a-password").await;
    assert_eq!(status, status::ROOM_FULL, "{text}");
    assert!(text.contains("your address"), "{text}");
    for name in ["b1", "b2"] {
        let (client, status, text) = try_login(loopback(2), addr, name, "a-password").await;
        assert_eq!(status, Status::OK, "{text}");
        seated.push(client);
    }
    // The lobby is full: a login is 1010 (room full), not 503 (server restarting).
    let (_, status, text) = try_login(loopback(3), addr, "c1", "a-password").await;
    assert_eq!(status, status::ROOM_FULL, "{text}");
    assert!(text.contains("lobby is full"), "{text}");
    assert!(served.server.shutdown().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_flood_from_one_address_does_not_hold_up_another_addresss_login() {
    if !aliases("creation flood", 2) {
        return;
    }
    // Creations unlimited, to see the hashing queue alone.
    let options = ArenaOptions {
        new_accounts_per_ip_per_hour: NonZeroU32::new(1_000_000).unwrap(),
        max_room_players_per_ip: 1000,
        max_room_players: 1000,
        ..ArenaOptions::default()
    };
    let legit: Vec<String> = (0..5).map(|i| format!("legit{i}")).collect();
    let served = serve("flood", options, &legit, "legit-password").await;
    let addr = served.server.addr;

    // 64 connections from 127.0.0.2 create accounts as fast as they are answered:
    // the hashing queue always holds about 64 of theirs.
    const FLOODERS: usize = 64;
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for worker in 0..FLOODERS {
        let (stop, created) = (stop.clone(), created.clone());
        flood.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("f{worker}x{n}");
                n += 1;
                let (_client, status, _) =
                    try_login(loopback(2), addr, &name, "flood-password").await;
                if status.is_ok() {
                    created.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Until the queue is full of the flood's hashes.
    support::eventually("the flood fills the queue", || {
        (served.stats.read().hashing_queue >= 48).then_some(())
    })
    .await;

    // Five logins from 127.0.0.1, one after the other, while the flood goes on.
    let started = (Instant::now(), served.stats.read().hashes);
    let mut slowest = Duration::ZERO;
    for name in &legit {
        let sent = Instant::now();
        let (_client, status, text) = try_login(loopback(1), addr, name, "legit-password").await;
        assert_eq!(status, Status::OK, "{text}");
        slowest = slowest.max(sent.elapsed());
    }
    let (elapsed, hashed) = (started.0.elapsed(), served.stats.read().hashes - started.1);
    let queued = served.stats.read().hashing_queue;
    stop.store(true, Ordering::Relaxed);
    for worker in flood {
        worker.await.unwrap();
    }
    assert!(created.load(Ordering::Relaxed) > 0);

    // A hash's time under this load, from the threads' own pace (two threads).
    let per_hash = elapsed * 2 / u32::try_from(hashed.max(1)).unwrap();
    // Served in turn, a login waits for the hashes running and at most one of the
    // flood's before its own: three hashes or so (measured: 3 to 5). First come,
    // first served, it waited for the ~64 queued before it: some 32 hashes on two
    // threads (measured: 33 to 43).
    assert!(
        slowest < per_hash * 12,
        "slowest login {slowest:?}, a hash {per_hash:?} ({hashed} hashes in {elapsed:?}, {queued} queued at the end)"
    );
    assert!(queued >= 32, "the flood kept the queue full: {queued}");
    assert!(served.server.shutdown().await.is_ok());
}
