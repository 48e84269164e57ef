//! What the server knows of its resumable sessions (`docs/PROTOCOL.md`, "session,
//! resume, resumed and ack") besides the sessions themselves: the secret their
//! tokens are made with, and, for a window, why the ones that ended without their
//! client coming back ended, so that a late resume is told why (`expired`, `gap`)
//! rather than `unknown`.
//!
//! A live session is in no table here. Its id is its connection's id, so a resume
//! finds it through the hub, as any delivery to a connection does, and its token is
//! an HMAC of its id and epoch under the server's secret, so nothing per session
//! is stored to check it: the session's own task checks it when the handoff
//! arrives in its mailbox (`crate::driver::resume`). A resumable session costs its
//! counts and nothing else while it is idle.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use gatehouse_protocol::{KickReason, Token};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::connection::{CoreConfig, Lost, ResumeRequest};

/// Tombstones (sessions that ended, remembered to tell a late resume why) are first
/// swept once there are this many; then each time their number doubles.
const SWEEP_AT: usize = 64;

/// A new connection's transport on its way to the session it resumes.
pub(crate) struct Handoff<T> {
    pub(crate) transport: T,
    pub(crate) peer: SocketAddr,
    /// The `resume` the connection opened with.
    pub(crate) resume: ResumeRequest,
    /// What the new connection read behind its `resume`.
    pub(crate) input: BytesMut,
}

/// A [`Handoff`] of any transport, as it travels through the hub and the
/// session's mailbox: the session takes it if it is of its own transport type, and
/// whoever cannot take it refuses it over its own transport.
pub(crate) trait Resuming: Send {
    /// The `resume` the connection opened with.
    fn request(&self) -> &ResumeRequest;
    /// Where the connection comes from.
    fn peer(&self) -> SocketAddr;
    /// The type of the [`Handoff`]: a session takes only its own transport's.
    fn handoff_type(&self) -> TypeId;
    /// The [`Handoff`], for a downcast to the session's transport type.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
    /// Kicks the connection `reason` with `text` and closes it (bounded in time).
    fn refuse(
        self: Box<Self>,
        config: Arc<CoreConfig>,
        reason: KickReason,
        text: String,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Why a resume was refused: the `resume_failed` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unknown,
    OtherTransport,
    Expired,
    Gap,
    Busy,
    Moved,
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
            Refusal::Busy => "busy: another connection resumed this session with this token",
            Refusal::Moved => "moved: the session is on another node of the cluster; log in again",
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

/// The server's session secret and its tombstones.
pub(crate) struct Sessions {
    /// The key of every token; `None` if no randomness could be had (then no
    /// session is offered).
    secret: Option<[u8; 32]>,
    tombstones: Mutex<Tombstones>,
}

/// Why sessions ended, until when it is remembered, by id.
struct Tombstones {
    by_id: HashMap<u64, (Lost, Instant)>,
    /// The count at which expired ones are swept next.
    sweep_at: usize,
}

impl Default for Sessions {
    fn default() -> Sessions {
        let mut secret = [0; 32];
        let secret = match getrandom::getrandom(&mut secret) {
            Ok(()) => Some(secret),
            Err(e) => {
                tracing::warn!(error = %e, "no randomness for the session secret: no resume offered");
                None
            }
        };
        Sessions {
            secret,
            tombstones: Mutex::new(Tombstones {
                by_id: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Session `id`'s token for `epoch` (the number of tokens issued before it);
    /// `None` if this server has no secret.
    pub(crate) fn token(&self, id: u64, epoch: u32) -> Option<Token> {
        let secret = self.secret.as_ref()?;
        // A key of any length is accepted.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        mac.update(&id.to_be_bytes());
        mac.update(&epoch.to_be_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// Checks a resume of session `id`, whose current token is of `epoch`, in
    /// constant time. A token of the epoch before was used by a resume already:
    /// `busy`.
    pub(crate) fn check(&self, id: u64, epoch: u32, token: &Token) -> Result<(), Refusal> {
        let matches = |epoch| {
            self.token(id, epoch)
                .is_some_and(|t| bool::from(t.ct_eq(token)))
        };
        if matches(epoch) {
            Ok(())
        } else if epoch > 0 && matches(epoch - 1) {
            Err(Refusal::Busy)
        } else {
            Err(Refusal::Unknown)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tombstones> {
        // Nothing that can panic runs under the lock.
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Session `id` ended for `why` without its client coming back: a resume
    /// within `remember` is told why.
    pub(crate) fn bury(&self, id: u64, why: Lost, remember: Duration) {
        let now = Instant::now();
        let mut tombstones = self.lock();
        if tombstones.by_id.len() >= tombstones.sweep_at {
            // Amortized: the next sweep waits for twice what is left.
            tombstones.by_id.retain(|_, (_, until)| *until > now);
            tombstones.sweep_at = SWEEP_AT.max(2 * tombstones.by_id.len());
        }
        tombstones.by_id.insert(id, (why, now + remember));
    }

    /// Why session `id` ended, if it ended without its client coming back within
    /// the window it is remembered for.
    pub(crate) fn why_ended(&self, id: u64) -> Option<Refusal> {
        let mut tombstones = self.lock();
        let &(why, until) = tombstones.by_id.get(&id)?;
        if Instant::now() >= until {
            tombstones.by_id.remove(&id);
            return None;
        }
        Some(Refusal::from(why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_checked_against_its_epoch_and_the_one_before_is_busy() {
        let sessions = Sessions::default();
        let first = sessions.token(7, 0).expect("a secret");
        let second = sessions.token(7, 1).expect("a secret");
        assert_ne!(first, second);
        assert_ne!(first, sessions.token(8, 0).expect("a secret"), "per id");
        assert_eq!(sessions.check(7, 0, &first), Ok(()));
        assert_eq!(sessions.check(7, 1, &second), Ok(()));
        assert_eq!(sessions.check(7, 1, &first), Err(Refusal::Busy));
        assert_eq!(sessions.check(7, 2, &first), Err(Refusal::Unknown));
        assert_eq!(sessions.check(8, 0, &first), Err(Refusal::Unknown));
        assert_eq!(sessions.check(7, 0, &[0; 32]), Err(Refusal::Unknown));
        let other_server = Sessions::default();
        assert_eq!(other_server.check(7, 0, &first), Err(Refusal::Unknown));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tombstone_tells_why_for_its_window_then_is_forgotten() {
        let sessions = Sessions::default();
        sessions.bury(3, Lost::Gap, Duration::from_secs(30));
        assert_eq!(sessions.why_ended(3), Some(Refusal::Gap));
        assert_eq!(sessions.why_ended(4), None);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(sessions.why_ended(3), None);
        for id in 0..1_000 {
            sessions.bury(100 + id, Lost::Expired, Duration::from_secs(1));
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for id in 0..100 {
            sessions.bury(5_000 + id, Lost::Expired, Duration::from_secs(1));
        }
        assert!(
            sessions.lock().by_id.len() <= 100,
            "the 1,000 expired tombstones were swept as more came"
        );
    }
}
