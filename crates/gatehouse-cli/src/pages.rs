//! arena's browser client (`clients/web`), compiled into the binary and served by its
//! WebSocket listeners: the page at `/`, its script modules and style sheet by name.
//! The page connects back to the same listener at `/ws`.

use gatehouse::listener::Pages;

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The files of `clients/web` the page loads.
pub(crate) fn arena() -> Pages {
    let index = include_str!("../../../clients/web/index.html");
    Pages::new()
        .with("/", HTML, index)
        .with("/index.html", HTML, index)
        .with(
            "/gatehouse.js",
            JS,
            include_str!("../../../clients/web/gatehouse.js"),
        )
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
