//! `gatehouse client`: an interactive terminal client for arena, so that two people
//! in two terminals can log in and chat. Lines typed are said to the room; lines
//! starting with `/` are commands (`/help`). Pushes are printed as they arrive.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use arena::{pb, routes};
use clap::Args;
use gatehouse_client::{Client, ClientConfig, ClientError, Push};
use prost::Message as _;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The server to connect to.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// The player to log in as (created on first login).
    #[arg(long)]
    name: String,
}

const HELP: &str = "commands: /rooms  /join ROOM  /leave  /who  /move X Y  /w NAME TEXT  /quit  \
                    (anything else is said to the room)";

pub(crate) async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let (client, mut pushes) = Client::connect(args.addr, ClientConfig::default())
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    let login = pb::LoginRequest { name: args.name };
    let reply = client.request(routes::LOGIN, login.encode_to_vec()).await?;
    let state = pb::LoginReply::decode(reply)?.state.unwrap_or_default();
    println!(
        "logged in as {} in {} at ({}, {}); login #{}. {HELP}",
        state.name, state.room, state.x, state.y, state.logins
    );

    let mut printer = tokio::spawn(async move {
        while let Some(push) = pushes.next().await {
            if let Some(line) = render_push(&push) {
                println!("{line}");
            }
        }
    });
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

/// A push as a line for the terminal; `None` for routes this client does not know.
fn render_push(push: &Push) -> Option<String> {
    let payload = push.payload.clone();
    Some(match push.route {
        routes::CHAT => {
            let chat = pb::Chat::decode(payload).ok()?;
            if chat.whisper {
                format!("(whisper) {}: {}", chat.from, chat.text)
            } else {
                format!("[{}] {}: {}", chat.room, chat.from, chat.text)
            }
        }
        routes::MOVED => {
            let moved = pb::Moved::decode(payload).ok()?;
            format!("* {} moved to ({}, {})", moved.name, moved.x, moved.y)
        }
        routes::ROOM_EVENT => {
            let event = pb::RoomEvent::decode(payload).ok()?;
            let verb = if event.joined { "entered" } else { "left" };
            format!("* {} {verb} {}", event.name, event.room)
        }
        _ => return None,
    })
}
