//! `gatehouse client`: an interactive terminal client for arena, so that two people
//! in two terminals can log in, chat, and watch each other move. Lines typed are
//! said to the room; lines starting with `/` are commands (`/help`). The room's
//! players are kept live from its state and deltas: entries and exits are printed as
//! they happen, a walk once it ends (where the walker stopped), `/look` lists them.
//! A broken connection is resumed where it stood, nothing lost (arena keeps a
//! session for a while, `docs/PROTOCOL.md`); when the server goes away (a shutdown, a
//! restart) or the session could not be resumed, it reconnects and logs in again,
//! waiting 1 s, then twice as long each failed try up to 30 s; a kick for cause (a
//! duplicate login, an operator's) or a refused login ends it. `/quit` tells the
//! server the player left, so the room sees them go at once. The password is asked
//! without echo, or read from `GATEHOUSE_PASSWORD`.
//!
//! On a terminal, lines are edited in place and up/down recall earlier ones; what
//! arrives while the player types is printed above the line being typed
//! ([`console`]). `/quit`, Ctrl-D on an empty line and Ctrl-C quit (exit code 0);
//! quitting while it waits to reconnect, a kick for cause or a refused login exit
//! with 1.

mod console;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use arena::{pb, routes};
use clap::Args;
use gatehouse::protocol::{KickReason, ROUTE_ANNOUNCEMENT, ROUTE_ROOM_RESTARTED};
use gatehouse_client::{Client, ClientConfig, ClientError, Push, Pushes, Target};
use prost::Message as _;

use console::{Console, Out};

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
    /// The player's password (8 to 128 bytes). Prefer the prompt (on a terminal,
    /// without echo) or `GATEHOUSE_PASSWORD`: a flag shows in `ps` and the shell's
    /// history.
    #[arg(long, env = "GATEHOUSE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

const HELP: &str = "commands: /rooms  /join ROOM  /leave  /who  /look  /move X Y  /goto X Y  \
                    /walk DX DY  /stop  /w NAME TEXT  /quit  (anything else is said to the room)";

/// How often the walkers seen in deltas are checked: one that moved no more since the
/// last check has stopped, and is printed where it stands.
const MOVES_EVERY: Duration = Duration::from_millis(500);

/// The room as this client knows it: from its `RoomState`, then its deltas.
#[derive(Default)]
struct View {
    /// This client's player: its own entries and exits are not news.
    me: String,
    room: String,
    tick: u64,
    players: BTreeMap<String, (i32, i32)>,
    /// Moved since the last check.
    moved: BTreeMap<String, (i32, i32)>,
    /// Walking at the last check.
    walking: BTreeMap<String, (i32, i32)>,
}

impl View {
    /// The walkers that moved before the last check and not since: where they
    /// stopped. Moves in between are not printed (a walk is four or five a second).
    fn stopped(&mut self) -> Vec<String> {
        let moved = std::mem::take(&mut self.moved);
        let mut lines = Vec::new();
        for (name, (x, y)) in std::mem::take(&mut self.walking) {
            if !moved.contains_key(&name) && name != self.me {
                lines.push(format!("* {name} stopped at ({x}, {y})"));
            }
        }
        self.walking = moved;
        lines
    }

    fn look(&self) -> String {
        let players: Vec<String> = self
            .players
            .iter()
            .map(|(name, (x, y))| format!("{name} ({x}, {y})"))
            .collect();
        format!("in {}: {}", self.room, players.join(", "))
    }
}

/// The first wait before reconnecting, doubled after each failed attempt up to
/// [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_secs(1);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// How a session ended.
enum Ended {
    /// The player quit (`/quit`, or the end of input).
    Quit,
    /// The server went away (shut down, restarted, or the connection broke): worth
    /// reconnecting.
    Lost(ClientError),
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
    let password = match args.password {
        Some(password) => password,
        None => ask_password(&args.name)?,
    };
    let login = pb::LoginRequest {
        name: args.name,
        password,
    };
    let config = ClientConfig {
        tls_ca: args.ca,
        ..ClientConfig::default()
    };
    let mut console = Console::open();
    let played = play(&target, &config, &login, &mut console).await;
    console.close().await;
    played
}

/// Sessions, one after another while the server goes away and comes back.
async fn play(
    target: &Target,
    config: &ClientConfig,
    login: &pb::LoginRequest,
    console: &mut Console,
) -> anyhow::Result<()> {
    let out = console.out();
    // The first connection must work; after that the server may come back.
    let mut connected = false;
    let mut wait = RECONNECT_FIRST;
    loop {
        let lost = match session(target, config, login, console).await {
            Ok(Ended::Quit) => return Ok(()),
            Ok(Ended::Lost(why)) => {
                connected = true;
                wait = RECONNECT_FIRST;
                why
            }
            Err(e) if connected && is_unreachable(&e) => {
                wait = (wait * 2).min(RECONNECT_MAX);
                e
            }
            Err(e) if is_unreachable(&e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot connect to {target}")))
            }
            // A kick for cause, a refused login.
            Err(e) => return Err(e.into()),
        };
        out.line(format!(
            "* disconnected ({lost}); reconnecting in {wait:?} (/quit to stop)"
        ))
        .await;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            line = console.next_line() => match line.as_deref().map(str::trim) {
                None | Some("/quit") => bail!("disconnected: {lost}"),
                Some(_) => out.line("* not connected; reconnecting in a moment").await,
            },
        }
    }
}

/// The password, asked on the terminal without echo.
fn ask_password(name: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        bail!("no password: type it at the prompt (on a terminal), or set GATEHOUSE_PASSWORD");
    }
    rpassword::prompt_password(format!("password for {name}: ")).context("cannot read the password")
}

/// A failure to reach the server at all (it is down, or restarting).
fn is_unreachable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io(_) | ClientError::Closed | ClientError::Timeout
    )
}

/// One connection: log in, then play until the player quits or the server goes.
/// A refused login or a kick for cause (a duplicate login, an operator's kick) is an
/// error: reconnecting would not help.
async fn session(
    target: &Target,
    config: &ClientConfig,
    login: &pb::LoginRequest,
    console: &mut Console,
) -> Result<Ended, ClientError> {
    let (client, pushes) = Client::connect_to(target, config.clone()).await?;
    let reply = client.request(routes::LOGIN, login.encode_to_vec()).await?;
    let state = pb::LoginReply::decode(reply)
        .map_err(|e| ClientError::Protocol(e.to_string()))?
        .state
        .unwrap_or_default();
    let out = console.out();
    out.line(format!(
        "logged in as {} in {} at ({}, {}); login #{}. {HELP}",
        state.name, state.room, state.x, state.y, state.logins
    ))
    .await;

    let view = Arc::new(Mutex::new(View {
        me: state.name.clone(),
        ..View::default()
    }));
    let mut printer = tokio::spawn(print_pushes(pushes, view.clone(), out.clone()));
    let ended = loop {
        let line = tokio::select! {
            line = console.next_line() => line,
            _ = &mut printer => {
                // The pushes ended: the server closed the connection (a kick says why).
                break lost_or_error(client.ended().unwrap_or(ClientError::Closed))?;
            }
        };
        let Some(line) = line else { break Ended::Quit }; // end of input
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/quit" {
            break Ended::Quit;
        }
        if line == "/look" {
            let look = lock(&view).look();
            out.line(look).await;
            continue;
        }
        match command(&client, line).await {
            Ok(Some(answer)) => out.line(answer).await,
            Ok(None) => {}
            Err(CommandError::Usage(HELP)) => out.line(HELP).await,
            Err(CommandError::Usage(usage)) => out.line(format!("usage: {usage}")).await,
            Err(CommandError::Server(e @ ClientError::Status { .. })) => {
                out.line(format!("error: {e}")).await;
            }
            Err(CommandError::Server(e)) => break lost_or_error(e)?,
        }
    };
    match ended {
        // On purpose: the server ends the session now instead of keeping it for a
        // resume.
        Ended::Quit => client.leave().await,
        Ended::Lost(_) => client.close(),
    }
    printer.abort();
    Ok(ended)
}

/// Whether a connection's end is the server going away (reconnect) or a reason to stop.
fn lost_or_error(why: ClientError) -> Result<Ended, ClientError> {
    match &why {
        // A session lost for longer than the server keeps it: log in again.
        ClientError::Kicked { reason, .. }
            if *reason == KickReason::SHUTDOWN
                || *reason == KickReason::SERVER_RESTART
                || *reason == KickReason::RESUME_FAILED =>
        {
            Ok(Ended::Lost(why))
        }
        ClientError::Io(_) | ClientError::Closed => Ok(Ended::Lost(why)),
        _ => Err(why),
    }
}

enum CommandError {
    /// How the command is written (or, for an unknown one, every command).
    Usage(&'static str),
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
                return Err(CommandError::Usage("/move X Y (whole numbers)"));
            };
            state(
                client
                    .request(routes::MOVE, pb::Move { x, y }.encode_to_vec())
                    .await?,
            )?
        }
        ("/goto", Some(x), Some(y)) => {
            let (Ok(x), Ok(y)) = (x.parse(), y.parse()) else {
                return Err(CommandError::Usage("/goto X Y (whole numbers)"));
            };
            walk(client, 0, 0, Some(pb::Position { x, y })).await?;
            return Ok(None);
        }
        ("/walk", Some(dx), Some(dy)) => {
            let (Ok(dx), Ok(dy)) = (dx.parse(), dy.parse()) else {
                return Err(CommandError::Usage("/walk DX DY (each -1, 0 or 1)"));
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
            format!("(whisper to {to}) {}", whisper.text)
        }
        ("/move", ..) => return Err(CommandError::Usage("/move X Y")),
        ("/goto", ..) => return Err(CommandError::Usage("/goto X Y")),
        ("/walk", ..) => return Err(CommandError::Usage("/walk DX DY (each -1, 0 or 1)")),
        ("/join", ..) => return Err(CommandError::Usage("/join ROOM")),
        ("/w", ..) => return Err(CommandError::Usage("/w NAME TEXT")),
        _ => return Err(CommandError::Usage(HELP)),
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

/// Prints pushes as they arrive, keeps the room's view, and every [`MOVES_EVERY`]
/// prints the walkers that stopped.
async fn print_pushes(mut pushes: Pushes, view: Arc<Mutex<View>>, out: Out) {
    let mut moves = tokio::time::interval(MOVES_EVERY);
    loop {
        tokio::select! {
            push = pushes.next() => {
                let Some(push) = push else { return };
                let lines = apply_push(&push, &mut lock(&view));
                for line in lines {
                    out.line(line).await;
                }
            }
            _ = moves.tick() => {
                let lines = lock(&view).stopped();
                for line in lines {
                    out.line(line).await;
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
                me: std::mem::take(&mut view.me),
                room: state.room,
                tick: state.tick,
                players: state
                    .players
                    .into_iter()
                    .map(|b| (b.name, (b.x, b.y)))
                    .collect(),
                moved: BTreeMap::new(),
                walking: BTreeMap::new(),
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
                view.walking.remove(&name);
                // (this player's own previous session, taken over: not news)
                if name != view.me {
                    lines.push(format!("* {name} left {}", view.room));
                }
            }
            for body in delta.entered {
                let new = view
                    .players
                    .insert(body.name.clone(), (body.x, body.y))
                    .is_none();
                if new && body.name != view.me {
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
