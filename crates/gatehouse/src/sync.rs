//! The synchronisation primitives of the crate's hand-made concurrency (the byte
//! budgets, the mailbox, the meters, the handler histograms), in one place so that
//! the loom model checker can stand in for them.
//!
//! Normally these are the standard library's (and `futures-util`'s `AtomicWaker`):
//! plain re-exports, so the shim costs nothing. The crate's own tests built with
//! `RUSTFLAGS="--cfg gatehouse_loom"` get loom's instead, and the `loom_tests`
//! modules beside the code then explore every interleaving of their small models
//! (the README's "Model-checked concurrency" says how to run them). The cfg has its
//! own name, not `loom`, because tokio and other dependencies change their own
//! behaviour under `--cfg loom`.
//!
//! `Arc` stays the standard one in both: loom's would have to replace every `Arc`
//! the budgets and mailboxes travel in (the driver, the core, the hub), and it has no
//! `Weak` (a mailbox's timers hold one). The models join every thread before the last
//! handle is dropped, which orders the drop as loom's `Arc` would.

#[cfg(not(all(test, gatehouse_loom)))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(not(all(test, gatehouse_loom)))]
pub(crate) use futures_util::task::AtomicWaker;

#[cfg(all(test, gatehouse_loom))]
pub(crate) use loom::sync::{Mutex, MutexGuard};

/// Atomics: the standard library's, or loom's under `gatehouse_loom`.
pub(crate) mod atomic {
    #[cfg(not(all(test, gatehouse_loom)))]
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    #[cfg(all(test, gatehouse_loom))]
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
}

/// loom's `AtomicWaker` (a model of the real one: a lock around the waker), with the
/// one method name `futures-util`'s has and loom's spells differently.
#[cfg(all(test, gatehouse_loom))]
#[derive(Debug, Default)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

#[cfg(all(test, gatehouse_loom))]
impl AtomicWaker {
    pub(crate) fn new() -> AtomicWaker {
        AtomicWaker(loom::future::AtomicWaker::new())
    }

    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

/// Preemptions per execution that [`bounded_model`] explores unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise. Every interleaving with at most this many
/// preemptions is checked (loom's authors find that most bugs need two or three);
/// unbounded, the models with three threads take longer than CI has (4 takes them
/// about two minutes on two busy cores, 3 about fifteen seconds).
#[cfg(all(test, gatehouse_loom))]
pub(crate) const PREEMPTION_BOUND: usize = 3;

/// Runs a loom model with its preemptions bounded (see [`PREEMPTION_BOUND`]); the
/// models with two threads use `loom::model`, which explores them whole.
#[cfg(all(test, gatehouse_loom))]
pub(crate) fn bounded_model(model: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound.get_or_insert(PREEMPTION_BOUND);
    builder.check(model);
}
