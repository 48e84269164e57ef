//! The hub: the seed's `gs_svr`, one actor task.
//!
//! It owns the registry of live connections (their mailboxes) and the named groups (lists of connections to push to; a room is another
//! thing, see [`crate::room`]), and does everything that involves more than one connection:
//! broadcast, group broadcast, send to one (by id, or by player name through the
//! server's `players` registry), kick one, count. It never waits on a
//! connection: deliveries go into mailboxes that refuse (and mark a slow consumer)
//! rather than grow. A broadcast is encoded once by the caller; the hub only clones
//! the `Bytes` handle per recipient.
//!
//! The hub holds no state that outlives it on purpose: when it crashes, the
//! supervisor closes every connection and starts a fresh hub, so the registry and
//! the sockets never disagree. The game reaches it only through
//! [`ServerHandle`](crate::ServerHandle), which follows it across restarts.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, error, warn};

use gatehouse_protocol::{KickReason, Message, HEADER_LEN};

use crate::config::{PerTransport, TransportKind};
use crate::connection::{ConnId, TrafficCounts};
use crate::mailbox::{Delivery, Mailbox};
use crate::players::Players;
use crate::sessions::Resuming;

/// Why a [`ServerHandle`](crate::ServerHandle) call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandleError {
    /// The server's hub is restarting past the handle's wait, or the server has
    /// stopped.
    #[error("the hub is unavailable (restarting or stopped)")]
    Unavailable,
    /// The push would be a frame larger than `limits.max_frame_bytes`, which no
    /// client accepts: it was refused here, before reaching anyone.
    #[error("a push of {len} bytes is over max_frame_bytes ({max})")]
    FrameTooLarge {
        /// The frame body's length.
        len: usize,
        /// `limits.max_frame_bytes`.
        max: usize,
    },
    /// A login waited too long: for its turn among the logins to the same player, or
    /// for the session it takes over to end ([`crate::LoginTurn`]).
    #[error("the player is busy: another login or the previous session did not finish in time")]
    Busy,
}

/// The live connections summed up, for the metrics: read from every connection's
/// meter and budget when asked, so that nothing is counted per frame here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Census {
    /// Live connections per transport.
    pub open: PerTransport<u64>,
    /// What the live connections carried so far, per transport.
    pub traffic: PerTransport<TrafficCounts>,
    /// Unsent bytes queued for all of them.
    pub queued_bytes: u64,
    /// The most unsent bytes queued for one of them.
    pub queued_bytes_max: u64,
    /// Connections logged in as a player.
    pub players: u64,
}

/// One live connection, for the admin API's list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Its id.
    pub id: ConnId,
    /// Where it comes from (the client a trusted proxy named, if proxied).
    pub peer: SocketAddr,
    /// What it speaks.
    pub transport: TransportKind,
    /// When it was accepted.
    pub since: SystemTime,
    /// What it carried so far.
    pub traffic: TrafficCounts,
    /// Its unsent bytes.
    pub queued_bytes: u64,
    /// The player it is logged in as, if the service said.
    pub player: Option<String>,
}

/// A page of [`ConnectionInfo`], in id order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionPage {
    /// At most the asked-for number of connections with ids above the cursor.
    pub connections: Vec<ConnectionInfo>,
    /// Live connections in all.
    pub total: usize,
}

/// A cheap, cloneable handle to one life of the hub; every method is a message to
/// the actor. The game sees it only through [`crate::ServerHandle`].
pub(crate) struct HubHandle<M> {
    tx: mpsc::Sender<Command<M>>,
    /// `limits.max_frame_bytes`: no push larger than this leaves the server.
    max_frame: usize,
    /// `server.hub_queue_bytes`: frame bytes queued for the hub, whatever their
    /// number; a sender waits for room as it does for a slot.
    queued_bytes: Arc<Semaphore>,
    /// The semaphore's size, `server.hub_queue_bytes`.
    queue_bytes: usize,
}

impl<M> Clone for HubHandle<M> {
    fn clone(&self) -> Self {
        HubHandle {
            tx: self.tx.clone(),
            max_frame: self.max_frame,
            queued_bytes: self.queued_bytes.clone(),
            queue_bytes: self.queue_bytes,
        }
    }
}

/// A queued frame's share of `server.hub_queue_bytes`, given back when the hub has
/// handled its command.
type Charge = Option<OwnedSemaphorePermit>;

enum Command<M> {
    Register {
        id: ConnId,
        peer: SocketAddr,
        mailbox: Arc<Mailbox<M>>,
    },
    Unregister {
        id: ConnId,
    },
    SendToPlayer {
        player: Arc<str>,
        delivery: Delivery<M>,
        _charge: Charge,
    },
    Broadcast {
        frame: Bytes,
        except: Option<ConnId>,
        _charge: Charge,
    },
    Send {
        to: ConnId,
        delivery: Delivery<M>,
        _charge: Charge,
    },
    /// One frame for each of these connections (a room's broadcast from another node).
    SendEach {
        to: Vec<ConnId>,
        frame: Bytes,
        _charge: Charge,
    },
    Join {
        id: ConnId,
        group: Arc<str>,
    },
    Leave {
        id: ConnId,
        group: Arc<str>,
    },
    GroupBroadcast {
        group: Arc<str>,
        frame: Bytes,
        except: Option<ConnId>,
        _charge: Charge,
    },
    Count {
        group: Option<Arc<str>>,
        reply: oneshot::Sender<usize>,
    },
    Groups {
        reply: oneshot::Sender<Vec<(String, usize)>>,
    },
    Census {
        reply: oneshot::Sender<Census>,
    },
    Connections {
        after: Option<ConnId>,
        limit: usize,
        reply: oneshot::Sender<ConnectionPage>,
    },
    Connection {
        id: ConnId,
        reply: oneshot::Sender<Option<ConnectionInfo>>,
    },
    /// A new connection resumes connection `to`'s session: the handoff goes to its
    /// mailbox, or back by `refused` (no such connection, or it has ended).
    Resume {
        to: ConnId,
        handoff: Box<dyn Resuming>,
        refused: oneshot::Sender<Box<dyn Resuming>>,
    },
    /// Fault injection: panic inside the hub.
    Crash {
        by: ConnId,
    },
}

// The methods are plain functions returning the channel's send future (wrapped in
// one `async` block at most), rather than nested `async fn`s, so that a handler
// awaiting the hub holds little more than that send: handler futures are boxed and
// copied once per request, and each nested `async fn` would add its own state.
impl<M> HubHandle<M> {
    /// Whether this hub has ended (crashed or stopped): its calls fail from now on.
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl<M: Send + 'static> HubHandle<M> {
    fn send(
        &self,
        command: Command<M>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.tx
            .send(command)
            .map(|sent| sent.map_err(|_| HandleError::Unavailable))
    }

    /// Sends the command `make` builds around a reply channel, then waits for the answer.
    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command<M>,
    ) -> impl Future<Output = Result<T, HandleError>> + Send + '_ {
        let (reply, answer) = oneshot::channel();
        let command = make(reply);
        // The send future is made inside the block, so the block holds it once.
        async move {
            self.tx
                .send(command)
                .await
                .map_err(|_| HandleError::Unavailable)?;
            answer.await.map_err(|_| HandleError::Unavailable)
        }
    }

    pub(crate) fn register(
        &self,
        id: ConnId,
        peer: SocketAddr,
        mailbox: Arc<Mailbox<M>>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.send(Command::Register { id, peer, mailbox })
    }

    /// Forgets a connection. A stopped hub has no registry left to clean, so its
    /// absence is not an error.
    pub(crate) fn unregister(&self, id: ConnId) -> impl Future<Output = ()> + Send + '_ {
        self.send(Command::Unregister { id }).map(|_| ())
    }

    /// Hands a new connection's transport to connection `to`'s session (through
    /// its mailbox); given back if there is no such connection, it has ended, or
    /// the hub is unavailable.
    pub(crate) fn resume(
        &self,
        to: ConnId,
        handoff: Box<dyn Resuming>,
    ) -> impl Future<Output = Result<(), Box<dyn Resuming>>> + Send + '_ {
        let (refused, answer) = oneshot::channel();
        let command = Command::Resume {
            to,
            handoff,
            refused,
        };
        async move {
            if let Err(mpsc::error::SendError(Command::Resume { handoff, .. })) =
                self.tx.send(command).await
            {
                return Err(handoff);
            }
            // Dropped unanswered: delivered (or the hub crashed holding it, which ends
            // every session anyway: the client's next resume is refused `unknown`).
            answer.await.map_or(Ok(()), Err)
        }
    }

    pub(crate) fn crash(
        &self,
        by: ConnId,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.send(Command::Crash { by })
    }

    /// Sends the command carrying `frame` once the hub's queue has room for its
    /// bytes, unless the frame is larger than any client accepts: then the caller gets
    /// [`HandleError::FrameTooLarge`] at once.
    fn send_frame(
        &self,
        frame: Bytes,
        command: impl FnOnce(Bytes, Charge) -> Command<M> + Send + 'static,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        if let Err(refused) = check_frame(&frame, self.max_frame) {
            return Either::Left(std::future::ready(Err(refused)));
        }
        // A frame is at most max_frame_bytes + 4, which validation keeps within
        // both u32 and hub_queue_bytes.
        let bytes = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let queued_bytes = self.queued_bytes.clone();
        Either::Right(async move {
            let charge = queued_bytes
                .acquire_many_owned(bytes)
                .await
                .map_err(|_| HandleError::Unavailable)?;
            let command = command(frame, Some(charge));
            self.tx
                .send(command)
                .await
                .map_err(|_| HandleError::Unavailable)
        })
    }

    /// Pushes an encoded push `frame` to every connection but `except`.
    pub(crate) fn broadcast(
        &self,
        frame: Bytes,
        except: Option<ConnId>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.send_frame(frame, move |frame, _charge| Command::Broadcast {
            frame,
            except,
            _charge,
        })
    }

    /// Pushes an encoded push `frame` to the connection logged in as `player`;
    /// dropped if nobody is.
    pub(crate) fn push_to_player(
        &self,
        player: Arc<str>,
        frame: Bytes,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.send_frame(frame, move |frame, _charge| Command::SendToPlayer {
            player,
            delivery: Delivery::Frame(frame),
            _charge,
        })
    }

    /// Kicks the connection logged in as `player`, if any.
    pub(crate) fn kick_player(
        &self,
        player: Arc<str>,
        reason: KickReason,
        text: impl Into<String>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        let delivery = Delivery::Kick(reason, text.into());
        self.send(Command::SendToPlayer {
            player,
            delivery,
            _charge: None,
        })
    }

    /// Pushes `payload` on `route` to one connection; dropped if it is gone.
    pub(crate) fn push_to(
        &self,
        to: ConnId,
        route: u16,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.send_frame(push_frame(route, payload), move |frame, _charge| {
            Command::Send {
                to,
                delivery: Delivery::Frame(frame),
                _charge,
            }
        })
    }

    /// Pushes an encoded push `frame` to each of `to`; those gone are skipped.
    pub(crate) fn push_frame_each(
        &self,
        to: Vec<ConnId>,
        frame: Bytes,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.send_frame(frame, move |frame, _charge| Command::SendEach {
            to,
            frame,
            _charge,
        })
    }

    /// Sends a message to one connection's service `message` handler.
    pub(crate) fn send_message(
        &self,
        to: ConnId,
        message: M,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        let delivery = Delivery::Message(message);
        self.send(Command::Send {
            to,
            delivery,
            _charge: None,
        })
    }

    /// Kicks one connection: it is sent `reason` and closed.
    pub(crate) fn kick(
        &self,
        to: ConnId,
        reason: KickReason,
        text: impl Into<String>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        let delivery = Delivery::Kick(reason, text.into());
        self.send(Command::Send {
            to,
            delivery,
            _charge: None,
        })
    }

    /// Adds a connection to a named group (created on first join).
    pub(crate) fn join(
        &self,
        id: ConnId,
        group: &str,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        let group = Arc::from(group);
        self.send(Command::Join { id, group })
    }

    /// Removes a connection from a group (removed when empty).
    pub(crate) fn leave(
        &self,
        id: ConnId,
        group: &str,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        let group = Arc::from(group);
        self.send(Command::Leave { id, group })
    }

    /// Pushes an encoded push `frame` to every member of a group but `except`.
    pub(crate) fn group_broadcast(
        &self,
        group: Arc<str>,
        frame: Bytes,
        except: Option<ConnId>,
    ) -> impl Future<Output = Result<(), HandleError>> + Send + '_ {
        self.send_frame(frame, move |frame, _charge| Command::GroupBroadcast {
            group,
            frame,
            except,
            _charge,
        })
    }

    /// Live connections registered with the hub.
    pub(crate) fn count(&self) -> impl Future<Output = Result<usize, HandleError>> + Send + '_ {
        self.ask(|reply| Command::Count { group: None, reply })
    }

    /// Members of a group.
    pub(crate) fn group_count(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<usize, HandleError>> + Send + '_ {
        let group = Some(Arc::from(group));
        self.ask(|reply| Command::Count { group, reply })
    }

    /// Every group with its member count, sorted by name.
    pub(crate) fn groups(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, usize)>, HandleError>> + Send + '_ {
        self.ask(|reply| Command::Groups { reply })
    }

    /// The live connections summed up (see [`Census`]).
    pub(crate) fn census(&self) -> impl Future<Output = Result<Census, HandleError>> + Send + '_ {
        self.ask(|reply| Command::Census { reply })
    }

    /// Up to `limit` live connections with ids above `after`, in id order.
    pub(crate) fn connections(
        &self,
        after: Option<ConnId>,
        limit: usize,
    ) -> impl Future<Output = Result<ConnectionPage, HandleError>> + Send + '_ {
        self.ask(move |reply| Command::Connections {
            after,
            limit,
            reply,
        })
    }

    /// One live connection, if it is.
    pub(crate) fn connection(
        &self,
        id: ConnId,
    ) -> impl Future<Output = Result<Option<ConnectionInfo>, HandleError>> + Send + '_ {
        self.ask(move |reply| Command::Connection { id, reply })
    }

    /// Commands and frame bytes waiting for the hub.
    pub(crate) fn queue_depth(&self) -> (usize, usize) {
        let commands = self.tx.max_capacity() - self.tx.capacity();
        let bytes = self
            .queue_bytes
            .saturating_sub(self.queued_bytes.available_permits());
        (commands, bytes)
    }
}

/// Refuses a frame larger than any client accepts (`limits.max_frame_bytes`).
pub(crate) fn check_frame(frame: &Bytes, max_frame: usize) -> Result<(), HandleError> {
    let len = frame.len().saturating_sub(HEADER_LEN);
    if len > max_frame {
        warn!(len, max = max_frame, "push over max_frame_bytes; refused");
        return Err(HandleError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    Ok(())
}

/// A push of `payload` on `route`, encoded once for every recipient.
pub(crate) fn push_frame(route: u16, payload: Bytes) -> Bytes {
    Message::Push { route, payload }.to_frame()
}

/// Starts a hub; the task ends when every handle is dropped, or panics on a crash.
pub(crate) fn spawn<M: Send + 'static>(
    queue: usize,
    queue_bytes: usize,
    max_frame: usize,
    players: Arc<Players>,
) -> (HubHandle<M>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue);
    if let Some(cluster) = players.cluster() {
        // The groups of the last life are gone: so are this node's subscriptions.
        cluster.clear_groups();
    }
    let hub = Hub {
        rx,
        conns: HashMap::new(),
        groups: HashMap::new(),
        players,
    };
    let queue_bytes = queue_bytes.min(Semaphore::MAX_PERMITS);
    let handle = HubHandle {
        tx,
        max_frame,
        queued_bytes: Arc::new(Semaphore::new(queue_bytes)),
        queue_bytes,
    };
    (handle, tokio::spawn(hub.run()))
}

struct Hub<M> {
    rx: mpsc::Receiver<Command<M>>,
    conns: HashMap<ConnId, Entry<M>>,
    groups: HashMap<Arc<str>, HashSet<ConnId>>,
    /// Who is logged in as which player: the server's one map of names, which
    /// outlives this hub (`players.rs`).
    players: Arc<Players>,
}

struct Entry<M> {
    mailbox: Arc<Mailbox<M>>,
    /// The groups this connection is in, to leave them when it ends.
    groups: Vec<Arc<str>>,
}

impl<M: Send + 'static> Hub<M> {
    async fn run(mut self) {
        while let Some(command) = self.rx.recv().await {
            self.handle(command);
        }
    }

    fn handle(&mut self, command: Command<M>) {
        match command {
            Command::Register { id, peer, mailbox } => {
                debug!(conn = %id, %peer, total = self.conns.len() + 1, "connection_new");
                self.conns.insert(
                    id,
                    Entry {
                        mailbox,
                        groups: Vec::new(),
                    },
                );
            }
            Command::Unregister { id } => {
                if let Some(entry) = self.conns.remove(&id) {
                    for group in entry.groups {
                        self.remove_member(&group, id);
                    }
                }
                debug!(conn = %id, total = self.conns.len(), "connection_ended");
            }
            Command::Broadcast { frame, except, .. } => {
                for (id, entry) in &self.conns {
                    if Some(*id) != except {
                        entry.mailbox.deliver(Delivery::Frame(frame.clone()));
                    }
                }
            }
            Command::SendToPlayer {
                player, delivery, ..
            } => {
                let holder = self.players.holder_conn(&player);
                let entry = holder.and_then(|id| self.conns.get(&id));
                if let Some(entry) = entry {
                    entry.mailbox.deliver(delivery);
                }
            }
            Command::Send { to, delivery, .. } => {
                if let Some(entry) = self.conns.get(&to) {
                    entry.mailbox.deliver(delivery);
                }
            }
            Command::SendEach { to, frame, .. } => {
                for id in to {
                    if let Some(entry) = self.conns.get(&id) {
                        entry.mailbox.deliver(Delivery::Frame(frame.clone()));
                    }
                }
            }
            Command::Join { id, group } => {
                let Some(entry) = self.conns.get_mut(&id) else {
                    return;
                };
                let members = self.groups.entry(group.clone()).or_default();
                let first = members.is_empty();
                if members.insert(id) {
                    if first {
                        if let Some(cluster) = self.players.cluster() {
                            cluster.group_interest(&group, true);
                        }
                    }
                    entry.groups.push(group);
                }
            }
            Command::Leave { id, group } => {
                if let Some(entry) = self.conns.get_mut(&id) {
                    entry.groups.retain(|g| *g != group);
                }
                self.remove_member(&group, id);
            }
            Command::GroupBroadcast {
                group,
                frame,
                except,
                ..
            } => {
                let Some(members) = self.groups.get(&group) else {
                    return;
                };
                for id in members {
                    if Some(*id) == except {
                        continue;
                    }
                    if let Some(entry) = self.conns.get(id) {
                        entry.mailbox.deliver(Delivery::Frame(frame.clone()));
                    }
                }
            }
            Command::Count { group, reply } => {
                let count = match group {
                    None => self.conns.len(),
                    Some(group) => self.groups.get(&group).map_or(0, HashSet::len),
                };
                let _ = reply.send(count); // the asker may have given up
            }
            Command::Groups { reply } => {
                let mut groups: Vec<_> = self
                    .groups
                    .iter()
                    .map(|(name, members)| (name.to_string(), members.len()))
                    .collect();
                groups.sort_unstable();
                let _ = reply.send(groups);
            }
            Command::Census { reply } => {
                let _ = reply.send(self.census());
            }
            Command::Connections {
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.page(after, limit));
            }
            Command::Connection { id, reply } => {
                let _ = reply.send(self.info(id));
            }
            Command::Resume {
                to,
                handoff,
                refused,
            } => {
                let handed = match self.conns.get(&to) {
                    Some(entry) => entry.mailbox.hand_over(handoff),
                    None => Err(handoff),
                };
                if let Err(handoff) = handed {
                    let _ = refused.send(handoff);
                }
            }
            Command::Crash { by } => {
                error!(conn = %by, "fault injection: crashing the hub");
                panic!("fault injection: hub crash requested by connection {by}");
            }
        }
    }

    fn census(&self) -> Census {
        let mut census = Census {
            players: self.players.count() as u64,
            ..Census::default()
        };
        for entry in self.conns.values() {
            let budget = entry.mailbox.budget();
            let t = budget.meter.transport;
            census.open[t] += 1;
            census.traffic[t] += budget.meter.read();
            let queued = budget.unsent() as u64;
            census.queued_bytes += queued;
            census.queued_bytes_max = census.queued_bytes_max.max(queued);
        }
        census
    }

    /// The page after `after`: the `limit` smallest ids above it, found without
    /// sorting every connection (the hub stays responsive with many).
    fn page(&self, after: Option<ConnId>, limit: usize) -> ConnectionPage {
        let mut ids: Vec<ConnId> = self
            .conns
            .keys()
            .copied()
            .filter(|id| after.is_none_or(|after| *id > after))
            .collect();
        if limit > 0 && ids.len() > limit {
            ids.select_nth_unstable(limit - 1);
        }
        ids.truncate(limit);
        ids.sort_unstable();
        let connections = ids.into_iter().filter_map(|id| self.info(id)).collect();
        ConnectionPage {
            connections,
            total: self.conns.len(),
        }
    }

    fn info(&self, id: ConnId) -> Option<ConnectionInfo> {
        let budget = self.conns.get(&id)?.mailbox.budget();
        Some(ConnectionInfo {
            id,
            peer: budget.meter.peer,
            transport: budget.meter.transport,
            since: SystemTime::UNIX_EPOCH + Duration::from_secs(budget.meter.since.into()),
            traffic: budget.meter.read(),
            queued_bytes: budget.unsent() as u64,
            player: self.players.name_of(id),
        })
    }

    fn remove_member(&mut self, group: &Arc<str>, id: ConnId) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(&id);
            if members.is_empty() {
                self.groups.remove(group);
                if let Some(cluster) = self.players.cluster() {
                    cluster.group_interest(group, false);
                }
            }
        }
    }
}

/// Benchmark support, not part of the API: the hub's real broadcast over detached
/// mailboxes, with no runtime, task or socket (see `benches/broadcast.rs`).
#[doc(hidden)]
pub mod bench_support {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::connection::OutboundBudget;

    /// A hub holding `n` registered connections' mailboxes.
    pub struct FanOut {
        hub: Hub<()>,
        mailboxes: Vec<Arc<Mailbox<()>>>,
    }

    impl FanOut {
        /// A hub with `n` connections registered, each with a 1 MiB budget.
        pub fn new(n: u64) -> FanOut {
            let (_tx, rx) = mpsc::channel(1);
            let mut hub = Hub {
                rx,
                conns: HashMap::new(),
                groups: HashMap::new(),
                players: Arc::default(),
            };
            let peer = SocketAddr::from(([127, 0, 0, 1], 9));
            let mailboxes: Vec<_> = (0..n)
                .map(|i| {
                    let unlimited = Arc::new(crate::limits::MemoryBudget::new(usize::MAX));
                    let budget = Arc::new(OutboundBudget::new(1 << 20, unlimited));
                    let mailbox = Arc::new(Mailbox::new(budget, CancellationToken::new()));
                    let register = Command::Register {
                        id: ConnId(i),
                        peer,
                        mailbox: mailbox.clone(),
                    };
                    hub.handle(register);
                    mailbox
                })
                .collect();
            FanOut { hub, mailboxes }
        }

        /// The hub's handling of one broadcast of an encoded frame.
        pub fn broadcast(&mut self, frame: &Bytes) {
            let frame = frame.clone();
            self.hub.handle(Command::Broadcast {
                frame,
                except: None,
                _charge: None,
            });
        }

        /// What each connection does when woken: take its queue, give the bytes back.
        pub fn drain(&mut self) {
            for mailbox in &self.mailboxes {
                while let Some(delivery) = mailbox.next() {
                    if let Delivery::Frame(frame) = delivery {
                        mailbox.release_frame(frame.len());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Poll;

    use super::*;

    /// A handle whose hub never runs: the test takes its commands by hand.
    fn handle(queue_bytes: usize) -> (HubHandle<()>, mpsc::Receiver<Command<()>>) {
        let (tx, rx) = mpsc::channel(1000);
        let handle = HubHandle {
            tx,
            max_frame: 1000,
            queued_bytes: Arc::new(Semaphore::new(queue_bytes)),
            queue_bytes,
        };
        (handle, rx)
    }

    fn ready<T>(future: impl Future<Output = T>) -> Option<T> {
        let mut future = pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(value) => Some(value),
            Poll::Pending => None,
        }
    }

    #[test]
    fn pushes_wait_for_room_in_the_hub_queue_by_bytes_not_only_by_count() {
        // Room for two frames of 100-byte payloads (103 + 4 bytes each), not three.
        let (hub, mut commands) = handle(2 * 107);
        let payload = Bytes::from(vec![0u8; 100]);
        assert_eq!(
            ready(hub.broadcast(push_frame(1, payload.clone()), None)),
            Some(Ok(()))
        );
        assert_eq!(
            ready(hub.push_to(ConnId(1), 1, payload.clone())),
            Some(Ok(()))
        );
        let mut third = pin!(hub.broadcast(push_frame(1, payload), None));
        assert_eq!(ready(third.as_mut()), None, "the queue is full of bytes");
        // The hub handles one command: its bytes are free again.
        drop(commands.try_recv().unwrap());
        assert_eq!(ready(third.as_mut()), Some(Ok(())));
        // Kicks and messages carry no payload bytes and never wait for them.
        assert_eq!(
            ready(hub.kick(ConnId(1), KickReason::DOS, "x")),
            Some(Ok(()))
        );
    }

    #[test]
    fn a_push_over_the_frame_limit_is_refused_before_it_is_queued() {
        let (hub, mut commands) = handle(1 << 20);
        let refused = ready(hub.broadcast(push_frame(1, Bytes::from(vec![0u8; 998])), None));
        assert_eq!(
            refused,
            Some(Err(HandleError::FrameTooLarge {
                len: 1001,
                max: 1000
            }))
        );
        assert!(commands.try_recv().is_err(), "nothing reached the hub");
        assert_eq!(
            ready(hub.broadcast(push_frame(1, Bytes::from(vec![0u8; 997])), None)),
            Some(Ok(()))
        );
    }
}
