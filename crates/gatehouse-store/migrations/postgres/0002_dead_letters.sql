-- Saves that did not land and never will: the losing side of a conflict, or a record
-- the database kept refusing. Kept for an operator; nothing reads them back.
CREATE TABLE IF NOT EXISTS dead_letters (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key     BYTEA NOT NULL,  -- bytes: a key refused as text must still fit
    version BIGINT NOT NULL,
    data    BYTEA NOT NULL,
    reason  TEXT NOT NULL,   -- 'conflict' or 'failed'
    detail  TEXT NOT NULL,   -- both versions of a conflict, or the last error
    at      BIGINT NOT NULL  -- unix milliseconds
);
