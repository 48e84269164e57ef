//! `docs/PROTOCOL.md` against the implementation: the specification's hex test
//! vectors, kick-reason and status tables and default limits must agree with
//! `gatehouse_protocol`, so the document client authors rely on cannot drift from
//! the code.
//!
//! The `vectors` block holds whole frames (4-byte length included) and their
//! canonical decoded form; each must decode to that form and re-encode to exactly
//! the same bytes. The `invalid-vectors` block holds malformed bodies and the
//! [`DecodeError`] each must produce.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use gatehouse_protocol::{
    DecodeError, KickReason, Message, Status, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, MAX_NONCE_LEN,
    RESERVED_ROUTES_START, ROUTE_FAULT_CRASH_HUB, ROUTE_FAULT_PANIC_HANDLER,
};

const PROTOCOL_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");

/// Fewest valid vectors the document may hold, so that the tests cannot pass on an
/// emptied block.
const MIN_VALID_VECTORS: usize = 14;

/// Every kind name [`Message::kind_name`] can return.
const ALL_KINDS: [&str; 12] = [
    "empty", "request", "notify", "response", "push", "ping", "pong", "kick", "session", "resume",
    "resumed", "ack",
];

/// Every expected-error name the `invalid-vectors` block may use.
const ALL_ERRORS: [&str; 5] = [
    "unknown_kind",
    "truncated",
    "nonce_too_long",
    "kick_text_not_utf8",
    "trailing_bytes",
];

/// One line of a vectors block: `name | hex | expected`.
struct Vector {
    /// 1-based line in PROTOCOL.md, for failure messages.
    line: usize,
    name: String,
    hex: String,
    expected: String,
}

fn read_doc() -> String {
    std::fs::read_to_string(PROTOCOL_MD)
        .unwrap_or_else(|e| panic!("cannot read {PROTOCOL_MD}: {e}"))
}

/// The lines (with their 1-based numbers) of the one fenced block whose info string
/// is exactly `info`.
fn fenced_block<'a>(doc: &'a str, info: &str) -> Vec<(usize, &'a str)> {
    let opening = format!("```{info}");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<(usize, &str)>> = None;
    for (index, line) in doc.lines().enumerate() {
        let trimmed = line.trim_end();
        match current.as_mut() {
            None if trimmed == opening => current = Some(Vec::new()),
            None => {}
            Some(_) if trimmed == "```" => blocks.extend(current.take()),
            Some(lines) => lines.push((index + 1, line)),
        }
    }
    assert!(current.is_none(), "the ```{info} block is not closed");
    assert_eq!(
        blocks.len(),
        1,
        "PROTOCOL.md must hold exactly one ```{info} block"
    );
    blocks.pop().unwrap_or_default()
}

/// Parses a vectors block, skipping blank and `#` lines; every other line must have
/// exactly three `|`-separated fields, and names must be unique.
fn vectors(doc: &str, info: &str) -> Vec<Vector> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (line, text) in fenced_block(doc, info) {
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = text.splitn(3, '|').map(str::trim).collect();
        let [name, hex, expected] = fields[..] else {
            panic!("PROTOCOL.md:{line}: expected `name | hex | expected`, got {text:?}");
        };
        assert!(
            seen.insert(name.to_owned()),
            "PROTOCOL.md:{line}: vector name {name:?} is used twice"
        );
        out.push(Vector {
            line,
            name: name.to_owned(),
            hex: hex.to_owned(),
            expected: expected.to_owned(),
        });
    }
    out
}

fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    fn nibble(c: u8) -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(format!("{:?} is not a lowercase hex digit", char::from(c))),
        }
    }
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks_exact(2)
        .map(|pair| Ok((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]])
        .map(char::from)
        .collect()
}

/// The canonical decoded form used by the vectors.
fn render(message: &Message) -> String {
    match message {
        Message::Empty => "empty".to_owned(),
        Message::Request { id, route, payload } => {
            format!("request id={id} route={route} payload={}", to_hex(payload))
        }
        Message::Notify { route, payload } => {
            format!("notify route={route} payload={}", to_hex(payload))
        }
        Message::Response {
            id,
            status,
            payload,
        } => format!(
            "response id={id} status={} payload={}",
            status.0,
            to_hex(payload)
        ),
        Message::Push { route, payload } => {
            format!("push route={route} payload={}", to_hex(payload))
        }
        Message::Ping(nonce) => format!("ping nonce={}", to_hex(nonce)),
        Message::Pong(nonce) => format!("pong nonce={}", to_hex(nonce)),
        Message::Kick { reason, text } => format!("kick reason={} text=\"{text}\"", reason.0),
        Message::Session {
            id,
            window_ms,
            token,
        } => format!(
            "session id={id} window_ms={window_ms} token={}",
            to_hex(token)
        ),
        Message::Resume {
            id,
            received,
            token,
        } => format!("resume id={id} received={received} token={}", to_hex(token)),
        Message::Resumed { received } => format!("resumed received={received}"),
        Message::Ack { count } => format!("ack count={count}"),
    }
}

fn error_name(error: &DecodeError) -> &'static str {
    match error {
        DecodeError::UnknownKind(_) => "unknown_kind",
        DecodeError::Truncated { .. } => "truncated",
        DecodeError::NonceTooLong(_) => "nonce_too_long",
        DecodeError::KickTextNotUtf8 => "kick_text_not_utf8",
        DecodeError::TrailingBytes { .. } => "trailing_bytes",
    }
}

/// Checks one valid vector; `Ok` carries the decoded message's kind name.
fn check_valid(vector: &Vector) -> Result<&'static str, String> {
    let frame = from_hex(&vector.hex)?;
    let Some((header, body)) = frame.split_first_chunk::<HEADER_LEN>() else {
        return Err(format!("{} bytes: shorter than the header", frame.len()));
    };
    let announced = u32::from_be_bytes(*header);
    if usize::try_from(announced).ok() != Some(body.len()) {
        return Err(format!(
            "length prefix says {announced}, the body has {} bytes",
            body.len()
        ));
    }
    let message = Message::decode(Bytes::copy_from_slice(body))
        .map_err(|e| format!("does not decode: {e}"))?;
    let rendered = render(&message);
    if rendered != vector.expected {
        return Err(format!(
            "decodes to `{rendered}`, the document says `{}`",
            vector.expected
        ));
    }
    let reencoded = message.to_frame();
    if reencoded[..] != frame[..] {
        return Err(format!(
            "re-encodes to {}, the document says {}",
            to_hex(&reencoded),
            vector.hex
        ));
    }
    Ok(message.kind_name())
}

/// Checks one malformed body; `Ok` carries the error's name.
fn check_invalid(vector: &Vector) -> Result<&'static str, String> {
    let body = from_hex(&vector.hex)?;
    let error = match Message::decode(Bytes::copy_from_slice(&body)) {
        Ok(message) => return Err(format!("decodes to `{}`", render(&message))),
        Err(error) => error,
    };
    let name = error_name(&error);
    if name != vector.expected {
        return Err(format!(
            "fails with {name} ({error}), the document says {}",
            vector.expected
        ));
    }
    // The error's details must describe this body, not some other one.
    let consistent = match error {
        DecodeError::UnknownKind(kind) => body.first() == Some(&kind),
        DecodeError::Truncated { needed, actual, .. } => actual == body.len() && needed > actual,
        DecodeError::NonceTooLong(len) => len == body.len() - 1 && len > MAX_NONCE_LEN,
        DecodeError::KickTextNotUtf8 => true,
        DecodeError::TrailingBytes {
            expected, actual, ..
        } => actual == body.len() && expected < actual,
    };
    if consistent {
        Ok(name)
    } else {
        Err(format!(
            "{error:?} does not describe the body {}",
            vector.hex
        ))
    }
}

/// Runs `check` on every vector and fails once, listing every failing line.
fn check_all(
    vectors: &[Vector],
    check: fn(&Vector) -> Result<&'static str, String>,
) -> BTreeMap<&'static str, usize> {
    let mut seen = BTreeMap::new();
    let mut failures = Vec::new();
    for vector in vectors {
        match check(vector) {
            Ok(name) => *seen.entry(name).or_default() += 1,
            Err(why) => failures.push(format!(
                "PROTOCOL.md:{} {}: {why}",
                vector.line, vector.name
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} vector(s) disagree with gatehouse::protocol:\n{}",
        failures.len(),
        failures.join("\n")
    );
    seen
}

#[test]
fn every_documented_vector_decodes_and_reencodes_byte_for_byte() {
    let doc = read_doc();
    let valid = vectors(&doc, "vectors");
    let kinds = check_all(&valid, check_valid);
    assert!(
        valid.len() >= MIN_VALID_VECTORS,
        "only {} valid vectors; the specification promises at least {MIN_VALID_VECTORS}",
        valid.len()
    );
    let missing: Vec<_> = ALL_KINDS
        .iter()
        .filter(|kind| !kinds.contains_key(*kind))
        .collect();
    assert!(missing.is_empty(), "no vector of kind(s) {missing:?}");
}

#[test]
fn every_documented_malformed_body_is_rejected_with_its_decode_error() {
    let doc = read_doc();
    let invalid = vectors(&doc, "invalid-vectors");
    let errors = check_all(&invalid, check_invalid);
    let missing: Vec<_> = ALL_ERRORS
        .iter()
        .filter(|error| !errors.contains_key(*error))
        .collect();
    assert!(missing.is_empty(), "no invalid vector for {missing:?}");
}

/// The rows of the first markdown table under the heading `## {heading}` whose first
/// cell is a number: `(code, second cell without backticks)`.
fn table_rows(doc: &str, heading: &str) -> Vec<(u16, String)> {
    let wanted = format!("## {heading}");
    let section: Vec<&str> = doc
        .lines()
        .skip_while(|line| line.trim_end() != wanted)
        .skip(1)
        .take_while(|line| !line.starts_with("## "))
        .collect();
    assert!(!section.is_empty(), "PROTOCOL.md has no `{wanted}` section");
    section
        .iter()
        .filter_map(|line| {
            let mut cells = line.trim().strip_prefix('|')?.split('|').map(str::trim);
            let code = cells.next()?.parse().ok()?;
            let name = cells.next()?.trim_matches('`').to_owned();
            Some((code, name))
        })
        .collect()
}

#[test]
fn documented_kick_reasons_are_exactly_the_framework_ones() {
    let doc = read_doc();
    let documented = table_rows(&doc, "Kick reasons");
    for (code, name) in &documented {
        assert_eq!(
            KickReason(*code).name(),
            Some(name.as_str()),
            "kick reason {code} is documented as {name:?}"
        );
    }
    let documented: BTreeSet<u16> = documented.iter().map(|(code, _)| *code).collect();
    let defined: BTreeSet<u16> = (0..1000)
        .filter(|code| KickReason(*code).name().is_some())
        .collect();
    assert_eq!(
        documented, defined,
        "the kick reason table must list every framework reason"
    );
}

#[test]
fn documented_status_codes_match_the_framework_ones() {
    let doc = read_doc();
    let documented: BTreeMap<u16, String> = table_rows(&doc, "Status codes").into_iter().collect();
    let framework = [
        Status::OK,
        Status::BAD_REQUEST,
        Status::FORBIDDEN,
        Status::UNKNOWN_ROUTE,
        Status::INTERNAL_ERROR,
        Status::UNAVAILABLE,
    ];
    for status in framework {
        assert_eq!(
            documented.get(&status.0),
            Some(&status.to_string()),
            "status {} is missing from the table or misnamed",
            status.0
        );
    }
    assert_eq!(
        documented.len(),
        framework.len(),
        "the status table documents a code the framework does not define: {documented:?}"
    );
}

#[test]
fn documented_limits_and_reserved_routes_match_the_protocol_constants() {
    let doc = read_doc();
    let expected = [
        format!("**{DEFAULT_MAX_FRAME_LEN}**"),
        format!("0 to {MAX_NONCE_LEN} bytes"),
        format!("`{RESERVED_ROUTES_START:#06x}`"),
        format!("`{ROUTE_FAULT_CRASH_HUB:#06x}` ({ROUTE_FAULT_CRASH_HUB})"),
        format!("`{ROUTE_FAULT_PANIC_HANDLER:#06x}` ({ROUTE_FAULT_PANIC_HANDLER})"),
    ];
    let missing: Vec<_> = expected
        .iter()
        .filter(|text| !doc.contains(text.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "PROTOCOL.md no longer states {missing:?}; update it with the code"
    );
}

/// The WebSocket vectors: each frame is what tungstenite makes of the stated
/// meaning (a binary message carrying the envelope, masked with `01020304` when the
/// client sends it; a close frame), and a kick's close code is the one
/// [`KickReason::websocket_close_code`] gives.
#[test]
fn every_documented_websocket_frame_is_what_a_websocket_library_makes() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};

    let doc = read_doc();
    let vectors = vectors(&doc, "websocket-vectors");
    assert!(vectors.len() >= 8, "too few WebSocket vectors");
    let mut close_codes = BTreeSet::new();
    for vector in &vectors {
        let mut frame = if let Some(form) = vector.expected.strip_prefix("binary ") {
            // The envelope of the stated form, by way of the framing vectors' parser.
            let body =
                envelope_of(form).unwrap_or_else(|e| panic!("PROTOCOL.md:{}: {e}", vector.line));
            Frame::message(body, OpCode::Data(Data::Binary), true)
        } else if let Some(close) = vector.expected.strip_prefix("close code=") {
            let (code, reason) = close
                .split_once(" reason=")
                .expect("close code=N reason=\"…\"");
            let code: u16 = code.parse().unwrap();
            close_codes.insert(code);
            let reason = reason.trim_matches('"').to_owned();
            Frame::close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            }))
        } else {
            panic!(
                "PROTOCOL.md:{}: unknown meaning {:?}",
                vector.line, vector.expected
            );
        };
        if vector.name.starts_with("client_") {
            frame.header_mut().mask = Some([1, 2, 3, 4]);
        }
        let mut bytes = Vec::new();
        frame.format(&mut bytes).unwrap();
        assert_eq!(
            to_hex(&bytes),
            vector.hex,
            "PROTOCOL.md:{}: {}",
            vector.line,
            vector.name
        );
    }
    let expected: BTreeSet<u16> = [
        KickReason::SHUTDOWN,
        KickReason::SERVER_FULL,
        KickReason(1003),
    ]
    .iter()
    .map(|reason| reason.websocket_close_code())
    .collect();
    assert_eq!(
        close_codes, expected,
        "the close codes shown are the mapping's"
    );
}

/// The envelope body of a message written in the vectors' canonical form (the
/// inverse of [`render`], checked against it).
fn envelope_of(form: &str) -> Result<Vec<u8>, String> {
    let (kind, rest) = form.split_once(' ').unwrap_or((form, ""));
    let field = |name: &str| -> Result<&str, String> {
        rest.split(' ')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .ok_or_else(|| format!("`{form}` lacks {name}="))
    };
    let number = |name: &str| -> Result<u32, String> {
        field(name)?.parse().map_err(|e| format!("{name}: {e}"))
    };
    let route =
        || -> Result<u16, String> { u16::try_from(number("route")?).map_err(|e| e.to_string()) };
    let bytes = |name: &str| -> Result<Bytes, String> { Ok(Bytes::from(from_hex(field(name)?)?)) };
    let message = match kind {
        "empty" => Message::Empty,
        "request" => Message::Request {
            id: number("id")?,
            route: route()?,
            payload: bytes("payload")?,
        },
        "notify" => Message::Notify {
            route: route()?,
            payload: bytes("payload")?,
        },
        "response" => Message::Response {
            id: number("id")?,
            status: Status(u16::try_from(number("status")?).map_err(|e| e.to_string())?),
            payload: bytes("payload")?,
        },
        "push" => Message::Push {
            route: route()?,
            payload: bytes("payload")?,
        },
        "ping" => Message::Ping(bytes("nonce")?),
        "pong" => Message::Pong(bytes("nonce")?),
        "kick" => {
            let text = rest.split_once("text=").ok_or("kick lacks text=")?.1;
            Message::Kick {
                reason: KickReason(u16::try_from(number("reason")?).map_err(|e| e.to_string())?),
                text: text.trim_matches('"').to_owned(),
            }
        }
        other => return Err(format!("unknown kind {other:?}")),
    };
    if render(&message) != form {
        return Err(format!("`{form}` is not canonical: `{}`", render(&message)));
    }
    Ok(message.to_frame()[HEADER_LEN..].to_vec())
}

#[test]
fn the_hex_helpers_roundtrip_every_byte() {
    let all: Vec<u8> = (0..=255).collect();
    assert_eq!(from_hex(&to_hex(&all)), Ok(all));
    assert!(from_hex("0").is_err());
    assert!(from_hex("0G").is_err());
    assert!(
        from_hex("AB").is_err(),
        "the vectors use lowercase hex only"
    );
}
