//! What the tests share: a real server on 127.0.0.1:0, players over
//! `gatehouse-client`, and waits that end on an answer, a push or a condition under
//! a generous deadline (CI has two shared cores), never on a fixed sleep.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use connect_four::wire::{self, routes, status, Colour, Record};
use connect_four::{ConnectFour, Options};
use gatehouse::{Config, Server, ServerError, Status};
use gatehouse_client::{Client, ClientConfig, ClientError, Pushes};
use gatehouse_store::{SaveWriter, Store, WriterConfig};
use prost::Message;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A connect-four server serving on a free loopback port.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

/// Starts a server on `store` (its writer returned too, to flush and read back).
pub async fn start<S: Store + Clone>(store: S, options: Options) -> (TestServer, SaveWriter<S>) {
    start_with(store, options, WriterConfig::default()).await
}

/// [`start`], with the writer's settings.
pub async fn start_with<S: Store + Clone>(
    store: S,
    options: Options,
    writer: WriterConfig,
) -> (TestServer, SaveWriter<S>) {
    let writer = SaveWriter::start(store, writer);
    let game = ConnectFour::new(writer.clone(), options).unwrap();
    let games = game.games().clone();
    let mut config = Config::default();
    // Stopped at once: no grace for a load balancer to notice.
    config.supervisor.drain_grace = Duration::ZERO;
    let server = Server::new(config, game)
        .unwrap()
        .with_rooms("connect-four", &games)
        .with_store(&writer, Duration::from_secs(10));
    let listener = gatehouse::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(listener, async {
        let _ = stopped.await;
    }));
    (TestServer { addr, stop, task }, writer)
}

impl TestServer {
    /// Stops the server as Ctrl-C does, and waits until it has (every hook run,
    /// every save landed).
    pub async fn stop(self) -> Result<(), ServerError> {
        let _ = self.stop.send(());
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task does not panic")
    }
}

/// A client-side player.
pub struct Player {
    pub name: String,
    pub client: Client,
    pushes: Pushes,
}

/// A refusal's status, or the call's other error.
pub fn status_of(error: ClientError) -> Status {
    match error {
        ClientError::Status { status, .. } => status,
        other => panic!("expected a status, got {other}"),
    }
}

impl Player {
    /// Connects without logging in.
    pub async fn connect(addr: SocketAddr) -> Player {
        let connecting = Client::connect(addr, ClientConfig::default());
        let (client, pushes) = tokio::time::timeout(PATIENCE, connecting)
            .await
            .expect("connected in time")
            .unwrap();
        Player {
            name: String::new(),
            client,
            pushes,
        }
    }

    /// Connects and logs in as `name`; the record the server loaded.
    pub async fn login(addr: SocketAddr, name: &str) -> (Player, Record) {
        let mut player = Player::connect(addr).await;
        let record = player.try_login(name).await.unwrap();
        (player, record)
    }

    /// Connects and logs in as `name` if nobody online has it (`None` if someone
    /// does: [`status::NAME_TAKEN`]).
    pub async fn login_if_free(addr: SocketAddr, name: &str) -> Option<(Player, Record)> {
        let mut player = Player::connect(addr).await;
        match player.try_login(name).await {
            Ok(record) => Some((player, record)),
            Err(refused) => {
                assert_eq!(status_of(refused), status::NAME_TAKEN);
                None
            }
        }
    }

    pub async fn try_login(&mut self, name: &str) -> Result<Record, ClientError> {
        let login = wire::Login { name: name.into() };
        let record = self.call(routes::LOGIN, &login).await?;
        self.name = name.to_owned();
        Ok(record)
    }

    /// A request with a protobuf payload and answer.
    pub async fn call<A: Message + Default>(
        &self,
        route: u16,
        request: &impl Message,
    ) -> Result<A, ClientError> {
        let answer = self.client.request(route, request.encode_to_vec()).await?;
        Ok(A::decode(answer).expect("a well-formed answer"))
    }

    /// QUEUE: whether an opponent was waiting.
    pub async fn queue(&self) -> Result<bool, ClientError> {
        let queued: wire::Queued = self.call(routes::QUEUE, &()).await?;
        Ok(queued.matched)
    }

    /// A request whose answer is empty, with `payload`.
    pub async fn send(&self, route: u16, payload: Vec<u8>) -> Result<(), Status> {
        let answer = self.client.request(route, payload).await;
        answer.map(drop).map_err(status_of)
    }

    /// MOVE.
    pub async fn play(&self, column: u8) -> Result<(), Status> {
        self.send(routes::MOVE, vec![column]).await
    }

    /// STATS of `name` ("" for one's own).
    pub async fn stats(&self, name: &str) -> Result<Record, Status> {
        let asked = wire::StatsRequest { name: name.into() };
        self.call(routes::STATS, &asked).await.map_err(status_of)
    }

    /// The next push, which must be on `route`.
    pub async fn push<M: Message + Default>(&mut self, route: u16) -> M {
        let push = tokio::time::timeout(PATIENCE, self.pushes.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no push on route {route} in time", self.name))
            .unwrap_or_else(|| {
                panic!("{}: connection ended: {:?}", self.name, self.client.ended())
            });
        assert_eq!(push.route, route, "{}: an unexpected push", self.name);
        M::decode(push.payload).unwrap()
    }

    /// Closes the connection, as a player who quits the program.
    pub fn disconnect(self) {
        self.client.close();
    }
}

/// Logs in `red` and `yellow`, queues them in that order, and checks that both are
/// told the game starts, with their colours and each other's names.
pub async fn matched_pair(addr: SocketAddr, red: &str, yellow: &str) -> (Player, Player) {
    let (mut red, _) = Player::login(addr, red).await;
    let (mut yellow, _) = Player::login(addr, yellow).await;
    assert!(!red.queue().await.unwrap(), "the first to queue waits");
    assert!(yellow.queue().await.unwrap(), "the second is matched");
    let to_red: wire::Matched = red.push(routes::MATCHED).await;
    let to_yellow: wire::Matched = yellow.push(routes::MATCHED).await;
    assert_eq!(to_red.game, to_yellow.game, "one game for both");
    assert_eq!(
        (to_red.colour(), to_red.opponent.as_str()),
        (Colour::Red, yellow.name.as_str())
    );
    assert_eq!(
        (to_yellow.colour(), to_yellow.opponent.as_str()),
        (Colour::Yellow, red.name.as_str())
    );
    (red, yellow)
}

/// Plays `columns` in turn, red first, checking that both players see every move.
pub async fn play_moves(red: &mut Player, yellow: &mut Player, columns: &[u8]) {
    for (n, &column) in columns.iter().enumerate() {
        let mover = if n % 2 == 0 { &*red } else { &*yellow };
        mover
            .play(column)
            .await
            .unwrap_or_else(|status| panic!("move {n} (column {column}) refused: {status}"));
        for player in [&mut *red, &mut *yellow] {
            let moved: wire::Moved = player.push(routes::MOVED).await;
            assert_eq!(moved.column, u32::from(column));
        }
    }
}

/// The pushed end of a game, to one player.
pub async fn game_over(player: &mut Player) -> (wire::End, Colour, Record) {
    let over: wire::GameOver = player.push(routes::GAME_OVER).await;
    (over.end(), over.winner(), over.record.unwrap())
}

/// A record, briefly.
pub fn record(wins: u32, losses: u32, draws: u32) -> Record {
    Record {
        wins,
        losses,
        draws,
    }
}

/// Polls `check` until it yields, or fails the test after [`PATIENCE`].
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A directory of its own under the system's temporary one, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("connect-four-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
