//! Session resume's offer, over real sockets (`docs/PROTOCOL.md`, "session, resume,
//! resumed and ack"): a resumable service's login is answered after a `session`
//! frame; from then on the server numbers its responses and pushes, keeps them until
//! the client acknowledges them (an ack of more than was sent is a protocol error),
//! and acknowledges the client's requests and notifies after 32 of them or a second
//! after the oldest. A service that does not opt in, or a window of 0, offers
//! nothing. (Taking a session over from a new connection is not built yet: a resume
//! is refused `resume_failed`.)

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::{Config, Context, Disconnect, KickReason, Message, Reply, Service, Status};
use support::{at_deadline, keep_the_clock_stepping, test_config, Client, Record, TestServer};
use tokio::time::Instant;

/// Request: log in as the payload's name.
const LOGIN: u16 = 1;
/// Request: echo.
const ECHO: u16 = 2;
/// Notify: nothing.
const NOTE: u16 = 3;

/// A game that logs connections in; resumable when `RESUMABLE` is.
struct Game<const RESUMABLE: bool>;

impl<const RESUMABLE: bool> Service for Game<RESUMABLE> {
    type Session = ();
    type Message = ();
    const RESUMABLE: bool = RESUMABLE;

    async fn connect(&self, _ctx: &mut Context<'_, ()>) {}

    async fn request(
        &self,
        _session: &mut (),
        ctx: &mut Context<'_, ()>,
        route: u16,
        payload: Bytes,
    ) -> Reply {
        match route {
            LOGIN => {
                // A login waits (a password hash, a load): what the client sends
                // behind it is held meanwhile.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let name = String::from_utf8_lossy(&payload).into_owned();
                match ctx.logged_in(&name).await {
                    Ok(()) => Reply::ok("welcome"),
                    Err(e) => Reply::error(Status::UNAVAILABLE, e.to_string()),
                }
            }
            ECHO => Reply::ok(payload),
            _ => Reply::error(Status::UNKNOWN_ROUTE, "no such route"),
        }
    }

    async fn notify(
        &self,
        _session: &mut (),
        _ctx: &mut Context<'_, ()>,
        _route: u16,
        _payload: Bytes,
    ) -> Status {
        Status::OK
    }

    async fn disconnect(&self, _session: (), _info: Disconnect) {}
}

async fn start<const RESUMABLE: bool>(config: Config) -> TestServer {
    TestServer::start_service(config, Game::<RESUMABLE>, Arc::new(Record::default())).await
}

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

#[tokio::test]
async fn a_resume_is_refused_for_now_and_a_resume_after_the_first_frame_is_a_protocol_error() {
    let server = start::<true>(test_config()).await;
    let resume = Message::Resume {
        id: 1,
        received: 0,
        token: [0; 32],
    };
    let mut client = server.connect().await;
    client.send(&resume).await;
    assert_eq!(client.expect_kick().await, KickReason::RESUME_FAILED);

    let mut client = server.connect().await;
    log_in(&mut client).await;
    client.send(&resume).await;
    assert_eq!(client.expect_kick().await, KickReason::PROTOCOL_ERROR);
    server.shutdown().await.unwrap();
}
