//! Session resume over real sockets (`docs/PROTOCOL.md`, "session, resume, resumed
//! and ack").
//!
//! The offer: a resumable service's login is answered after a `session` frame; from
//! then on the server numbers its responses and pushes, keeps them until the client
//! acknowledges them (an ack of more than was sent is a protocol error), and
//! acknowledges the client's requests and notifies after 32 of them or a second after
//! the oldest. A service that does not opt in, or a window of 0, offers nothing.
//!
//! The resume, through a proxy that cuts, half-opens and stalls connections: a
//! session whose connection is lost waits for its client, which comes back on a new
//! connection with nothing lost and nothing run twice, and no hook runs; a half-open
//! old connection is replaced at once; a session nobody resumes ends once, at the
//! window's end or when its replay overflows; wrong tokens, counts beyond what was
//! sent and resumes after the first frame are refused. A client that ends its
//! session on purpose before closing is not waited for.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use gatehouse::protocol::ROUTE_END_SESSION;
use gatehouse::{ConnId, DisconnectReason, KickReason, Message, Status};
use support::counter::{
    push_numbers, start, start_with_handle, ECHO, INCREMENT, LOGIN, NOTE, PUSH,
};
use support::proxy::Proxy;
use support::{at_deadline, eventually, keep_the_clock_stepping, test_config, Client};
use tokio::time::Instant;

fn request(id: u32, route: u16, payload: &'static [u8]) -> Message {
    Message::Request {
        id,
        route,
        payload: Bytes::from_static(payload),
    }
}

/// Logs in and returns the frames up to and including the login's response.
async fn log_in(client: &mut Client) -> Vec<Message> {
    client.send(&request(1, LOGIN, b"ada")).await;
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await.expect("an answer to the login");
        let done = matches!(frame, Message::Response { id: 1, .. });
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

#[tokio::test]
async fn a_resumable_login_gets_its_session_before_its_answer_and_acks_count_the_numbered_frames() {
    let server = start::<true>(test_config()).await;
    let mut client = server.connect().await;
    let frames = log_in(&mut client).await;
    let [Message::Session { window_ms, .. }, Message::Response { status, .. }] = &frames[..] else {
        panic!("a session, then the login's answer: {frames:?}");
    };
    assert_eq!(*window_ms, 30_000);
    assert_eq!(*status, Status::OK);

    // 32 of the client's numbered frames (requests and notifies) since the login:
    // the server acknowledges them at once, among the 31 answers.
    let mut batch = Vec::new();
    for id in 0..31 {
        batch.extend_from_slice(&request(100 + id, ECHO, b"x").to_frame());
    }
    batch.extend_from_slice(
        &Message::Notify {
            route: NOTE,
            payload: Bytes::new(),
        }
        .to_frame(),
    );
    client.send_raw(&batch).await;
    let (mut answers, mut acks) = (0, Vec::new());
    while answers < 31 || acks.is_empty() {
        match client.recv().await.expect("answers and an ack") {
            Message::Response { .. } => answers += 1,
            Message::Ack { count } => acks.push(count),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(acks, [32]);

    // The client has the login's answer and 31 echoes: 32 frames. An ack of them is
    // taken; one of more than was sent closes the connection.
    client.send(&Message::Ack { count: 32 }).await;
    let (status, body) = client.request(ECHO, "still here").await;
    assert_eq!((status, &body[..]), (Status::OK, &b"still here"[..]));
    client.send(&Message::Ack { count: 1_000 }).await;
    assert_eq!(client.expect_kick().await, KickReason::PROTOCOL_ERROR);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn frames_sent_behind_a_login_that_waits_are_numbered_after_it_as_the_client_numbers_them() {
    let server = start::<true>(test_config()).await;
    let mut client = server.connect().await;
    // The login and 32 more at once: the server holds some behind the waiting login
    // (up to 16) and reads the rest after; all 32 are numbered after the login.
    let mut batch = request(1, LOGIN, b"ada").to_frame().to_vec();
    for id in 0..32 {
        batch.extend_from_slice(&request(100 + id, ECHO, b"x").to_frame());
    }
    client.send_raw(&batch).await;
    let mut frames = Vec::new();
    while frames
        .iter()
        .filter(|f| matches!(f, Message::Response { .. }))
        .count()
        < 33
        || !frames.iter().any(|f| matches!(f, Message::Ack { .. }))
    {
        frames.push(client.recv().await.expect("answers, a session and an ack"));
    }
    assert!(matches!(frames[0], Message::Session { .. }), "{frames:?}");
    assert!(
        matches!(frames[1], Message::Response { id: 1, .. }),
        "{frames:?}"
    );
    let acks: Vec<&Message> = frames
        .iter()
        .filter(|f| matches!(f, Message::Ack { .. }))
        .collect();
    assert_eq!(acks, [&Message::Ack { count: 32 }]);
    server.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lone_request_is_acknowledged_a_second_later_and_an_idle_session_sends_nothing() {
    keep_the_clock_stepping();
    let server = start::<true>(test_config()).await;
    let mut client = server.connect().await;
    log_in(&mut client).await;
    let sent = Instant::now();
    client.send(&request(7, ECHO, b"one")).await;
    assert!(matches!(
        client.recv().await,
        Some(Message::Response { id: 7, .. })
    ));
    // Not at once (one frame is not 32): a second after it arrived.
    assert_eq!(client.recv().await, Some(Message::Ack { count: 1 }));
    assert!(
        at_deadline(sent.elapsed(), Duration::from_secs(1)),
        "{:?}",
        sent.elapsed()
    );
    // Nothing is owed now: for as long as the idle timeout allows, nothing comes.
    let listening = client.recv_within(Duration::from_secs(120));
    let quiet = tokio::time::timeout(Duration::from_secs(50), listening).await;
    assert!(quiet.is_err(), "an idle session sends nothing: {quiet:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_game_that_does_not_resume_or_a_window_of_zero_offers_no_session() {
    let server = start::<false>(test_config()).await;
    let mut client = server.connect().await;
    assert!(matches!(
        &log_in(&mut client).await[..],
        [Message::Response { .. }]
    ));
    server.shutdown().await.unwrap();

    let mut config = test_config();
    config.resume.window = Duration::ZERO;
    let server = start::<true>(config).await;
    let mut client = server.connect().await;
    assert!(matches!(
        &log_in(&mut client).await[..],
        [Message::Response { .. }]
    ));
    server.shutdown().await.unwrap();
}

/// A client that resumes: it counts the server's numbered frames (responses and
/// pushes) and keeps every numbered frame it sent, to send again those the server
/// lacks after a resume (a real client forgets what was acknowledged; a test keeps
/// everything).
struct Resumer {
    client: Client,
    id: u64,
    token: [u8; 32],
    /// The server's numbered frames received.
    received: u64,
    /// The numbered frames sent, in order (frame n at n - 1).
    sent: Vec<Message>,
    /// The connection id the login answered.
    conn: ConnId,
}

impl Resumer {
    /// Connects to `addr` and logs in; the session frame must come first.
    async fn log_in(addr: std::net::SocketAddr) -> Resumer {
        let mut client = Client::connect(addr).await;
        let frames = log_in(&mut client).await;
        let [Message::Session { id, token, .. }, Message::Response { payload, .. }] = &frames[..]
        else {
            panic!("a session, then the login's answer: {frames:?}");
        };
        let conn = ConnId(u64::from_be_bytes(payload[..8].try_into().unwrap()));
        Resumer {
            client,
            id: *id,
            token: *token,
            // The login's answer is the server's frame 1.
            received: 1,
            sent: Vec::new(),
            conn,
        }
    }

    /// Sends a numbered frame (a request or notify), keeping it.
    async fn send(&mut self, message: Message) {
        self.client.send(&message).await;
        self.sent.push(message);
    }

    /// The next response or push, `None` once the connection is gone. Sessions
    /// renew the token; acks are taken note of and skipped.
    async fn next(&mut self) -> Option<Message> {
        loop {
            match self.client.recv().await? {
                Message::Session { id, token, .. } => {
                    assert_eq!(id, self.id, "a resumed session keeps its id");
                    self.token = token;
                }
                Message::Ack { .. } => {}
                numbered @ (Message::Response { .. } | Message::Push { .. }) => {
                    self.received += 1;
                    return Some(numbered);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The resume a new connection opens with.
    fn resume_frame(&self) -> Message {
        Message::Resume {
            id: self.id,
            received: self.received,
            token: self.token,
        }
    }

    /// Resumes on a new connection to `addr`: expects `resumed`, then sends again
    /// what the server did not receive.
    async fn resume(&mut self, addr: std::net::SocketAddr) {
        self.client = Client::connect(addr).await;
        self.client.send(&self.resume_frame()).await;
        let received = match self.client.recv().await {
            Some(Message::Resumed { received }) => received,
            other => panic!("expected resumed, got {other:?}"),
        };
        let again = usize::try_from(received).unwrap();
        assert!(
            again <= self.sent.len(),
            "the server received {received} of {}",
            self.sent.len()
        );
        let resend: Vec<Message> = self.sent[again..].to_vec();
        for message in &resend {
            self.client.send(message).await;
        }
    }
}

/// The pushes (their numbers) and the counter's answers (id, count) a client got.
#[derive(Default)]
struct Got {
    pushes: Vec<u32>,
    counts: Vec<(u32, u64)>,
}

impl Got {
    fn take(&mut self, frame: Message) {
        match frame {
            Message::Push {
                route: PUSH,
                payload,
            } => self
                .pushes
                .push(u32::from_be_bytes(payload[..].try_into().unwrap())),
            Message::Response {
                id,
                status: Status::OK,
                payload,
            } => self
                .counts
                .push((id, u64::from_be_bytes(payload[..].try_into().unwrap()))),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn increment(id: u32) -> Message {
    Message::Request {
        id,
        route: INCREMENT,
        payload: Bytes::new(),
    }
}

/// The kick a connection that opens with `frame` gets, with its text.
async fn kicked_for(addr: std::net::SocketAddr, frame: &Message) -> (KickReason, String) {
    let mut client = Client::connect(addr).await;
    client.send(frame).await;
    loop {
        match client.recv().await {
            Some(Message::Kick { reason, text }) => return (reason, text),
            Some(_) => {}
            None => panic!("closed without a kick"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_during_pushes_and_pipelined_increments_loses_nothing_runs_nothing_twice_and_no_hook()
{
    let (server, handle) = start_with_handle::<true>(test_config()).await;
    let proxy = Proxy::start(server.addr).await;
    let mut player = Resumer::log_in(proxy.addr).await;
    let conn = player.conn;
    let pushing = push_numbers(handle, conn, 200);
    for id in 0..50 {
        player.send(increment(id)).await;
    }
    let mut got = Got::default();
    // Some of it, then the network goes.
    for _ in 0..40 {
        got.take(player.next().await.expect("frames before the cut"));
    }
    proxy.cut();
    while let Some(frame) = player.next().await {
        got.take(frame); // what was on its way before the cut
    }
    eventually("the server sees the connection lost", || {
        (server.stats.snapshot().sessions_detached == 1).then_some(())
    })
    .await;
    player.resume(proxy.addr).await;
    while got.pushes.len() < 200 || got.counts.len() < 50 {
        got.take(player.next().await.expect("everything, after the resume"));
    }
    pushing.await.unwrap();
    assert_eq!(
        got.pushes,
        (0..200).collect::<Vec<_>>(),
        "every push once, in order"
    );
    let ids: Vec<u32> = got.counts.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (0..50).collect::<Vec<_>>(),
        "every answer once, in order"
    );
    assert_eq!(got.counts.last().unwrap().1, 50, "each increment ran once");
    assert_eq!(server.stats.snapshot().sessions_resumed, 1);
    assert!(
        server.record.hooks().is_empty(),
        "no hook ran: {:?}",
        server.record.hooks()
    );
    let moves = server.record.moves.lock().unwrap().clone();
    assert_eq!(
        moves,
        [(conn, "detached"), (conn, "resumed")],
        "the game may tell"
    );

    // The session goes on over the new connection, and resumes again.
    player.send(increment(50)).await;
    assert!(matches!(
        player.next().await,
        Some(Message::Response { id: 50, .. })
    ));
    proxy.cut();
    while player.next().await.is_some() {}
    eventually("lost again", || {
        (server.stats.snapshot().sessions_detached == 2).then_some(())
    })
    .await;
    player.resume(proxy.addr).await;
    player.send(increment(51)).await;
    let Some(Message::Response {
        id: 51, payload, ..
    }) = player.next().await
    else {
        panic!("the counter's answer");
    };
    assert_eq!(payload[..], 52u64.to_be_bytes());
    // Gone for good: the session waits, and the shutdown ends it.
    drop(player);
    let record = server.record.clone();
    server.shutdown().await.unwrap();
    let hooks = record.hooks();
    assert_eq!(
        hooks,
        [(conn, DisconnectReason::Shutdown)],
        "one hook, at the end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_connection_is_replaced_at_once_by_the_resume() {
    let server = start::<true>(test_config()).await;
    let proxy = Proxy::start(server.addr).await;
    let mut player = Resumer::log_in(proxy.addr).await;
    player.send(increment(1)).await;
    assert!(player.next().await.is_some());
    // The client's side is gone; the server's is open and hears nothing (idle
    // timeout: 60 s, far beyond this test's patience).
    proxy.half_open().await;
    while player.next().await.is_some() {}
    player.resume(proxy.addr).await;
    player.send(increment(2)).await;
    let Some(Message::Response { id: 2, payload, .. }) = player.next().await else {
        panic!("the counter's answer");
    };
    assert_eq!(payload[..], 2u64.to_be_bytes());
    let stats = server.stats.snapshot();
    assert_eq!((stats.sessions_detached, stats.sessions_resumed), (0, 1));
    let moves = server.record.moves.lock().unwrap().clone();
    assert_eq!(moves, [(player.conn, "resumed")], "never known lost");
    assert!(server.record.hooks().is_empty());
    drop(player);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_nobody_resumes_ends_once_at_the_window_and_a_late_resume_is_expired() {
    let mut config = test_config();
    config.resume.window = Duration::from_millis(300);
    let server = start::<true>(config).await;
    let proxy = Proxy::start(server.addr).await;
    let mut player = Resumer::log_in(proxy.addr).await;
    proxy.cut();
    while player.next().await.is_some() {}
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks, [(player.conn, DisconnectReason::PeerClosed)]);
    let (reason, text) = kicked_for(proxy.addr, &player.resume_frame()).await;
    assert_eq!(reason, KickReason::RESUME_FAILED);
    assert!(text.starts_with("expired"), "{text}");
    assert_eq!(server.record.hooks().len(), 1, "the hook ran once");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_overflows_while_detached_ends_the_session_a_resume_is_gap_and_a_login_works()
{
    let mut config = test_config();
    config.resume.buffer_bytes = 1024;
    let (server, handle) = start_with_handle::<true>(config).await;
    let proxy = Proxy::start(server.addr).await;
    let mut player = Resumer::log_in(proxy.addr).await;
    proxy.cut();
    while player.next().await.is_some() {}
    eventually("the server sees the connection lost", || {
        (server.stats.snapshot().sessions_detached == 1).then_some(())
    })
    .await;
    // More than the replay keeps, sent while nobody is there.
    for _ in 0..20 {
        handle
            .push_to(player.conn, PUSH, vec![0u8; 100])
            .await
            .unwrap();
    }
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks, [(player.conn, DisconnectReason::PeerClosed)]);
    let (reason, text) = kicked_for(proxy.addr, &player.resume_frame()).await;
    assert_eq!(reason, KickReason::RESUME_FAILED);
    assert!(text.starts_with("gap"), "{text}");
    // The client logs in again, as a new session.
    let again = Resumer::log_in(proxy.addr).await;
    assert_ne!(again.id, player.id);
    drop(again);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_unknown_ids_counts_beyond_what_was_sent_and_late_resumes_are_refused() {
    let server = start::<true>(test_config()).await;
    let proxy = Proxy::start(server.addr).await;
    let mut player = Resumer::log_in(proxy.addr).await;
    proxy.cut();
    while player.next().await.is_some() {}

    let mut wrong = player.resume_frame();
    if let Message::Resume { token, .. } = &mut wrong {
        token[0] ^= 1;
    }
    let (reason, text) = kicked_for(proxy.addr, &wrong).await;
    assert_eq!(reason, KickReason::RESUME_FAILED);
    assert!(text.starts_with("unknown"), "{text}");
    let unknown = Message::Resume {
        id: player.id.wrapping_add(1),
        received: 0,
        token: player.token,
    };
    let (reason, text) = kicked_for(proxy.addr, &unknown).await;
    assert_eq!(reason, KickReason::RESUME_FAILED);
    assert!(text.starts_with("unknown"), "{text}");
    // The server sent the login's answer only: a client claiming two is refused,
    // and the session goes on waiting.
    let beyond = Message::Resume {
        id: player.id,
        received: 2,
        token: player.token,
    };
    let (reason, _) = kicked_for(proxy.addr, &beyond).await;
    assert_eq!(reason, KickReason::PROTOCOL_ERROR);

    // None of that hurt the session: its client resumes it.
    player.resume(proxy.addr).await;
    player.send(increment(1)).await;
    assert!(matches!(
        player.next().await,
        Some(Message::Response { id: 1, .. })
    ));
    // A resume after the first frame is a protocol error.
    player.client.send(&player.resume_frame()).await;
    assert_eq!(
        player.client.expect_kick().await,
        KickReason::PROTOCOL_ERROR
    );
    assert!(server.record.wait_hooks(1).await.len() == 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ends_its_session_on_purpose_is_not_waited_for_and_cannot_resume_it() {
    let mut config = test_config();
    // Nobody waits this long: a hook that runs is the leave's doing.
    config.resume.window = Duration::from_secs(3600);
    let server = start::<true>(config).await;
    let mut player = Resumer::log_in(server.addr).await;
    player.send(request(2, ROUTE_END_SESSION, b"")).await;
    assert!(matches!(
        player.next().await,
        Some(Message::Response {
            id: 2,
            status: Status::OK,
            ..
        })
    ));
    // From then on nothing can resume it, not even before the connection closes.
    let resume = player.resume_frame();
    let (reason, text) = kicked_for(server.addr, &resume).await;
    assert_eq!(reason, KickReason::RESUME_FAILED);
    assert!(text.starts_with("unknown"), "{text}");
    // The client closes as a lost connection would: the session ends with it.
    let conn = player.conn;
    drop(player);
    let hooks = server.record.wait_hooks(1).await;
    assert_eq!(hooks, [(conn, DisconnectReason::PeerClosed)]);
    assert_eq!(server.stats.snapshot().sessions_detached, 0);
    let (reason, text) = kicked_for(server.addr, &resume).await;
    assert_eq!(reason, KickReason::RESUME_FAILED);
    assert!(text.starts_with("unknown"), "{text}");
    server.shutdown().await.unwrap();
}
