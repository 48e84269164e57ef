//! What a resumable session keeps so that a lost connection can come back with
//! nothing lost and nothing run twice (`docs/PROTOCOL.md`, "session, resume, resumed
//! and ack"), without I/O: [`Replay`], the numbered frames this server sent that the
//! client has not acknowledged, and [`Inbound`], the client's numbered frames
//! received and when to acknowledge them. Both count from the session's offer and
//! run on across resumes.
//!
//! Everything is bounded: the replay keeps at most `resume.buffer_bytes` of
//! responses and pushes (and the frames between them, up to a quarter more),
//! charged to the server-wide memory budget; past either, the oldest frames go, and
//! a resume that needs them is refused `gap`. An acknowledgement is due only while something
//! is unacknowledged, so an idle session arms no timer.
//!
//! The connection core holds them for a session offered a resume while something
//! is unacknowledged or its connection is lost (they stay with the session's task
//! then and serve the next connection); a quiet session keeps only its counts, and
//! they are made again from those (`SessionLog` in `core.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use gatehouse_protocol::envelope::kind;
use gatehouse_protocol::HEADER_LEN;

use crate::limits::MemoryBudget;

/// An acknowledgement is sent once this many numbered frames are unacknowledged…
pub(crate) const ACK_EVERY_FRAMES: u64 = 32;
/// …or this long after the oldest unacknowledged one arrived, whichever is first.
pub(crate) const ACK_WITHIN: Duration = Duration::from_secs(1);

/// A replay emptied by an acknowledgement lets its buffer go unless it has grown past
/// this (a busy session's, which it would grow again at once).
const KEEP_ABOVE: usize = 256;

/// The memory budget is charged in steps of this many bytes (a shared atomic per
/// step, not per frame), and refunded once a step and more is unused.
const CHARGE_STEP: usize = 4096;

/// The numbered frames (responses and pushes) sent and not acknowledged, numbered
/// from 1 at the session's offer.
///
/// It keeps the connection's output as the transport wrote it: `own` is a copy of
/// the written byte stream from a frame boundary on, made once per write (not per
/// frame: a pipelined batch of answers costs one copy), plus what was queued and not
/// written when the connection was lost. Frames are told apart by their own headers,
/// and numbered ones by their kind, only when an acknowledgement or a resume needs
/// them; the frames in between that are not numbered (pongs, acks, `session`) ride
/// along until then, or until the kept bytes pass a quarter over the limit (the
/// limit is on responses and pushes).
#[derive(Debug)]
pub(crate) struct Replay {
    /// Numbered frames queued.
    sent: u64,
    /// The number of the first numbered frame at `own`'s front or after it: the
    /// frames before it were acknowledged or let go.
    first: u64,
    /// The written stream, from a frame boundary: every numbered frame from `first`
    /// on that was written, and the frames around them.
    own: BytesMut,
    /// Bytes of the stream still to be left out: those queued before the offer, or
    /// the rest of a frame let go while it was being written.
    skip: usize,
    /// Bytes charged to `memory`, in whole steps: `own`'s, but for the first bytes
    /// of a frame being written when the budget had no room for more.
    charged: usize,
    step: usize,
    /// `resume.buffer_bytes`.
    limit: usize,
    memory: Arc<MemoryBudget>,
    /// Passes over everything kept, counted for the tests.
    #[cfg(test)]
    compactions: usize,
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

/// Whether a frame of body length `len` whose first body byte is `kind` is numbered:
/// a response or a push (an empty frame has no kind).
fn is_numbered(len: usize, kind: u8) -> bool {
    len > 0 && matches!(kind, kind::RESPONSE | kind::PUSH)
}

/// A whole frame in the stream: where it ends, and whether it is numbered.
struct Whole {
    end: usize,
    numbered: bool,
}

impl Replay {
    /// An empty replay keeping at most `limit` bytes, charged to `memory`; the first
    /// `skip` bytes written are not the session's (queued before its offer).
    pub(crate) fn new(limit: usize, memory: Arc<MemoryBudget>, skip: usize) -> Replay {
        Replay::charging_in_steps(limit, memory, CHARGE_STEP, skip)
    }

    /// As [`Replay::new`], for a session that sent `sent` numbered frames before, all
    /// of them acknowledged (an idle session's that is sending again).
    pub(crate) fn continuing(
        sent: u64,
        limit: usize,
        memory: Arc<MemoryBudget>,
        skip: usize,
    ) -> Replay {
        let mut replay = Replay::new(limit, memory, skip);
        replay.sent = sent;
        replay.first = sent + 1;
        replay
    }

    /// As [`Replay::new`], charging `memory` in steps of `step` bytes.
    fn charging_in_steps(
        limit: usize,
        memory: Arc<MemoryBudget>,
        step: usize,
        skip: usize,
    ) -> Replay {
        Replay {
            sent: 0,
            first: 1,
            own: BytesMut::new(),
            skip,
            charged: 0,
            step: step.max(1),
            limit,
            memory,
            #[cfg(test)]
            compactions: 0,
        }
    }

    /// Numbered frames sent.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes kept.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.own.len()
    }

    /// Whether it keeps nothing and holds no buffer, and every numbered frame was
    /// acknowledged: then [`Replay::continuing`] from [`Replay::sent`] is the same.
    pub(crate) fn is_quiet(&self) -> bool {
        self.first > self.sent && self.own.capacity() == 0
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

    /// A numbered frame (a response or a push) was queued for the transport.
    #[inline(always)]
    pub(crate) fn numbered_queued(&mut self) {
        self.sent += 1;
    }

    /// The transport wrote `bytes` of the output (or they are kept for a connection
    /// to come): kept, as far as the limit and the memory budget allow. The oldest
    /// frames go to make room (a frame too large for the limit is not kept at all);
    /// returns false if a numbered frame not acknowledged went: a resume from before
    /// it is now a gap.
    #[inline]
    pub(crate) fn written(&mut self, mut bytes: &[u8]) -> bool {
        if self.skip > 0 {
            let n = self.skip.min(bytes.len());
            self.skip -= n;
            bytes = &bytes[n..];
        }
        let total = self.own.len() + bytes.len();
        if total <= self.ceiling() && total <= self.charged && self.first <= self.sent {
            self.own.extend_from_slice(bytes); // the usual case: room, and charged
            return true;
        }
        self.own.extend_from_slice(bytes);
        if self.first > self.sent {
            // Every numbered frame is acknowledged: these are pongs, acks and the
            // like, needed by no resume (an idle session keeps none of them).
            self.drop_whole_frames();
        }
        let mut whole = true;
        if self.own.len() > self.ceiling() {
            whole = self.trim(self.limit);
        }
        if !self.charge_for(self.own.len()) {
            whole &= self.trim(0);
        }
        whole
    }

    /// What the kept bytes may reach before the frames that are not numbered are
    /// taken out and the oldest numbered ones let go down to the limit: a quarter
    /// more, so that taking them out (a pass over everything kept) happens once per
    /// quarter of the limit written at most, whatever a client does.
    fn ceiling(&self) -> usize {
        self.limit + self.limit / 4
    }

    /// [`Replay::written`] for each of `parts`, in order: false if any let a
    /// numbered frame go.
    pub(crate) fn written_all<'a>(&mut self, parts: impl IntoIterator<Item = &'a [u8]>) -> bool {
        parts
            .into_iter()
            .fold(true, |whole, part| self.written(part) & whole)
    }

    /// Lets every whole frame kept go (none of them is numbered and unacknowledged).
    fn drop_whole_frames(&mut self) {
        let mut at = 0;
        while let Some(frame) = self.frame_at(at) {
            at = frame.end;
        }
        self.own.advance(at);
        self.refund_unused();
        if self.own.is_empty() && self.own.capacity() <= KEEP_ABOVE {
            // A quiet session keeps no buffer; a busy one keeps its grown one.
            self.own = BytesMut::new();
        }
    }

    /// The whole frame at `at` in `own`, if it is all there.
    fn frame_at(&self, at: usize) -> Option<Whole> {
        let header = self.own.get(at..at + HEADER_LEN)?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let end = at + HEADER_LEN + len;
        if end > self.own.len() {
            return None;
        }
        // An empty frame has no kind byte (and may end the stream).
        let numbered = len > 0 && is_numbered(len, self.own[at + HEADER_LEN]);
        Some(Whole { end, numbered })
    }

    /// Takes out the frames that are not numbered, then lets the oldest frames go
    /// until at most `keep` bytes are kept (but for the first bytes of a frame being
    /// written, too few to tell what it is). A frame partly written goes whole: the
    /// rest of it will be skipped. False if a numbered frame went.
    fn trim(&mut self, keep: usize) -> bool {
        if self.own.len() > keep {
            self.compact();
        }
        let mut at = 0;
        let mut whole = true;
        while self.own.len() - at > keep {
            if let Some(frame) = self.frame_at(at) {
                at = frame.end;
                if frame.numbered {
                    self.first += 1;
                    whole = false;
                }
                continue;
            }
            // Part of a frame: its header and kind tell its length and whether it
            // is numbered; the rest of it is yet to be written.
            let Some(head) = self.own.get(at..at + HEADER_LEN + 1) else {
                break;
            };
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            if is_numbered(len, head[HEADER_LEN]) {
                self.first += 1;
                whole = false;
            }
            self.skip = at + HEADER_LEN + len - self.own.len();
            at = self.own.len();
        }
        self.own.advance(at);
        self.refund_unused();
        whole
    }

    /// Takes out the whole frames that are not numbered (pongs, acks and the like):
    /// the limit is on responses and pushes. In place; only past the ceiling.
    #[cold]
    fn compact(&mut self) {
        #[cfg(test)]
        {
            self.compactions += 1;
        }
        let (mut at, mut kept) = (0, 0);
        while let Some(frame) = self.frame_at(at) {
            if frame.numbered {
                self.own.copy_within(at..frame.end, kept);
                kept += frame.end - at;
            }
            at = frame.end;
        }
        // A frame being written stays, after the rest.
        let partial = self.own.len() - at;
        self.own.copy_within(at.., kept);
        self.own.truncate(kept + partial);
    }

    /// Charges the memory budget for `total` bytes kept, in whole steps.
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
        let needed = self.own.len().div_ceil(self.step) * self.step;
        if self.charged > needed + self.step {
            self.memory.refund(self.charged - needed);
            self.charged = needed;
        }
    }

    /// The client has the first `count` numbered frames: they need not be kept.
    pub(crate) fn ack(&mut self, count: u64) -> Result<(), AckBeyondSent> {
        if count > self.sent {
            return Err(AckBeyondSent {
                count,
                sent: self.sent,
            });
        }
        let mut at = 0;
        // Frames a client acknowledges were written whole: the walk stops short only
        // for a client that acknowledges what it was not sent yet.
        while self.first <= count {
            let Some(frame) = self.frame_at(at) else {
                break;
            };
            at = frame.end;
            self.first += u64::from(frame.numbered);
        }
        self.own.advance(at);
        if self.first > self.sent {
            self.drop_whole_frames(); // what came after the last numbered frame
        } else {
            self.refund_unused();
        }
        Ok(())
    }

    /// Whether a resume by a client that received `received` frames can be served.
    pub(crate) fn check(&self, received: u64) -> Result<(), ReplayRefusal> {
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
        Ok(())
    }

    /// A new connection resumes the session: the numbered frames a client that
    /// received the first `received` lacks, in order, to be queued again. From then
    /// on the replay starts over at them. Refused (and nothing changes) if the
    /// client claims more than was sent, or lacks frames that were let go. Everything
    /// queued must have been written or kept ([`Replay::written`]) first.
    pub(crate) fn resume_from(&mut self, received: u64) -> Result<Vec<Bytes>, ReplayRefusal> {
        self.check(received)?;
        let frames = self
            .kept()
            .filter(|&(number, _)| number > received)
            .map(|(_, frame)| Bytes::copy_from_slice(frame))
            .collect();
        self.own.clear();
        self.skip = 0;
        self.first = received + 1;
        self.refund_unused();
        Ok(frames)
    }

    /// The numbered frames kept (whole), with their numbers, in order.
    pub(crate) fn kept(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let (mut at, mut number) = (0, self.first);
        std::iter::from_fn(move || loop {
            let frame = self.frame_at(at)?;
            let start = std::mem::replace(&mut at, frame.end);
            if frame.numbered {
                number += 1;
                return Some((number - 1, &self.own[start..frame.end]));
            }
        })
    }

    fn clear(&mut self) {
        self.memory.refund(self.charged);
        self.charged = 0;
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

    /// Counts on from `received` frames, all of them acknowledged (an idle
    /// session's that is receiving again).
    pub(crate) fn continuing(received: u64) -> Inbound {
        Inbound {
            received,
            acked: received,
            due: None,
        }
    }

    /// Numbered frames received.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Whether nothing is owed: then [`Inbound::continuing`] from
    /// [`Inbound::received`] is the same.
    pub(crate) fn is_quiet(&self) -> bool {
        self.acked == self.received && self.due.is_none()
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

    /// A numbered frame (a push on route `n`) of `len` payload bytes, encoded.
    fn push(n: u8, len: usize) -> Vec<u8> {
        let body_len = 3 + len;
        let mut frame = (body_len as u32).to_be_bytes().to_vec();
        frame.push(kind::PUSH);
        frame.extend_from_slice(&[0, n]);
        frame.extend(std::iter::repeat_n(n, len));
        frame
    }

    /// A frame that is not numbered (a pong), encoded.
    fn pong() -> Vec<u8> {
        vec![0, 0, 0, 1, kind::PONG]
    }

    /// A replay charging the budget byte by byte, so that tests can count.
    fn replay(limit: usize) -> (Replay, Arc<MemoryBudget>) {
        let memory = Arc::new(MemoryBudget::new(1 << 20));
        (
            Replay::charging_in_steps(limit, memory.clone(), 1, 0),
            memory,
        )
    }

    /// Queues and writes push `n` of `len` bytes.
    fn send(replay: &mut Replay, n: u8, len: usize) -> bool {
        replay.numbered_queued();
        replay.written(&push(n, len))
    }

    /// The routes of replayed frames: which pushes they are.
    fn numbers(frames: Vec<Bytes>) -> Vec<u8> {
        frames.iter().map(|f| f[HEADER_LEN + 2]).collect()
    }

    #[test]
    fn a_resume_gets_every_numbered_frame_after_what_the_client_received_in_order() {
        let (mut replay, _) = replay(1000);
        for n in 1..=5 {
            assert!(send(&mut replay, n, 10));
            assert!(replay.written(&pong()), "frames not numbered ride along");
        }
        assert_eq!(replay.sent(), 5);
        assert_eq!(
            replay.resume_from(6).err(),
            Some(ReplayRefusal::BeyondSent {
                received: 6,
                sent: 5
            })
        );
        assert_eq!(numbers(replay.resume_from(2).unwrap()), [3, 4, 5]);
        // It starts over at them: as they are written again, a later resume finds them.
        for n in 3..=5 {
            assert!(replay.written(&push(n, 10)));
        }
        assert_eq!(numbers(replay.resume_from(3).unwrap()), [4, 5]);
        assert_eq!(replay.bytes(), 0);
    }

    #[test]
    fn frames_written_in_pieces_and_batches_and_kept_unwritten_are_told_apart() {
        let (mut replay, _) = replay(1000);
        let mut stream = Vec::new();
        for n in 1..=4 {
            replay.numbered_queued();
            stream.extend(push(n, 7));
            stream.extend(pong());
        }
        // Written in odd pieces: mid-header, mid-body, several frames at once.
        for piece in stream.chunks(6) {
            assert!(replay.written(piece));
        }
        replay.ack(1).unwrap();
        assert_eq!(numbers(replay.resume_from(1).unwrap()), [2, 3, 4]);
    }

    #[test]
    fn bytes_queued_before_the_offer_are_not_the_sessions() {
        let memory = Arc::new(MemoryBudget::new(1 << 20));
        let earlier = push(9, 3);
        let mut replay = Replay::charging_in_steps(1000, memory, 1, earlier.len());
        replay.numbered_queued();
        let mut stream = earlier.clone();
        stream.extend(push(1, 3));
        assert!(replay.written(&stream));
        assert_eq!(numbers(replay.resume_from(0).unwrap()), [1]);
    }

    #[test]
    fn acks_free_frames_and_their_memory_and_a_resume_from_before_them_is_a_gap() {
        let (mut replay, memory) = replay(1000);
        for n in 1..=4 {
            send(&mut replay, n, 10);
        }
        let one = push(1, 10).len();
        assert_eq!(memory.used(), 4 * one);
        replay.ack(3).unwrap();
        assert_eq!((replay.bytes(), memory.used()), (one, one));
        // Acks that come late or twice change nothing; one beyond what was sent is refused.
        replay.ack(1).unwrap();
        replay.ack(3).unwrap();
        assert_eq!(replay.bytes(), one);
        assert_eq!(replay.ack(5), Err(AckBeyondSent { count: 5, sent: 4 }));
        assert_eq!(
            replay.resume_from(2).err(),
            Some(ReplayRefusal::Gap {
                received: 2,
                first_kept: 4
            })
        );
        assert_eq!(numbers(replay.resume_from(3).unwrap()), [4]);
        replay.written(&push(4, 10));
        replay.ack(4).unwrap();
        assert_eq!(replay.bytes(), 0);
        assert!(memory.used() <= 1, "a step spare at most");
    }

    #[test]
    fn past_the_byte_limit_the_oldest_unacknowledged_frames_go_and_the_replay_says_so() {
        let one = push(1, 10).len();
        let (mut replay, memory) = replay(3 * one);
        for n in 1..=3 {
            assert!(send(&mut replay, n, 10));
        }
        assert!(!send(&mut replay, 4, 10), "frame 1 had to go");
        assert_eq!(replay.bytes(), 3 * one);
        assert!(memory.used() <= 3 * one + 1);
        assert!(!replay.serves(0));
        assert!(replay.serves(1));
        // A frame larger than the whole limit is not kept, nor is anything before it.
        assert!(!send(&mut replay, 5, 3 * one));
        assert_eq!(replay.bytes(), 0);
        assert!(matches!(
            replay.resume_from(4),
            Err(ReplayRefusal::Gap { .. })
        ));
        assert!(replay.resume_from(5).unwrap().is_empty());
    }

    #[test]
    fn a_frame_too_large_for_the_limit_goes_even_while_it_is_written_in_pieces() {
        let one = push(1, 10).len();
        let (mut replay, _) = replay(2 * one);
        assert!(send(&mut replay, 1, 10));
        replay.numbered_queued();
        let large = push(2, 5 * one);
        let (head, rest) = large.split_at(2 * one + 5);
        assert!(
            !replay.written(head),
            "frame 1 goes to make room, then frame 2 itself"
        );
        assert_eq!(replay.bytes(), 0);
        assert!(replay.written(rest), "the rest of frame 2 is skipped");
        assert!(send(&mut replay, 3, 10));
        assert!(!replay.serves(1));
        assert_eq!(numbers(replay.resume_from(2).unwrap()), [3]);
    }

    #[test]
    fn a_frame_the_memory_budget_refuses_is_not_kept_nor_are_those_before_it() {
        let one = push(1, 10).len();
        let memory = Arc::new(MemoryBudget::new(2 * one + 5));
        let mut replay = Replay::charging_in_steps(1000, memory.clone(), 1, 0);
        assert!(send(&mut replay, 1, 10));
        assert!(send(&mut replay, 2, 10));
        assert!(!send(&mut replay, 3, 10), "the budget is full");
        assert_eq!(memory.used(), 0, "no holes: everything before it went too");
        assert!(matches!(
            replay.resume_from(2),
            Err(ReplayRefusal::Gap { .. })
        ));
        assert!(send(&mut replay, 4, 10));
        assert_eq!(numbers(replay.resume_from(3).unwrap()), [4]);
    }

    #[test]
    fn a_quiet_session_keeps_no_buffer_once_everything_is_acknowledged() {
        let (mut replay, _) = replay(1000);
        send(&mut replay, 1, 10);
        replay.ack(1).unwrap();
        assert_eq!(replay.own.capacity(), 0);
    }

    #[test]
    fn frames_that_are_not_numbered_do_not_count_against_the_limit() {
        let one = push(1, 10).len();
        let (mut replay, _) = replay(3 * one);
        for n in 1..=3 {
            assert!(send(&mut replay, n, 10));
            assert!(
                replay.written(&pong()),
                "pongs make room for responses and pushes"
            );
        }
        assert_eq!(replay.bytes(), 3 * one);
        assert!(replay.serves(0));
        assert_eq!(numbers(replay.resume_from(0).unwrap()), [1, 2, 3]);
    }

    #[test]
    fn a_client_that_never_acknowledges_costs_a_pass_over_the_replay_per_quarter_of_it() {
        let limit = 100 * push(1, 10).len();
        let (mut replay, _) = replay(limit);
        let mut written = 0;
        for n in 0..10_000u32 {
            send(&mut replay, (n % 251) as u8, 10);
            replay.written(&pong());
            written += push(1, 10).len() + pong().len();
        }
        assert!(replay.bytes() <= limit + limit / 4);
        assert!(
            replay.compactions <= written / (limit / 4) + 1,
            "{} passes for {written} bytes",
            replay.compactions
        );
    }

    #[test]
    fn an_idle_session_keeps_none_of_its_pongs() {
        let (mut replay, memory) = replay(1000);
        send(&mut replay, 1, 10);
        replay.written(&pong());
        replay.ack(1).unwrap();
        assert_eq!(
            (replay.bytes(), memory.used()),
            (0, 0),
            "nor what followed the last"
        );
        for _ in 0..100 {
            assert!(replay.written(&pong()));
        }
        assert_eq!((replay.bytes(), memory.used()), (0, 0));
        // A pong written in pieces is kept only while it is partial.
        let pong = pong();
        replay.written(&pong[..2]);
        assert_eq!(replay.bytes(), 2);
        replay.written(&pong[2..]);
        assert_eq!((replay.bytes(), replay.own.capacity()), (0, 0));
    }

    #[test]
    fn dropping_a_replay_gives_its_memory_back() {
        let (mut replay, memory) = replay(1000);
        send(&mut replay, 1, 100);
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
        /// A numbered frame of about this many bytes queued, with a pong after it or not.
        Queue(usize, bool),
        /// The transport writes up to this many bytes of what is queued.
        Write(usize),
        Ack(u64),
        /// The connection is lost and a new one resumes, saying it received this many.
        Resume(u64),
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            (1usize..80, any::<bool>()).prop_map(|(len, pong)| Step::Queue(len, pong)),
            (0usize..200).prop_map(Step::Write),
            (0u64..40).prop_map(Step::Ack),
            any::<u64>().prop_map(Step::Ack),
            (0u64..40).prop_map(Step::Resume),
            any::<u64>().prop_map(Step::Resume),
        ]
    }

    proptest::proptest! {
        #![proptest_config(crate::fuzzing::proptest_config(500))]

        /// Against a model that keeps every frame: whatever the peer says and however
        /// the output is written, the replay stays within its limit and the budget,
        /// charges what it holds, and a resume is served with exactly the numbered
        /// frames after `received` or refused for the right reason.
        #[test]
        fn the_replay_agrees_with_a_model_that_keeps_everything(
            limit in 1usize..300,
            budget in 1usize..400,
            charge_step in proptest::sample::select(vec![1usize, 16, 64]),
            steps in proptest::collection::vec(step(), 0..60),
        ) {
            let memory = Arc::new(MemoryBudget::new(budget));
            let mut replay = Replay::charging_in_steps(limit, memory.clone(), charge_step, 0);
            let mut all: Vec<Vec<u8>> = Vec::new(); // every numbered frame, by number
            let mut unwritten: Vec<u8> = Vec::new(); // queued, not yet written
            let mut acked = 0u64;
            // Room for the ceiling's worth, a frame's first bytes and the charge's steps.
            let roomy = budget >= limit + limit / 4 + HEADER_LEN + 2 * charge_step;
            for step in steps {
                match step {
                    Step::Queue(len, pong_after) => {
                        let frame = push((all.len() % 251) as u8, len);
                        all.push(frame.clone());
                        replay.numbered_queued();
                        unwritten.extend(frame);
                        if pong_after {
                            unwritten.extend(pong());
                        }
                    }
                    Step::Write(n) => {
                        let n = n.min(unwritten.len());
                        replay.written(&unwritten[..n]);
                        unwritten.drain(..n);
                    }
                    Step::Ack(count) => {
                        let sent = all.len() as u64;
                        proptest::prop_assert_eq!(replay.ack(count).is_err(), count > sent);
                        if count <= sent {
                            acked = acked.max(count);
                        }
                    }
                    Step::Resume(received) => {
                        // What was not written is kept for the next connection.
                        replay.written(&unwritten);
                        unwritten.clear();
                        match replay.resume_from(received) {
                            Ok(frames) => {
                                let got: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
                                let want: Vec<Vec<u8>> = all.iter().skip(received as usize).cloned().collect();
                                proptest::prop_assert_eq!(&got, &want);
                                // The client said it has them: as good as acknowledged.
                                acked = acked.max(received);
                                // Queued again on the new connection.
                                for frame in got {
                                    unwritten.extend(frame);
                                }
                            }
                            Err(ReplayRefusal::BeyondSent { .. }) => {
                                proptest::prop_assert!(received > all.len() as u64);
                            }
                            Err(ReplayRefusal::Gap { first_kept, .. }) => {
                                proptest::prop_assert!(received < all.len() as u64);
                                proptest::prop_assert!(received + 1 < first_kept);
                                // Only frames the client acknowledged, or past the limit
                                // (responses and pushes alone count), may be missing.
                                let lacked: usize =
                                    all.iter().skip(received as usize).map(Vec::len).sum();
                                proptest::prop_assert!(
                                    !roomy || received < acked || lacked > limit,
                                    "a gap for {} bytes lacked, within the limit", lacked
                                );
                            }
                        }
                    }
                }
                // Within the ceiling, but for the first bytes of a frame being written.
                proptest::prop_assert!(replay.bytes() <= replay.ceiling() + HEADER_LEN);
                proptest::prop_assert!(memory.used() <= budget);
                proptest::prop_assert_eq!(memory.used(), replay.charged);
                proptest::prop_assert_eq!(replay.sent(), all.len() as u64);
            }
            drop(replay);
            proptest::prop_assert_eq!(memory.used(), 0);
        }
    }
}
