//! The server's registry of resumable sessions (`docs/PROTOCOL.md`, "session,
//! resume, resumed and ack"), by id: each entry holds the session's token and the
//! sending end of its task's inbox, where a new connection that resumes it hands
//! its transport over (`crate::driver::resume`). A session that ended without its
//! client coming back leaves a tombstone for a window, so that a late resume is told
//! why (`expired`, `gap`) rather than `unknown`.

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::BytesMut;
use gatehouse_protocol::Token;
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::connection::{ConnId, Lost, ResumeRequest};

/// Tombstones (sessions that ended, remembered to tell a late resume why) are swept
/// once there are this many and they are half the registry.
const SWEEP_AT: usize = 64;

/// A new connection's transport on its way to the session it resumes.
pub(crate) struct Handoff<T> {
    pub(crate) transport: T,
    pub(crate) peer: SocketAddr,
    /// Numbered frames the client received.
    pub(crate) received: u64,
    /// What the new connection read behind its `resume`.
    pub(crate) input: BytesMut,
}

/// Where a session's task takes its next handoff: one at a time (a oneshot, armed
/// again after each; a few dozen bytes where a channel would take hundreds).
pub(crate) type Inbox<T> = oneshot::Receiver<Box<Handoff<T>>>;

/// The registry's end of an [`Inbox`]: taken by the resume that uses it, so that a
/// second one meanwhile finds it gone (`busy`).
type Outbox<T> = Option<oneshot::Sender<Box<Handoff<T>>>>;

/// The server's resumable sessions, by id.
#[derive(Default)]
pub(crate) struct Sessions {
    entries: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<u64, Entry>,
    tombstones: usize,
}

enum Entry {
    Live {
        token: Token,
        owner: ConnId,
        /// An [`Outbox`] of the session's transport type.
        handoffs: Box<dyn Any + Send>,
    },
    Ended {
        why: Lost,
        /// Forgotten after this (a resume is then `unknown`).
        until: Instant,
    },
}

/// Why a resume was refused: the `resume_failed` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unknown,
    OtherTransport,
    Expired,
    Gap,
    Busy,
}

impl Refusal {
    pub(crate) fn text(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown: no such session on this server",
            Refusal::OtherTransport => "unknown: the session is on another transport",
            Refusal::Expired => "expired: the session was not resumed in time and has ended",
            Refusal::Gap => {
                "gap: frames this client lacks were not kept (resume.buffer_bytes); log in again"
            }
            Refusal::Busy => "busy: another connection is resuming this session",
        }
    }
}

impl From<Lost> for Refusal {
    fn from(lost: Lost) -> Refusal {
        match lost {
            Lost::Expired => Refusal::Expired,
            Lost::Gap => Refusal::Gap,
        }
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Nothing that can panic runs under the lock.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers session `id` of connection `owner`; its task takes handoffs from
    /// the inbox. `None` if the id is taken (a 64-bit random collision).
    pub(crate) fn open<T: Send + 'static>(
        &self,
        id: u64,
        token: Token,
        owner: ConnId,
    ) -> Option<Inbox<T>> {
        let (sender, inbox) = oneshot::channel::<Box<Handoff<T>>>();
        let mut registry = self.lock();
        if registry.by_id.contains_key(&id) {
            return None;
        }
        let handoffs: Box<Outbox<T>> = Box::new(Some(sender));
        registry.by_id.insert(
            id,
            Entry::Live {
                token,
                owner,
                handoffs,
            },
        );
        Some(inbox)
    }

    /// The session's next resume needs `token`.
    pub(crate) fn renew(&self, id: u64, owner: ConnId, new_token: Token) {
        if let Some(Entry::Live {
            token, owner: o, ..
        }) = self.lock().by_id.get_mut(&id)
        {
            if *o == owner {
                *token = new_token;
            }
        }
    }

    /// Arms session `id`'s inbox again, after a handoff used it.
    pub(crate) fn rearm<T: Send + 'static>(&self, id: u64, owner: ConnId) -> Option<Inbox<T>> {
        let mut registry = self.lock();
        let Some(Entry::Live {
            owner: o, handoffs, ..
        }) = registry.by_id.get_mut(&id)
        else {
            return None;
        };
        let outbox = handoffs
            .downcast_mut::<Outbox<T>>()
            .filter(|_| *o == owner)?;
        let (sender, inbox) = oneshot::channel();
        *outbox = Some(sender);
        Some(inbox)
    }

    /// Session `id` ended. If it was lost (its client never came back), a resume
    /// within `remember` more is told why; otherwise the id is forgotten.
    pub(crate) fn close(&self, id: u64, owner: ConnId, lost: Option<Lost>, remember: Duration) {
        let mut registry = self.lock();
        if !matches!(registry.by_id.get(&id), Some(Entry::Live { owner: o, .. }) if *o == owner) {
            return;
        }
        match lost {
            Some(why) => {
                let until = Instant::now() + remember;
                registry.by_id.insert(id, Entry::Ended { why, until });
                registry.tombstones += 1;
                registry.sweep();
            }
            None => {
                registry.by_id.remove(&id);
            }
        }
    }

    /// Hands a new connection's transport to the session its `resume` names, if
    /// the token matches and the session can take it; else gives it back with why.
    pub(crate) fn hand_over<T: Send + 'static>(
        &self,
        resume: &ResumeRequest,
        handoff: Box<Handoff<T>>,
    ) -> Result<(), (Refusal, Box<Handoff<T>>)> {
        let mut registry = self.lock();
        if let Some(&Entry::Ended { until, .. }) = registry.by_id.get(&resume.id) {
            if Instant::now() >= until {
                registry.by_id.remove(&resume.id);
                registry.tombstones -= 1;
            }
        }
        let refusal = match registry.by_id.get_mut(&resume.id) {
            None => Refusal::Unknown,
            Some(Entry::Ended { why, .. }) => Refusal::from(*why),
            Some(Entry::Live {
                token, handoffs, ..
            }) => {
                if !bool::from(token.ct_eq(&resume.token)) {
                    Refusal::Unknown
                } else if let Some(outbox) = handoffs.downcast_mut::<Outbox<T>>() {
                    return match outbox.take() {
                        // The task ended between its close and this lookup.
                        Some(sender) => sender.send(handoff).map_err(|h| (Refusal::Expired, h)),
                        // Another resume has it, and the task has not armed it again.
                        None => Err((Refusal::Busy, handoff)),
                    };
                } else {
                    Refusal::OtherTransport
                }
            }
        };
        Err((refusal, handoff))
    }
}

impl Registry {
    /// Forgets tombstones whose time is up, once they are many (amortized: each
    /// sweep frees at least half of what it looks at, or waits for twice as many).
    fn sweep(&mut self) {
        if self.tombstones < SWEEP_AT || self.tombstones * 2 < self.by_id.len() {
            return;
        }
        let now = Instant::now();
        self.by_id
            .retain(|_, e| !matches!(e, Entry::Ended { until, .. } if *until <= now));
        self.tombstones = self
            .by_id
            .values()
            .filter(|e| matches!(e, Entry::Ended { .. }))
            .count();
    }
}
