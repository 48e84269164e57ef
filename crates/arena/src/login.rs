//! Logging in: who may be a player (the password), and the one-player-one-connection
//! rule (the online registry).
//!
//! Logins to one name take turns ([`Turn`]), so however many arrive at once, the last
//! one is left online and every other is told why (kicked, or LOGIN_BUSY). Within its
//! turn a login loads the player's latest state (a save still queued included),
//! checks the password against its hash (or sets it, for a new player or one saved
//! before passwords), and only then, with the right password, takes the player over:
//! the connection that has it is kicked `duplicate_login`, and the login waits until
//! that connection's disconnect hook has queued its save, then loads again, so that
//! it sees everything the old one did.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gatehouse::typed::Failure;
use gatehouse::{ConnId, Context, KickReason, Status};
use gatehouse_store::{SaveSlot, Store};
use prost::Message as _;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::accounts::{LoginResult, Refused, PASSWORD_BYTES};
use crate::play::room_refused;
use crate::world::{Joining, PlayerCell};
use crate::{lock, pb, status, valid_name, Arena, Player, Session, LOBBY};

/// How long a login waits for its turn, and for the player's previous connection to
/// save and go.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A player's entry in the online registry.
pub(crate) struct Online {
    conn: ConnId,
    /// Becomes true once that connection's save is queued and it is gone.
    released: watch::Receiver<bool>,
}

/// A name taken in the online registry by a login in progress. If the login does not
/// complete (it fails, or its handler is dropped at an await because the connection
/// was kicked or the server stops), dropping the claim gives the name back, so that
/// no ghost entry blocks the player's next login.
struct Claim<'a, S> {
    arena: &'a Arena<S>,
    name: String,
    conn: ConnId,
    /// `None` once the login completed and the session owns it.
    released: Option<watch::Sender<bool>>,
}

impl<S> Claim<'_, S> {
    /// The login completed: the session now holds the name until it disconnects.
    fn keep(mut self) -> watch::Sender<bool> {
        // `released` is only taken here or in drop, so it is still there; the
        // fallback (an already-released sender) is never used.
        self.released
            .take()
            .unwrap_or_else(|| watch::channel(true).0)
    }
}

impl<S> Drop for Claim<'_, S> {
    fn drop(&mut self) {
        if let Some(released) = self.released.take() {
            self.arena.release(&self.name, self.conn, &released);
        }
    }
}

/// A login's place in the line of logins to one name; the line is forgotten when
/// its last login is done with it.
struct Turn<'a, S> {
    arena: &'a Arena<S>,
    name: &'a str,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a, S> Turn<'a, S> {
    fn take(arena: &'a Arena<S>, name: &'a str) -> Self {
        let line = lock(&arena.turns)
            .entry(name.to_owned())
            .or_default()
            .clone();
        Turn {
            arena,
            name,
            lock: line,
        }
    }
}

impl<S> Drop for Turn<'_, S> {
    fn drop(&mut self) {
        let mut turns = lock(&self.arena.turns);
        // Two holders: the map and this turn; then nobody else is in line.
        if turns
            .get(self.name)
            .is_some_and(|l| Arc::strong_count(l) == 2)
        {
            turns.remove(self.name);
        }
    }
}

impl<S> Arena<S> {
    /// Removes `name` from the registry if this connection still holds it.
    pub(crate) fn release(&self, name: &str, conn: ConnId, released: &watch::Sender<bool>) {
        let mut online = lock(&self.online);
        if online.get(name).is_some_and(|entry| entry.conn == conn) {
            online.remove(name);
        }
        drop(online);
        released.send_replace(true);
    }
}

fn busy() -> Failure {
    Failure::new(status::LOGIN_BUSY, "the previous session is still closing")
}

impl<S: Store> Arena<S> {
    /// Route LOGIN.
    pub(crate) async fn login(
        &self,
        session: &mut Session,
        ctx: &mut Context<'_, ()>,
        request: pb::LoginRequest,
    ) -> Result<pb::LoginReply, Failure> {
        if session.player.is_some() {
            return Err(Failure::new(status::ALREADY_LOGGED_IN, "already logged in"));
        }
        let pb::LoginRequest { name, password } = request;
        if !valid_name(&name) {
            return Err(Failure::new(
                status::BAD_NAME,
                "names are 1-24 letters, digits, _ or -",
            ));
        }
        if !PASSWORD_BYTES.contains(&password.len()) {
            return Err(Failure::new(
                status::BAD_PASSWORD,
                "passwords are 8 to 128 bytes",
            ));
        }
        let peer = ctx.peer();
        let failed = |refused: Refused| self.failed_login(&name, peer, refused);
        // Refused at once if the name or the address is locked out.
        self.accounts.admit(&name, peer.ip()).map_err(failed)?;
        let turn = Turn::take(self, &name);
        let Ok(_my_turn) = tokio::time::timeout(TAKEOVER_TIMEOUT, turn.lock.lock()).await else {
            return Err(busy());
        };

        // Who is this? The latest state, a save still queued included.
        let (known, _) = self.load(&name).await?;
        let password_hash = match known.as_ref().map(|s| s.password_hash.as_str()) {
            Some(hash) if !hash.is_empty() => {
                // Checked once the name and the address have a place for a guess.
                self.accounts
                    .verify(&name, peer.ip(), &password, hash)
                    .await
                    .map_err(failed)?;
                hash.to_owned()
            }
            // A new player, or one saved before passwords: this password is theirs,
            // within the address's budget of new accounts.
            _ => self
                .accounts
                .create(peer.ip(), &password)
                .await
                .map_err(failed)?,
        };

        let claim = self.claim(&name, ctx).await?;
        // Loaded again: the previous connection (if any) has queued its last save.
        let (loaded, slot) = self.load(&name).await?;
        let mut state = loaded.unwrap_or_else(|| new_player(&name));
        let new_account = state.password_hash.is_empty();
        state.password_hash = password_hash;
        state.logins += 1;
        let cell = PlayerCell::new(&state);
        let joining = Joining {
            name: name.clone(),
            cell: cell.clone(),
        };
        // The saved room, or the lobby if that one is full.
        let room = match self.rooms.join(&state.room, ctx, joining.clone()).await {
            Ok(room) => room,
            Err(_) if state.room != LOBBY => {
                state.room = LOBBY.to_owned();
                self.rooms
                    .join(LOBBY, ctx, joining)
                    .await
                    .map_err(|e| room_refused(LOBBY, e))?
            }
            Err(e) => return Err(room_refused(LOBBY, e)),
        };
        // Named (and free of the login deadline) only once the player has a room.
        ctx.logged_in(&name).await?;
        let mut player = Player {
            state,
            cell,
            room: Some(room),
            slot,
            released: claim.keep(),
        };
        if new_account {
            // The password is the player's from now on: save it at once.
            self.save(&mut player);
        } else {
            ctx.mark_dirty();
        }
        let result = if new_account {
            LoginResult::Created
        } else {
            LoginResult::Ok
        };
        self.accounts.stats().login(result);
        info!(player = %name, room = %player.state.room, new_account, "logged in");
        let reply = pb::LoginReply {
            state: Some(player.view()),
        };
        session.player = Some(player);
        Ok(reply)
    }

    /// The player's saved state (or none yet) and where its next save goes.
    async fn load(&self, name: &str) -> Result<(Option<pb::PlayerState>, SaveSlot), Failure> {
        let loaded = self.writer.load(name).await.map_err(|e| {
            warn!(player = %name, error = %e, "cannot load the player");
            Failure::new(Status::UNAVAILABLE, "the player store is unavailable")
        })?;
        let state = loaded.data.map(|saved| {
            pb::PlayerState::decode(saved).unwrap_or_else(|e| {
                warn!(player = %name, error = %e, "saved state unreadable; starting afresh");
                new_player(name)
            })
        });
        Ok((state, loaded.slot))
    }

    /// Registers `name` as online on this connection, first kicking the connection
    /// that has it and waiting until it has saved and gone. Called within the name's
    /// turn, so no other login can take the name between that wait and the claim.
    async fn claim(&self, name: &str, ctx: &Context<'_, ()>) -> Result<Claim<'_, S>, Failure> {
        let previous = lock(&self.online)
            .get(name)
            .map(|entry| (entry.conn, entry.released.clone()));
        if let Some((previous, mut released)) = previous {
            info!(player = %name, previous = %previous, "duplicate login; kicking the previous connection");
            let _ = ctx
                .server()
                .kick(
                    previous,
                    KickReason::DUPLICATE_LOGIN,
                    "logged in from another connection",
                )
                .await;
            // An error means the sender is gone: released as well.
            let waited = tokio::time::timeout(TAKEOVER_TIMEOUT, released.wait_for(|r| *r)).await;
            if waited.is_err() {
                return Err(busy());
            }
        }
        let (tx, rx) = watch::channel(false);
        lock(&self.online).insert(
            name.to_owned(),
            Online {
                conn: ctx.id(),
                released: rx,
            },
        );
        Ok(Claim {
            arena: self,
            name: name.to_owned(),
            conn: ctx.id(),
            released: Some(tx),
        })
    }
}

impl<S> Arena<S> {
    /// A login refused over its password: counted, logged (within the budget of
    /// such lines), and answered.
    fn failed_login(&self, name: &str, peer: SocketAddr, refused: Refused) -> Failure {
        match refused.result() {
            Some(result) => self.accounts.stats().failed(name, peer, result),
            None => warn!(player = %name, %peer, "cannot check the password"),
        }
        match refused {
            Refused::Blocked => Failure::new(
                status::TOO_MANY_ATTEMPTS,
                "too many wrong passwords for this player or from this address; wait a minute",
            ),
            Refused::Wrong => Failure::new(status::WRONG_PASSWORD, "wrong password"),
            Refused::TooManyAccounts => Failure::new(
                status::TOO_MANY_ACCOUNTS,
                "too many new accounts from this address; try later",
            ),
            Refused::Busy => Failure::new(
                status::LOGIN_BUSY,
                "too many logins waiting for a password check; try again",
            ),
            Refused::Broken => Failure::new(Status::INTERNAL_ERROR, "cannot check the password"),
        }
    }
}

pub(crate) fn new_player(name: &str) -> pb::PlayerState {
    pb::PlayerState {
        name: name.to_owned(),
        room: LOBBY.to_owned(),
        ..Default::default()
    }
}
