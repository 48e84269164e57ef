-- One row per saved key (a player): the latest state, with the version that wrote it.
CREATE TABLE IF NOT EXISTS saves (
    key      TEXT PRIMARY KEY NOT NULL,
    version  INTEGER NOT NULL,
    data     BLOB NOT NULL,
    saved_at INTEGER NOT NULL -- unix milliseconds
);
