//! `gatehouse client`: an interactive terminal client for arena, so that two people
//! in two terminals can log in, chat, and watch each other move. Lines typed are
//! said to the room; lines starting with `/` are commands (`/help`). The room's
//! players are kept live from its state and deltas: entries and exits are printed as
//! they happen, moves at most four times a second per player, `/look` lists them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use arena::{pb, routes};
use clap::Args;
use gatehouse::protocol::{ROUTE_ANNOUNCEMENT, ROUTE_ROOM_RESTARTED};
use gatehouse_client::{Client, ClientConfig, ClientError, Push, Pushes, Target};
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The server: `HOST:PORT` (TCP), or `tcp://`, `tls://`, `ws://HOST:PORT/ws`,
    /// `wss://HOST:PORT/ws`.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: Target,
    /// Over TLS: `HOST:PORT` becomes `tls://`, `ws://` becomes `wss://`.
    #[arg(long)]
    tls: bool,
    /// Trust only this certificate (PEM), e.g. one from `gatehouse dev-cert`, instead
    /// of the system's roots.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// The player to log in as (created, with this password, on first login).
    #[arg(long)]
    name: String,
    /// The player's password (8 to 128 bytes).
    #[arg(long)]
    password: String,
}

const HELP: &str = "commands: /rooms  /join ROOM  /leave  /who  /look  /move X Y  /goto X Y  \
                    /walk DX DY  /stop  /w NAME TEXT  /quit  (anything else is said to the room)";

/// How often moves seen in deltas are printed (the latest position of each mover).
const MOVES_EVERY: Duration = Duration::from_millis(250);

/// The room as this client knows it: from its `RoomState`, then its deltas.
#[derive(Default)]
struct View {
    room: String,
    tick: u64,
    players: BTreeMap<String, (i32, i32)>,
    /// Moved since the last print.
    moved: BTreeMap<String, (i32, i32)>,
}

impl View {
    fn look(&self) -> String {
        let players: Vec<String> = self
            .players
            .iter()
            .map(|(name, (x, y))| format!("{name} ({x}, {y})"))
            .collect();
        format!("in {}: {}", self.room, players.join(", "))
    }
}

pub(crate) async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let target = if args.tls {
        args.addr.with_tls()
    } else {
        args.addr
    };
    if args.ca.is_some() && matches!(target, Target::Tcp(_) | Target::Ws(_)) {
        // It would be ignored: the player would think the server checked.
        anyhow::bail!(
            "--ca is for tls:// and wss:// servers (or --tls); {target} is not encrypted"
        );
    }
    let config = ClientConfig {
        tls_ca: args.ca,
        ..ClientConfig::default()
    };
    let (client, pushes) = Client::connect_to(&target, config)
        .await
        .with_context(|| format!("cannot connect to {target}"))?;
    let login = pb::LoginRequest {
        name: args.name,
        password: args.password,
    };
    let reply = client.request(routes::LOGIN, login.encode_to_vec()).await?;
    let state = pb::LoginReply::decode(reply)?.state.unwrap_or_default();
    println!(
        "logged in as {} in {} at ({}, {}); login #{}. {HELP}",
        state.name, state.room, state.x, state.y, state.logins
    );

    let view = Arc::new(Mutex::new(View::default()));
    let mut printer = tokio::spawn(print_pushes(pushes, view.clone()));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = &mut printer => {
                // The pushes ended: the server closed the connection (a kick says why).
                let why = client.ended().unwrap_or(ClientError::Closed);
                bail!("disconnected: {why}");
            }
        };
        let Some(line) = line else { break }; // end of input
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break;
        }
        if line == "/look" {
            println!("{}", lock(&view).look());
            continue;
        }
        match command(&client, line).await {
            Ok(Some(answer)) => println!("{answer}"),
            Ok(None) => {}
            Err(CommandError::Usage) => println!("{HELP}"),
            Err(CommandError::Server(e @ ClientError::Status { .. })) => println!("error: {e}"),
            Err(CommandError::Server(e)) => bail!("disconnected: {e}"),
        }
    }
    client.close();
    Ok(())
}

enum CommandError {
    Usage,
    Server(ClientError),
}

impl From<ClientError> for CommandError {
    fn from(e: ClientError) -> Self {
        CommandError::Server(e)
    }
}

impl From<prost::DecodeError> for CommandError {
    fn from(e: prost::DecodeError) -> Self {
        CommandError::Server(ClientError::Protocol(e.to_string()))
    }
}

/// Runs one typed line; returns what to print.
async fn command(client: &Client, line: &str) -> Result<Option<String>, CommandError> {
    let mut words = line.split_whitespace();
    let Some(first) = line.starts_with('/').then(|| words.next()).flatten() else {
        let say = pb::Say {
            text: line.to_owned(),
        };
        client.request(routes::SAY, say.encode_to_vec()).await?;
        return Ok(None);
    };
    let state = |bytes| {
        pb::PlayerState::decode(bytes)
            .map(|s| format!("you are in {} at ({}, {})", s.room, s.x, s.y))
    };
    Ok(Some(match (first, words.next(), words.next()) {
        ("/rooms", None, _) => {
            let rooms = pb::RoomList::decode(client.request(routes::ROOMS, Vec::new()).await?)?;
            let list: Vec<String> = rooms
                .rooms
                .iter()
                .map(|r| format!("{} ({})", r.name, r.players))
                .collect();
            format!("rooms: {}", list.join(", "))
        }
        ("/join", Some(room), None) => {
            let join = pb::JoinRoom {
                room: room.to_owned(),
            };
            state(client.request(routes::JOIN, join.encode_to_vec()).await?)?
        }
        ("/leave", None, _) => state(client.request(routes::LEAVE, Vec::new()).await?)?,
        ("/who", None, _) => {
            let who = pb::WhoReply::decode(client.request(routes::WHO, Vec::new()).await?)?;
            format!(
                "online ({}, {} in your room): {}",
                who.online,
                who.in_room,
                who.players.join(", ")
            )
        }
        ("/move", Some(x), Some(y)) => {
            let (Ok(x), Ok(y)) = (x.parse(), y.parse()) else {
                return Err(CommandError::Usage);
            };
            state(
                client
                    .request(routes::MOVE, pb::Move { x, y }.encode_to_vec())
                    .await?,
            )?
        }
        ("/goto", Some(x), Some(y)) => {
            let (Ok(x), Ok(y)) = (x.parse(), y.parse()) else {
                return Err(CommandError::Usage);
            };
            walk(client, 0, 0, Some(pb::Position { x, y })).await?;
            return Ok(None);
        }
        ("/walk", Some(dx), Some(dy)) => {
            let (Ok(dx), Ok(dy)) = (dx.parse(), dy.parse()) else {
                return Err(CommandError::Usage);
            };
            walk(client, dx, dy, None).await?;
            return Ok(None);
        }
        ("/stop", None, _) => {
            walk(client, 0, 0, None).await?;
            return Ok(None);
        }
        ("/w", Some(to), Some(_)) => {
            let text = line.splitn(3, ' ').nth(2).unwrap_or_default().to_owned();
            let whisper = pb::Whisper {
                to: to.to_owned(),
                text,
            };
            client
                .request(routes::WHISPER, whisper.encode_to_vec())
                .await?;
            return Ok(None);
        }
        _ => return Err(CommandError::Usage),
    }))
}

async fn walk(
    client: &Client,
    dx: i32,
    dy: i32,
    target: Option<pb::Position>,
) -> Result<(), ClientError> {
    let input = pb::Input { dx, dy, target };
    client.notify(routes::INPUT, input.encode_to_vec()).await
}

fn lock(view: &Mutex<View>) -> std::sync::MutexGuard<'_, View> {
    view.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Prints pushes as they arrive, keeps the room's view, and prints the moves seen
/// every [`MOVES_EVERY`].
async fn print_pushes(mut pushes: Pushes, view: Arc<Mutex<View>>) {
    let mut moves = tokio::time::interval(MOVES_EVERY);
    loop {
        tokio::select! {
            push = pushes.next() => {
                let Some(push) = push else { return };
                for line in apply_push(&push, &mut lock(&view)) {
                    println!("{line}");
                }
            }
            _ = moves.tick() => {
                let moved = std::mem::take(&mut lock(&view).moved);
                for (name, (x, y)) in moved {
                    println!("* {name} moved to ({x}, {y})");
                }
            }
        }
    }
}

/// What a push changes in the view, and the lines to print for it now.
fn apply_push(push: &Push, view: &mut View) -> Vec<String> {
    let payload = push.payload.clone();
    match push.route {
        routes::CHAT => {
            let Ok(chat) = pb::Chat::decode(payload) else {
                return Vec::new();
            };
            vec![if chat.whisper {
                format!("(whisper) {}: {}", chat.from, chat.text)
            } else {
                format!("[{}] {}: {}", chat.room, chat.from, chat.text)
            }]
        }
        routes::ROOM_STATE => {
            let Ok(state) = pb::RoomState::decode(payload) else {
                return Vec::new();
            };
            *view = View {
                room: state.room,
                tick: state.tick,
                players: state
                    .players
                    .into_iter()
                    .map(|b| (b.name, (b.x, b.y)))
                    .collect(),
                moved: BTreeMap::new(),
            };
            vec![format!("* {}", view.look())]
        }
        routes::DELTA => {
            let Ok(delta) = pb::Delta::decode(payload) else {
                return Vec::new();
            };
            if delta.room != view.room {
                return Vec::new(); // a room just left
            }
            let mut lines = Vec::new();
            if delta.since != view.tick {
                lines.push(format!(
                    "* missed an update of {} (/join it again to resync)",
                    view.room
                ));
            }
            view.tick = delta.tick;
            for name in delta.left {
                view.players.remove(&name);
                view.moved.remove(&name);
                lines.push(format!("* {name} left {}", view.room));
            }
            for body in delta.entered {
                if view
                    .players
                    .insert(body.name.clone(), (body.x, body.y))
                    .is_none()
                {
                    lines.push(format!("* {} entered {}", body.name, view.room));
                }
            }
            for body in delta.moved {
                view.players.insert(body.name.clone(), (body.x, body.y));
                view.moved.insert(body.name, (body.x, body.y));
            }
            lines
        }
        ROUTE_ROOM_RESTARTED => vec![format!(
            "* the room {} restarted",
            String::from_utf8_lossy(&push.payload)
        )],
        ROUTE_ANNOUNCEMENT => vec![format!(
            "* announcement: {}",
            String::from_utf8_lossy(&push.payload)
        )],
        _ => Vec::new(),
    }
}
