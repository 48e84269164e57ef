//! A connection's meter: what it is (transport, peer, when it was accepted) and what
//! crossed it (frames and bytes each way), for the admin API's connection list and
//! the server's metrics.
//!
//! Only the connection's own task writes the counters (the core counts what it
//! decodes, queues and hands to the transport), so a count is a plain load and store,
//! not a locked instruction: the hot path pays a few cycles per frame. Anyone may
//! read them (the hub, for the admin API and the metrics' totals). The meter lives in
//! the allocation the core already shares with the mailbox ([`OutboundBudget`]), so
//! it adds nothing to the connection's task.
//!
//! [`OutboundBudget`]: super::OutboundBudget

use core::net::{Ipv4Addr, SocketAddr};
use std::ops::AddAssign;

use crate::config::TransportKind;
use crate::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Frames and bytes each way. Bytes are those of gatehouse frames (length header
/// included), without TLS records or WebSocket framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficCounts {
    /// Frames received (pings included).
    pub frames_in: u64,
    /// Bytes of the frames received.
    pub bytes_in: u64,
    /// Frames queued to send (answers, pushes, broadcasts, pongs, the kick).
    pub frames_out: u64,
    /// Bytes the transport took.
    pub bytes_out: u64,
}

impl TrafficCounts {
    /// The four counts in the order of the fields.
    pub fn to_array(self) -> [u64; 4] {
        [
            self.frames_in,
            self.bytes_in,
            self.frames_out,
            self.bytes_out,
        ]
    }

    /// The counts from [`TrafficCounts::to_array`]'s order.
    pub fn from_array([frames_in, bytes_in, frames_out, bytes_out]: [u64; 4]) -> Self {
        TrafficCounts {
            frames_in,
            bytes_in,
            frames_out,
            bytes_out,
        }
    }
}

impl AddAssign for TrafficCounts {
    fn add_assign(&mut self, other: TrafficCounts) {
        self.frames_in += other.frames_in;
        self.bytes_in += other.bytes_in;
        self.frames_out += other.frames_out;
        self.bytes_out += other.bytes_out;
    }
}

/// One connection's meter (see the module docs).
#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) transport: TransportKind,
    pub(crate) peer: SocketAddr,
    /// When it was accepted, in seconds since the Unix epoch (the driver reads the
    /// clock; 4 bytes where a `SystemTime` takes 16, in every connection).
    pub(crate) since: u32,
    /// Off with `metrics.enabled = false`: nothing is counted.
    counting: bool,
    frames_in: AtomicU64,
    bytes_in: AtomicU64,
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
}

/// Adds `n` to a counter only this task writes: no read-modify-write instruction.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

impl Meter {
    pub(crate) fn new(
        transport: TransportKind,
        peer: SocketAddr,
        since: u32,
        counting: bool,
    ) -> Meter {
        Meter {
            transport,
            peer,
            since,
            counting,
            frames_in: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    /// A meter that counts nothing, for a connection that is only refused.
    pub(crate) fn off() -> Meter {
        Meter::new(
            TransportKind::Tcp,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            0,
            false,
        )
    }

    /// A frame of `wire` bytes (header included) arrived.
    #[inline]
    pub(crate) fn received(&self, wire: usize) {
        if self.counting {
            bump(&self.frames_in, 1);
            bump(&self.bytes_in, wire as u64);
        }
    }

    /// A frame was queued to send.
    #[inline]
    pub(crate) fn queued(&self) {
        if self.counting {
            bump(&self.frames_out, 1);
        }
    }

    /// The transport took `n` bytes.
    #[inline]
    pub(crate) fn sent(&self, n: usize) {
        if self.counting {
            bump(&self.bytes_out, n as u64);
        }
    }

    /// The counts so far, zeroed: for the server's totals, by the connection's own
    /// task (the counters' only writer) once the hub no longer lists it.
    pub(crate) fn take(&self) -> TrafficCounts {
        let counts = self.read();
        for counter in [
            &self.frames_in,
            &self.bytes_in,
            &self.frames_out,
            &self.bytes_out,
        ] {
            counter.store(0, Relaxed);
        }
        counts
    }

    /// The counts so far.
    pub(crate) fn read(&self) -> TrafficCounts {
        TrafficCounts {
            frames_in: self.frames_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            frames_out: self.frames_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counting_meter_adds_up_and_a_switched_off_one_stays_at_zero() {
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let meter = Meter::new(TransportKind::Ws, peer, 0, true);
        meter.received(10);
        meter.received(5);
        meter.queued();
        meter.sent(7);
        let counts = meter.read();
        assert_eq!(
            counts,
            TrafficCounts {
                frames_in: 2,
                bytes_in: 15,
                frames_out: 1,
                bytes_out: 7
            }
        );
        let off = Meter::new(TransportKind::Tcp, peer, 0, false);
        off.received(10);
        off.queued();
        off.sent(3);
        assert_eq!(off.read(), TrafficCounts::default());
    }
}

/// Every interleaving of the meter's one writer (the connection's task) with a
/// reader (the hub, for the admin API and the metrics). Run with `--cfg
/// gatehouse_loom` (README, "Model-checked concurrency").
#[cfg(all(test, gatehouse_loom))]
mod loom_tests {
    use super::*;
    use loom::thread;
    use std::sync::Arc;

    #[test]
    fn loom_a_reader_sees_each_count_only_grow_and_the_one_writer_loses_none() {
        loom::model(|| {
            let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
            let meter = Arc::new(Meter::new(TransportKind::Tcp, peer, 0, true));
            let task = {
                let meter = meter.clone();
                thread::spawn(move || {
                    meter.received(10);
                    meter.queued();
                    meter.received(10);
                    meter.sent(7);
                })
            };
            let (first, second) = (meter.read(), meter.read());
            for (earlier, later) in first.to_array().into_iter().zip(second.to_array()) {
                assert!(
                    earlier <= later,
                    "a count went back: {first:?} then {second:?}"
                );
            }
            // Only what the writer wrote: no torn or invented value.
            assert!(first.frames_in <= 2 && first.bytes_in % 10 == 0 && first.bytes_in <= 20);
            assert!(first.frames_out <= 1 && [0, 7].contains(&first.bytes_out));
            task.join().unwrap_or(());
            let all = TrafficCounts::from_array([2, 20, 1, 7]);
            assert_eq!(meter.take(), all, "no count lost");
            assert_eq!(meter.read(), TrafficCounts::default());
        });
    }
}
