//! Session resume, the client's side (`docs/PROTOCOL.md`, "session, resume, resumed
//! and ack"), without I/O: what the connection task counts and keeps so that a lost
//! connection can be resumed on a new one with nothing lost and nothing sent twice.
//!
//! Before the server offers a session, the frames sent since the oldest unanswered
//! request are kept (the login is among them): the response that follows the
//! `session` frame names the request that drew the line, and the requests and
//! notifies sent after it are the client's first numbered frames. From then on,
//! every request and notify is numbered and kept until the server acknowledges it;
//! responses and pushes are counted, and acknowledged after 32 or a second.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use gatehouse_protocol::{Message, Token};
use tokio::time::Instant;

use crate::ClientError;

/// An acknowledgement is sent once this many frames are unacknowledged…
const ACK_EVERY_FRAMES: u64 = 32;
/// …or this long after the oldest unacknowledged one arrived.
const ACK_WITHIN: Duration = Duration::from_secs(1);

/// A request's id (`None` for a notify) and its encoded body.
type Sent = (Option<u32>, Bytes);

/// What the connection task counts and keeps for a resume.
#[derive(Debug, Default)]
pub(crate) struct Numbering {
    /// Before the line is drawn: the frames sent since the oldest request still
    /// unanswered (trimmed as answers come, until a session is offered).
    log: VecDeque<Sent>,
    /// The `session` frame that came and whose line is not drawn yet.
    offered: Option<Offer>,
    live: Option<Live>,
}

/// A session frame's fields.
#[derive(Debug, Clone, Copy)]
struct Offer {
    id: u64,
    window: Duration,
    token: Token,
}

#[derive(Debug)]
struct Live {
    offer: Offer,
    /// The server's numbered frames received.
    received: u64,
    /// The count last acknowledged to the server.
    acked: u64,
    /// When an acknowledgement is due; `None` while everything is acknowledged.
    ack_due: Option<Instant>,
    /// The numbered frames sent and not acknowledged, oldest first.
    unacked: VecDeque<Bytes>,
    /// The number of `unacked[0]`.
    first: u64,
}

impl Numbering {
    /// A request (`Some(id)`) or notify was sent.
    pub(crate) fn sent(&mut self, id: Option<u32>, body: Bytes) {
        match &mut self.live {
            Some(live) => live.unacked.push_back(body),
            None => self.log.push_back((id, body)),
        }
    }

    /// A response to request `id` came at `now` (`pending`: whether a request is
    /// still unanswered).
    pub(crate) fn response(&mut self, id: u32, now: Instant, pending: impl Fn(u32) -> bool) {
        if let Some(offer) = self.offered.take() {
            // The line: this request; what was sent after it is numbered from 1.
            let after = self
                .log
                .iter()
                .position(|(sent, _)| *sent == Some(id))
                .map_or(self.log.len(), |at| at + 1);
            let unacked: VecDeque<Bytes> = self.log.drain(..).skip(after).map(|(_, b)| b).collect();
            self.live = Some(Live {
                offer,
                received: 0,
                acked: 0,
                ack_due: None,
                unacked,
                first: 1,
            });
        }
        match &mut self.live {
            Some(live) => live.numbered(now),
            None => {
                // Nothing before the oldest unanswered request can be the line.
                while self
                    .log
                    .front()
                    .is_some_and(|(sent, _)| sent.is_none_or(|id| !pending(id)))
                {
                    self.log.pop_front();
                }
            }
        }
    }

    /// A push came.
    pub(crate) fn push(&mut self, now: Instant) {
        if let Some(live) = &mut self.live {
            live.numbered(now);
        }
    }

    /// The server offered a session (at the login, or after a resume).
    pub(crate) fn session(&mut self, id: u64, window_ms: u32, token: Token) {
        let offer = Offer {
            id,
            window: Duration::from_millis(u64::from(window_ms)),
            token,
        };
        match &mut self.live {
            // After a resume: a fresh token.
            Some(live) => live.offer = offer,
            None => self.offered = Some(offer),
        }
    }

    /// The server acknowledged our first `count` numbered frames.
    pub(crate) fn ack(&mut self, count: u64) -> Result<(), ClientError> {
        let Some(live) = &mut self.live else {
            return Ok(());
        };
        let sent = live.first - 1 + live.unacked.len() as u64;
        if count > sent {
            return Err(ClientError::Protocol(format!(
                "the server acknowledged {count} frames of {sent} sent"
            )));
        }
        while live.first <= count && live.unacked.pop_front().is_some() {
            live.first += 1;
        }
        Ok(())
    }

    /// When an acknowledgement is due, if one is owed.
    pub(crate) fn ack_due(&self) -> Option<Instant> {
        self.live.as_ref().and_then(|l| l.ack_due)
    }

    /// The acknowledgement to send now, if one is owed.
    pub(crate) fn take_ack(&mut self) -> Option<Message> {
        let live = self.live.as_mut()?;
        live.ack_due = None;
        (live.received > live.acked).then(|| {
            live.acked = live.received;
            Message::Ack {
                count: live.received,
            }
        })
    }

    /// The `resume` a new connection opens with, and how long the server keeps
    /// the session; `None` without a session.
    pub(crate) fn resume(&self) -> Option<(Message, Duration)> {
        let live = self.live.as_ref()?;
        let resume = Message::Resume {
            id: live.offer.id,
            received: live.received,
            token: live.offer.token,
        };
        Some((resume, live.offer.window))
    }

    /// The server resumed the session, having received our first `received`
    /// numbered frames: what must be sent again, in order.
    pub(crate) fn resumed(&mut self, received: u64) -> Result<Vec<Bytes>, ClientError> {
        let Some(live) = &mut self.live else {
            return Err(ClientError::Protocol("resumed without a session".into()));
        };
        let sent = live.first - 1 + live.unacked.len() as u64;
        if received > sent || received + 1 < live.first {
            return Err(ClientError::Protocol(format!(
                "the server resumed at {received} of our frames; {sent} were sent, \
                 those before {} acknowledged",
                live.first
            )));
        }
        while live.first <= received && live.unacked.pop_front().is_some() {
            live.first += 1;
        }
        // What was acknowledged to the old connection may not have arrived.
        live.acked = live.acked.min(live.received);
        Ok(live.unacked.iter().cloned().collect())
    }
}

impl Live {
    /// One more of the server's numbered frames, received at `now`.
    fn numbered(&mut self, now: Instant) {
        self.received += 1;
        self.ack_due.get_or_insert(now + ACK_WITHIN);
        if self.received - self.acked >= ACK_EVERY_FRAMES {
            self.ack_due = Some(now); // at once
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn the_response_after_the_session_draws_the_line_and_frames_after_it_are_numbered() {
        let now = Instant::now();
        let mut n = Numbering::default();
        n.sent(Some(1), body(1)); // the login
        n.sent(Some(2), body(2)); // sent behind it: numbered 1
        n.sent(None, body(3)); // numbered 2
        n.session(7, 30_000, [1; 32]);
        n.response(1, now, |_| true);
        assert!(matches!(
            n.resume(),
            Some((
                Message::Resume {
                    id: 7,
                    received: 1,
                    ..
                },
                _
            ))
        ));
        assert!(n.ack(3).is_err(), "only two were sent");
        n.ack(1).unwrap();
        assert_eq!(n.resumed(1).unwrap(), [body(3)]);
        assert!(
            n.resumed(0).is_err(),
            "frame 1 was acknowledged, and let go"
        );
    }

    #[test]
    fn before_a_session_only_frames_behind_an_unanswered_request_are_kept() {
        let now = Instant::now();
        let mut n = Numbering::default();
        n.sent(Some(1), body(1));
        n.sent(None, body(2));
        n.sent(Some(3), body(3));
        n.response(1, now, |id| id == 3);
        assert_eq!(n.log.len(), 1, "{:?}", n.log);
        n.response(3, now, |_| false);
        assert!(n.log.is_empty());
        assert!(n.resume().is_none());
    }

    #[test]
    fn the_server_is_acked_after_32_frames_or_a_second() {
        let now = Instant::now();
        let mut n = Numbering::default();
        n.sent(Some(1), body(1));
        n.session(7, 30_000, [1; 32]);
        n.response(1, now, |_| true);
        assert_eq!(n.ack_due(), Some(now + ACK_WITHIN));
        for _ in 1..32 {
            n.push(now);
        }
        assert_eq!(n.ack_due(), Some(now));
        assert_eq!(n.take_ack(), Some(Message::Ack { count: 32 }));
        assert_eq!((n.ack_due(), n.take_ack()), (None, None));
    }
}
