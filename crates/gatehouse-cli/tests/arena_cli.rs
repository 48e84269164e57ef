//! What a new user does in five minutes, end to end with the real binaries: start the
//! server, connect two terminal clients, chat, move, whisper, quit, restart the
//! server (a client still open reconnects by itself), and find the player where they
//! left; a client whose connection is cut resumes, unseen by the room. And the client in a real (pseudo-)terminal: its line editor, pushes printed
//! above the line being typed, and the terminal given back however it ends.

#![allow(clippy::unwrap_used)]

mod process;
#[allow(dead_code, unreachable_pub)] // cut is used, not the other ways to lose a connection
#[path = "../../gatehouse/tests/support/proxy.rs"]
mod proxy;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use process::{arena_config, gatehouse, scratch, Scratch, ServerProcess};
use rexpect::session::{spawn_with_options, Options, PtySession};

/// How long anything printed may take to come.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `gatehouse client` process: type into it, read what it prints. Killed if
/// dropped before it exits.
struct Terminal {
    child: Child,
    /// `None` once closed (end of input).
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Terminal {
    fn open(addr: std::net::SocketAddr, name: &str) -> Terminal {
        Terminal::spawn(addr, name, false)
    }

    /// With the password in `GATEHOUSE_PASSWORD`, not on the command line.
    fn open_with_password_in_env(addr: std::net::SocketAddr, name: &str) -> Terminal {
        Terminal::spawn(addr, name, true)
    }

    fn spawn(addr: std::net::SocketAddr, name: &str, password_in_env: bool) -> Terminal {
        let password = format!("{name}-secret");
        let mut command = gatehouse();
        command.args(["client", "--addr", &addr.to_string(), "--name", name]);
        if password_in_env {
            command.env("GATEHOUSE_PASSWORD", password);
        } else {
            command.args(["--password", &password]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Terminal {
            child,
            stdin: Some(stdin),
            lines,
            seen: Vec::new(),
        }
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin.as_mut().expect("input open"), "{line}").unwrap();
    }

    /// Waits for a printed line containing `text`.
    fn expect(&mut self, text: &str) -> String {
        self.expect_any(&[text])
    }

    /// Waits for a printed line containing any of `texts`.
    fn expect_any(&mut self, texts: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if texts.iter().any(|text| line.contains(text)) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no line with any of {texts:?}; printed so far: {:#?}",
            self.seen
        );
    }

    /// Closes its input and waits for it to exit.
    fn wait(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "client did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills the child when dropped (a test that fails leaves no server behind).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_players_chat_move_quit_and_find_their_place_after_a_restart_that_reconnects_them() {
    let dir = scratch("arena-cli");
    let config = arena_config(&dir, "");
    let config = config.to_str().unwrap();
    let mut server = ServerProcess::start(&["--service", "arena", "--config", config]);

    let mut alice = Terminal::open(server.addr, "alice");
    alice.expect("logged in as alice in lobby at (0, 0)");
    let mut bob = Terminal::open(server.addr, "bob");
    bob.expect("logged in as bob in lobby at (0, 0)");
    // Bob enters after alice's view of the room was sent, or is in it already.
    alice.expect_any(&[
        "* bob entered lobby",
        "* in lobby: alice (0, 0), bob (0, 0)",
    ]);

    alice.type_line("hello bob");
    bob.expect("[lobby] alice: hello bob");
    bob.type_line("/move 3 4");
    bob.expect("you are in lobby at (3, 4)");
    // A move is printed once it has ended, where it ended.
    alice.expect("* bob stopped at (3, 4)");
    alice.type_line("/w bob psst, over here");
    alice.expect("(whisper to bob) psst, over here");
    bob.expect("(whisper) alice: psst, over here");
    bob.type_line("/goto abc");
    bob.expect("usage: /goto X Y");
    bob.type_line("/who");
    bob.expect("online (2, 2 in your room): alice, bob");
    bob.type_line("/fly");
    bob.expect("commands:");
    bob.type_line("/quit");
    assert!(bob.wait().success());
    alice.expect("* bob left lobby");

    let port = server.addr.port().to_string();
    server.signal("TERM");
    assert!(
        server.wait(Duration::from_secs(15)).success(),
        "{}",
        server.log()
    );
    // alice's client saw the server go and keeps trying.
    alice.expect("reconnecting");

    // The server comes back at the same address: alice is logged in again by itself.
    let mut command = gatehouse();
    command.args([
        "serve",
        "--port",
        &port,
        "--ws-port",
        "0",
        "--admin-port",
        "0",
    ]);
    command.args(["--service", "arena", "--config", config]);
    let server = ServerProcess::spawn(command);
    alice.expect("logged in as alice in lobby at (0, 0); login #2");
    let mut bob = Terminal::open_with_password_in_env(server.addr, "bob");
    bob.expect("logged in as bob in lobby at (3, 4); login #2");
    bob.type_line("/quit");
    assert!(bob.wait().success());
    alice.type_line("/quit");
    assert!(alice.wait().success());
}

#[test]
fn a_cut_connection_is_resumed_and_the_room_never_sees_the_player_leave() {
    let dir = scratch("arena-cli-cut");
    let config = arena_config(&dir, "");
    let server =
        ServerProcess::start(&["--service", "arena", "--config", config.to_str().unwrap()]);
    let network = tokio::runtime::Runtime::new().unwrap();
    let proxy = network.block_on(proxy::Proxy::start(server.addr));

    let mut alice = Terminal::open(proxy.addr, "alice");
    alice.expect("logged in as alice in lobby at (0, 0)");
    let mut bob = Terminal::open(server.addr, "bob");
    bob.expect("logged in as bob in lobby at (0, 0)");
    // The room's first state for bob, at its next tick: alice is in it. (Had she
    // entered and left within one tick, the room would never tell of either.)
    bob.expect("* in lobby: alice (0, 0), bob (0, 0)");
    alice.type_line("before the cut");
    bob.expect("[lobby] alice: before the cut");

    proxy.cut();
    bob.type_line("said while alice was cut off");
    alice.expect("[lobby] bob: said while alice was cut off");
    alice.type_line("after the cut");
    bob.expect("[lobby] alice: after the cut");
    bob.type_line("/who");
    bob.expect("online (2, 2 in your room): alice, bob");
    alice.type_line("/quit");
    assert!(alice.wait().success());
    bob.expect("* alice left lobby");
    let bob_saw = bob.seen.clone();
    bob.type_line("/quit");
    assert!(bob.wait().success());
    let left: Vec<_> = bob_saw
        .iter()
        .filter(|l| l.contains("alice left"))
        .collect();
    assert_eq!(
        left.len(),
        1,
        "alice left once, when she quit: {bob_saw:#?}"
    );
    assert!(
        !bob_saw.iter().any(|l| l.contains("alice entered")),
        "alice never came back in: {bob_saw:#?}"
    );
}

#[test]
fn without_a_password_or_a_terminal_the_client_says_how_to_give_one() {
    let output = gatehouse()
        .env_remove("GATEHOUSE_PASSWORD")
        .args(["client", "--addr", "127.0.0.1:9", "--name", "alice"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GATEHOUSE_PASSWORD"), "{stderr}");
}

#[test]
fn the_server_runs_arena_on_its_embedded_defaults_with_a_fresh_data_directory() {
    // `gatehouse serve` with no arguments: arena, SQLite under ./data. Run it in an
    // empty directory to prove it creates what it needs.
    let dir = scratch("defaults");
    let mut child = KillOnDrop(
        gatehouse()
            .args(process::SERVE_ON_FREE_PORTS)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let (tx, first_lines) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(stdout.lines().take(3).collect::<Result<Vec<_>, _>>());
    });
    let lines = first_lines
        .recv_timeout(process::START_PATIENCE)
        .expect("the server prints its first lines in time")
        .unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    // The admin listener is up first, then the game's listeners.
    for (line, prefix) in lines.iter().zip([
        "admin listening on http://127.0.0.1:",
        "listening on tcp://127.0.0.1:",
        "listening on ws://127.0.0.1:",
    ]) {
        assert!(line.starts_with(prefix), "{lines:?}");
    }
    assert!(dir.join("data").join("gatehouse.db").exists());
    drop(child);
}

#[test]
fn a_ca_for_a_server_that_is_not_encrypted_is_refused_not_ignored() {
    let output = gatehouse()
        .args(["client", "--addr", "tcp://127.0.0.1:7000", "--ca", "ca.pem"])
        .args(["--name", "ada", "--password", "correct horse"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--ca is for tls:// and wss://"), "{stderr}");
}

/// `gatehouse client` in a pseudo-terminal, through `sh`, which then prints its exit
/// status and the terminal's settings (`stty -a`): what the client left behind.
/// Escape sequences are left out of what it prints.
fn open_in_a_terminal(addr: std::net::SocketAddr, name: &str) -> PtySession {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", r#""$@"; echo "exited with $?"; stty -a"#, "sh"])
        .arg(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["client", "--addr", &addr.to_string(), "--name", name])
        .env("TERM", "xterm")
        .env_remove("GATEHOUSE_PASSWORD")
        .env_remove("RUST_LOG");
    let options = Options::new()
        .timeout_ms(Some(PATIENCE.as_millis() as u64))
        .strip_ansi_escape_codes(true);
    let mut terminal = spawn_with_options(command, options).unwrap();
    terminal
        .exp_string(&format!("password for {name}: "))
        .unwrap();
    terminal.send_line(&format!("{name}-secret")).unwrap();
    terminal
        .exp_string(&format!("logged in as {name}"))
        .unwrap();
    terminal
}

/// An arena server on free ports, saving in a scratch directory that lives as long.
fn start_arena(name: &str) -> (ServerProcess, Scratch) {
    let dir = scratch(name);
    let config = arena_config(&dir, "");
    let server =
        ServerProcess::start(&["--service", "arena", "--config", config.to_str().unwrap()]);
    (server, dir)
}

/// Types `keys` into the terminal.
fn press(terminal: &mut PtySession, keys: &str) {
    terminal.send(keys).unwrap();
    terminal.flush().unwrap();
}

/// Types `text` without Enter, and waits for the line editor to show it.
fn type_half_a_line(terminal: &mut PtySession, text: &str) {
    press(terminal, text);
    terminal.exp_string(text).unwrap();
}

/// Waits for the client to exit with `code`, then asserts that it left the terminal
/// as it found it: line by line (canonical), with signals, CR read as NL.
fn assert_exits_and_gives_the_terminal_back(mut terminal: PtySession, code: i32) {
    terminal.exp_string(&format!("exited with {code}")).unwrap();
    let settings = terminal.exp_eof().unwrap();
    let flags: Vec<&str> = settings.split_whitespace().collect();
    for flag in ["icanon", "isig", "icrnl"] {
        assert!(flags.contains(&flag), "{flag} is off: {settings:?}");
    }
}

#[test]
fn in_a_terminal_a_push_prints_above_the_half_typed_line_and_up_recalls_the_last_line() {
    let (server, _dir) = start_arena("arena-pty");
    let mut alice = open_in_a_terminal(server.addr, "alice");
    let mut bob = Terminal::open(server.addr, "bob");
    bob.expect("logged in as bob");

    type_half_a_line(&mut alice, "hello bo");
    bob.type_line("hi alice");
    // bob's line comes on a line of its own, and the half line is drawn again below.
    let before = alice.exp_string("[lobby] bob: hi alice").unwrap();
    assert!(
        before.ends_with('\r'),
        "not at the start of a line: {before:?}"
    );
    let between = alice.exp_string("> hello bo").unwrap();
    assert_eq!(between.trim(), "", "{between:?}");

    // The line, finished, is said whole.
    press(&mut alice, "b\r");
    assert_eq!(bob.expect("[lobby] alice:"), "[lobby] alice: hello bob");
    // Up brings it back, to edit and send again.
    press(&mut alice, "\x1b[A!\r");
    assert_eq!(bob.expect("[lobby] alice:"), "[lobby] alice: hello bob!");

    press(&mut alice, "/quit\r");
    assert_exits_and_gives_the_terminal_back(alice, 0);
    bob.type_line("/quit");
    assert!(bob.wait().success());
}

#[test]
fn in_a_terminal_ctrl_c_and_ctrl_d_quit_and_a_kick_at_the_prompt_gives_the_terminal_back() {
    let (server, _dir) = start_arena("arena-pty-ends");

    // Ctrl-C, even on a half-typed line, quits like /quit.
    let mut alice = open_in_a_terminal(server.addr, "alice");
    type_half_a_line(&mut alice, "half a li");
    alice.send_control('c').unwrap();
    assert_exits_and_gives_the_terminal_back(alice, 0);

    // Ctrl-D on an empty line: the end of input.
    let mut alice = open_in_a_terminal(server.addr, "alice");
    alice.exp_string("> ").unwrap();
    alice.send_control('d').unwrap();
    assert_exits_and_gives_the_terminal_back(alice, 0);

    // Logging in elsewhere kicks this one while it reads a line: the client ends
    // with the kick's reason and the terminal as it was.
    let mut alice = open_in_a_terminal(server.addr, "alice");
    type_half_a_line(&mut alice, "half a li");
    let mut elsewhere = Terminal::open(server.addr, "alice");
    elsewhere.expect("logged in as alice");
    alice.exp_string("kicked (duplicate_login)").unwrap();
    assert_exits_and_gives_the_terminal_back(alice, 1);
}
