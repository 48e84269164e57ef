//! The client resumes a session the server offered: through a proxy that cuts the
//! connection during pushes and pipelined requests, every push arrives once and in
//! order, every request is answered once and ran once, and the server ran no hook.
//! A refused resume ends the client with `resume_failed`.

#![allow(clippy::unwrap_used)]

#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

use gatehouse::{ConnId, KickReason};
use gatehouse_client::{Client, ClientConfig, ClientError, Pushes};
use support::counter::{push_numbers, start_with_handle, INCREMENT, LOGIN, PUSH};
use support::proxy::Proxy;
use support::{eventually, test_config, PATIENCE};

/// Logs in through `addr`; the connection id the server answers.
async fn log_in(addr: std::net::SocketAddr) -> (Client, Pushes, ConnId) {
    let (client, pushes) = Client::connect(addr, ClientConfig::default())
        .await
        .unwrap();
    let id = client.request(LOGIN, "ada").await.unwrap();
    let id = ConnId(u64::from_be_bytes(id[..8].try_into().unwrap()));
    (client, pushes, id)
}

/// The next push's number.
async fn next_number(pushes: &mut Pushes) -> u32 {
    let push = tokio::time::timeout(PATIENCE, pushes.next())
        .await
        .expect("a push in time")
        .expect("the client goes on");
    assert_eq!(push.route, PUSH);
    u32::from_be_bytes(push.payload[..].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_during_pushes_and_pipelined_increments_loses_nothing_and_runs_nothing_twice() {
    let (server, handle) = start_with_handle::<true>(test_config()).await;
    let proxy = Proxy::start(server.addr).await;
    let (client, mut pushes, conn) = log_in(proxy.addr).await;
    let pushing = push_numbers(handle, conn, 200);
    let increments: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request(INCREMENT, "").await })
        })
        .collect();
    for n in 0..10 {
        assert_eq!(next_number(&mut pushes).await, n);
    }
    proxy.cut();
    for n in 10..200 {
        assert_eq!(
            next_number(&mut pushes).await,
            n,
            "every push once, in order"
        );
    }
    let mut counts = Vec::new();
    for increment in increments {
        let count = increment.await.unwrap().expect("answered across the cut");
        counts.push(u64::from_be_bytes(count[..].try_into().unwrap()));
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<_>>(), "each ran once");
    pushing.await.unwrap();
    assert_eq!(client.resumes(), 1);
    assert_eq!(server.stats.snapshot().sessions_resumed, 1);
    assert!(server.record.hooks().is_empty(), "no hook ran");
    client.close();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_server_refuses_ends_the_client_with_resume_failed() {
    let mut config = test_config();
    config.resume.buffer_bytes = 1024;
    let (server, handle) = start_with_handle::<true>(config).await;
    let proxy = Proxy::start(server.addr).await;
    let (client, _pushes, conn) = log_in(proxy.addr).await;
    // The client is away (its connections stall), and more is sent to it than the
    // replay keeps: its resume is a gap.
    proxy.stall().await;
    for _ in 0..20 {
        handle.push_to(conn, PUSH, vec![0u8; 100]).await.unwrap();
    }
    proxy.close_kept(); // then the network drops it
    let ended = eventually("the client ends", || client.ended()).await;
    match ended {
        ClientError::Kicked { reason, text } => {
            assert_eq!(reason, KickReason::RESUME_FAILED);
            assert!(text.starts_with("gap"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    server.shutdown().await.unwrap();
}
