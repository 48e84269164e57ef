//! The binary's listeners from outside: a development certificate from `gatehouse
//! dev-cert` served over TLS and wss, reloaded on SIGHUP without dropping anyone,
//! arena's browser client served by the WebSocket listener, and the terminal client
//! playing over WebSocket and TLS.

#![allow(clippy::unwrap_used)]

mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse::bench_service::routes;
use gatehouse_client::{Client, ClientConfig, ClientError, Target};
use process::{gatehouse, scratch, ServerProcess};

/// `gatehouse dev-cert --out dir`; returns what it printed.
fn dev_cert(dir: &Path) -> String {
    let output = gatehouse()
        .args(["dev-cert", "--out", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A bench server with a TLS and a wss listener on the certificate in `dir`.
fn serve_tls(dir: &Path) -> ServerProcess {
    let mut command = gatehouse();
    command.args(["serve", "--service", "bench", "--admin-port", "0"]);
    command.args([
        "--listen",
        "tls://127.0.0.1:0",
        "--listen",
        "wss://127.0.0.1:0",
    ]);
    command.args(["--cert", dir.join("dev-cert.pem").to_str().unwrap()]);
    command.args(["--key", dir.join("dev-key.pem").to_str().unwrap()]);
    ServerProcess::spawn_until(command, "tls")
}

async fn connect(target: &str, trusted: &Path) -> Result<Client, ClientError> {
    let config = ClientConfig {
        tls_ca: Some(trusted.to_owned()),
        ..ClientConfig::default()
    };
    let target: Target = target.parse().unwrap();
    Ok(Client::connect_to(&target, config).await?.0)
}

#[tokio::test]
async fn a_dev_certificate_is_labelled_and_served_over_tls_and_wss() {
    let dir = scratch("dev-cert");
    let printed = dev_cert(&dir);
    assert!(
        printed.contains("self-signed, for local use only"),
        "{printed}"
    );
    let cert = std::fs::read_to_string(dir.join("dev-cert.pem")).unwrap();
    assert!(
        cert.starts_with("# gatehouse development certificate"),
        "{cert}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let key_mode = std::fs::metadata(dir.join("dev-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600, "the key is its owner's only");

    let server = serve_tls(&dir);
    let ca = dir.join("dev-cert.pem");
    let tls = format!("tls://localhost:{}", server.listener("tls").port());
    let wss = format!("wss://127.0.0.1:{}/ws", server.listener("wss").port());
    for target in [tls, wss] {
        let client = connect(&target, &ca).await.unwrap();
        assert_eq!(
            client.request(routes::ECHO, "over tls").await.unwrap(),
            "over tls"
        );
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_keeps_established_connections() {
    let dir = scratch("sighup");
    dev_cert(&dir);
    let old_ca = dir.join("old-cert.pem");
    std::fs::copy(dir.join("dev-cert.pem"), &old_ca).unwrap();
    let server = serve_tls(&dir);
    let target = format!("tls://localhost:{}", server.listener("tls").port());
    let established = connect(&target, &old_ca).await.unwrap();

    dev_cert(&dir); // a new key and certificate in the same files
    server.signal("HUP");
    server.wait_for_log("certificate reloaded", Duration::from_secs(10));

    assert_eq!(
        established.request(routes::ECHO, "still").await.unwrap(),
        "still"
    );
    let refused = connect(&target, &old_ca).await;
    assert!(
        matches!(&refused, Err(ClientError::Io(e)) if e.contains("TLS")),
        "{:?}",
        refused.err()
    );
    let renewed = connect(&target, &dir.join("dev-cert.pem")).await.unwrap();
    assert_eq!(renewed.request(routes::ECHO, "new").await.unwrap(), "new");

    // A broken file is refused and the served certificate stays.
    std::fs::write(dir.join("dev-cert.pem"), "not a certificate").unwrap();
    server.signal("HUP");
    server.wait_for_log("certificate reload failed", Duration::from_secs(10));
    assert_eq!(renewed.request(routes::ECHO, "kept").await.unwrap(), "kept");
}

/// `GET path` on `addr`: the status line, the headers and the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

#[test]
fn arena_serves_its_browser_client_on_the_websocket_listener() {
    let dir = scratch("pages");
    let config = process::arena_config(&dir, "");
    let server = ServerProcess::start(&["--config", config.to_str().unwrap()]);
    let ws = server.listener("ws");
    let (head, body) = http_get(ws, "/");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(body.contains("<canvas"), "the arena page: {body}");
    for script in ["/gatehouse.js", "/arena_pb.js", "/arena.js"] {
        let (head, body) = http_get(ws, script);
        assert!(
            head.contains("Content-Type: text/javascript"),
            "{script}: {head}"
        );
        assert!(!body.is_empty());
    }
    assert!(http_get(ws, "/secret.toml").0.starts_with("HTTP/1.1 404"));
}

/// `gatehouse client` logged in over `addr` with extra arguments; returns the line
/// it printed on logging in.
fn terminal_login(addr: &str, extra: &[&str], name: &str) -> String {
    let mut child = gatehouse()
        .args([
            "client",
            "--addr",
            addr,
            "--name",
            name,
            "--password",
            "secret-words",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    writeln!(child.stdin.take().unwrap(), "/quit").unwrap();
    assert!(child.wait().unwrap().success());
    first
}

#[test]
fn the_terminal_client_plays_over_websocket_and_tls() {
    let dir = scratch("terminal-transports");
    dev_cert(&dir);
    let config = process::arena_config(&dir, "");
    let mut command: Command = gatehouse();
    command.args([
        "serve",
        "--admin-port",
        "0",
        "--config",
        config.to_str().unwrap(),
    ]);
    command.args([
        "--listen",
        "ws://127.0.0.1:0",
        "--listen",
        "tls://127.0.0.1:0",
    ]);
    command.args(["--cert", dir.join("dev-cert.pem").to_str().unwrap()]);
    command.args(["--key", dir.join("dev-key.pem").to_str().unwrap()]);
    let server = ServerProcess::spawn_until(command, "tls");
    let ws = format!("ws://{}/ws", server.listener("ws"));
    let line = terminal_login(&ws, &[], "webby");
    assert!(line.starts_with("logged in as webby"), "{line}");
    let tls = format!("localhost:{}", server.listener("tls").port());
    let ca = dir.join("dev-cert.pem");
    let line = terminal_login(&tls, &["--tls", "--ca", ca.to_str().unwrap()], "secure");
    assert!(line.starts_with("logged in as secure"), "{line}");
}

#[tokio::test]
async fn sighup_without_a_tls_listener_changes_nothing_and_stops_nothing() {
    let server = ServerProcess::start(&["--service", "bench"]);
    let (client, _pushes) = Client::connect(server.addr, ClientConfig::default())
        .await
        .unwrap();
    server.signal("HUP");
    server.wait_for_log("nothing to reload", Duration::from_secs(10));
    assert_eq!(
        client.request(routes::ECHO, "alive").await.unwrap(),
        "alive"
    );
}
