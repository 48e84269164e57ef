//! `gatehouse-limit`: the barest tokio server that speaks gatehouse's bench
//! service, the "practical limit" anchor of the side-by-side benchmark (next to
//! gatehouse itself and the Erlang rendering of the seed in `bench/erlang/`).
//!
//! Same wire behaviour as `gatehouse serve --service bench` for the bench
//! subset (`docs/PROTOCOL.md`): `{packet, 4}` framing (4-byte big-endian
//! length, bodies up to 262144 bytes), requests on routes 1 echo, 2 broadcast
//! and 3 count (other routes: status 404 `unknown route N`), notifies on
//! routes 1 and 2, ping/pong, empty frames ignored. A malformed body gets a
//! kick `protocol_error`, an oversized header a kick `frame_too_large`, and
//! the connection is closed.
//!
//! Everything gatehouse adds on top is left out on purpose: no limits, no idle
//! or login timers, no supervision, no per-connection span or logging, no
//! bounded queues. One task per connection owns its socket, a read buffer and
//! a write buffer; a mutex-guarded map of per-connection unbounded outboxes
//! is the registry for broadcast and count. A broadcast push is encoded once
//! and shared as [`Bytes`]. Output is coalesced: every frame produced while
//! input is ready (and every queued push) goes out in one `write_all`. The
//! buffers exist only while there is data, so an idle connection costs only
//! its task, its socket, its outbox and its registry entry (about 1.4 KB of
//! user memory measured with 19,000 idle connections).
//!
//! Usage: `gatehouse-limit --port PORT` (0 picks a free port); it prints
//! `listening on 127.0.0.1:PORT` on stdout when ready.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Parser;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

/// Largest frame body, Erlang's `{packet_size, 256 * 1024}`.
const MAX_FRAME: usize = 256 * 1024;
/// Longest ping/pong nonce.
const MAX_NONCE: usize = 64;
/// Spare room made in the read buffer before a read.
const READ_CHUNK: usize = 8 * 1024;
/// Output size at which the connection stops reading ready input and writes.
const WRITE_AT: usize = 64 * 1024;

/// Envelope kinds.
const REQUEST: u8 = 1;
const NOTIFY: u8 = 2;
const RESPONSE: u8 = 3;
const PUSH: u8 = 4;
const PING: u8 = 5;
const PONG: u8 = 6;
const KICK: u8 = 7;

/// Bench routes.
const ECHO: u16 = 1;
const BROADCAST: u16 = 2;
const COUNT: u16 = 3;

/// Statuses.
const OK: u16 = 0;
const UNKNOWN_ROUTE: u16 = 404;

/// A kick: reason code and text.
type Kick = (u16, &'static str);
const PROTOCOL_ERROR: Kick = (7, "malformed or unexpected frame");
const FRAME_TOO_LARGE: Kick = (9, "frame larger than 262144 bytes");

/// Command line.
#[derive(Parser)]
#[command(about = "The barest tokio server speaking gatehouse's bench service")]
struct Args {
    /// Port to listen on, on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// Locks a mutex. No code panics while holding one of ours, and the data
/// stays valid anyway, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection's unbounded queue of encoded frames from broadcasts. Lighter
/// than an mpsc channel (which allocates a 32-slot block per connection up
/// front): an empty queue owns no allocation.
#[derive(Default)]
struct Outbox {
    /// Frames not yet copied into the connection's output.
    frames: Mutex<Vec<Bytes>>,
    /// Wakes the connection task; a notification with no waiter is kept.
    ready: Notify,
}

impl Outbox {
    fn push(&self, frame: Bytes) {
        lock(&self.frames).push(frame);
        self.ready.notify_one();
    }

    fn take(&self) -> Vec<Bytes> {
        std::mem::take(&mut *lock(&self.frames))
    }
}

/// Live connections: broadcast sends to all of them, count is their number.
#[derive(Default)]
struct Registry {
    /// The next connection id.
    next_id: AtomicU64,
    /// Each connection's outbox.
    conns: Mutex<HashMap<u64, Arc<Outbox>>>,
}

impl Registry {
    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Outbox>>> {
        lock(&self.conns)
    }

    fn register(&self) -> (u64, Arc<Outbox>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::default());
        self.conns().insert(id, Arc::clone(&outbox));
        (id, outbox)
    }

    fn unregister(&self, id: u64) {
        self.conns().remove(&id);
    }

    fn count(&self) -> usize {
        self.conns().len()
    }

    /// Sends one encoded frame to every connection, the caller included.
    fn broadcast(&self, frame: &Bytes) {
        for outbox in self.conns().values() {
            outbox.push(frame.clone());
        }
    }
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let args = Args::parse();
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))?;
    // The seed's backlog; the kernel caps it at somaxconn.
    let listener = socket.listen(999_999)?;
    println!("listening on {}", listener.local_addr()?);

    // SIGINT ends the process even when started in the background (where a
    // shell leaves it ignored); SIGTERM's default action already does.
    tokio::select! {
        () = accept_loop(&listener) => Ok(()),
        signal = tokio::signal::ctrl_c() => signal,
    }
}

/// Accepts connections forever, one task each.
async fn accept_loop(listener: &TcpListener) {
    let registry = Arc::new(Registry::default());
    let mut last_error = None;
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                last_error = None;
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, Arc::clone(&registry)));
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning, and log
                // once per run of the same error.
                if last_error != Some(e.kind()) {
                    eprintln!("accept: {e} (retrying every 10 ms)");
                    last_error = Some(e.kind());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One connection, from registration to removal.
async fn serve(mut stream: TcpStream, registry: Arc<Registry>) {
    let (id, outbox) = registry.register();
    let _ = connection(&mut stream, &registry, &outbox).await;
    registry.unregister(id);
}

/// Reads frames, answers them, writes queued pushes, until the peer closes or
/// sends something fatal.
///
/// Both buffers are allocated only while there is data and released when
/// empty, so a connection at rest holds no buffer (the floor for idle memory;
/// an 8 KiB allocation per wakeup is noise next to the syscalls).
async fn connection(
    stream: &mut TcpStream,
    registry: &Registry,
    outbox: &Outbox,
) -> io::Result<()> {
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    loop {
        let mut eof = false;
        let mut kick = None;
        tokio::select! {
            ready = stream.readable() => {
                ready?;
                // Take everything that is ready (up to WRITE_AT bytes of
                // answers) before writing: one write for many frames.
                while kick.is_none() && output.len() < WRITE_AT {
                    match read_ready(stream, &mut input)? {
                        None => break,
                        Some(0) => {
                            eof = true;
                            break;
                        }
                        Some(_) => kick = handle_frames(&mut input, &mut output, registry).err(),
                    }
                }
            }
            () = outbox.ready.notified() => {}
        }
        for frame in outbox.take() {
            output.extend_from_slice(&frame);
        }
        if let Some((code, text)) = kick {
            let code = code.to_be_bytes();
            put_frame(&mut output, &[KICK, code[0], code[1]], text.as_bytes());
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output = BytesMut::new();
        }
        if kick.is_some() {
            return stream.shutdown().await;
        }
        if eof {
            return Ok(());
        }
        if input.is_empty() {
            input = BytesMut::new();
        }
    }
}

/// Reads what is ready into `input` without waiting: `Some(0)` at end of
/// stream, `None` when nothing is ready.
///
/// A short read means the socket is drained, and tokio is told so (the read
/// runs inside `try_io`, whose closure then reports `WouldBlock`; the
/// readiness tick is taken before the read, so a later event is not lost).
/// That is what tokio's own `poll_read` does; `try_read_buf` alone would
/// leave the readiness set and cost one more `recv` that only returns EAGAIN.
fn read_ready(stream: &TcpStream, input: &mut BytesMut) -> io::Result<Option<usize>> {
    if input.capacity() - input.len() < READ_CHUNK / 4 {
        input.reserve(READ_CHUNK);
    }
    let spare = input.capacity() - input.len();
    let mut read = None;
    let result = stream.try_io(Interest::READABLE, || {
        let n = stream.try_read_buf(input)?;
        read = Some(n);
        if 0 < n && n < spare {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match (read, result) {
        (Some(n), _) => Ok(Some(n)),
        (None, Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
        (None, _) => Ok(None),
    }
}

/// Handles every complete frame in `input`, appending answers to `output`.
fn handle_frames(
    input: &mut BytesMut,
    output: &mut BytesMut,
    registry: &Registry,
) -> Result<(), Kick> {
    while input.len() >= 4 {
        let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
        if len > MAX_FRAME {
            return Err(FRAME_TOO_LARGE);
        }
        if input.len() < 4 + len {
            input.reserve(4 + len - input.len());
            break;
        }
        handle_body(&input[4..4 + len], output, registry)?;
        input.advance(4 + len);
    }
    Ok(())
}

/// Handles one frame body.
fn handle_body(body: &[u8], output: &mut BytesMut, registry: &Registry) -> Result<(), Kick> {
    match body.split_first() {
        None => {} // empty frame: keepalive
        Some((&REQUEST, rest)) if rest.len() >= 6 => {
            let id = [rest[0], rest[1], rest[2], rest[3]];
            let route = u16::from_be_bytes([rest[4], rest[5]]);
            let payload = &rest[6..];
            match route {
                ECHO => response(output, id, OK, payload),
                BROADCAST => {
                    registry.broadcast(&push_frame(BROADCAST, payload));
                    response(output, id, OK, &[]);
                }
                COUNT => {
                    let n = u32::try_from(registry.count()).unwrap_or(u32::MAX);
                    response(output, id, OK, &n.to_be_bytes());
                }
                other => {
                    let text = format!("unknown route {other}");
                    response(output, id, UNKNOWN_ROUTE, text.as_bytes());
                }
            }
        }
        Some((&NOTIFY, rest)) if rest.len() >= 2 => {
            let route = u16::from_be_bytes([rest[0], rest[1]]);
            let payload = &rest[2..];
            match route {
                ECHO => put_frame(output, &[PUSH, 0, 1], payload),
                BROADCAST => registry.broadcast(&push_frame(BROADCAST, payload)),
                _ => {} // unknown notify routes are ignored
            }
        }
        Some((&PING, nonce)) if nonce.len() <= MAX_NONCE => put_frame(output, &[PONG], nonce),
        Some((&PONG, nonce)) if nonce.len() <= MAX_NONCE => {}
        Some(_) => return Err(PROTOCOL_ERROR),
    }
    Ok(())
}

/// Appends a response frame.
fn response(output: &mut BytesMut, id: [u8; 4], status: u16, payload: &[u8]) {
    let s = status.to_be_bytes();
    put_frame(
        output,
        &[RESPONSE, id[0], id[1], id[2], id[3], s[0], s[1]],
        payload,
    );
}

/// Encodes a push once, to be shared by every receiver.
fn push_frame(route: u16, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(4 + 3 + payload.len());
    let r = route.to_be_bytes();
    put_frame(&mut frame, &[PUSH, r[0], r[1]], payload);
    frame.freeze()
}

/// Appends one frame: length, then `head` and `payload` as the body. Bodies
/// here are never larger than the request that caused them, so the length
/// fits in a `u32`.
fn put_frame(output: &mut BytesMut, head: &[u8], payload: &[u8]) {
    output.reserve(4 + head.len() + payload.len());
    output.put_u32((head.len() + payload.len()) as u32);
    output.put_slice(head);
    output.put_slice(payload);
}
