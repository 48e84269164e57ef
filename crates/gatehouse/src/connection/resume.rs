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

use bytes::{Buf, Bytes, BytesMut};

use crate::limits::MemoryBudget;

/// An acknowledgement is sent once this many numbered frames are unacknowledged…
pub(crate) const ACK_EVERY_FRAMES: u64 = 32;
/// …or this long after the oldest unacknowledged one arrived, whichever is first.
pub(crate) const ACK_WITHIN: Duration = Duration::from_secs(1);

/// A replay emptied by an acknowledgement lets its buffers go unless they have grown
/// past this (a busy session's, which it would grow again at once).
const KEEP_ABOVE: usize = 256;

/// The memory budget is charged in steps of this many bytes (a shared atomic per
/// step, not per frame), and refunded once a step and more is unused.
const CHARGE_STEP: usize = 4096;

/// The numbered frames (responses and pushes) sent and not acknowledged, oldest
/// first, numbered from 1 at the session's offer.
///
/// The frames the connection encodes itself (responses, its own pushes) are copied
/// into one buffer, `own`, oldest first, so that keeping one costs a copy and no
/// allocation; frames encoded elsewhere (a broadcast) are kept shared, as queued,
/// in `shared`. Each kept frame is a [`Mark`] of running totals, so that an
/// acknowledgement of many frames costs the same as of one (but for the shared
/// frames it drops).
#[derive(Debug)]
pub(crate) struct Replay {
    /// Numbered frames sent.
    sent: u64,
    /// The number of the frame `marks[0]` stands for (`sent + 1` when none is
    /// kept).
    first: u64,
    /// Each kept frame's mark, oldest first.
    marks: VecDeque<Mark>,
    /// The totals before `marks[0]` (those of the last frame let go).
    base: Mark,
    /// The totals after the last frame kept.
    total: Mark,
    /// The bytes of the own frames, in order.
    own: BytesMut,
    /// The shared frames, in order.
    shared: VecDeque<Bytes>,
    /// Bytes kept.
    bytes: usize,
    /// Bytes charged to `memory`: at least `bytes`, in whole steps.
    charged: usize,
    step: usize,
    /// `resume.buffer_bytes`.
    limit: usize,
    memory: Arc<MemoryBudget>,
}

/// Running totals of the frames kept, up to and including one: where it ends in
/// the own bytes, and how many shared frames there are up to it. They wrap, and
/// are only ever subtracted from one another, over at most `resume.buffer_bytes`
/// (far below 4 GiB): the difference is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mark {
    own: u32,
    shared: u32,
}

impl Mark {
    /// Own bytes and shared frames from `earlier` to `self`.
    fn since(self, earlier: Mark) -> (usize, usize) {
        (
            self.own.wrapping_sub(earlier.own) as usize,
            self.shared.wrapping_sub(earlier.shared) as usize,
        )
    }
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
        Replay::charging_in_steps(limit, memory, CHARGE_STEP)
    }

    /// As [`Replay::new`], charging `memory` in steps of `step` bytes.
    fn charging_in_steps(limit: usize, memory: Arc<MemoryBudget>, step: usize) -> Replay {
        Replay {
            sent: 0,
            first: 1,
            marks: VecDeque::new(),
            base: Mark::default(),
            total: Mark::default(),
            own: BytesMut::new(),
            shared: VecDeque::new(),
            bytes: 0,
            charged: 0,
            step: step.max(1),
            limit,
            memory,
        }
    }

    /// Numbered frames sent.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes charged to the memory budget.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn charged(&self) -> usize {
        self.charged
    }

    /// Whether a client that received at most `received` frames could still be
    /// served: nothing after them was let go.
    pub(crate) fn serves(&self, received: u64) -> bool {
        self.first <= received + 1
    }

    /// Counts `frame` (a whole frame, header included, encoded by the connection) as
    /// sent, and keeps a copy of it for a resume; see [`Replay::record_shared`].
    #[inline]
    pub(crate) fn record_own(&mut self, frame: &[u8]) -> bool {
        let whole = self.make_room(frame.len());
        if whole.is_some() {
            self.own.extend_from_slice(frame);
            self.bytes += frame.len();
            // Within u32: make_room kept it within the limit.
            self.total.own = self.total.own.wrapping_add(frame.len() as u32);
            self.marks.push_back(self.total);
        }
        whole.unwrap_or(false)
    }

    /// Counts `frame` (a whole frame, header included) as sent, and keeps it for a
    /// resume, shared. The oldest frames go to make room within the limit; a frame
    /// the memory budget has no room for is not kept, and then neither are those
    /// before it (a replay has no holes). Returns false if any unacknowledged frame
    /// was let go: a resume from before it is now a gap.
    pub(crate) fn record_shared(&mut self, frame: Bytes) -> bool {
        let whole = self.make_room(frame.len());
        if whole.is_some() {
            self.bytes += frame.len();
            self.total.shared = self.total.shared.wrapping_add(1);
            self.marks.push_back(self.total);
            self.shared.push_back(frame);
        }
        whole.unwrap_or(false)
    }

    /// Counts a frame of `len` bytes as sent and makes room for it: `Some(whole)`
    /// if it is to be kept (`whole`: nothing unacknowledged went), `None` if it
    /// cannot be (then nothing is kept).
    #[inline(always)] // the fast path: within the limit and what is charged already
    fn make_room(&mut self, len: usize) -> Option<bool> {
        self.sent += 1;
        let total = self.bytes + len;
        if total <= self.limit && total <= self.charged {
            return Some(true);
        }
        self.make_room_slowly(len)
    }

    /// [`Replay::make_room`] past the limit or the charge.
    #[inline(never)]
    fn make_room_slowly(&mut self, len: usize) -> Option<bool> {
        let mut whole = true;
        while !self.marks.is_empty() && self.bytes + len > self.limit {
            self.pop();
            whole = false;
        }
        if len > self.limit || !self.charge_for(self.bytes + len) {
            self.clear();
            self.first = self.sent + 1;
            return None;
        }
        Some(whole)
    }

    /// Charges the memory budget for `total` bytes kept, in whole steps.
    #[inline]
    fn charge_for(&mut self, total: usize) -> bool {
        if total <= self.charged {
            return true;
        }
        let wanted = total.div_ceil(self.step) * self.step;
        if !self.memory.try_charge(wanted - self.charged) {
            return false;
        }
        self.charged = wanted;
        true
    }

    /// Gives back the steps no longer needed (keeping one spare step).
    fn refund_unused(&mut self) {
        let needed = self.bytes.div_ceil(self.step) * self.step;
        if self.charged > needed + self.step {
            self.memory.refund(self.charged - needed);
            self.charged = needed;
        }
    }

    /// The client has the first `count` frames: they need not be kept.
    pub(crate) fn ack(&mut self, count: u64) -> Result<(), AckBeyondSent> {
        if count > self.sent {
            return Err(AckBeyondSent {
                count,
                sent: self.sent,
            });
        }
        // The acknowledged frames go together: one advance of `own` for all of them.
        let acked = usize::try_from(count.saturating_sub(self.first - 1))
            .unwrap_or(usize::MAX)
            .min(self.marks.len());
        if acked > 0 {
            let last = self.marks[acked - 1];
            self.let_go(acked, last);
        }
        self.first = self.first.max(count + 1);
        self.refund_unused();
        Ok(())
    }

    /// The frames a client that received the first `received` lacks, in order.
    pub(crate) fn after(
        &self,
        received: u64,
    ) -> Result<impl Iterator<Item = Bytes> + '_, ReplayRefusal> {
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
        // In range: `first <= received + 1 <= sent + 1`, and `marks` holds `first..=sent`.
        let skip = usize::try_from(received + 1 - self.first).unwrap_or(usize::MAX);
        let mut before = self.base;
        let mut shared = self.shared.iter();
        Ok(self
            .marks
            .iter()
            .enumerate()
            .filter_map(move |(index, &mark)| {
                let start = before.since(self.base).0; // where this frame is in `own`
                let (own, shared_frames) = mark.since(before);
                before = mark;
                if shared_frames == 0 {
                    (index >= skip).then(|| Bytes::copy_from_slice(&self.own[start..start + own]))
                } else {
                    shared.next().cloned().filter(|_| index >= skip)
                }
            }))
    }

    fn pop(&mut self) {
        if let Some(&mark) = self.marks.front() {
            self.let_go(1, mark);
        }
    }

    /// Lets the oldest `frames` kept go, the last of them marked `last`.
    fn let_go(&mut self, frames: usize, last: Mark) {
        let (own, shared) = last.since(self.base);
        let mut bytes = own;
        for frame in self.shared.drain(..shared) {
            bytes += frame.len();
        }
        self.own.advance(own);
        self.marks.drain(..frames);
        self.base = last;
        self.bytes -= bytes;
        self.first += frames as u64;
        if self.marks.is_empty() && self.own.capacity() <= KEEP_ABOVE {
            // A quiet session keeps no buffers; a busy one keeps its grown ones.
            self.own = BytesMut::new();
            self.marks = VecDeque::new();
        }
    }

    fn clear(&mut self) {
        self.memory.refund(self.charged);
        self.charged = 0;
        self.bytes = 0;
        self.marks.clear();
        self.base = self.total;
        self.shared.clear();
        self.own = BytesMut::new();
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
        if self.due.is_none() {
            self.due = Some(now + ACK_WITHIN);
        }
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

    /// A replay charging the budget byte by byte, so that tests can count.
    fn replay(limit: usize) -> (Replay, Arc<MemoryBudget>) {
        let memory = Arc::new(MemoryBudget::new(1 << 20));
        (Replay::charging_in_steps(limit, memory.clone(), 1), memory)
    }

    fn numbers(frames: impl Iterator<Item = impl AsRef<[u8]>>) -> Vec<u8> {
        frames.map(|f| f.as_ref()[0]).collect()
    }

    #[test]
    fn a_resume_gets_every_frame_after_what_the_client_received_in_order() {
        let (mut replay, _) = replay(1000);
        for n in 1..=5 {
            assert!(replay.record_shared(frame(n, 10)));
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
            replay.record_shared(frame(n, 10));
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
            assert!(replay.record_shared(frame(n, 10)));
        }
        assert!(!replay.record_shared(frame(4, 10)), "frame 1 had to go");
        assert_eq!(replay.bytes(), 30);
        assert_eq!(memory.used(), 30);
        assert!(!replay.serves(0));
        assert!(replay.serves(1));
        assert_eq!(numbers(replay.after(1).unwrap()), [2, 3, 4]);
        assert!(matches!(replay.after(0), Err(ReplayRefusal::Gap { .. })));
        // A frame larger than the whole limit keeps nothing: every resume is a gap.
        assert!(!replay.record_shared(frame(5, 31)));
        assert_eq!((replay.bytes(), memory.used()), (0, 0));
        assert!(matches!(replay.after(4), Err(ReplayRefusal::Gap { .. })));
        assert!(replay.after(5).unwrap().next().is_none());
    }

    #[test]
    fn a_frame_the_memory_budget_refuses_is_not_kept_nor_are_those_before_it() {
        let memory = Arc::new(MemoryBudget::new(25));
        let mut replay = Replay::charging_in_steps(1000, memory.clone(), 1);
        assert!(replay.record_shared(frame(1, 10)));
        assert!(replay.record_shared(frame(2, 10)));
        assert!(!replay.record_shared(frame(3, 10)), "the budget is full");
        assert_eq!(memory.used(), 0, "no holes: everything before it went too");
        assert!(replay.after(3).unwrap().next().is_none());
        assert!(matches!(replay.after(2), Err(ReplayRefusal::Gap { .. })));
        assert!(replay.record_shared(frame(4, 10)));
        assert_eq!(numbers(replay.after(3).unwrap()), [4]);
    }

    #[test]
    fn dropping_a_replay_gives_its_memory_back() {
        let (mut replay, memory) = replay(1000);
        replay.record_shared(frame(1, 100));
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
        /// A frame of about this many bytes; encoded by the connection (kept as a
        /// copy) or elsewhere (kept shared).
        Send(usize, bool),
        Ack(u64),
        Resume(u64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (1usize..80, any::<bool>()).prop_map(|(len, own)| Step::Send(len, own)),
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
            charge_step in proptest::sample::select(vec![1usize, 16, 64]),
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let memory = Arc::new(MemoryBudget::new(budget));
            let mut replay = Replay::charging_in_steps(limit, memory.clone(), charge_step);
            let mut all: Vec<Bytes> = Vec::new();
            let mut acked = 0u64;
            for step in steps {
                let mut acked_now = false;
                match step {
                    Step::Send(len, own) => {
                        let number = (all.len() + 1) as u64;
                        let frame = Bytes::from(number.to_be_bytes().repeat(len.div_ceil(8)));
                        all.push(frame.clone());
                        if own {
                            replay.record_own(&frame);
                        } else {
                            replay.record_shared(frame);
                        }
                    }
                    Step::Ack(count) => {
                        let sent = all.len() as u64;
                        let answer = replay.ack(count);
                        acked_now = answer.is_ok();
                        proptest::prop_assert_eq!(answer.is_err(), count > sent);
                        if count <= sent {
                            acked = acked.max(count);
                        }
                    }
                    Step::Resume(received) => match replay.after(received) {
                        Ok(frames) => {
                            let got: Vec<Bytes> = frames.collect();
                            let want: Vec<Bytes> = all.iter().skip(received as usize).cloned().collect();
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
                proptest::prop_assert!(memory.used() <= budget);
                // Charged in whole steps: what is kept, never beyond the limit's last
                // step, and after an ack at most a step spare beyond what is kept.
                proptest::prop_assert_eq!(memory.used(), replay.charged);
                proptest::prop_assert!(replay.charged >= replay.bytes());
                proptest::prop_assert!(replay.charged <= limit.div_ceil(charge_step) * charge_step);
                if acked_now {
                    proptest::prop_assert!(
                        replay.charged
                            <= replay.bytes().div_ceil(charge_step) * charge_step + charge_step
                    );
                }
                proptest::prop_assert_eq!(replay.sent(), all.len() as u64);
                // Nothing acknowledged is kept.
                proptest::prop_assert!(replay.marks.len() as u64 <= all.len() as u64 - acked);
            }
            drop(replay);
            proptest::prop_assert_eq!(memory.used(), 0);
        }
    }
}
