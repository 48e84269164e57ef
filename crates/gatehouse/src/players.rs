//! Who is logged in as which player, and logins that take a player over.
//!
//! The one map of player names to connections: the hub reads it to route pushes and
//! kicks by name. A login that takes a player over must wait until the previous
//! connection's disconnect hook has run (and queued its save), so that what it loads
//! next is everything the old session did; the hub forgets a connection before its
//! hook, so the name is kept here, held from
//! [`Context::logged_in`](crate::Context::logged_in) until its connection's hook has
//! run (the driver releases it then). It lives as long as the server, outside the
//! hub, so a hub restart cannot lose a holder whose hook is still running.
//!
//! Logins to one name take turns ([`LoginTurn`]): whatever a game checks before it
//! takes a player over (a password, a new account) is checked by one login at a time,
//! and however many logins of a name arrive at once, the last one is left online.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, OwnedMutexGuard};

use crate::cluster::ClusterNode;
use crate::connection::ConnId;

/// How long a login waits for its turn, and for the session it takes over to end.
pub const LOGIN_WAIT: Duration = Duration::from_secs(5);

/// The players logged in on this server, by name.
#[derive(Default)]
pub(crate) struct Players {
    state: Mutex<State>,
    /// The cluster this node is in, if any: told of every change of holder, so that
    /// it claims or releases the player there.
    cluster: OnceLock<Arc<ClusterNode>>,
}

#[derive(Default)]
struct State {
    /// Who holds each name, until its disconnect hook has run.
    online: HashMap<Arc<str>, Holder>,
    /// The name each connection holds.
    names: HashMap<ConnId, Arc<str>>,
    /// The line of logins to each name; forgotten when its last login is done.
    turns: HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>,
}

struct Holder {
    conn: ConnId,
    /// Set once the holder's disconnect hook has run; a takeover waits for it.
    gone: watch::Sender<bool>,
}

impl Players {
    fn state(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under this lock.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the server to a cluster (once, before it serves).
    pub(crate) fn set_cluster(&self, cluster: Arc<ClusterNode>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this node is in, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<ClusterNode>> {
        self.cluster.get()
    }

    /// `conn` holds `name` from now on (and no other name it held before).
    pub(crate) fn log_in(&self, name: &str, conn: ConnId) {
        let mut state = self.state();
        let name: Arc<str> = Arc::from(name);
        if let Some(previous) = state.names.insert(conn, name.clone()) {
            if previous != name {
                state.release(&previous, conn);
                self.tell_cluster(&previous);
            }
        }
        let (gone, _) = watch::channel(false);
        // A connection that logged in without a turn replaces the holder (the latest
        // login has the name, as in the hub); waiters of the old one see it gone.
        state.online.insert(name.clone(), Holder { conn, gone });
        self.tell_cluster(&name);
    }

    /// `conn`'s disconnect hook has run: its name is free.
    pub(crate) fn release(&self, conn: ConnId) {
        let mut state = self.state();
        if let Some(name) = state.names.remove(&conn) {
            state.release(&name, conn);
            self.tell_cluster(&name);
        }
    }

    fn tell_cluster(&self, name: &Arc<str>) {
        if let Some(cluster) = self.cluster.get() {
            cluster.player_changed(name);
        }
    }

    /// The connection holding `name`, and a signal that turns true once its hook ran.
    pub(crate) fn holder(&self, name: &str) -> Option<(ConnId, watch::Receiver<bool>)> {
        let state = self.state();
        let holder = state.online.get(name)?;
        Some((holder.conn, holder.gone.subscribe()))
    }

    /// The connection holding `name`.
    pub(crate) fn holder_conn(&self, name: &str) -> Option<ConnId> {
        self.state().online.get(name).map(|holder| holder.conn)
    }

    /// The name `conn` holds, if it logged in.
    pub(crate) fn name_of(&self, conn: ConnId) -> Option<String> {
        self.state().names.get(&conn).map(|name| name.to_string())
    }

    /// How many names are held.
    pub(crate) fn count(&self) -> usize {
        self.state().online.len()
    }

    /// How many names are held, and the first `limit` of them in order.
    pub(crate) fn list(&self, limit: usize) -> PlayerList {
        let state = self.state();
        let mut names: Vec<&str> = state.online.keys().map(|name| &**name).collect();
        names.sort_unstable();
        PlayerList {
            online: names.len(),
            names: names.into_iter().take(limit).map(str::to_owned).collect(),
        }
    }

    /// Waits (at most [`LOGIN_WAIT`]) for `name`'s turn among the logins to it;
    /// `None` if it did not come in time.
    pub(crate) async fn turn(self: &Arc<Self>, name: &str) -> Option<LoginTurn> {
        let name: Arc<str> = Arc::from(name);
        let line = self.state().turns.entry(name.clone()).or_default().clone();
        let place = Place {
            players: self.clone(),
            name: name.clone(),
            line,
        };
        let waiting = place.line.clone().lock_owned();
        let guard = tokio::time::timeout(LOGIN_WAIT, waiting).await.ok()?;
        Some(LoginTurn {
            name,
            _guard: guard,
            place,
        })
    }
}

impl State {
    fn release(&mut self, name: &Arc<str>, conn: ConnId) {
        if self.online.get(name).is_some_and(|h| h.conn == conn) {
            if let Some(holder) = self.online.remove(name) {
                holder.gone.send_replace(true);
            }
        }
    }
}

/// The players online: how many, and the first names in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlayerList {
    /// Players logged in on the server.
    pub online: usize,
    /// Their names in order, at most as many as asked for.
    pub names: Vec<String>,
}

/// A login's turn among the logins to one player name, from
/// [`Context::login_turn`](crate::Context::login_turn): while it is held, no other
/// login to that name goes on, so the game can check a password or create an account
/// without a second login racing it. Dropping it lets the next login in.
///
/// ```no_run
/// # use gatehouse::{Context, HandleError};
/// # async fn login(ctx: &mut Context<'_, ()>, name: &str) -> Result<(), HandleError> {
/// let turn = ctx.login_turn(name).await?;
/// // ... check the password against the saved player ...
/// ctx.take_over(&turn).await?; // the previous session is gone, its hook has run
/// // ... load the player (its save included), join rooms ...
/// ctx.logged_in(name).await?;
/// # Ok(()) }
/// ```
pub struct LoginTurn {
    pub(crate) name: Arc<str>,
    /// Dropped before `place` (fields drop in order), so the place sees the line free.
    _guard: OwnedMutexGuard<()>,
    pub(crate) place: Place,
}

impl std::fmt::Debug for LoginTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginTurn")
            .field("name", &self.name)
            .finish()
    }
}

impl LoginTurn {
    /// The player name this turn is for.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A login's place in its name's line: the line is forgotten when its last login is
/// done with it.
pub(crate) struct Place {
    pub(crate) players: Arc<Players>,
    name: Arc<str>,
    line: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut state = self.players.state();
        // Two holders, the map and this place: nobody else is in line.
        if state
            .turns
            .get(&self.name)
            .is_some_and(|line| Arc::ptr_eq(line, &self.line) && Arc::strong_count(line) == 2)
        {
            state.turns.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_is_held_until_its_connection_is_released() {
        let players = Arc::new(Players::default());
        players.log_in("ada", ConnId(1));
        let (conn, gone) = players.holder("ada").expect("held");
        assert_eq!(conn, ConnId(1));
        assert!(!*gone.borrow());
        players.release(ConnId(1));
        assert!(*gone.borrow());
        assert!(players.holder("ada").is_none());
        assert_eq!(players.list(10).online, 0);
    }

    #[tokio::test]
    async fn a_release_of_a_replaced_holder_keeps_the_new_one() {
        let players = Arc::new(Players::default());
        players.log_in("ada", ConnId(1));
        players.log_in("ada", ConnId(2));
        players.release(ConnId(1));
        assert_eq!(players.holder("ada").map(|h| h.0), Some(ConnId(2)));
        // A connection that logs in as another name lets the first go.
        players.log_in("bob", ConnId(2));
        assert!(players.holder("ada").is_none());
        assert_eq!(players.list(1).names, vec!["bob".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn logins_to_one_name_take_turns_and_the_line_is_forgotten() {
        let players = Arc::new(Players::default());
        let first = players.turn("ada").await.expect("first in line");
        // The second waits for the first, at most LOGIN_WAIT.
        assert!(players.turn("ada").await.is_none());
        let other = players
            .turn("bob")
            .await
            .expect("another name has its own line");
        drop((first, other));
        let again = players.turn("ada").await.expect("the line moved on");
        drop(again);
        assert!(players.state().turns.is_empty());
    }
}
