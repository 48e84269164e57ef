-- One row per saved key (a player): the latest state, with the version that wrote it.
CREATE TABLE IF NOT EXISTS saves (
    key      TEXT PRIMARY KEY NOT NULL,
    version  BIGINT NOT NULL,
    data     BYTEA NOT NULL,
    saved_at BIGINT NOT NULL -- unix milliseconds
);
