//! The `gatehouse serve` binary end to end, from outside: signals, fault injection,
//! restart intensity, configuration errors and the servers.csv port table.

#![allow(clippy::unwrap_used)]

mod process;
#[path = "../../gatehouse/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use gatehouse::bench_service::routes;
use gatehouse::protocol::ROUTE_FAULT_CRASH_HUB;
use gatehouse::{KickReason, Message, Status};
use process::{gatehouse, scratch, write_file, ServerProcess};
use support::{Client, PATIENCE};

#[tokio::test]
async fn sigterm_kicks_every_client_runs_every_hook_and_exits_zero() {
    let mut server = ServerProcess::start(&["--service", "bench"]);
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut client = Client::connect(server.addr).await;
        assert_eq!(client.request(routes::ECHO, "x").await.1, "x");
        clients.push(client);
    }
    server.signal("TERM");
    for client in &mut clients {
        assert_eq!(client.expect_kick().await, KickReason::SHUTDOWN);
    }
    let status = server.wait(Duration::from_secs(15));
    let log = server.log();
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("disconnect_hooks=20"), "{log}");
    assert!(log.contains("SIGTERM"), "{log}");
}

#[tokio::test]
async fn sigint_also_shuts_down_cleanly() {
    let mut server = ServerProcess::start(&["--service", "bench"]);
    let mut client = Client::connect(server.addr).await;
    assert!(client.request(routes::COUNT, "").await.0.is_ok());
    server.signal("INT");
    assert_eq!(client.expect_kick().await, KickReason::SHUTDOWN);
    assert!(server.wait(Duration::from_secs(15)).success());
}

#[tokio::test]
async fn an_injected_hub_crash_restarts_the_hub_and_clients_reconnect_at_once() {
    let server = ServerProcess::start(&["--service", "bench", "--allow-fault-injection"]);
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut client = Client::connect(server.addr).await;
        assert!(client.request(routes::COUNT, "").await.0.is_ok());
        clients.push(client);
    }
    clients[0].fire(ROUTE_FAULT_CRASH_HUB).await;
    for client in &mut clients {
        assert_eq!(client.expect_kick().await, KickReason::SERVER_RESTART);
    }
    let mut again = Client::connect(server.addr).await;
    let (status, count) = again.request(routes::COUNT, "").await;
    assert_eq!(status, Status::OK);
    assert_eq!(count[..], 1u32.to_be_bytes());
    // The server logs as it goes; the line comes, at its pace.
    server.wait_for_log("hub crashed", PATIENCE);
}

#[tokio::test]
async fn fault_injection_is_off_by_default() {
    let server = ServerProcess::start(&["--service", "bench"]);
    let mut client = Client::connect(server.addr).await;
    let (status, _) = client.request(ROUTE_FAULT_CRASH_HUB, "").await;
    assert_eq!(status, Status::FORBIDDEN);
    assert_eq!(client.request(routes::ECHO, "still").await.1, "still");
}

#[tokio::test]
async fn crashing_past_the_restart_intensity_exits_3() {
    let dir = scratch("intensity");
    let config = write_file(
        &dir,
        "gatehouse.toml",
        "[supervisor]\nmax_restarts = 1\nrestart_window = \"1m\"\n",
    );
    let mut server = ServerProcess::start(&[
        "--service",
        "bench",
        "--allow-fault-injection",
        "--config",
        config.to_str().unwrap(),
    ]);
    for _ in 0..2 {
        let mut client = Client::connect(server.addr).await;
        client.fire(ROUTE_FAULT_CRASH_HUB).await;
        assert_eq!(client.expect_kick().await, KickReason::SERVER_RESTART);
    }
    let status = server.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(3), "the documented status");
    assert!(server.log().contains("restart intensity exceeded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_pauses_accepting_without_ending_the_acceptor() {
    let server = ServerProcess::start_with_fd_limit(64, &["--service", "bench"]);
    // More clients than the server has descriptors: the kernel completes every
    // handshake, the server's accept fails with EMFILE for the late ones.
    let mut clients = Vec::new();
    for _ in 0..100 {
        let mut client = Client::connect(server.addr).await;
        client.send(&Message::Ping(Bytes::new())).await;
        clients.push(client);
    }
    server.wait_for_log("accept failed; backing off", PATIENCE);
    // The server is at its limit and stays there while nobody leaves: those it
    // accepted answer their ping, the others wait in the backlog. Each client gets
    // a generous while to answer, all at once.
    let mut reads = tokio::task::JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        reads.spawn(async move {
            let pong = tokio::time::timeout(Duration::from_secs(2), client.recv()).await;
            let answered = match pong {
                Ok(Some(Message::Pong(_))) => true,
                Err(_) => false,
                Ok(other) => panic!("client {i}: expected a pong, got {other:?}"),
            };
            (i, client, answered)
        });
    }
    let mut results = reads.join_all().await;
    results.sort_by_key(|(i, _, _)| *i);
    let answered = results.iter().filter(|(_, _, answered)| *answered).count();
    assert!(answered > 0, "the server accepted nobody");
    assert!(answered < 100, "the fd limit did not bite");
    // Free descriptors by closing the answered clients: the acceptor is still there
    // and takes the waiting ones (oldest first), pings already sent.
    let mut waiting: Vec<Client> = results
        .into_iter()
        .filter(|(_, _, answered)| !answered)
        .map(|(_, client, _)| client)
        .collect();
    for client in waiting.iter_mut().take(answered.saturating_sub(5)) {
        assert_eq!(client.recv().await, Some(Message::Pong(Bytes::new())));
    }
    drop(waiting);
    let mut fresh = Client::connect(server.addr).await;
    assert_eq!(fresh.request(routes::ECHO, "back").await.1, "back");
}

#[test]
fn bad_configurations_are_rejected_with_the_key_named() {
    let dir = scratch("badconfig");
    for (text, expected) in [
        (
            "[server]\nmax_conections = 5\n",
            "unknown field `max_conections`",
        ),
        ("[limits]\nmax_frame_bytes = 0\n", "limits.max_frame_bytes"),
        ("[limits]\nidle_timeout = \"forever\"\n", "idle_timeout"),
        (
            "[[listeners]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:seven\"\n",
            "address",
        ),
        (
            "[supervisor]\ndrain_timeout = \"0s\"\n",
            "supervisor.drain_timeout",
        ),
        ("this is not toml", "expected"),
    ] {
        let path = write_file(&dir, "bad.toml", text);
        let output = gatehouse()
            .args(["serve", "--port", "0", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{text:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
    }
    let output = gatehouse()
        .args(["serve", "--service", "chess"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value 'chess'"), "{stderr}");
}

#[test]
fn an_expected_error_prints_no_stack_trace_even_with_rust_backtrace_set() {
    let dir = scratch("nobacktrace");
    let path = write_file(&dir, "bad.toml", "[limits]\nmax_frame_bytes = 0\n");
    let output = gatehouse()
        .env("RUST_BACKTRACE", "1")
        .args(["serve", "--port", "0", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("Error: "), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    assert_eq!(
        stderr.matches("limits.max_frame_bytes").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn tls_flags_that_do_not_fit_the_listeners_are_refused_naming_the_flags() {
    let refused = |args: &[&str]| {
        let output = gatehouse().arg("serve").args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // A certificate with no TLS listener would serve plain TCP to who wanted TLS.
    let stderr = refused(&["--port", "0", "--cert", "c.pem", "--key", "k.pem"]);
    assert!(
        stderr.contains("--cert and --key are for the TLS listeners"),
        "{stderr}"
    );
    let stderr = refused(&[
        "--listen",
        "tcp://127.0.0.1:0",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
    ]);
    assert!(stderr.contains("there is none"), "{stderr}");
    // A TLS listener without them names the flags, not a config key.
    let stderr = refused(&["--listen", "tls://127.0.0.1:0"]);
    assert!(stderr.contains("--cert and --key"), "{stderr}");
    assert!(!stderr.contains("listeners."), "{stderr}");
}

#[test]
fn a_taken_port_fails_the_start_before_any_listening_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    // arena on its defaults opens its store in ./data: not in the source tree.
    let dir = scratch("taken-port");
    let output = gatehouse()
        .current_dir(&dir)
        .args(["serve", "--host", "127.0.0.1", "--port", &port])
        .args(["--ws-port", "0", "--admin-port", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    // Not even the admin listener's line: nothing listens.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
    drop(taken);
}

#[tokio::test]
async fn the_port_can_come_from_servers_csv_by_server_id() {
    let dir = scratch("csv");
    let table = |port: u16| {
        write_file(
            &dir,
            "servers.csv",
            &format!(
                "server_id,host,port,comment\n1,127.0.0.1,1,other\n7,127.0.0.1,{port},this one\n"
            ),
        )
    };
    // A port that was free a moment ago goes to the server through the table; if
    // someone took it meanwhile, the server says so and exits: try another.
    let mut attempts = 0;
    let (server, port) = loop {
        attempts += 1;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let csv = table(port);
        let mut command = gatehouse();
        command.args([
            "serve",
            "--service",
            "bench",
            "--ws-port",
            "0",
            "--admin-port",
            "0",
            "--server-id",
            "7",
            "--servers-csv",
            csv.to_str().unwrap(),
        ]);
        match ServerProcess::try_spawn(command) {
            Ok(server) => break (server, port),
            Err(log) if log.contains("cannot listen on") && attempts < 5 => continue,
            Err(log) => panic!("the server did not start:\n{log}"),
        }
    };
    assert_eq!(server.addr.port(), port, "the port from servers.csv");
    let mut client = Client::connect(server.addr).await;
    assert_eq!(client.request(routes::ECHO, "csv").await.1, "csv");
    drop(server);

    let output = gatehouse()
        .args([
            "serve",
            "--server-id",
            "9",
            "--servers-csv",
            table(1).to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no row with server_id 9"));
}

#[tokio::test]
async fn the_bench_service_echoes_broadcasts_and_counts() {
    let server = ServerProcess::start(&["--service", "bench"]);
    let mut a = Client::connect(server.addr).await;
    let mut b = Client::connect(server.addr).await;
    assert_eq!(
        a.request(routes::ECHO, "e").await,
        (Status::OK, Bytes::from_static(b"e"))
    );
    assert_eq!(b.request(routes::COUNT, "").await.1[..], 2u32.to_be_bytes());
    assert_eq!(a.request(routes::BROADCAST, "all").await.0, Status::OK);
    assert_eq!(
        b.expect_push().await,
        (routes::BROADCAST, Bytes::from_static(b"all"))
    );
    assert_eq!(
        a.expect_push().await,
        (routes::BROADCAST, Bytes::from_static(b"all"))
    );
    // Notify forms: echo pushes back, broadcast pushes to all without a response.
    a.send(&Message::Notify {
        route: routes::ECHO,
        payload: Bytes::from_static(b"n"),
    })
    .await;
    assert_eq!(
        a.expect_push().await,
        (routes::ECHO, Bytes::from_static(b"n"))
    );
}
