//! arena's promise, over real sockets: a player's state survives every kind of
//! disconnect. Restarting the server, a hub crash with players online, duplicate
//! logins racing each other, and a database that is down while players leave lose
//! nothing, and leave no ghost sessions.
//!
//! Runs against SQLite always, and against PostgreSQL when
//! `GATEHOUSE_TEST_POSTGRES_URL` is set (`.ci/run` sets it).

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arena::{pb, routes, status, Arena};
use bytes::Bytes;
use gatehouse::protocol::{ROUTE_FAULT_CRASH_HUB, ROUTE_FAULT_PANIC_HANDLER};
use gatehouse::{KickReason, Message, Status};
use gatehouse_store::{
    postgres, sqlite, DeadLetter, Outcome, Record, SaveWriter, Store, StoreError, Write,
    WriterConfig, WriterStats,
};
use prost::Message as _;
use support::{eventually, test_config, Client, Scratch, TestServer};
use tokio::net::{TcpListener, TcpStream};

/// A player name unique to this run, so that tests sharing a PostgreSQL database
/// (across runs and machines' processes) never meet an old player: `name`, then
/// this process's id and a per-process increasing clock reading, in base 36 at a
/// fixed width (15 characters), within arena's 24-character limit for names of up
/// to 9 characters.
fn unique(name: &str) -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // 36^10 ns is about 42 days: the clock part repeats no sooner.
    let now = u64::try_from(nanos % 36u128.pow(10)).unwrap();
    let stamp = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some(now.max(last + 1))
        })
        .map_or(now, |last| now.max(last + 1));
    let name = format!(
        "{name}{}{}",
        base36(u64::from(std::process::id()), 5),
        base36(stamp, 10)
    );
    assert!(arena::valid_name(&name), "{name} is not a valid name");
    name
}

/// `n` in base 36, zero-padded to `width` digits (the low digits if it is longer).
fn base36(mut n: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for digit in digits.iter_mut().rev() {
        *digit = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(digits).unwrap()
}

fn postgres_url() -> Option<String> {
    let url = std::env::var("GATEHOUSE_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        println!("GATEHOUSE_TEST_POSTGRES_URL is unset: skipping the PostgreSQL variant");
    }
    url
}

/// Wraps a store: counts what landed per key, and can be switched off.
#[derive(Clone)]
struct Watched<S> {
    inner: S,
    down: Arc<AtomicBool>,
    landed: Arc<Mutex<HashMap<String, usize>>>,
}

impl<S> Watched<S> {
    fn new(inner: S) -> Self {
        Watched {
            inner,
            down: Arc::default(),
            landed: Arc::default(),
        }
    }

    fn landed(&self, key: &str) -> usize {
        self.landed.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl<S: Store> Store for Watched<S> {
    async fn load(&self, key: &str) -> Result<Option<Record>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable("database down".into()));
        }
        self.inner.load(key).await
    }

    async fn save_batch(&self, writes: &[Write]) -> Result<Vec<Outcome>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable("database down".into()));
        }
        let outcomes = self.inner.save_batch(writes).await?;
        let mut landed = self.landed.lock().unwrap();
        for (write, outcome) in writes.iter().zip(&outcomes) {
            if *outcome == Outcome::Applied {
                *landed.entry(write.record.key.clone()).or_default() += 1;
            }
        }
        Ok(outcomes)
    }

    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        self.inner.dead_letter(letter).await
    }
}

async fn serve<S: Store + Clone>(store: S) -> (TestServer, SaveWriter<S>) {
    serve_with(store, WriterConfig::default()).await
}

async fn serve_with<S: Store + Clone>(
    store: S,
    config: WriterConfig,
) -> (TestServer, SaveWriter<S>) {
    let writer = SaveWriter::start(store, config);
    let server =
        TestServer::start_service(test_config(), Arena::new(writer.clone()), Arc::default()).await;
    (server, writer)
}

/// Every test player's password: its name, made long enough.
fn password(name: &str) -> String {
    format!("{name}-secret")
}

fn login_request(name: &str) -> pb::LoginRequest {
    pb::LoginRequest {
        name: name.into(),
        password: password(name),
    }
}

/// A logged-in arena player over a raw protocol client.
struct Player {
    client: Client,
}

impl Player {
    async fn login(addr: SocketAddr, name: &str) -> (Player, pb::PlayerState) {
        let mut client = Client::connect(addr).await;
        let (status, payload) = client
            .request(routes::LOGIN, login_request(name).encode_to_vec())
            .await;
        assert_eq!(status, Status::OK, "{}", String::from_utf8_lossy(&payload));
        let state = pb::LoginReply::decode(payload).unwrap().state.unwrap();
        (Player { client }, state)
    }

    async fn call(&mut self, route: u16, payload: Vec<u8>) -> (Status, Bytes) {
        self.client.request(route, payload).await
    }

    async fn move_to(&mut self, x: i32, y: i32) -> pb::PlayerState {
        let (status, payload) = self
            .call(routes::MOVE, pb::Move { x, y }.encode_to_vec())
            .await;
        assert_eq!(status, Status::OK);
        pb::PlayerState::decode(payload).unwrap()
    }

    async fn join(&mut self, room: &str) -> pb::PlayerState {
        let (status, payload) = self
            .call(
                routes::JOIN,
                pb::JoinRoom { room: room.into() }.encode_to_vec(),
            )
            .await;
        assert_eq!(status, Status::OK);
        pb::PlayerState::decode(payload).unwrap()
    }

    async fn who(&mut self) -> pb::WhoReply {
        let (status, payload) = self.call(routes::WHO, Vec::new()).await;
        assert_eq!(status, Status::OK);
        pb::WhoReply::decode(payload).unwrap()
    }
}

/// `before` and `after` are the same database opened twice, as two server processes
/// would.
async fn state_survives_a_server_restart<S: Store + Clone>(before: S, after: S) {
    let name = unique("alice");
    let (server, writer) = serve(before).await;
    let (mut alice, fresh) = Player::login(server.addr, &name).await;
    assert_eq!(
        (fresh.x, fresh.y, fresh.room.as_str()),
        (0, 0, arena::LOBBY)
    );
    alice.join("cave").await;
    alice.move_to(12, -7).await;
    drop(alice);
    assert!(server.shutdown().await.is_ok());
    writer.close(Duration::from_secs(10)).await.unwrap();

    let (server, _writer) = serve(after).await;
    let (_alice, state) = Player::login(server.addr, &name).await;
    assert_eq!((state.x, state.y, state.room.as_str()), (12, -7, "cave"));
    assert_eq!((state.moves, state.logins), (1, 2));
}

#[tokio::test]
async fn a_player_is_where_they_left_after_a_server_restart_sqlite() {
    let dir = Scratch::new("restart");
    let before = sqlite::open(dir.path()).await.unwrap();
    let after = sqlite::open(dir.path()).await.unwrap();
    state_survives_a_server_restart(before, after).await;
}

#[tokio::test]
async fn a_player_is_where_they_left_after_a_server_restart_postgres() {
    let Some(url) = postgres_url() else { return };
    let before = postgres::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    let after = postgres::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    state_survives_a_server_restart(before, after).await;
}

async fn a_hub_crash_saves_every_state_exactly_once<S: Store + Clone>(store: S) {
    let store = Watched::new(store);
    let (server, writer) = serve(store.clone()).await;
    let prefix = unique("crash");
    let mut players = Vec::new();
    for i in 0..20 {
        let name = format!("{prefix}p{i}");
        let (player, _) = Player::login(server.addr, &name).await;
        players.push((name, player));
    }
    // A new player's first login saves its account at once: count from here.
    writer.flush(Duration::from_secs(10)).await.unwrap();
    let accounts: Vec<usize> = players.iter().map(|(name, _)| store.landed(name)).collect();
    assert!(accounts.iter().all(|&n| n == 1), "{accounts:?}");
    for (i, (_, player)) in players.iter_mut().enumerate() {
        player.move_to(i as i32, 100 + i as i32).await;
    }
    players[0].1.client.fire(ROUTE_FAULT_CRASH_HUB).await;
    for (_, player) in &mut players {
        assert_eq!(
            player.client.expect_kick().await,
            KickReason::SERVER_RESTART
        );
    }
    writer.flush(Duration::from_secs(10)).await.unwrap();
    // The restarted hub serves the same players again, from their saves.
    let (p3, state) = Player::login(server.addr, &players[3].0).await;
    assert_eq!((state.x, state.y), (3, 103));
    drop(p3);

    // Once the server has stopped (every hook has run) and the writer has landed
    // everything, no save can come any more: count them.
    assert!(server.shutdown().await.is_ok());
    writer.close(Duration::from_secs(10)).await.unwrap();
    for (i, (name, _)) in players.iter().enumerate() {
        // Player 3 came back once, and left once more.
        let expected = if i == 3 { 2 } else { 1 };
        assert_eq!(
            store.landed(name) - accounts[i],
            expected,
            "{name} saved once per leaving"
        );
        let saved =
            pb::PlayerState::decode(store.inner.load(name).await.unwrap().unwrap().data).unwrap();
        assert_eq!((saved.x, saved.y), (i as i32, 100 + i as i32));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_crash_with_players_online_saves_every_state_exactly_once_sqlite() {
    let dir = Scratch::new("crash");
    a_hub_crash_saves_every_state_exactly_once(sqlite::open(dir.path()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_crash_with_players_online_saves_every_state_exactly_once_postgres() {
    let Some(url) = postgres_url() else { return };
    a_hub_crash_saves_every_state_exactly_once(
        postgres::connect(&url, Duration::from_secs(5))
            .await
            .unwrap(),
    )
    .await;
}

async fn a_handler_panic_saves<S: Store + Clone>(store: S) {
    let (server, writer) = serve(store.clone()).await;
    let name = unique("panicky");
    let (mut player, _) = Player::login(server.addr, &name).await;
    player.move_to(-5, 9).await;
    player.client.fire(ROUTE_FAULT_PANIC_HANDLER).await;
    assert_eq!(
        player.client.expect_kick().await,
        KickReason::INTERNAL_ERROR
    );
    writer.flush(Duration::from_secs(10)).await.unwrap();
    let (_again, state) = Player::login(server.addr, &name).await;
    assert_eq!((state.x, state.y), (-5, 9));
}

#[tokio::test]
async fn a_handler_panic_still_saves_the_player_sqlite() {
    let dir = Scratch::new("panic");
    a_handler_panic_saves(sqlite::open(dir.path()).await.unwrap()).await;
}

#[tokio::test]
async fn a_handler_panic_still_saves_the_player_postgres() {
    let Some(url) = postgres_url() else { return };
    a_handler_panic_saves(
        postgres::connect(&url, Duration::from_secs(5))
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_logins_never_lose_an_update_or_leave_a_ghost_sqlite() {
    let dir = Scratch::new("dup");
    duplicate_logins_race(sqlite::open(dir.path()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_logins_never_lose_an_update_or_leave_a_ghost_postgres() {
    let Some(url) = postgres_url() else { return };
    duplicate_logins_race(
        postgres::connect(&url, Duration::from_secs(5))
            .await
            .unwrap(),
    )
    .await;
}

async fn duplicate_logins_race<S: Store + Clone>(store: S) {
    let (server, writer) = serve(store).await;
    let name = unique("bob");
    let (mut current, _) = Player::login(server.addr, &name).await;
    for round in 1..=30 {
        current.move_to(round, -round).await;
        // A new login takes over: the old connection is kicked after saving, and the
        // new one sees that save.
        let (mut next, state) = Player::login(server.addr, &name).await;
        assert_eq!(
            (state.x, state.y),
            (round, -round),
            "round {round}: an update was lost"
        );
        assert_eq!(
            current.client.expect_kick().await,
            KickReason::DUPLICATE_LOGIN
        );
        let who = next.who().await;
        assert_eq!(
            who.players.iter().filter(|p| **p == name).count(),
            1,
            "one session"
        );
        current = next;
    }

    // Two logins at once against one online session: one wins, the loser is either
    // kicked by the winner or told to retry; never two sessions, never a ghost.
    for round in 0..10 {
        let a = tokio::spawn(try_login(server.addr, name.clone()));
        let b = tokio::spawn(try_login(server.addr, name.clone()));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(
            current.client.expect_kick().await,
            KickReason::DUPLICATE_LOGIN
        );
        let mut winners: Vec<Player> = [a, b].into_iter().flatten().collect();
        assert!(!winners.is_empty(), "round {round}: nobody got in");
        // If both logins succeeded, the later one kicked the earlier.
        let mut alive = Vec::new();
        for mut player in winners.drain(..) {
            let (status, _) = probe(&mut player).await;
            if status == Some(Status::OK) {
                alive.push(player);
            }
        }
        assert_eq!(alive.len(), 1, "round {round}: exactly one live session");
        current = alive.pop().unwrap();
        let who = current.who().await;
        assert_eq!(who.players.iter().filter(|p| **p == name).count(), 1);
    }
    // Twenty at once: logins to one name take turns, each taking over from the one
    // before, so exactly one is left online; every other was kicked
    // `duplicate_login` or answered LOGIN_BUSY (try_login checks which).
    let logins: Vec<_> = (0..20)
        .map(|_| tokio::spawn(try_login(server.addr, name.clone())))
        .collect();
    let mut logged_in = Vec::new();
    for login in logins {
        logged_in.extend(login.await.unwrap());
    }
    assert_eq!(
        current.client.expect_kick().await,
        KickReason::DUPLICATE_LOGIN
    );
    let mut alive = Vec::new();
    for mut player in logged_in {
        if probe(&mut player).await.0 == Some(Status::OK) {
            alive.push(player);
        }
    }
    assert_eq!(alive.len(), 1, "twenty at once: exactly one live session");
    current = alive.pop().unwrap();
    let who = current.who().await;
    assert_eq!(who.players.iter().filter(|p| **p == name).count(), 1);

    // Leaving on purpose: arena would otherwise keep the session for a resume.
    current.client.leave().await;
    drop(current);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    // Once everyone left, the name is free: a login needs no takeover.
    let (mut last, state) = Player::login(server.addr, &name).await;
    assert_eq!((state.x, state.y), (30, -30));
    assert_eq!(last.who().await.players, vec![name]);
}

/// How long a login may take by design, when others of the same name are ahead of
/// it: its turn (`gatehouse::players::LOGIN_WAIT`), its place in the hashing queue
/// (5 s), and the session it takes over (`LOGIN_WAIT` again), each before it answers
/// busy; on two loaded cores, then its loads and the room.
const LOGIN_PATIENCE: Duration = Duration::from_secs(30);

/// Logs in, or returns `None` if the server answered LOGIN_BUSY or kicked us.
async fn try_login(addr: SocketAddr, name: String) -> Option<Player> {
    let mut client = Client::connect(addr).await;
    client
        .send(&Message::Request {
            id: 1,
            route: routes::LOGIN,
            payload: login_request(&name).encode_to_vec().into(),
        })
        .await;
    let mut answer = client.recv_within(LOGIN_PATIENCE).await;
    // arena offers a session to resume before a login's answer: not resumed here.
    while let Some(Message::Session { .. }) = answer {
        answer = client.recv_within(LOGIN_PATIENCE).await;
    }
    match answer {
        Some(Message::Response {
            status: Status::OK, ..
        }) => Some(Player { client }),
        Some(Message::Response { status, .. }) => {
            assert_eq!(status, status::LOGIN_BUSY);
            None
        }
        Some(Message::Kick { reason, .. }) => {
            assert_eq!(reason, KickReason::DUPLICATE_LOGIN);
            None
        }
        other => panic!("unexpected answer to a login: {other:?}"),
    }
}

/// Whether a player's session is still alive: a `who` answered, or the kick it got.
async fn probe(player: &mut Player) -> (Option<Status>, Option<KickReason>) {
    player.client.fire(routes::WHO).await;
    loop {
        match player.client.recv().await {
            Some(Message::Response { status, .. }) => return (Some(status), None),
            Some(Message::Kick { reason, .. }) => return (None, Some(reason)),
            Some(_) => continue,
            None => return (None, None),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_made_while_the_database_is_down_land_once_it_is_back() {
    let dir = Scratch::new("down");
    let store = Watched::new(sqlite::open(dir.path()).await.unwrap());
    let (server, writer) = serve(store.clone()).await;
    let mut players = Vec::new();
    for i in 0..10 {
        let (mut player, _) = Player::login(server.addr, &format!("d{i}")).await;
        player.move_to(i, i).await;
        players.push(player);
    }
    store.down.store(true, Ordering::SeqCst);
    for player in &mut players {
        player.client.leave().await;
    }
    drop(players);
    // Every player's save is queued, and the writer has tried and failed.
    eventually("10 saves queued after a failed attempt", || {
        let stats = writer.stats();
        (stats.queued == 10 && stats.failed_attempts >= 1).then_some(())
    })
    .await;
    // A returning player is served from the queue, database or not.
    let (mut returning, state) = Player::login(server.addr, "d4").await;
    assert_eq!((state.x, state.y), (4, 4));
    returning.client.leave().await;
    drop(returning);

    store.down.store(false, Ordering::SeqCst);
    writer.flush(Duration::from_secs(10)).await.unwrap();
    for i in 0..10 {
        let saved = store.inner.load(&format!("d{i}")).await.unwrap().unwrap();
        let saved = pb::PlayerState::decode(saved.data).unwrap();
        assert_eq!((saved.x, saved.y), (i, i));
    }
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new
/// ones, as a database that went down would, or go silent without closing anything,
/// as a database behind a dead network path (a blackhole) would.
struct Proxy {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const SILENT: u8 = 2;

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(UP));
        let generation = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let (mode2, generation2) = (mode.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let mut cut = generation2.subscribe();
                match mode2.load(Ordering::SeqCst) {
                    DOWN => continue, // dropped: refused
                    SILENT => {
                        // Accepted, never answered, held open until the path heals.
                        tokio::spawn(async move {
                            let _ = cut.changed().await;
                            drop(client);
                        });
                        continue;
                    }
                    _ => {}
                }
                let mode = mode2.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {
                            if mode.load(Ordering::SeqCst) == SILENT {
                                // Nothing passes any more, nothing is closed.
                                let _ = cut.changed().await;
                            }
                        }
                    }
                });
            }
        });
        Proxy {
            addr,
            mode,
            generation,
        }
    }

    fn switch(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn cut(&self) {
        self.switch(DOWN);
    }

    fn go_silent(&self) {
        self.switch(SILENT);
    }

    /// Back up; connections held by a silence are closed, as a healed path would
    /// reset them.
    fn restore(&self) {
        self.switch(UP);
    }

    /// The PostgreSQL URL `url` through this proxy.
    async fn url_for(&self, url: &str) -> String {
        let target = postgres_target(url).await;
        let proxied = url.replacen(&target.to_string(), &self.addr.to_string(), 1);
        if proxied != url {
            return proxied;
        }
        // The URL named the host differently (e.g. localhost): rebuild it.
        let (scheme_user, rest) = url.split_once('@').unwrap();
        let path = rest.split_once('/').map_or("", |(_, p)| p);
        format!("{scheme_user}@{}/{path}", self.addr)
    }
}

async fn postgres_target(url: &str) -> SocketAddr {
    let rest = url.split('@').nth(1).unwrap_or(url);
    let host_port = rest.split('/').next().unwrap();
    tokio::net::lookup_host(host_port)
        .await
        .unwrap()
        .next()
        .unwrap()
}

/// Eight players move and leave while `outage` makes PostgreSQL unreachable; once
/// the writer's stats show it `noticed`, the path is restored, and every player's
/// state must land.
async fn players_leave_while_postgres_is_unreachable(
    prefix: &str,
    config: WriterConfig,
    outage: impl FnOnce(&Proxy),
    noticed: impl Fn(&WriterStats) -> bool,
) {
    let Some(url) = postgres_url() else { return };
    let proxy = Proxy::start(postgres_target(&url).await).await;
    let proxied = proxy.url_for(&url).await;
    let store = postgres::connect(&proxied, config.call_timeout)
        .await
        .unwrap();
    let (server, writer) = serve_with(store, config).await;
    let names: Vec<String> = (0..8).map(|i| unique(&format!("{prefix}{i}x"))).collect();
    let mut players = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (mut player, _) = Player::login(server.addr, name).await;
        player.move_to(i as i32, 50).await;
        players.push(player);
    }
    outage(&proxy);
    for player in &mut players {
        player.client.leave().await;
    }
    drop(players);
    eventually("the outage noticed with saves queued", || {
        noticed(&writer.stats()).then_some(())
    })
    .await;
    assert_eq!(
        writer.stats().dead_letters,
        0,
        "an outage dead-letters nothing"
    );
    proxy.restore();
    writer.flush(Duration::from_secs(30)).await.unwrap();
    let direct = postgres::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        let saved = direct.load(name).await.unwrap().expect("landed");
        let saved = pb::PlayerState::decode(saved.data).unwrap();
        assert_eq!((saved.x, saved.y), (i as i32, 50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_down_while_players_leave_loses_no_save() {
    players_leave_while_postgres_is_unreachable(
        "pg",
        WriterConfig::default(),
        Proxy::cut,
        |stats| stats.failed_attempts >= 1 && stats.queued > 0,
    )
    .await;
}

/// A database that stops answering without closing anything used to stall every
/// save with no error: now each call fails after `call_timeout`, the writer keeps
/// retrying (dead-lettering nothing: the database is unreachable, not refusing), and
/// once the path heals every save lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_goes_silent_fails_saves_in_time_and_loses_none() {
    let config = WriterConfig {
        call_timeout: Duration::from_secs(1),
        max_attempts: 2,
    };
    players_leave_while_postgres_is_unreachable("bh", config, Proxy::go_silent, |stats| {
        stats.failed_attempts >= 4 && stats.queued == 8
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arena_rules_answer_with_their_statuses() {
    let dir = Scratch::new("rules");
    let (server, _writer) = serve(sqlite::open(dir.path()).await.unwrap()).await;
    let mut anonymous = Client::connect(server.addr).await;
    let (status, _) = anonymous.request(routes::WHO, Vec::new()).await;
    assert_eq!(status, status::NOT_LOGGED_IN);
    let (status, _) = anonymous
        .request(routes::LOGIN, login_request("no spaces").encode_to_vec())
        .await;
    assert_eq!(status, status::BAD_NAME);
    let (status, _) = anonymous.request(routes::LOGIN, vec![0xff, 0xff]).await;
    assert_eq!(status, Status::BAD_REQUEST);
    let short = pb::LoginRequest {
        name: "erin".into(),
        password: "short".into(),
    };
    let (status, _) = anonymous
        .request(routes::LOGIN, short.encode_to_vec())
        .await;
    assert_eq!(status, status::BAD_PASSWORD);

    let (mut carol, _) = Player::login(server.addr, "carol").await;
    let (mut dave, _) = Player::login(server.addr, "dave").await;
    assert_eq!(
        carol
            .call(routes::LOGIN, login_request("x").encode_to_vec())
            .await
            .0,
        status::ALREADY_LOGGED_IN
    );
    assert_eq!(
        carol
            .call(routes::MOVE, pb::Move { x: 1001, y: 0 }.encode_to_vec())
            .await
            .0,
        status::OUT_OF_RANGE
    );
    let whisper = pb::Whisper {
        to: "nobody".into(),
        text: "hi".into(),
    };
    assert_eq!(
        carol.call(routes::WHISPER, whisper.encode_to_vec()).await.0,
        status::NO_SUCH_PLAYER
    );

    // Chat reaches the room, moves reach the others, whispers cross rooms.
    let (status, _) = carol
        .call(
            routes::SAY,
            pb::Say {
                text: "hello".into(),
            }
            .encode_to_vec(),
        )
        .await;
    assert_eq!(status, Status::OK);
    let chat = loop {
        // Room states and deltas come too (carol's and dave's own arrivals).
        let (route, payload) = dave.client.expect_push().await;
        if route == routes::CHAT {
            break pb::Chat::decode(payload).unwrap();
        }
    };
    assert_eq!(chat.text, "hello");
    carol.move_to(3, 4).await;
    let moved = loop {
        let (route, payload) = dave.client.expect_push().await;
        if route == routes::DELTA {
            // Moved, or (if the room has not ticked since she joined) entered there.
            let delta = pb::Delta::decode(payload).unwrap();
            let mut bodies = delta.moved.into_iter().chain(delta.entered);
            if let Some(body) = bodies.find(|b| b.name == "carol") {
                break body;
            }
        }
    };
    assert_eq!((moved.x, moved.y), (3, 4));
    dave.join("tower").await;
    let whisper = pb::Whisper {
        to: "dave".into(),
        text: "psst".into(),
    };
    assert_eq!(
        carol.call(routes::WHISPER, whisper.encode_to_vec()).await.0,
        Status::OK
    );
    let chat = loop {
        let (route, payload) = dave.client.expect_push().await;
        if route == routes::CHAT {
            break pb::Chat::decode(payload).unwrap();
        }
    };
    assert!(chat.whisper);
    assert_eq!(chat.from, "carol");
    let (_, rooms) = carol.call(routes::ROOMS, Vec::new()).await;
    let rooms = pb::RoomList::decode(rooms).unwrap().rooms;
    let count = |room: &str| {
        rooms
            .iter()
            .find(|r| r.name == room)
            .map_or(0, |r| r.players)
    };
    assert_eq!((count("lobby"), count("tower")), (1, 1));
    let who = carol.who().await;
    assert_eq!((who.online, who.in_room), (2, 1));
    assert_eq!(who.players, vec!["carol".to_owned(), "dave".to_owned()]);
}

/// Every answer fits in a frame: with more rooms than a list holds (and a frame limit
/// the full list would pass), `rooms` lists the first 100 and says how many there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_is_capped_so_it_always_fits_in_a_frame() {
    let dir = Scratch::new("rooms");
    let writer = SaveWriter::start(
        sqlite::open(dir.path()).await.unwrap(),
        WriterConfig::default(),
    );
    let mut config = test_config();
    config.limits.max_frame_bytes = 4096;
    // 150 new players from 127.0.0.1: more than one address may create by default.
    let options = arena::ArenaOptions {
        new_accounts_per_ip_per_hour: std::num::NonZeroU32::new(1000).unwrap(),
        ..arena::ArenaOptions::default()
    };
    let arena = Arena::with_options(writer, options).unwrap();
    let server = TestServer::start_service(config, arena, Arc::default()).await;
    let mut players = Vec::new();
    for i in 0..150 {
        let (mut player, _) = Player::login(server.addr, &format!("roomer{i}")).await;
        // 24-character names: 150 of them would make an answer of about 4.6 KB.
        player
            .join(&format!("room-{i:03}-{}", "x".repeat(15)))
            .await;
        players.push(player);
    }
    let (status, rooms) = players[0].call(routes::ROOMS, Vec::new()).await;
    assert_eq!(status, Status::OK);
    let rooms = pb::RoomList::decode(rooms).unwrap();
    assert_eq!(rooms.rooms.len(), arena::MAX_ROOMS);
    assert_eq!(rooms.total, 150);
    assert_eq!(rooms.rooms[0].name, format!("room-000-{}", "x".repeat(15)));
}
