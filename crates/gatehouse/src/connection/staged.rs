//! [`Staged`]: what a handler that may wait does to its own connection (its pushes,
//! a change worth saving, its login, its kick), kept for the core.
//!
//! A handler that waits must not hold the connection's core: the connection goes on
//! without it, writing what is queued, reading, answering pings, taking its mail and
//! minding its deadlines. So its [`Context`](crate::Context) leaves its effects here,
//! and the driver moves them into the core each time it has polled the handler, in
//! the order they were made. A push reserves its bytes from the connection's budget
//! at once, so it is refused (and the connection marked a slow consumer) exactly when
//! a push straight into the core would be.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use gatehouse_protocol::{KickReason, Message, HEADER_LEN};

use super::budget::OutboundBudget;
use super::core::{push_fits, ConnectionCore};
use super::reason::DisconnectReason;

/// The effects of one handler call, between two polls of it.
#[derive(Debug)]
pub(crate) struct Staged {
    max_frame_bytes: usize,
    /// The connection's budget, which a push reserves in at once.
    budget: Arc<OutboundBudget>,
    effects: Mutex<Effects>,
}

#[derive(Debug, Default)]
struct Effects {
    /// Pushes, in order, their bytes already reserved from the budget.
    pushes: Vec<Message>,
    /// A push did not fit the budget: the connection reads too slowly.
    overflowed: bool,
    dirty: bool,
    logged_in: bool,
    /// The handler's kick (the first one): decided when the handler returns, as for
    /// a handler that does not wait.
    kick: Option<(KickReason, String)>,
}

impl Staged {
    /// Effects of a handler on a connection whose frames may be `max_frame_bytes`,
    /// with `budget` for its unsent bytes.
    pub(crate) fn new(max_frame_bytes: usize, budget: Arc<OutboundBudget>) -> Staged {
        Staged {
            max_frame_bytes,
            budget,
            effects: Mutex::default(),
        }
    }

    fn effects(&self) -> MutexGuard<'_, Effects> {
        // No code that can panic runs under this lock.
        self.effects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// As [`ConnectionCore::push`]: false if the push is too large for the protocol
    /// (dropped, logged) or over `budget` (the connection then closes as a slow
    /// consumer).
    pub(crate) fn push(&self, route: u16, payload: Bytes) -> bool {
        let push = Message::Push { route, payload };
        if !push_fits(&push, self.max_frame_bytes) {
            return false;
        }
        let mut effects = self.effects();
        if effects.overflowed || !self.budget.reserve(HEADER_LEN + push.body_len()) {
            effects.overflowed = true;
            return false;
        }
        effects.pushes.push(push);
        true
    }

    /// As [`ConnectionCore::mark_dirty`].
    pub(crate) fn mark_dirty(&self) {
        self.effects().dirty = true;
    }

    /// As [`ConnectionCore::set_logged_in`].
    pub(crate) fn set_logged_in(&self) {
        self.effects().logged_in = true;
    }

    /// As [`ConnectionCore::kick`], once the handler returns.
    pub(crate) fn kick(&self, reason: KickReason, text: String) {
        self.effects().kick.get_or_insert((reason, text));
    }

    /// Moves what the handler did since the last call into `core` (all but its kick,
    /// which waits for [`Staged::finish`]). Returns whether anything changed: output
    /// queued, a deadline moved (a checkpoint due, the login deadline gone) or a
    /// close decided, which the driver must look at before it waits again.
    pub(crate) fn apply(&self, core: &mut ConnectionCore) -> bool {
        let mut effects = self.effects();
        let mut changed = !effects.pushes.is_empty();
        for push in effects.pushes.drain(..) {
            core.queue_reserved(&push);
        }
        if std::mem::take(&mut effects.dirty) {
            core.mark_dirty();
            changed = true;
        }
        if std::mem::take(&mut effects.logged_in) {
            core.set_logged_in();
            changed = true;
        }
        if effects.overflowed && !core.is_closing() {
            core.close(DisconnectReason::SlowConsumer, None);
            changed = true;
        }
        changed
    }

    /// The handler ended (returned, panicked, ran out of time): what it did last goes
    /// into `core`, and its kick, if it made one, is decided now, before whatever
    /// its end decides (the first close decided wins, as for a handler that does
    /// not wait).
    pub(crate) fn finish(&self, core: &mut ConnectionCore) {
        self.apply(core);
        if let Some((reason, text)) = self.effects().kick.take() {
            core.kick(reason, text);
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Pushes made after the last apply (by a handler's destructors, as it is
        // dropped) reserved bytes that will never be sent.
        let effects = self
            .effects
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for push in effects.pushes.drain(..) {
            self.budget.release(HEADER_LEN + push.body_len());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::IoSlice;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use gatehouse_protocol::FrameDecoder;

    use super::*;
    use crate::config::LimitsConfig;
    use crate::connection::{Close, CoreConfig};
    use crate::limits::MemoryBudget;

    const LONG: Duration = Duration::from_secs(1000);

    /// A core that must log in within 30 s, with no other deadline before 1000 s but
    /// a checkpoint's (5 s).
    fn core(outbound_queue_bytes: usize) -> (ConnectionCore, Arc<OutboundBudget>) {
        let limits = LimitsConfig {
            max_frame_bytes: 100,
            outbound_queue_bytes,
            first_frame_timeout: LONG,
            idle_timeout: LONG,
            login_timeout: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(5),
            ..LimitsConfig::default()
        };
        let config = Arc::new(CoreConfig::new(limits, usize::MAX, true));
        let budget = Arc::new(OutboundBudget::new(
            outbound_queue_bytes,
            Arc::new(MemoryBudget::new(usize::MAX)),
        ));
        let core = ConnectionCore::new(config, budget.clone(), Instant::now());
        (core, budget)
    }

    /// What the core would write, taken as written.
    fn sent(core: &mut ConnectionCore) -> Vec<Message> {
        let mut iov = [IoSlice::new(&[]); 16];
        let n = core.output_slices(&mut iov);
        let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
        core.consume_output(bytes.len());
        let mut buf = BytesMut::from(&bytes[..]);
        let decoder = FrameDecoder::new(1 << 20);
        std::iter::from_fn(|| decoder.decode(&mut buf).ok().flatten())
            .map(|body| Message::decode(body).expect("valid frames"))
            .collect()
    }

    fn push(route: u16, payload: &'static [u8]) -> Message {
        Message::Push {
            route,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn pushes_reach_the_core_in_order_at_apply_and_their_bytes_are_reserved_when_made() {
        let (mut core, budget) = core(1000);
        let staged = Staged::new(100, budget.clone());
        assert!(staged.push(1, Bytes::from_static(b"one")));
        assert!(staged.push(2, Bytes::from_static(b"two")));
        assert_eq!(
            budget.unsent(),
            2 * (HEADER_LEN + 3 + 3),
            "reserved at once"
        );
        assert!(!core.has_output(), "nothing in the core before apply");
        assert!(staged.apply(&mut core));
        assert!(!staged.apply(&mut core), "nothing new");
        assert_eq!(sent(&mut core), [push(1, b"one"), push(2, b"two")]);
        assert_eq!(budget.unsent(), 0, "the bytes sent are given back");
    }

    #[test]
    fn a_push_over_the_frame_limit_is_dropped_and_one_over_the_budget_makes_a_slow_consumer() {
        let (mut core, budget) = core(20);
        let staged = Staged::new(100, budget.clone());
        assert!(!staged.push(1, Bytes::from(vec![0u8; 98])));
        assert!(staged.push(1, Bytes::from_static(b"0123456789")));
        assert!(!staged.push(1, Bytes::from_static(b"x")), "over 20 bytes");
        assert!(!staged.push(1, Bytes::new()), "and every push after");
        staged.apply(&mut core);
        assert_eq!(
            core.take_close().map(|c| c.reason),
            Some(DisconnectReason::SlowConsumer)
        );
        assert_eq!(sent(&mut core), [push(1, b"0123456789")]);
    }

    #[test]
    fn pushes_never_applied_give_their_bytes_back_when_dropped() {
        let (mut core, budget) = core(1000);
        let staged = Staged::new(100, budget.clone());
        assert!(staged.push(1, Bytes::from_static(b"sent")));
        staged.apply(&mut core);
        assert!(staged.push(2, Bytes::from_static(b"from a destructor")));
        drop(staged);
        assert_eq!(budget.unsent(), HEADER_LEN + 3 + 4, "only what was applied");
    }

    #[test]
    fn an_overflow_alone_is_a_change_the_driver_must_see() {
        let (mut core, budget) = core(10);
        let staged = Staged::new(100, budget.clone());
        assert!(!staged.push(1, Bytes::from_static(b"far too long for ten bytes")));
        assert!(staged.apply(&mut core), "a close was decided");
        assert!(!staged.apply(&mut core), "and only once");
    }

    #[test]
    fn flags_apply_at_once_and_the_kick_only_when_the_handler_returns() {
        let (mut core, budget) = core(1000);
        let now = Instant::now();
        assert!(core.poll_timeout(now, false) <= now + Duration::from_secs(30));
        let staged = Staged::new(100, budget.clone());
        staged.set_logged_in();
        staged.mark_dirty();
        staged.kick(KickReason::KICKED, "first".into());
        staged.kick(KickReason::DUPLICATE_LOGIN, "second".into());
        staged.apply(&mut core);
        assert!(!core.is_closing(), "the kick waits for the handler's end");
        let checkpoint = core.poll_timeout(now, false);
        assert!(
            checkpoint <= now + Duration::from_secs(5),
            "a checkpoint is due: the session was marked dirty"
        );
        assert!(core.take_checkpoint(checkpoint));
        assert!(
            core.poll_timeout(now, false) > now + Duration::from_secs(30),
            "logged in: no login deadline"
        );
        staged.finish(&mut core);
        assert_eq!(
            core.take_close(),
            Some(Close {
                reason: DisconnectReason::Kicked(KickReason::KICKED),
                text: Some("first".into()),
            }),
            "the first kick wins"
        );
    }
}
