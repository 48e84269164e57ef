//! The seed's DoS checker (`cutil_dos_checker`) and the admission limits.
//!
//! - [`DosChecker`]: per-connection inbound bytes/s and frames/s, each a token bucket
//!   with a burst (governor's GCRA, which keeps one `u64` of state per bucket).
//! - [`Admission`]: the global `max_connections` and the per-IP cap, decided at
//!   accept. It lives outside the hub, so counts stay right across hub restarts; a
//!   [`Permit`] gives its slot back when the connection task ends, however it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::LimitsConfig;

type Bucket<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Per-connection inbound rate limits. Generic over the clock so tests can use
/// governor's `FakeRelativeClock`.
pub struct DosChecker<C: Clock = MonotonicClock> {
    bytes: Bucket<C>,
    frames: Bucket<C>,
}

/// Which inbound limit a connection exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DosViolation {
    /// More bytes per second than allowed.
    Bytes,
    /// More frames per second than allowed.
    Frames,
}

impl DosChecker<MonotonicClock> {
    /// A checker with the configured rates on the real monotonic clock.
    pub fn new(limits: &LimitsConfig) -> Self {
        Self::with_clock(limits, MonotonicClock)
    }
}

impl<C: Clock + Clone> DosChecker<C> {
    /// A checker with the configured rates on `clock`.
    pub fn with_clock(limits: &LimitsConfig, clock: C) -> Self {
        let quota = |per_sec: u32, burst: u32| {
            let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
            Quota::per_second(per_sec).allow_burst(burst)
        };
        DosChecker {
            bytes: RateLimiter::direct_with_clock(
                quota(limits.inbound_bytes_per_sec, limits.inbound_bytes_burst),
                clock.clone(),
            ),
            frames: RateLimiter::direct_with_clock(
                quota(limits.inbound_frames_per_sec, limits.inbound_frames_burst),
                clock,
            ),
        }
    }

    /// Accounts one inbound frame of `wire_bytes` (header included).
    pub fn on_frame(&self, wire_bytes: usize) -> Result<(), DosViolation> {
        self.frames.check().map_err(|_| DosViolation::Frames)?;
        let n = u32::try_from(wire_bytes).unwrap_or(u32::MAX);
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        match self.bytes.check_n(n) {
            Ok(Ok(())) => Ok(()),
            // Err(InsufficientCapacity): larger than the burst; config validation
            // keeps the burst above the largest frame, so this is a flood as well.
            Ok(Err(_)) | Err(_) => Err(DosViolation::Bytes),
        }
    }
}

/// Why a new connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    ServerFull,
    /// `max_connections_per_ip` reached for this address.
    TooManyFromIp,
}

/// Admission control at accept: global and per-IP connection counts.
#[derive(Clone)]
pub(crate) struct Admission {
    inner: Arc<AdmissionInner>,
}

struct AdmissionInner {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection's slot; dropping it frees the slot.
pub(crate) struct Permit {
    admission: Arc<AdmissionInner>,
    ip: IpAddr,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Self {
        Admission {
            inner: Arc::new(AdmissionInner {
                max_total,
                max_per_ip,
                counts: Mutex::new(Counts::default()),
            }),
        }
    }

    /// Takes a slot for a connection from `ip`, or says why not.
    pub(crate) fn try_admit(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        let mut counts = self
            .inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if counts.total >= self.inner.max_total {
            return Err(Refusal::ServerFull);
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.inner.max_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Permit {
            admission: self.inner.clone(),
            ip,
        })
    }

    /// Connections currently admitted.
    #[cfg(test)]
    pub(crate) fn current(&self) -> usize {
        self.inner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self
            .admission
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limits(
        frames_per_sec: u32,
        frames_burst: u32,
        bytes_per_sec: u32,
        bytes_burst: u32,
    ) -> LimitsConfig {
        LimitsConfig {
            inbound_frames_per_sec: frames_per_sec,
            inbound_frames_burst: frames_burst,
            inbound_bytes_per_sec: bytes_per_sec,
            inbound_bytes_burst: bytes_burst,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn frame_burst_passes_then_the_rate_applies() {
        let clock = FakeRelativeClock::default();
        let dos = DosChecker::with_clock(&limits(10, 5, 1 << 20, 1 << 20), clock.clone());
        for _ in 0..5 {
            assert_eq!(dos.on_frame(10), Ok(()));
        }
        assert_eq!(dos.on_frame(10), Err(DosViolation::Frames));
        clock.advance(Duration::from_millis(100)); // one frame's worth at 10/s
        assert_eq!(dos.on_frame(10), Ok(()));
        assert_eq!(dos.on_frame(10), Err(DosViolation::Frames));
    }

    #[test]
    fn byte_rate_is_enforced_independently_of_frames() {
        let clock = FakeRelativeClock::default();
        let dos = DosChecker::with_clock(&limits(1000, 1000, 1000, 2000), clock.clone());
        assert_eq!(dos.on_frame(1500), Ok(()));
        assert_eq!(dos.on_frame(600), Err(DosViolation::Bytes));
        clock.advance(Duration::from_secs(1));
        assert_eq!(dos.on_frame(600), Ok(()));
        assert_eq!(dos.on_frame(5000), Err(DosViolation::Bytes));
    }

    #[test]
    fn admission_caps_total_and_per_ip_and_frees_on_drop() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let p1 = admission.try_admit(a).unwrap();
        let _p2 = admission.try_admit(a).unwrap();
        assert_eq!(admission.try_admit(a).err(), Some(Refusal::TooManyFromIp));
        let _p3 = admission.try_admit(b).unwrap();
        assert_eq!(admission.try_admit(b).err(), Some(Refusal::ServerFull));
        drop(p1);
        assert_eq!(admission.current(), 2);
        assert!(admission.try_admit(a).is_ok());
    }
}
