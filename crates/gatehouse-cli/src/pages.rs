//! What the binary's WebSocket listeners serve over plain HTTP, compiled in: for
//! every service the protocol's browser library (`clients/web/gatehouse.js`, for a
//! page of any origin's own to import), and for arena its browser client: the page
//! at `/`, its script modules and style sheet by name. The page connects back to
//! the same listener at `/ws`.

use gatehouse::listener::Pages;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The protocol's browser library, at `/gatehouse.js`.
pub(crate) fn client_library() -> Pages {
    Pages::new().with(
        "/gatehouse.js",
        JS,
        include_str!("../../../clients/web/gatehouse.js"),
    )
}

/// The files of `clients/web` arena's page loads.
pub(crate) fn arena() -> Pages {
    let index = include_str!("../../../clients/web/index.html");
    client_library()
        .with("/", HTML, index)
        .with("/index.html", HTML, index)
        .with(
            "/arena_pb.js",
            JS,
            include_str!("../../../clients/web/arena_pb.js"),
        )
        .with(
            "/arena.js",
            JS,
            include_str!("../../../clients/web/arena.js"),
        )
        .with(
            "/style.css",
            CSS,
            include_str!("../../../clients/web/style.css"),
        )
}
