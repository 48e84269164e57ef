//! The smallest game on gatehouse: players name themselves and shout to everyone.
//! Run it with `cargo run -p gatehouse --example minimal`; the README walks through it.

use bytes::Bytes;
use gatehouse::{Config, Context, Disconnect, Reply, Server, Service};

struct Game;

/// The seed's `ConnStat`: one per connection.
struct Player {
    name: Option<String>,
}

impl Service for Game {
    type Session = Player;
    /// What other parts of the game send a connection through the hub: nothing here.
    type Message = ();

    async fn connect(&self, _ctx: &mut Context<'_, ()>) -> Player {
        Player { name: None }
    }

    /// Naming needs no waiting: answered on the fast path, without a future.
    fn request_now(
        &self,
        player: &mut Player,
        _ctx: &mut Context<'_, ()>,
        route: u16,
        payload: &Bytes,
    ) -> Option<Reply> {
        (route == 1).then(|| {
            player.name = Some(String::from_utf8_lossy(payload).into_owned());
            Reply::empty()
        })
    }

    /// Shouting waits for the hub: an async handler.
    async fn request(
        &self,
        _player: &mut Player,
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            2 => match ctx.server().broadcast(2, payload).await {
                Ok(()) => Reply::empty(),
                Err(e) => Reply::error(gatehouse::Status::UNAVAILABLE, e.to_string()),
            },
            other => Reply::unknown_route(other),
        }
    }

    /// Called exactly once per connection, whatever ended it: save here.
    async fn disconnect(&self, player: Player, info: Disconnect) {
        println!("{:?} left: {}", player.name, info.reason);
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::default();
    let listener = gatehouse::bind(([127, 0, 0, 1], 7000).into()).await?;
    println!("listening on {}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    Server::new(config, Game)?.run(listener, shutdown).await?;
    Ok(())
}
