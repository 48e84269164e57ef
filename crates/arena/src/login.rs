//! Logging in: who may be a player (the password). Everything else of a login is
//! gatehouse's: logins to one name take turns ([`Context::login_turn`]), and a
//! login that takes a player over ([`Context::take_over`]) kicks the connection that
//! has it `duplicate_login` and goes on only once that connection's disconnect hook
//! has queued its save.
//!
//! Within its turn a login loads the player's latest state (a save still queued
//! included), checks the password against its hash (or sets it, for a new player or
//! one saved before passwords), and only then, with the right password, takes the
//! player over and loads again, so that it sees everything the old session did.
//!
//! In a cluster the store is the fence: the login lands a claim save before it
//! serves, and a session elsewhere that still thinks it has the player loses its
//! next save (refused, counted, kept as a dead letter) and is kicked
//! `duplicate_login`; its disconnect lands its save before a login elsewhere loads.

use std::net::SocketAddr;
use std::sync::Arc;

use gatehouse::typed::Failure;
use gatehouse::{Context, HandleError, KickReason, Status};
use gatehouse_store::{LandError, SaveSlot, Store};
use prost::Message as _;
use tracing::{info, warn};

use crate::accounts::{LoginResult, Refused, PASSWORD_BYTES};
use crate::play::room_refused;
use crate::world::{Joining, Position};
use crate::{pb, status, valid_name, Arena, Player, Session, LAND_WAIT, LOBBY};

/// A login that waited too long for its turn, or for the previous session to end.
fn busy(error: HandleError) -> Failure {
    match error {
        HandleError::Busy => {
            Failure::new(status::LOGIN_BUSY, "the previous session is still closing")
        }
        other => other.into(),
    }
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
        let turn = ctx.login_turn(&name).await.map_err(busy)?;

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

        if let Some(previous) = ctx.take_over(&turn).await.map_err(busy)? {
            info!(player = %name, %previous, "duplicate login; took the player over");
        }
        // Loaded again: the previous connection (if any) has queued its last save
        // (in a cluster: landed it).
        let (loaded, slot) = self.load(&name).await?;
        let mut state = loaded.unwrap_or_else(|| new_player(&name));
        let new_account = state.password_hash.is_empty();
        state.password_hash = password_hash;
        state.logins += 1;
        let joining = Joining {
            name: Arc::from(name.as_str()),
            at: Position::of(&state),
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
        let mut player = Player {
            state,
            room: Some(room),
            slot,
            fenced: ctx.server().in_cluster(),
        };
        if player.fenced {
            // Dropped (out of the room, unsaved) if the claim does not land.
            self.claim(&mut player, ctx).await?;
        } else if new_account {
            // The password is the player's from now on: save it at once.
            self.save(&mut player);
        } else {
            ctx.mark_dirty();
        }
        // Named (and free of the login deadline) only once the player has a room.
        ctx.logged_in(&name).await?;
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

    /// In a cluster the player is this session's only once its claim is the stored
    /// state: a session another node still holds (cut off, not yet told) then loses
    /// its next save, and is kicked here when this session's saves lose in turn.
    async fn claim(&self, player: &mut Player, ctx: &Context<'_, ()>) -> Result<(), Failure> {
        let name = player.state.name.clone();
        let claim = player.saved().encode_to_vec().into();
        let claimed = self.writer.land(&mut player.slot, claim, LAND_WAIT).await;
        match claimed {
            Ok(()) => {}
            Err(LandError::Lost) => {
                return Err(Failure::new(
                    status::LOGIN_BUSY,
                    "the player logged in elsewhere meanwhile",
                ))
            }
            Err(e) => {
                warn!(player = %name, error = %e, "cannot claim the player");
                return Err(Failure::new(
                    Status::UNAVAILABLE,
                    "the player store is unavailable",
                ));
            }
        }
        let (server, id) = (ctx.server().clone(), ctx.id());
        player.slot.on_lost(move || {
            warn!(player = %name, "another node saved this player over this session; kicking it");
            tokio::spawn(async move {
                let text = "logged in on another node";
                let _ = server.kick(id, KickReason::DUPLICATE_LOGIN, text).await;
            });
        });
        Ok(())
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
