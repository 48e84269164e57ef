//! What a resumable session keeps so that a lost connection can come back with
//! nothing lost and nothing run twice (`docs/PROTOCOL.md`, "session, resume, resumed
//! and ack"), without I/O: [`Replay`], the numbered frames this server sent that the
//! client has not acknowledged, and [`Inbound`], the client's numbered frames
//! received and when to acknowledge them. Both count from the session's offer and
//! run on across resumes.
//!
//! Everything is bounded: the replay keeps at most `resume.buffer_bytes`, charged to
//! the server-wide memory budget; past either, the oldest frames go, and a resume
//! that needs them is refused `gap`. An acknowledgement is due only while something
//! is unacknowledged, so an idle session arms no timer.
//!
//! The connection core holds them for a session offered a resume; they stay with
//! the session's task while its connection is lost and serve the next one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::limits::MemoryBudget;

/// An acknowledgement is sent once this many numbered frames are unacknowledged…
pub(crate) const ACK_EVERY_FRAMES: u64 = 32;
/// …or this long after the oldest unacknowledged one arrived, whichever is first.
pub(crate) const ACK_WITHIN: Duration = Duration::from_secs(1);

/// The numbered frames (responses and pushes) sent and not yet acknowledged, oldest
/// first, numbered from 1 at the session's offer.
#[derive(Debug)]
pub(crate) struct Replay {
    /// Numbered frames sent.
    sent: u64,
    /// The number of `frames[0]` (`sent + 1` when none is kept).
    first: u64,
    frames: VecDeque<Bytes>,
    /// Bytes of `frames`, all charged to `memory`.
    bytes: usize,
    /// `resume.buffer_bytes`.
    limit: usize,
    memory: Arc<MemoryBudget>,
}

/// What a resume asked of the replay, and why it cannot be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayRefusal {
    /// The client says it received more than was sent: a protocol error.
    BeyondSent { received: u64, sent: u64 },
    /// Frames the client lacks are no longer kept: `resume_failed` `gap`.
    Gap { received: u64, first_kept: u64 },
}

/// An acknowledgement of more frames than were sent: a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckBeyondSent {
    pub(crate) count: u64,
    pub(crate) sent: u64,
}

impl Replay {
    /// An empty replay keeping at most `limit` bytes, charged to `memory`.
    pub(crate) fn new(limit: usize, memory: Arc<MemoryBudget>) -> Replay {
        Replay {
            sent: 0,
            first: 1,
            frames: VecDeque::new(),
            bytes: 0,
            limit,
            memory,
        }
    }

    /// Numbered frames sent.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes kept.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether a client that received at most `received` frames could still be
    /// served: nothing after them was let go.
    pub(crate) fn serves(&self, received: u64) -> bool {
        self.first <= received + 1
    }

    /// Counts `frame` (a whole frame, header included) as sent, and keeps it for a
    /// resume. The oldest frames go to make room within the limit; a frame the
    /// memory budget has no room for is not kept, and then neither are those before
    /// it (a replay has no holes). Returns false if any unacknowledged frame was let
    /// go: a resume from before it is now a gap.
    pub(crate) fn record(&mut self, frame: Bytes) -> bool {
        self.sent += 1;
        let len = frame.len();
        let mut whole = true;
        while !self.frames.is_empty() && self.bytes + len > self.limit {
            self.pop();
            whole = false;
        }
        if len > self.limit || !self.memory.try_charge(len) {
            self.clear();
            self.first = self.sent + 1;
            return false;
        }
        self.frames.push_back(frame);
        self.bytes += len;
        whole
    }

    /// The client has the first `count` frames: they need not be kept.
    pub(crate) fn ack(&mut self, count: u64) -> Result<(), AckBeyondSent> {
        if count > self.sent {
            return Err(AckBeyondSent {
                count,
                sent: self.sent,
            });
        }
        while self.first <= count && !self.frames.is_empty() {
            self.pop();
        }
        self.first = self.first.max(count + 1);
        Ok(())
    }

    /// The frames a client that received the first `received` lacks, in order.
    pub(crate) fn after(
        &self,
        received: u64,
    ) -> Result<impl Iterator<Item = &Bytes>, ReplayRefusal> {
        if received > self.sent {
            return Err(ReplayRefusal::BeyondSent {
                received,
                sent: self.sent,
            });
        }
        if received + 1 < self.first {
            return Err(ReplayRefusal::Gap {
                received,
                first_kept: self.first,
            });
        }
        // In range: `first <= received + 1 <= sent + 1`, and `frames` holds `first..=sent`.
        let skip = usize::try_from(received + 1 - self.first).unwrap_or(usize::MAX);
        Ok(self.frames.iter().skip(skip))
    }

    fn pop(&mut self) {
        if let Some(frame) = self.frames.pop_front() {
            self.bytes -= frame.len();
            self.memory.refund(frame.len());
            self.first += 1;
        }
    }

    fn clear(&mut self) {
        self.memory.refund(self.bytes);
        self.bytes = 0;
        self.frames.clear();
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The client's numbered frames (requests and notifies) received, and the
/// acknowledgement this side owes for them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Inbound {
    /// Numbered frames received from the client.
    received: u64,
    /// The count last acknowledged.
    acked: u64,
    /// When an acknowledgement is due: [`ACK_WITHIN`] after the oldest frame not
    /// acknowledged; `None` while everything is.
    due: Option<Instant>,
}

impl Inbound {
    /// Starts counting at `received`: the frames the session already holds when it
    /// is offered (those that arrived behind the request that offers it).
    pub(crate) fn starting_at(received: u64) -> Inbound {
        Inbound {
            received,
            ..Inbound::default()
        }
    }

    /// Numbered frames received.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Counts one numbered frame, received at `now`. True if an acknowledgement is
    /// due at once ([`ACK_EVERY_FRAMES`] unacknowledged).
    pub(crate) fn on_frame(&mut self, now: Instant) -> bool {
        self.received += 1;
        self.due.get_or_insert(now + ACK_WITHIN);
        self.received - self.acked >= ACK_EVERY_FRAMES
    }

    /// When the acknowledgement is due, if one is owed: the only timer a session adds.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.due
    }

    /// The count to acknowledge now, if any is owed (then nothing is, until the next
    /// frame).
    pub(crate) fn take_ack(&mut self) -> Option<u64> {
        self.due = None;
        (self.received > self.acked).then(|| {
            self.acked = self.received;
            self.received
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8, len: usize) -> Bytes {
        Bytes::from(vec![n; len])
    }

    fn replay(limit: usize) -> (Replay, Arc<MemoryBudget>) {
        let memory = Arc::new(MemoryBudget::new(1 << 20));
        (Replay::new(limit, memory.clone()), memory)
    }

    fn numbers(frames: impl Iterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
        frames.map(|f| f.as_ref()[0]).collect()
    }

    #[test]
    fn a_resume_gets_every_frame_after_what_the_client_received_in_order() {
        let (mut replay, _) = replay(1000);
        for n in 1..=5 {
            assert!(replay.record(frame(n, 10)));
        }
        assert_eq!(replay.sent(), 5);
        assert_eq!(numbers(replay.after(2).unwrap()), [3, 4, 5]);
        assert_eq!(numbers(replay.after(5).unwrap()), Vec::<u8>::new());
        assert_eq!(numbers(replay.after(0).unwrap()), [1, 2, 3, 4, 5]);
        assert_eq!(
            replay.after(6).err(),
            Some(ReplayRefusal::BeyondSent {
                received: 6,
                sent: 5
            })
        );
    }

    #[test]
    fn acks_free_frames_and_their_memory_and_a_resume_from_before_them_is_a_gap() {
        let (mut replay, memory) = replay(1000);
        for n in 1..=4 {
            replay.record(frame(n, 10));
        }
        assert_eq!(memory.used(), 40);
        replay.ack(3).unwrap();
        assert_eq!((replay.bytes(), memory.used()), (10, 10));
        assert_eq!(numbers(replay.after(3).unwrap()), [4]);
        assert_eq!(
            replay.after(2).err(),
            Some(ReplayRefusal::Gap {
                received: 2,
                first_kept: 4
            })
        );
        // Acks that come late or twice change nothing; one beyond what was sent is refused.
        replay.ack(1).unwrap();
        replay.ack(3).unwrap();
        assert_eq!(numbers(replay.after(3).unwrap()), [4]);
        assert_eq!(replay.ack(5), Err(AckBeyondSent { count: 5, sent: 4 }));
        replay.ack(4).unwrap();
        assert_eq!((replay.bytes(), memory.used()), (0, 0));
        assert!(replay.after(4).unwrap().next().is_none());
    }

    #[test]
    fn past_the_byte_limit_the_oldest_unacknowledged_frames_go_and_the_replay_says_so() {
        let (mut replay, memory) = replay(30);
        for n in 1..=3 {
            assert!(replay.record(frame(n, 10)));
        }
        assert!(!replay.record(frame(4, 10)), "frame 1 had to go");
        assert_eq!(replay.bytes(), 30);
        assert_eq!(memory.used(), 30);
        assert!(!replay.serves(0));
        assert!(replay.serves(1));
        assert_eq!(numbers(replay.after(1).unwrap()), [2, 3, 4]);
        assert!(matches!(replay.after(0), Err(ReplayRefusal::Gap { .. })));
        // A frame larger than the whole limit keeps nothing: every resume is a gap.
        assert!(!replay.record(frame(5, 31)));
        assert_eq!((replay.bytes(), memory.used()), (0, 0));
        assert!(matches!(replay.after(4), Err(ReplayRefusal::Gap { .. })));
        assert!(replay.after(5).unwrap().next().is_none());
    }

    #[test]
    fn a_frame_the_memory_budget_refuses_is_not_kept_nor_are_those_before_it() {
        let memory = Arc::new(MemoryBudget::new(25));
        let mut replay = Replay::new(1000, memory.clone());
        assert!(replay.record(frame(1, 10)));
        assert!(replay.record(frame(2, 10)));
        assert!(!replay.record(frame(3, 10)), "the budget is full");
        assert_eq!(memory.used(), 0, "no holes: everything before it went too");
        assert!(replay.after(3).unwrap().next().is_none());
        assert!(matches!(replay.after(2), Err(ReplayRefusal::Gap { .. })));
        assert!(replay.record(frame(4, 10)));
        assert_eq!(numbers(replay.after(3).unwrap()), [4]);
    }

    #[test]
    fn dropping_a_replay_gives_its_memory_back() {
        let (mut replay, memory) = replay(1000);
        replay.record(frame(1, 100));
        drop(replay);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn an_ack_is_due_after_32_frames_or_a_second_after_the_first_and_never_when_idle() {
        let t0 = Instant::now();
        let mut inbound = Inbound::starting_at(2);
        assert_eq!(inbound.deadline(), None, "nothing owed: no timer");
        assert!(!inbound.on_frame(t0));
        assert_eq!(inbound.deadline(), Some(t0 + ACK_WITHIN));
        let later = t0 + Duration::from_millis(300);
        assert!(!inbound.on_frame(later));
        assert_eq!(
            inbound.deadline(),
            Some(t0 + ACK_WITHIN),
            "the oldest frame sets it"
        );
        assert_eq!(inbound.take_ack(), Some(4));
        assert_eq!((inbound.deadline(), inbound.take_ack()), (None, None));

        let due_now = (0..ACK_EVERY_FRAMES)
            .map(|_| inbound.on_frame(later))
            .collect::<Vec<_>>();
        assert_eq!(due_now.iter().filter(|&&now| now).count(), 1);
        assert_eq!(due_now.last(), Some(&true), "the 32nd frame");
        assert_eq!(inbound.take_ack(), Some(4 + ACK_EVERY_FRAMES));
        assert_eq!(inbound.received(), 4 + ACK_EVERY_FRAMES);
    }

    /// One step of a session, as the peer and the server may take them in any order
    /// and with any numbers (the peer's are not to be trusted).
    #[derive(Debug, Clone)]
    enum Step {
        Send(usize),
        Ack(u64),
        Resume(u64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (1usize..80).prop_map(Step::Send),
            (0u64..40).prop_map(Step::Ack),
            any::<u64>().prop_map(Step::Ack),
            (0u64..40).prop_map(Step::Resume),
            any::<u64>().prop_map(Step::Resume),
        ]
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzzing::proptest_config(500))]

        /// Against a model that keeps every frame: whatever the peer says, the replay
        /// stays within its limit and the budget, charges exactly what it holds, and a
        /// resume is served with exactly the frames after `received` or refused for
        /// the right reason.
        #[test]
        fn the_replay_agrees_with_a_model_that_keeps_everything(
            limit in 1usize..300,
            budget in 1usize..400,
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let memory = Arc::new(MemoryBudget::new(budget));
            let mut replay = Replay::new(limit, memory.clone());
            let mut all: Vec<Bytes> = Vec::new();
            let mut acked = 0u64;
            for step in steps {
                match step {
                    Step::Send(len) => {
                        let number = (all.len() + 1) as u64;
                        let frame = Bytes::from(number.to_be_bytes().repeat(len.div_ceil(8)));
                        all.push(frame.clone());
                        replay.record(frame);
                    }
                    Step::Ack(count) => {
                        let sent = all.len() as u64;
                        let answer = replay.ack(count);
                        proptest::prop_assert_eq!(answer.is_err(), count > sent);
                        if count <= sent {
                            acked = acked.max(count);
                        }
                    }
                    Step::Resume(received) => match replay.after(received) {
                        Ok(frames) => {
                            let got: Vec<&Bytes> = frames.collect();
                            let want: Vec<&Bytes> = all.iter().skip(received as usize).collect();
                            proptest::prop_assert_eq!(got, want);
                        }
                        Err(ReplayRefusal::BeyondSent { .. }) => {
                            proptest::prop_assert!(received > all.len() as u64);
                        }
                        Err(ReplayRefusal::Gap { first_kept, .. }) => {
                            proptest::prop_assert!(received < all.len() as u64);
                            proptest::prop_assert!(received + 1 < first_kept);
                        }
                    },
                }
                proptest::prop_assert!(replay.bytes() <= limit);
                proptest::prop_assert!(replay.bytes() <= budget);
                proptest::prop_assert_eq!(memory.used(), replay.bytes());
                proptest::prop_assert_eq!(replay.sent(), all.len() as u64);
                // Nothing acknowledged is kept.
                proptest::prop_assert!(replay.frames.len() as u64 <= all.len() as u64 - acked);
            }
            drop(replay);
            proptest::prop_assert_eq!(memory.used(), 0);
        }
    }
}
