//! The waiting line: the second player to queue is matched with the first at once,
//! so at most one player ever waits. (Who is online is the server's:
//! `ServerHandle::player` and `ServerHandle::players`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use gatehouse::room::{RoomError, RoomHandle};
use gatehouse::ConnId;

use crate::game::Game;
use crate::lock;

#[derive(Default)]
pub(crate) struct Lobby {
    /// The player waiting for an opponent, if any.
    waiting: Mutex<Option<ConnId>>,
    games_made: AtomicU64,
}

impl Lobby {
    /// Players waiting (0 or 1).
    pub(crate) fn waiting(&self) -> usize {
        usize::from(lock(&self.waiting).is_some())
    }

    /// Puts `me` in the line, or, if someone waits, makes a game for the two of
    /// them (with `create`, under the line's lock, so that nobody is taken from the
    /// line for a game that cannot be made) and returns the one who waited with it.
    pub(crate) fn queue(
        &self,
        me: ConnId,
        create: impl FnOnce(&str) -> Result<RoomHandle<Game>, RoomError>,
    ) -> Result<Option<(ConnId, RoomHandle<Game>)>, RoomError> {
        let mut waiting = lock(&self.waiting);
        let Some(them) = *waiting else {
            *waiting = Some(me);
            return Ok(None);
        };
        let number = self.games_made.fetch_add(1, Ordering::Relaxed) + 1;
        let game = create(&format!("game-{number}"))?;
        *waiting = None;
        Ok(Some((them, game)))
    }

    /// Takes `conn` out of the line; false if it was not there.
    pub(crate) fn leave(&self, conn: ConnId) -> bool {
        let mut waiting = lock(&self.waiting);
        let there = *waiting == Some(conn);
        if there {
            *waiting = None;
        }
        there
    }
}
