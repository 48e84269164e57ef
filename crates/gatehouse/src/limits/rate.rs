//! Inbound rate limits: bytes/s and frames/s per connection, each with a burst.
//!
//! Each limit is a token bucket in its GCRA form (one "theoretical arrival time" per
//! bucket, as governor keeps). It is written here rather than taken from governor
//! because the connection core is I/O-free: it is *told* the time (one clock read per
//! read batch, shared by both buckets and every frame of the batch) and owned by one
//! task, whereas governor reads its own clock on every check and keeps its state in
//! an atomic for sharing across threads. Tests drive it with made-up instants.

use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

/// Which inbound limit a connection exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateViolation {
    /// More bytes per second than allowed.
    Bytes,
    /// More frames per second than allowed.
    Frames,
}

/// A token bucket: `rate` tokens per second, at most `burst` at once.
#[derive(Debug, Clone)]
struct TokenBucket {
    /// Tokens per second.
    rate: u64,
    /// How far ahead of now the theoretical arrival time may run: burst ÷ rate.
    tolerance_ns: u64,
    /// When the bucket would be full again, in nanoseconds since `origin`.
    tat_ns: u64,
}

impl TokenBucket {
    fn new(per_sec: u32, burst: u32) -> TokenBucket {
        let rate = u64::from(per_sec.max(1));
        TokenBucket {
            rate,
            tolerance_ns: nanos_for(u64::from(burst.max(1)), rate),
            tat_ns: 0,
        }
    }

    /// Takes `n` tokens at `now_ns`, or refuses (taking none).
    fn take(&mut self, n: u64, now_ns: u64) -> bool {
        let new_tat = self
            .tat_ns
            .max(now_ns)
            .saturating_add(nanos_for(n, self.rate));
        if new_tat - now_ns > self.tolerance_ns {
            return false;
        }
        self.tat_ns = new_tat;
        true
    }
}

/// Nanoseconds that `n` tokens take to refill at `rate` per second.
fn nanos_for(n: u64, rate: u64) -> u64 {
    let ns = u128::from(n) * 1_000_000_000 / u128::from(rate);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// A connection's inbound limits, checked frame by frame.
#[derive(Debug, Clone)]
pub struct InboundRates {
    /// Time zero of both buckets (the connection's acceptance).
    origin: Instant,
    /// The last instant seen and its offset from `origin`: a batch of frames shares
    /// one instant, so the subtraction is done once per batch.
    last: (Instant, u64),
    bytes: TokenBucket,
    frames: TokenBucket,
}

impl InboundRates {
    /// Full buckets at `origin` with the configured rates and bursts.
    pub fn new(limits: &LimitsConfig, origin: Instant) -> InboundRates {
        InboundRates {
            origin,
            last: (origin, 0),
            bytes: TokenBucket::new(limits.inbound_bytes_per_sec, limits.inbound_bytes_burst),
            frames: TokenBucket::new(limits.inbound_frames_per_sec, limits.inbound_frames_burst),
        }
    }

    /// Accounts one inbound frame of `wire_bytes` (header included) arriving at `now`.
    /// A frame larger than the byte burst can never pass: config validation keeps the
    /// burst above the largest frame, so such a frame is a flood too.
    pub fn on_frame(&mut self, wire_bytes: usize, now: Instant) -> Result<(), RateViolation> {
        if now != self.last.0 {
            self.last = (now, since(self.origin, now));
        }
        let now_ns = self.last.1;
        if !self.frames.take(1, now_ns) {
            return Err(RateViolation::Frames);
        }
        let bytes = u64::try_from(wire_bytes).unwrap_or(u64::MAX);
        if !self.bytes.take(bytes, now_ns) {
            return Err(RateViolation::Bytes);
        }
        Ok(())
    }
}

/// Nanoseconds from `origin` to `now` (0 if `now` is earlier).
fn since(origin: Instant, now: Instant) -> u64 {
    let elapsed: Duration = now.saturating_duration_since(origin);
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
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
        let t0 = Instant::now();
        let mut rates = InboundRates::new(&limits(10, 5, 1 << 20, 1 << 20), t0);
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
        let mut rates = InboundRates::new(&limits(1000, 1000, 1000, 2000), t0);
        assert_eq!(rates.on_frame(1500, t0), Ok(()));
        assert_eq!(rates.on_frame(600, t0), Err(RateViolation::Bytes));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(rates.on_frame(600, later), Ok(()));
        assert_eq!(rates.on_frame(5000, later), Err(RateViolation::Bytes));
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut rates = InboundRates::new(&limits(200, 1, 1 << 20, 1 << 20), t0);
        for i in 0..10_000u64 {
            let at = t0 + Duration::from_millis(5 * i); // exactly 200 frames/s
            assert_eq!(rates.on_frame(100, at), Ok(()), "frame {i}");
        }
    }

    #[test]
    fn a_refused_frame_takes_no_tokens_and_idle_time_refills_only_to_the_burst() {
        let t0 = Instant::now();
        let mut rates = InboundRates::new(&limits(1, 2, 1 << 20, 1 << 20), t0);
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
        let mut fast = InboundRates::new(&limits(u32::MAX, u32::MAX, u32::MAX, u32::MAX), t0);
        for _ in 0..1000 {
            assert!(
                fast.on_frame(usize::MAX, t0).is_err(),
                "more than the burst"
            );
            assert!(fast.on_frame(1 << 20, t0).is_ok());
        }
        let mut zero = InboundRates::new(&limits(0, 0, 0, 0), t0);
        assert!(zero.on_frame(1, t0).is_ok());
        assert!(zero.on_frame(1, t0).is_err());
        let mut late_origin =
            InboundRates::new(&limits(1, 1, 1 << 20, 1 << 20), t0 + Duration::from_secs(5));
        assert!(
            late_origin.on_frame(1, t0).is_ok(),
            "an instant before the origin counts as the origin"
        );
        assert!(late_origin.on_frame(1, t0).is_err());
    }
}
