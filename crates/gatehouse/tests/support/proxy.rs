//! A TCP proxy between a test's clients and its server that loses connections the
//! ways networks do: [`Proxy::cut`] closes both sides (the server sees the client
//! leave), [`Proxy::half_open`] drops the client's side and leaves the server's
//! open and silent (the server cannot tell), [`Proxy::stall`] stops forwarding and
//! keeps both open, until [`Proxy::close_kept`]. Each acts on the connections open
//! at the call; later ones are forwarded as usual.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Cut,
    HalfOpen,
    Stall,
}

/// Sockets a lost connection keeps open (the server's side of a half-open one,
/// both sides of a stalled one), until the proxy is dropped.
type Kept = Arc<Mutex<Vec<(OwnedReadHalf, OwnedWriteHalf)>>>;

pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<watch::Sender<Mode>>>>,
    kept: Kept,
    /// Connections kept so far (for [`Proxy::park`] to wait on).
    parked: Arc<AtomicUsize>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    /// A proxy on 127.0.0.1 to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<watch::Sender<Mode>>>> = Arc::default();
        let kept = Kept::default();
        let parked = Arc::new(AtomicUsize::new(0));
        let (links_, kept_, parked_) = (links.clone(), kept.clone(), parked.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mode, watching) = watch::channel(Mode::Forward);
                links_.lock().unwrap().push(mode);
                tokio::spawn(link(
                    client,
                    server,
                    watching,
                    kept_.clone(),
                    parked_.clone(),
                ));
            }
        });
        Proxy {
            addr,
            links,
            kept,
            parked,
            accepting,
        }
    }

    /// Closes both sides of every open connection.
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    /// Closes the client's side of every open connection; the server's stays open
    /// and hears nothing more. Returns once it is so.
    pub async fn half_open(&self) {
        self.park(Mode::HalfOpen).await;
    }

    /// Stops forwarding on every open connection, leaving both sides open. Returns
    /// once it is so.
    pub async fn stall(&self) {
        self.park(Mode::Stall).await;
    }

    /// Sets `mode` and waits until every connection it applies to is kept.
    async fn park(&self, mode: Mode) {
        let before = self.parked.load(Ordering::SeqCst);
        let links = self.set(mode);
        let deadline = tokio::time::Instant::now() + super::PATIENCE;
        while self.parked.load(Ordering::SeqCst) < before + links {
            assert!(tokio::time::Instant::now() < deadline, "links not parked");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Closes every connection a stall or half-open kept (both sides now).
    pub fn close_kept(&self) {
        self.kept.lock().unwrap().clear();
    }

    /// Sets `mode` on every open connection; how many there were.
    fn set(&self, mode: Mode) -> usize {
        let mut links = self.links.lock().unwrap();
        let open = links.len();
        for link in links.drain(..) {
            let _ = link.send(mode);
        }
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.kept.lock().unwrap().clear();
    }
}

async fn link(
    client: TcpStream,
    server: TcpStream,
    mode: watch::Receiver<Mode>,
    kept: Kept,
    parked: Arc<AtomicUsize>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let ((client_read, server_write), (server_read, client_write)) = tokio::join!(
        pump(client_read, server_write, mode.clone()),
        pump(server_read, client_write, mode.clone()),
    );
    let mode = *mode.borrow();
    let mut kept = kept.lock().unwrap();
    match mode {
        Mode::Forward | Mode::Cut => {} // dropped: closed
        Mode::HalfOpen => kept.push((server_read, server_write)),
        Mode::Stall => {
            kept.push((server_read, server_write));
            kept.push((client_read, client_write));
        }
    }
    if matches!(mode, Mode::HalfOpen | Mode::Stall) {
        parked.fetch_add(1, Ordering::SeqCst);
    }
}

/// Forwards `from` to `to` until either ends (passing the end on) or the mode
/// changes; gives both halves back.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) -> (OwnedReadHalf, OwnedWriteHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = mode.changed() => return (from, to),
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return (from, to);
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return (from, to);
                    }
                }
            },
        }
    }
}
