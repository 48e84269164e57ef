//! Property tests of the WebSocket listener's HTTP parsing, through the checks of
//! `http_checks.rs`: any bytes in any chunking are a head or a refusal; a well-formed
//! upgrade is decided the same whatever its header order, the case of its names and
//! tokens and the whitespace around its values, and as the specification says; and
//! `X-Forwarded-For` likewise. Fixed case counts (`PROPTEST_CASES` overrides them);
//! no failure files: a failure's smallest input becomes a named unit test.

#![cfg(test)]

use std::net::{IpAddr, SocketAddr};

use proptest::collection::vec;
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::checks::{decide, forwarded, read_request, Decision};
use super::{Pages, WebOptions, MAX_REQUEST_HEAD};
use crate::fuzzing::proptest_config;

const HOST: &str = "play.example:7080";
const TRUSTED_PEER: &str = "10.0.0.1:5000";
const STRANGER_PEER: &str = "198.51.100.9:5000";

fn options() -> WebOptions {
    WebOptions {
        allowed_origins: vec!["https://game.example".to_owned()],
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
        pages: Pages::new().with("/", "text/html", "<p>arena</p>").with(
            "/app.js",
            "text/javascript",
            "run()",
        ),
    }
}

fn trusted(ip: IpAddr) -> bool {
    options()
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&ip))
}

/// `X-Forwarded-For` entries, in the forms a proxy writes them.
fn forwarded_entry() -> impl Strategy<Value = (&'static str, IpAddr)> {
    prop_oneof![
        Just(("203.0.113.7", "203.0.113.7")),
        Just(("10.0.0.2", "10.0.0.2")),
        Just(("198.51.100.1:8080", "198.51.100.1")),
        Just(("[2001:db8::5]:443", "2001:db8::5")),
        Just(("[2001:db8::6]", "2001:db8::6")),
        Just(("fd00::3", "fd00::3")),
    ]
    .prop_map(|(text, ip)| (text, ip.parse().unwrap()))
}

/// The client the specification names: from the right, the first address that is
/// not one of our proxies (or the leftmost, if all are); only from a trusted peer.
fn expected_client(peer: SocketAddr, entries: &[IpAddr]) -> SocketAddr {
    if entries.is_empty() || !trusted(peer.ip()) {
        return peer;
    }
    let client = entries
        .iter()
        .rev()
        .find(|ip| !trusted(**ip))
        .or(entries.first())
        .copied()
        .unwrap_or(peer.ip());
    SocketAddr::new(client, if client == peer.ip() { peer.port() } else { 0 })
}

/// Spaces and tabs, as HTTP allows around values and list items.
fn whitespace() -> impl Strategy<Value = String> {
    prop_oneof![Just(""), Just(" "), Just("\t"), Just("  \t ")].prop_map(str::to_owned)
}

/// `text` with the case of each letter flipped or not.
fn any_case(text: &'static str) -> impl Strategy<Value = String> {
    vec(any::<bool>(), text.len()).prop_map(move |flips| {
        text.chars()
            .zip(flips)
            .map(|(c, flip)| {
                if flip {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

#[derive(Debug, Clone, Copy)]
enum Origin {
    None,
    Listed,
    Own,
    Foreign,
}

/// A well-formed upgrade request: its parts, a canonical rendering and one with the
/// header order, name and token case, and whitespace varied.
#[derive(Debug)]
struct Upgrade {
    peer: SocketAddr,
    key: String,
    origin: Origin,
    forwarded: Vec<IpAddr>,
    canonical: String,
    varied: String,
}

/// One header line's parts: canonical name, name as written, value as written.
type Line = (&'static str, String, String);

fn upgrade() -> impl Strategy<Value = Upgrade> {
    let names = (
        any_case("upgrade"),
        any_case("connection"),
        any_case("sec-websocket-version"),
        any_case("sec-websocket-key"),
        any_case("origin"),
        any_case("x-forwarded-for"),
        any_case("x-forwarded-proto"),
        any_case("host"),
    );
    let tokens = (any_case("websocket"), any_case("upgrade"), any::<bool>());
    let parts = (
        any::<bool>(),
        "[A-Za-z0-9+/]{22}==",
        prop_oneof![
            Just(Origin::None),
            Just(Origin::Listed),
            Just(Origin::Own),
            Just(Origin::Foreign)
        ],
        vec(forwarded_entry(), 0..4),
        1usize..3,
        prop::option::of(prop_oneof![Just("https"), Just("http")]),
    );
    let spacing = (
        vec(whitespace(), 32),
        any::<prop::sample::Index>(),
        0usize..4,
    );
    (names, tokens, parts, spacing)
        .prop_flat_map(|(names, tokens, parts, spacing)| {
            let (n_up, n_conn, n_ver, n_key, n_origin, n_xff, n_xfp, n_host) = names;
            let (websocket, upgrade_token, keep_alive) = tokens;
            let (from_proxy, key, origin, entries, xff_lines, proto) = parts;
            let (ws, split, extras) = spacing;
            let peer: SocketAddr = if from_proxy {
                TRUSTED_PEER
            } else {
                STRANGER_PEER
            }
            .parse()
            .unwrap();
            let secure = proto == Some("https") && from_proxy;
            let scheme = if secure { "https" } else { "http" };
            let origin_value = match origin {
                Origin::None => None,
                Origin::Listed => Some("https://game.example".to_owned()),
                Origin::Own => Some(format!("{scheme}://{HOST}")),
                Origin::Foreign => Some("https://evil.example".to_owned()),
            };
            let mut w = ws.into_iter().cycle();
            let mut pad = |value: &str| {
                format!(
                    "{}{value}{}",
                    w.next().unwrap_or_default(),
                    w.next().unwrap_or_default()
                )
            };
            let connection = if keep_alive {
                format!("keep-alive{},{}{upgrade_token}", pad(""), pad(""))
            } else {
                upgrade_token.clone()
            };
            let mut lines: Vec<Line> = vec![
                ("Host", n_host, pad(HOST)),
                ("Upgrade", n_up, pad(&websocket)),
                ("Connection", n_conn, pad(&connection)),
                ("Sec-WebSocket-Version", n_ver, pad("13")),
                ("Sec-WebSocket-Key", n_key, pad(&key)),
            ];
            if let Some(origin) = &origin_value {
                lines.push(("Origin", n_origin, pad(origin)));
            }
            if let Some(proto) = proto {
                lines.push(("X-Forwarded-Proto", n_xfp, pad(proto)));
            }
            for i in 0..extras {
                lines.push(("X-Extra", format!("X-Extra-{i}"), pad("some value")));
            }
            // The list split over one or more lines, as proxies each add their own.
            let texts: Vec<&str> = entries.iter().map(|(text, _)| *text).collect();
            let at = if texts.is_empty() {
                0
            } else {
                split.index(texts.len())
            };
            let groups: Vec<&[&str]> = if xff_lines > 1 && at > 0 {
                vec![&texts[..at], &texts[at..]]
            } else if texts.is_empty() {
                vec![]
            } else {
                vec![&texts[..]]
            };
            for group in groups {
                let joined: Vec<String> = group.iter().map(|t| pad(t)).collect();
                lines.push(("X-Forwarded-For", n_xff.clone(), joined.join(",")));
            }
            let canonical = render(
                &lines
                    .iter()
                    .map(|(name, _, value)| (*name, name.to_string(), value.trim().to_owned()))
                    .collect::<Vec<_>>(),
                &texts,
            );
            let forwarded: Vec<IpAddr> = entries.iter().map(|(_, ip)| *ip).collect();
            let count = lines.len();
            (
                Just((peer, key, origin, forwarded, canonical, lines)),
                Just((0..count).collect::<Vec<usize>>()).prop_shuffle(),
            )
        })
        .prop_map(
            |((peer, key, origin, forwarded, canonical, lines), order)| {
                // Shuffled, except that the forwarded lines keep their order among
                // themselves (it is the order the proxies added them in).
                let mut xff = lines.iter().filter(|l| l.0 == "X-Forwarded-For");
                let mut others = lines.iter().filter(|l| l.0 != "X-Forwarded-For");
                let slots: Vec<bool> = order
                    .iter()
                    .map(|&i| lines[i].0 == "X-Forwarded-For")
                    .collect();
                let varied: Vec<Line> = slots
                    .iter()
                    .filter_map(|&is_xff| if is_xff { xff.next() } else { others.next() })
                    .cloned()
                    .collect();
                Upgrade {
                    peer,
                    key,
                    origin,
                    forwarded,
                    canonical,
                    varied: render(&varied, &[]),
                }
            },
        )
}

/// A request head of `lines`; with `forwarded`, the canonical single list.
fn render(lines: &[Line], forwarded: &[&str]) -> String {
    let mut head = String::from("GET /ws?room=1 HTTP/1.1\r\n");
    for (canonical, name, value) in lines {
        if *canonical == "X-Forwarded-For" && !forwarded.is_empty() {
            continue;
        }
        head.push_str(&format!("{name}:{value}\r\n"));
    }
    if !forwarded.is_empty() {
        head.push_str(&format!("X-Forwarded-For: {}\r\n", forwarded.join(", ")));
    }
    head.push_str("\r\n");
    head
}

/// Bytes that look like HTTP often enough to reach every branch.
fn http_like() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            vec(any::<u8>(), 0..20),
            Just(b"\r\n".to_vec()),
            Just(b"\r\n\r\n".to_vec()),
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"Upgrade: websocket\r\n".to_vec()),
            Just(b"Connection: Upgrade\r\n".to_vec()),
            Just(b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: x\r\n".to_vec()),
            Just(b"X-Forwarded-For: 1.2.3.4, [::1]:80, junk\r\n".to_vec()),
            Just(b"Origin: https://evil.example\r\n".to_vec()),
        ],
        0..24,
    )
    .prop_map(|pieces| pieces.concat())
}

/// Read sizes: some small enough to split a line ending, some whole heads.
fn chunks() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1usize..8, 1usize..3000], 1..6)
}

proptest! {
    #![proptest_config(proptest_config(1000))]

    #[test]
    fn any_bytes_in_any_chunking_are_a_head_or_a_refusal(
        wire in http_like(),
        chunks in chunks(),
        from_proxy in any::<bool>(),
    ) {
        let peer = if from_proxy { TRUSTED_PEER } else { STRANGER_PEER }.parse().unwrap();
        if let Some(head) = read_request(&wire, &chunks) {
            decide(&head, peer, false, &options());
        }
        decide(&wire, peer, true, &options());
    }

    #[test]
    fn a_head_is_accepted_up_to_the_limit_and_refused_past_it(
        length in (MAX_REQUEST_HEAD - 40)..(MAX_REQUEST_HEAD + 40),
        chunks in chunks(),
        trailing in vec(any::<u8>(), 0..64),
    ) {
        let start = "GET / HTTP/1.1\r\nX-Pad: ";
        let end = "\r\n\r\n";
        let pad = "p".repeat(length.saturating_sub(start.len() + end.len()));
        let head = format!("{start}{pad}{end}");
        let wire = [head.as_bytes(), &trailing].concat();
        let read = read_request(&wire, &chunks);
        prop_assert_eq!(read.is_some(), head.len() <= MAX_REQUEST_HEAD);
    }

    #[test]
    fn an_upgrade_is_decided_the_same_whatever_its_order_case_and_whitespace(
        upgrade in upgrade(),
        chunks in chunks(),
        frames in vec(any::<u8>(), 0..32),
    ) {
        let options = options();
        let canonical = decide(upgrade.canonical.as_bytes(), upgrade.peer, false, &options);
        let expected = match upgrade.origin {
            Origin::Foreign => Decision::CrossOrigin,
            Origin::None | Origin::Listed | Origin::Own => Decision::Upgrade {
                accept: derive_accept_key(upgrade.key.as_bytes()),
                client: expected_client(upgrade.peer, &upgrade.forwarded),
            },
        };
        prop_assert_eq!(&canonical, &expected, "{}", upgrade.canonical);
        // Read off the wire in pieces, WebSocket frames right behind it.
        let wire = [upgrade.varied.as_bytes(), &frames].concat();
        let head = read_request(&wire, &chunks);
        prop_assert_eq!(head.as_deref(), Some(upgrade.varied.as_bytes()));
        let varied = decide(upgrade.varied.as_bytes(), upgrade.peer, false, &options);
        prop_assert_eq!(varied, canonical, "{}", upgrade.varied);
    }

    #[test]
    fn any_forwarded_for_is_an_address_or_refused(
        header in "[0-9a-f:.,\\[\\] \t]{0,40}|.{0,40}",
        from_proxy in any::<bool>(),
    ) {
        let peer = if from_proxy { TRUSTED_PEER } else { STRANGER_PEER }.parse().unwrap();
        let _ = forwarded(peer, Some(&header), &options().trusted_proxies);
    }

    #[test]
    fn a_forwarded_for_list_names_the_same_client_whatever_its_whitespace(
        entries in vec(forwarded_entry(), 1..6),
        spaces in vec(whitespace(), 12),
        from_proxy in any::<bool>(),
    ) {
        let peer = if from_proxy { TRUSTED_PEER } else { STRANGER_PEER }.parse().unwrap();
        let mut w = spaces.iter().cycle();
        let varied: Vec<String> = entries
            .iter()
            .map(|(text, _)| format!("{}{text}{}", w.next().unwrap(), w.next().unwrap()))
            .collect();
        let ips: Vec<IpAddr> = entries.iter().map(|(_, ip)| *ip).collect();
        let trusted = options().trusted_proxies;
        let client = forwarded(peer, Some(&varied.join(",")), &trusted);
        prop_assert_eq!(client, Ok(expected_client(peer, &ips)));
    }
}
