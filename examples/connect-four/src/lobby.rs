//! Who is online and who waits for a game: the online registry (a name has at most
//! one connection) and the waiting line, where the second player to queue is matched
//! with the first at once, so at most one player ever waits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use gatehouse::room::{RoomError, RoomHandle};
use gatehouse::typed::Failure;
use gatehouse::ConnId;

use crate::game::Game;
use crate::wire::status;

/// A player waiting for an opponent.
#[derive(Debug, Clone)]
pub(crate) struct Waiting {
    pub(crate) name: String,
    pub(crate) conn: ConnId,
}

#[derive(Default)]
pub(crate) struct Lobby {
    online: Mutex<HashMap<String, ConnId>>,
    waiting: Mutex<Option<Waiting>>,
    games_made: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Lobby {
    /// Takes `name` for `conn`, or refuses if someone online has it. The name is given
    /// back when the claim is dropped, unless it is kept: so a login that fails, or
    /// whose handler is dropped at an await (its connection kicked), leaves no ghost.
    pub(crate) fn claim(&self, name: &str, conn: ConnId) -> Result<Claim<'_>, Failure> {
        let mut online = lock(&self.online);
        if online.contains_key(name) {
            return Err(Failure::new(
                status::NAME_TAKEN,
                format!("{name} is online already"),
            ));
        }
        online.insert(name.to_owned(), conn);
        Ok(Claim {
            lobby: self,
            name: name.to_owned(),
            conn,
            kept: false,
        })
    }

    /// Gives `name` back, if `conn` still holds it.
    pub(crate) fn release(&self, name: &str, conn: ConnId) {
        let mut online = lock(&self.online);
        if online.get(name) == Some(&conn) {
            online.remove(name);
        }
    }

    /// Players online.
    pub(crate) fn online(&self) -> usize {
        lock(&self.online).len()
    }

    /// Players waiting (0 or 1).
    pub(crate) fn waiting(&self) -> usize {
        usize::from(lock(&self.waiting).is_some())
    }

    /// Puts `me` in the line, or, if someone waits, makes a game for the two of
    /// them (with `create`, under the line's lock, so that nobody is taken from the
    /// line for a game that cannot be made) and returns them with it.
    pub(crate) fn queue(
        &self,
        me: Waiting,
        create: impl FnOnce(&str) -> Result<RoomHandle<Game>, RoomError>,
    ) -> Result<Option<(Waiting, RoomHandle<Game>)>, RoomError> {
        let mut waiting = lock(&self.waiting);
        if waiting.is_none() {
            *waiting = Some(me);
            return Ok(None);
        }
        let number = self.games_made.fetch_add(1, Ordering::Relaxed) + 1;
        let game = create(&format!("game-{number}"))?;
        Ok(waiting.take().map(|them| (them, game)))
    }

    /// Takes `conn` out of the line; false if it was not there.
    pub(crate) fn leave(&self, conn: ConnId) -> bool {
        let mut waiting = lock(&self.waiting);
        let there = waiting.as_ref().is_some_and(|w| w.conn == conn);
        if there {
            *waiting = None;
        }
        there
    }
}

/// A name taken by a login in progress (see [`Lobby::claim`]).
pub(crate) struct Claim<'a> {
    lobby: &'a Lobby,
    name: String,
    conn: ConnId,
    kept: bool,
}

impl Claim<'_> {
    /// The login completed: the name stays taken until the session's disconnect hook
    /// releases it.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.lobby.release(&self.name, self.conn);
        }
    }
}
