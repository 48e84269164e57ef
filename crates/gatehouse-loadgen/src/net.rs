//! Connecting from a chosen source address, and the ping → pong exchange every
//! scenario uses to prove a connection is accepted and answered.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;

use crate::transport::{Conn, Transport};
use crate::wire::{self, FrameReader, Incoming};
use crate::{LoadError, Sources};

/// Opens a connection to `addr` from `source` (any port), with `TCP_NODELAY`, and
/// runs `transport`'s handshakes over it.
pub(crate) async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    transport: &Transport,
) -> io::Result<Conn> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    transport.open(stream, addr).await
}

/// Why a ping did not come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PingFailure {
    /// The connection ended (with or without a kick) or failed.
    Closed,
    /// The server sent something that is not a frame of the bench protocol.
    Protocol,
}

/// Sends a ping with `nonce` and reads until its pong. Other frames are skipped
/// (a server ping is answered); pongs with another nonce too.
pub(crate) async fn ping_pong(
    stream: &mut Conn,
    reader: &mut FrameReader,
    nonce: u8,
) -> Result<(), PingFailure> {
    stream
        .write_all(&wire::ping(nonce))
        .await
        .map_err(|_| PingFailure::Closed)?;
    loop {
        while let Some(body) = reader.next_frame().map_err(|_| PingFailure::Protocol)? {
            match wire::parse(body) {
                Incoming::Pong(n) if n == [nonce] => return Ok(()),
                Incoming::Ping(n) => {
                    let pong = pong_frame(n).ok_or(PingFailure::Protocol)?;
                    stream
                        .write_all(&pong[..wire::HEADER + 1 + n.len()])
                        .await
                        .map_err(|_| PingFailure::Closed)?;
                }
                Incoming::Kick { .. } => return Err(PingFailure::Closed),
                Incoming::Unexpected => return Err(PingFailure::Protocol),
                _ => {}
            }
        }
        match reader.read_from(stream).await {
            Ok(0) | Err(_) => return Err(PingFailure::Closed),
            Ok(_) => {}
        }
    }
}

/// The pong for a server's ping with `nonce` (at most 64 bytes), in a fixed buffer:
/// only the first `4 + 1 + nonce.len()` bytes are the frame.
pub(crate) fn pong_frame(nonce: &[u8]) -> Option<[u8; 4 + 1 + 64]> {
    if nonce.len() > 64 {
        return None;
    }
    let mut frame = [0; 4 + 1 + 64];
    let body = u32::try_from(1 + nonce.len()).ok()?;
    frame[..4].copy_from_slice(&body.to_be_bytes());
    frame[4] = wire::kind::PONG;
    frame[5..5 + nonce.len()].copy_from_slice(nonce);
    Some(frame)
}

/// How long opening one connection (connect and first pong) may take while a
/// scenario sets up, so that a server that never answers cannot hang a run.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens `count` connections (at most `parallel` connects at once) and proves each
/// with a ping. Returns the live ones, in no particular order, and the number that
/// failed; fails only if none could be opened.
pub(crate) async fn open_many(
    addr: SocketAddr,
    transport: &Transport,
    sources: Sources,
    count: usize,
    parallel: usize,
    progress: &crate::Progress,
) -> Result<(Vec<(Conn, FrameReader)>, usize), LoadError> {
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let gate = gate.clone();
        let source = sources.source(index);
        let transport = transport.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let open = async {
                let mut stream = connect(addr, source, &transport)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut reader = FrameReader::new(256);
                ping_pong(&mut stream, &mut reader, 0)
                    .await
                    .map_err(|why| format!("no pong: {why:?}"))?;
                Ok::<_, String>((stream, reader))
            };
            tokio::time::timeout(SETUP_TIMEOUT, open)
                .await
                .unwrap_or_else(|_| Err(format!("not answered within {SETUP_TIMEOUT:?}")))
        });
    }
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(conn)) => {
                open.push(conn);
                progress.advance(1);
            }
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if open.is_empty() && count > 0 {
        return Err(LoadError::Connect {
            addr,
            error: first_error.unwrap_or_default(),
        });
    }
    Ok((open, failed))
}

/// A resumable session the bench service offered at a login.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) token: [u8; 32],
}

/// Logs connection `index` in to the bench service (as `gen-INDEX`) and waits for
/// the answer; the session offered before it.
pub(crate) async fn log_in(
    stream: &mut Conn,
    reader: &mut FrameReader,
    index: usize,
) -> io::Result<Session> {
    let mut login = Vec::new();
    let name = format!("gen-{index}");
    wire::put_request(
        &mut login,
        u32::MAX,
        gatehouse_protocol::routes::bench::LOGIN,
        name.as_bytes(),
    );
    stream.write_all(&login).await?;
    stream.flush().await?;
    let mut session = None;
    loop {
        while let Some(body) = reader
            .next_frame()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?
        {
            match wire::parse(body) {
                Incoming::Session { id, token } => {
                    session = token.try_into().ok().map(|token| Session { id, token });
                }
                Incoming::Response {
                    id: u32::MAX,
                    status: 0,
                    ..
                } => return session.ok_or_else(|| io::ErrorKind::InvalidData.into()),
                Incoming::Response { .. } | Incoming::Kick { .. } | Incoming::Unexpected => {
                    return Err(io::ErrorKind::InvalidData.into());
                }
                _ => {}
            }
        }
        if reader.read_from(stream).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}
