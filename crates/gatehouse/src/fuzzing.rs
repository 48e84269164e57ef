//! Entry points for the fuzz targets in `fuzz/` (and the property tests), to code a
//! game never calls: the connection core and the WebSocket listener's HTTP parsing
//! are crate-private. Thin: each runs a check that lives beside the code it checks
//! (`connection/scenario.rs`, `listener/http_checks.rs`). Not an API: hidden, and
//! compiled only for tests and with the `fuzzing` feature.

use std::time::Instant;

#[cfg(feature = "websocket")]
pub use self::http_upgrade::*;
pub use crate::connection::scenario::{ClientFrame, Script, Settings, Step};

/// Runs `script` against a fresh connection core, checking its invariants.
pub fn connection_core(script: &Script) {
    crate::connection::scenario::run(script, Instant::now());
}

/// The WebSocket listener's HTTP checks (the `fuzzing` feature brings `websocket`).
#[cfg(feature = "websocket")]
mod http_upgrade {
    use std::net::SocketAddr;

    use crate::listener::http::checks;
    pub use crate::listener::http::checks::Decision;
    use crate::listener::WebOptions;

    /// Reads a request head from `wire` arriving in `chunks`, checking the reading; the
    /// head, if one was read.
    pub fn read_request(wire: &[u8], chunks: &[usize]) -> Option<Vec<u8>> {
        checks::read_request(wire, chunks)
    }

    /// What a `ws` listener with `options` answers to `head` from `peer`.
    pub fn decide(head: &[u8], peer: SocketAddr, secure: bool, options: &WebOptions) -> Decision {
        checks::decide(head, peer, secure, options)
    }

    /// The client behind `peer` by an `X-Forwarded-For` header, checked; `None` for a
    /// malformed header.
    pub fn forwarded_for(
        peer: SocketAddr,
        header: Option<&str>,
        trusted: &[ipnet::IpNet],
    ) -> Option<SocketAddr> {
        checks::forwarded(peer, header, trusted).ok()
    }
}

/// The property tests' settings: `cases` runs, or `PROPTEST_CASES` when set (for long
/// runs); no failure files (a failure's smallest input becomes a named unit test).
#[cfg(test)]
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    proptest::test_runner::Config {
        failure_persistence: None,
        ..proptest::test_runner::Config::with_cases(cases)
    }
}
