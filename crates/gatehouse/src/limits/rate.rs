//! Inbound rate limits: bytes/s and frames/s per connection, each with a burst.
//!
//! Each limit is a token bucket in its GCRA form (one "theoretical arrival time" per
//! bucket, as governor keeps). The parameters ([`RateLimits`]) are computed once per
//! server; a connection keeps only its two arrival times ([`InboundRates`]). It is written here rather than taken from governor
//! because the connection core is I/O-free: it is *told* the time (one clock read per
//! read batch, shared by both buckets and every frame of the batch) and owned by one
//! task, whereas governor reads its own clock on every check and keeps its state in
//! an atomic for sharing across threads. Tests drive it with made-up instants.

use std::time::Instant;

use crate::config::LimitsConfig;

/// Which inbound limit a connection exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateViolation {
    /// More bytes per second than allowed.
    Bytes,
    /// More frames per second than allowed.
    Frames,
}

/// One bucket's parameters: `rate` tokens per second, at most `burst` at once.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Nanoseconds one token takes to refill, in 32.32 fixed point (so that a check
    /// multiplies instead of dividing, and rates above 10⁹/s keep their precision).
    ns_per_token_q32: u64,
    /// How far ahead of now the theoretical arrival time may run: burst ÷ rate.
    tolerance_ns: u64,
}

impl Bucket {
    fn new(per_sec: u32, burst: u32) -> Bucket {
        // At most 10⁹ × 2³², which fits in 64 bits.
        let ns_per_token_q32 = (1_000_000_000u64 << 32) / u64::from(per_sec.max(1));
        let mut bucket = Bucket {
            ns_per_token_q32,
            tolerance_ns: 0,
        };
        bucket.tolerance_ns = bucket.nanos_for(u64::from(burst.max(1)));
        bucket
    }

    /// Nanoseconds that `n` tokens take to refill.
    fn nanos_for(&self, n: u64) -> u64 {
        let ns = (u128::from(n) * u128::from(self.ns_per_token_q32)) >> 32;
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Takes `n` tokens at `now_ns` from the bucket whose theoretical arrival time is
    /// `tat_ns`, or refuses (taking none).
    fn take(&self, tat_ns: &mut u64, n: u64, now_ns: u64) -> bool {
        let new_tat = (*tat_ns).max(now_ns).saturating_add(self.nanos_for(n));
        if new_tat - now_ns > self.tolerance_ns {
            return false;
        }
        *tat_ns = new_tat;
        true
    }
}

/// A server's inbound rate limits, computed once from `[limits]` and shared by every
/// connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RateLimits {
    bytes: Bucket,
    frames: Bucket,
}

impl RateLimits {
    /// The configured rates and bursts.
    pub(crate) fn new(limits: &LimitsConfig) -> RateLimits {
        RateLimits {
            bytes: Bucket::new(limits.inbound_bytes_per_sec, limits.inbound_bytes_burst),
            frames: Bucket::new(limits.inbound_frames_per_sec, limits.inbound_frames_burst),
        }
    }
}

/// One connection's standing against [`RateLimits`]: sixteen bytes. Time is given as
/// nanoseconds since the connection began (full buckets at 0).
#[derive(Debug, Clone, Default)]
pub(crate) struct InboundRates {
    bytes_tat_ns: u64,
    frames_tat_ns: u64,
}

impl InboundRates {
    /// Accounts one inbound frame of `wire_bytes` (header included) arriving at
    /// `now_ns`. A frame larger than the byte burst can never pass: config validation
    /// keeps the burst above the largest frame, so such a frame is a flood too.
    pub(crate) fn on_frame(
        &mut self,
        limits: &RateLimits,
        wire_bytes: usize,
        now_ns: u64,
    ) -> Result<(), RateViolation> {
        if !limits.frames.take(&mut self.frames_tat_ns, 1, now_ns) {
            return Err(RateViolation::Frames);
        }
        let bytes = u64::try_from(wire_bytes).unwrap_or(u64::MAX);
        if !limits.bytes.take(&mut self.bytes_tat_ns, bytes, now_ns) {
            return Err(RateViolation::Bytes);
        }
        Ok(())
    }
}

/// Nanoseconds from `origin` to `now` (0 if `now` is earlier).
pub(crate) fn nanos_since(origin: Instant, now: Instant) -> u64 {
    let elapsed = now.saturating_duration_since(origin);
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A connection's rates under these limits, checked at instants.
    struct Checker {
        limits: RateLimits,
        rates: InboundRates,
        origin: Instant,
    }

    impl Checker {
        fn new(limits: &LimitsConfig, origin: Instant) -> Checker {
            Checker {
                limits: RateLimits::new(limits),
                rates: InboundRates::default(),
                origin,
            }
        }

        fn on_frame(&mut self, wire_bytes: usize, now: Instant) -> Result<(), RateViolation> {
            let now_ns = nanos_since(self.origin, now);
            self.rates.on_frame(&self.limits, wire_bytes, now_ns)
        }
    }

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
        let t0 = Instant::now();
        let mut rates = Checker::new(&limits(10, 5, 1 << 20, 1 << 20), t0);
        for _ in 0..5 {
            assert_eq!(rates.on_frame(10, t0), Ok(()));
        }
        assert_eq!(rates.on_frame(10, t0), Err(RateViolation::Frames));
        let later = t0 + Duration::from_millis(100); // one frame's worth at 10/s
        assert_eq!(rates.on_frame(10, later), Ok(()));
        assert_eq!(rates.on_frame(10, later), Err(RateViolation::Frames));
    }

    #[test]
    fn byte_rate_is_enforced_independently_of_frames() {
        let t0 = Instant::now();
        let mut rates = Checker::new(&limits(1000, 1000, 1000, 2000), t0);
        assert_eq!(rates.on_frame(1500, t0), Ok(()));
        assert_eq!(rates.on_frame(600, t0), Err(RateViolation::Bytes));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(rates.on_frame(600, later), Ok(()));
        assert_eq!(rates.on_frame(5000, later), Err(RateViolation::Bytes));
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut rates = Checker::new(&limits(200, 1, 1 << 20, 1 << 20), t0);
        for i in 0..10_000u64 {
            let at = t0 + Duration::from_millis(5 * i); // exactly 200 frames/s
            assert_eq!(rates.on_frame(100, at), Ok(()), "frame {i}");
        }
    }

    #[test]
    fn a_refused_frame_takes_no_tokens_and_idle_time_refills_only_to_the_burst() {
        let t0 = Instant::now();
        let mut rates = Checker::new(&limits(1, 2, 1 << 20, 1 << 20), t0);
        assert!(rates.on_frame(1, t0).is_ok());
        assert!(rates.on_frame(1, t0).is_ok());
        for _ in 0..10 {
            assert_eq!(rates.on_frame(1, t0), Err(RateViolation::Frames));
        }
        let much_later = t0 + Duration::from_secs(3600);
        assert!(rates.on_frame(1, much_later).is_ok());
        assert!(rates.on_frame(1, much_later).is_ok());
        assert_eq!(rates.on_frame(1, much_later), Err(RateViolation::Frames));
    }

    #[test]
    fn extreme_rates_neither_overflow_nor_divide_by_zero() {
        let t0 = Instant::now();
        let mut fast = Checker::new(&limits(u32::MAX, u32::MAX, u32::MAX, u32::MAX), t0);
        for _ in 0..1000 {
            assert!(
                fast.on_frame(usize::MAX, t0).is_err(),
                "more than the burst"
            );
            assert!(fast.on_frame(1 << 20, t0).is_ok());
        }
        let mut zero = Checker::new(&limits(0, 0, 0, 0), t0);
        assert!(zero.on_frame(1, t0).is_ok());
        assert!(zero.on_frame(1, t0).is_err());
        let mut late_origin =
            Checker::new(&limits(1, 1, 1 << 20, 1 << 20), t0 + Duration::from_secs(5));
        assert!(
            late_origin.on_frame(1, t0).is_ok(),
            "an instant before the origin counts as the origin"
        );
        assert!(late_origin.on_frame(1, t0).is_err());
    }
}
