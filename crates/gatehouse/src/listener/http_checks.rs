//! The WebSocket listener's HTTP parsing checked against any input, for the property
//! tests (`http_properties.rs`) and the `http_upgrade` fuzz target (through
//! `crate::fuzzing`): reading a request head in any chunking, deciding what to
//! answer, and reading `X-Forwarded-For`. Each function asserts what must hold
//! whatever the bytes; a broken invariant panics, which is the finding.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use ipnet::IpNet;
use tokio::io::{AsyncRead, ReadBuf};

use super::WebOptions;
use super::{
    answer, find, forwarded_address, forwarded_client, read_head, Answer, Refused, MAX_REQUEST_HEAD,
};

/// What [`answer`] decided, in a form that can be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Upgraded: the accept key sent back, and the client's address.
    Upgrade {
        /// `Sec-WebSocket-Accept`.
        accept: String,
        /// The client (the proxy's client when a trusted proxy forwarded it).
        client: SocketAddr,
    },
    /// A page served.
    Page {
        /// Its content type.
        content_type: &'static str,
        /// A `HEAD`: no body.
        head_only: bool,
    },
    /// A plain request answered with this status (404, 405).
    Answered(u16),
    /// An upgrade refused with this status.
    Refused(u16),
    /// An upgrade from another site's page, refused (403).
    CrossOrigin,
}

/// A peer whose bytes arrive in chunks of the given lengths (repeated; 0 counts as
/// 1), never making the reader wait, then end.
struct Chunked<'a> {
    wire: &'a [u8],
    chunks: &'a [usize],
    reads: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let chunk = match self.chunks {
            [] => usize::MAX,
            chunks => chunks[self.reads % chunks.len()].max(1),
        };
        let n = chunk.min(buf.remaining()).min(self.wire.len());
        let (read, rest) = self.wire.split_at(n);
        buf.put_slice(read);
        self.wire = rest;
        self.reads += 1;
        Poll::Ready(Ok(()))
    }
}

/// Reads a request head from `wire` arriving in `chunks`, as a `ws` listener does.
/// Checks that the head is exactly the stream up to its first blank line, that the
/// rest is what followed, that no head over [`MAX_REQUEST_HEAD`] is accepted and none
/// within it refused, and that a stream ending early is an error. Returns the head.
pub(crate) fn read_request(wire: &[u8], chunks: &[usize]) -> Option<Vec<u8>> {
    let mut peer = Chunked {
        wire,
        chunks,
        reads: 0,
    };
    let reading = pin!(read_head(&mut peer));
    let Poll::Ready(read) = reading.poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("reading the head waited on a peer that never makes it wait");
    };
    let end = find(wire, b"\r\n\r\n").map(|at| at + 4);
    match (read, end) {
        // Not a request at all: refused on its first byte.
        (Err(Refused::Status { status: 400, .. }), _)
            if wire.first().is_some_and(|b| !b.is_ascii_uppercase()) =>
        {
            None
        }
        (Ok((head, rest)), Some(end)) if end <= MAX_REQUEST_HEAD => {
            assert_eq!(
                head,
                &wire[..end],
                "the head is not the stream up to its blank line"
            );
            assert_eq!(
                rest,
                &wire[end..end + rest.len()],
                "what followed the head changed"
            );
            Some(head)
        }
        (Err(Refused::Status { status: 431, .. }), _)
            if end.is_none_or(|end| end > MAX_REQUEST_HEAD) && wire.len() > MAX_REQUEST_HEAD =>
        {
            None
        }
        (Err(Refused::Io(e)), None) if e.kind() == io::ErrorKind::UnexpectedEof => {
            assert!(
                wire.len() <= MAX_REQUEST_HEAD,
                "read past the limit before giving up"
            );
            None
        }
        (read, end) => panic!(
            "{} bytes with a head ending at {end:?}: read as {:?}",
            wire.len(),
            read.map(|(head, rest)| (head.len(), rest.len()))
        ),
    }
}

/// What a listener with `options` answers to the request `head` from `peer`.
pub(crate) fn decide(
    head: &[u8],
    peer: SocketAddr,
    secure: bool,
    options: &WebOptions,
) -> Decision {
    match answer(head, peer, secure, options) {
        Answer::Upgrade { accept, client } => {
            assert!(
                client == peer || !options.trusted_proxies.is_empty(),
                "a client other than the peer, with no proxy trusted"
            );
            Decision::Upgrade { accept, client }
        }
        Answer::Page(page, head_only) => Decision::Page {
            content_type: page.content_type,
            head_only,
        },
        Answer::NotFound(status, _) => Decision::Answered(status),
        Answer::Refuse(Refused::Status { status, .. }) => Decision::Refused(status),
        Answer::Refuse(Refused::Origin(_)) => Decision::CrossOrigin,
        Answer::Refuse(Refused::Io(e)) => panic!("deciding did I/O: {e}"),
    }
}

/// The client behind `peer` by `header` (`X-Forwarded-For`), checked: from an
/// untrusted peer or without the header it is the peer itself; otherwise it is the
/// peer or an address the header names, not trusted unless every entry is, and
/// without a port (none is known).
pub(crate) fn forwarded(
    peer: SocketAddr,
    header: Option<&str>,
    trusted: &[IpNet],
) -> Result<SocketAddr, ()> {
    let client = forwarded_client(peer, header, trusted);
    let is_trusted = |ip| trusted.iter().any(|net: &IpNet| net.contains(&ip));
    let Some(header) = header.filter(|_| is_trusted(peer.ip())) else {
        assert_eq!(client, Ok(peer), "believed a header from an untrusted peer");
        return client;
    };
    let entries: Option<Vec<_>> = header
        .split(',')
        .map(|e| forwarded_address(e.trim()))
        .collect();
    match (client, entries) {
        (Ok(client), Some(entries)) => {
            if client != peer {
                assert!(
                    entries.contains(&client.ip()),
                    "{client} is not in {header:?}"
                );
                assert_eq!(
                    client.port(),
                    0,
                    "a port for a client whose port is unknown"
                );
                let all_trusted = entries.iter().all(|ip| is_trusted(*ip));
                assert!(
                    all_trusted || !is_trusted(client.ip()),
                    "a trusted proxy taken for the client"
                );
            }
        }
        // An entry that is not an address makes the header malformed, unless a
        // stranger to its right was found first (entries are read from the right).
        (Err(()), entries) => assert!(
            entries.is_none(),
            "{header:?} refused, yet every entry is an address"
        ),
        (Ok(_), None) => {}
    }
    client
}
