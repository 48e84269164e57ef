//! The hub: the seed's `gs_svr`, one actor task.
//!
//! It owns the registry of live connections (their mailboxes) and the named groups
//! (game rooms), and does everything that involves more than one connection:
//! broadcast, group broadcast, send to one, kick one, count. It never waits on a
//! connection: deliveries go into mailboxes that refuse (and mark a slow consumer)
//! rather than grow. A broadcast is encoded once by the caller; the hub only clones
//! the `Bytes` handle per recipient.
//!
//! The hub holds no state that outlives it on purpose: when it crashes, the
//! supervisor closes every connection and starts a fresh hub, so the registry and
//! the sockets never disagree.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, error};

use gatehouse_protocol::{KickReason, Message};

use crate::connection::ConnId;
use crate::mailbox::{Delivery, Mailbox};

/// The hub is restarting or stopped; the caller's connection is about to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the hub is unavailable (restarting or stopped)")]
pub struct HubUnavailable;

/// A cheap, cloneable handle to the hub; every method is a message to the actor.
pub struct HubHandle<M> {
    tx: mpsc::Sender<Command<M>>,
}

impl<M> Clone for HubHandle<M> {
    fn clone(&self) -> Self {
        HubHandle {
            tx: self.tx.clone(),
        }
    }
}

enum Command<M> {
    Register {
        id: ConnId,
        peer: SocketAddr,
        mailbox: Arc<Mailbox<M>>,
    },
    Unregister {
        id: ConnId,
    },
    Broadcast {
        frame: Bytes,
        except: Option<ConnId>,
    },
    Send {
        to: ConnId,
        delivery: Delivery<M>,
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
    },
    Count {
        group: Option<Arc<str>>,
        reply: oneshot::Sender<usize>,
    },
    Groups {
        reply: oneshot::Sender<Vec<(String, usize)>>,
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
impl<M: Send + 'static> HubHandle<M> {
    fn send(
        &self,
        command: Command<M>,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        self.tx
            .send(command)
            .map(|sent| sent.map_err(|_| HubUnavailable))
    }

    /// Sends the command `make` builds around a reply channel, then waits for the answer.
    fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command<M>,
    ) -> impl Future<Output = Result<T, HubUnavailable>> + Send + '_ {
        let (reply, answer) = oneshot::channel();
        let command = make(reply);
        // The send future is made inside the block, so the block holds it once.
        async move {
            self.tx.send(command).await.map_err(|_| HubUnavailable)?;
            answer.await.map_err(|_| HubUnavailable)
        }
    }

    pub(crate) fn register(
        &self,
        id: ConnId,
        peer: SocketAddr,
        mailbox: Arc<Mailbox<M>>,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        self.send(Command::Register { id, peer, mailbox })
    }

    /// Forgets a connection. A stopped hub has no registry left to clean, so its
    /// absence is not an error.
    pub(crate) fn unregister(&self, id: ConnId) -> impl Future<Output = ()> + Send + '_ {
        self.send(Command::Unregister { id }).map(|_| ())
    }

    pub(crate) fn crash(
        &self,
        by: ConnId,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        self.send(Command::Crash { by })
    }

    /// Pushes `payload` on `route` to every connection (encoded once).
    pub fn broadcast(
        &self,
        route: u16,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        self.broadcast_frame(push_frame(route, payload), None)
    }

    /// Sends an already encoded frame to every connection but `except`.
    pub fn broadcast_frame(
        &self,
        frame: Bytes,
        except: Option<ConnId>,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        self.send(Command::Broadcast { frame, except })
    }

    /// Pushes `payload` on `route` to one connection; dropped if it is gone.
    pub fn push_to(
        &self,
        to: ConnId,
        route: u16,
        payload: Bytes,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        let delivery = Delivery::Frame(push_frame(route, payload));
        self.send(Command::Send { to, delivery })
    }

    /// Sends a message to one connection's service `message` handler.
    pub fn send_message(
        &self,
        to: ConnId,
        message: M,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        let delivery = Delivery::Message(message);
        self.send(Command::Send { to, delivery })
    }

    /// Kicks one connection: it is sent `reason` and closed.
    pub fn kick(
        &self,
        to: ConnId,
        reason: KickReason,
        text: impl Into<String>,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        let delivery = Delivery::Kick(reason, text.into());
        self.send(Command::Send { to, delivery })
    }

    /// Adds a connection to a named group (created on first join).
    pub fn join(
        &self,
        id: ConnId,
        group: &str,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        let group = Arc::from(group);
        self.send(Command::Join { id, group })
    }

    /// Removes a connection from a group (removed when empty).
    pub fn leave(
        &self,
        id: ConnId,
        group: &str,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        let group = Arc::from(group);
        self.send(Command::Leave { id, group })
    }

    /// Pushes to every member of a group but `except`.
    pub fn group_broadcast(
        &self,
        group: &str,
        route: u16,
        payload: Bytes,
        except: Option<ConnId>,
    ) -> impl Future<Output = Result<(), HubUnavailable>> + Send + '_ {
        let frame = push_frame(route, payload);
        let group = Arc::from(group);
        self.send(Command::GroupBroadcast {
            group,
            frame,
            except,
        })
    }

    /// Live connections registered with the hub.
    pub fn count(&self) -> impl Future<Output = Result<usize, HubUnavailable>> + Send + '_ {
        self.ask(|reply| Command::Count { group: None, reply })
    }

    /// Members of a group.
    pub fn group_count(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<usize, HubUnavailable>> + Send + '_ {
        let group = Some(Arc::from(group));
        self.ask(|reply| Command::Count { group, reply })
    }

    /// Every group with its member count, sorted by name.
    pub fn groups(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, usize)>, HubUnavailable>> + Send + '_ {
        self.ask(|reply| Command::Groups { reply })
    }
}

fn push_frame(route: u16, payload: Bytes) -> Bytes {
    Message::Push { route, payload }.to_frame()
}

/// Starts a hub; the task ends when every handle is dropped, or panics on a crash.
pub(crate) fn spawn<M: Send + 'static>(queue: usize) -> (HubHandle<M>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue);
    let hub = Hub {
        rx,
        conns: HashMap::new(),
        groups: HashMap::new(),
    };
    (HubHandle { tx }, tokio::spawn(hub.run()))
}

struct Hub<M> {
    rx: mpsc::Receiver<Command<M>>,
    conns: HashMap<ConnId, Entry<M>>,
    groups: HashMap<Arc<str>, HashSet<ConnId>>,
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
            Command::Broadcast { frame, except } => {
                for (id, entry) in &self.conns {
                    if Some(*id) != except {
                        entry.mailbox.deliver(Delivery::Frame(frame.clone()));
                    }
                }
            }
            Command::Send { to, delivery } => {
                if let Some(entry) = self.conns.get(&to) {
                    entry.mailbox.deliver(delivery);
                }
            }
            Command::Join { id, group } => {
                let Some(entry) = self.conns.get_mut(&id) else {
                    return;
                };
                if self.groups.entry(group.clone()).or_default().insert(id) {
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
            Command::Crash { by } => {
                error!(conn = %by, "fault injection: crashing the hub");
                panic!("fault injection: hub crash requested by connection {by}");
            }
        }
    }

    fn remove_member(&mut self, group: &Arc<str>, id: ConnId) {
        if let Some(members) = self.groups.get_mut(group) {
            members.remove(&id);
            if members.is_empty() {
                self.groups.remove(group);
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
            };
            let peer = SocketAddr::from(([127, 0, 0, 1], 9));
            let mailboxes: Vec<_> = (0..n)
                .map(|i| {
                    let budget = Arc::new(OutboundBudget::new(1 << 20));
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
