-- One row per channel: its latest accepted state (the seed keeps only the
-- latest), the window that state paid for, and where settlement stands.
-- Hex and decimal text, not blobs, so an operator can read the table with
-- the sqlite3 shell.
CREATE TABLE channels (
    channel_id            TEXT    PRIMARY KEY NOT NULL,
    channel_address       TEXT    NOT NULL,
    client_wallet_address TEXT    NOT NULL,
    client_public_key     TEXT    NOT NULL,
    deposit               TEXT    NOT NULL,
    expires_at            INTEGER NOT NULL,
    -- Chain time after which the channel takes no payments and, holding
    -- server money, is closed: expiry less the settlement margin.
    settle_by             INTEGER NOT NULL,
    client_balance        TEXT    NOT NULL,
    server_balance        TEXT    NOT NULL,
    sequence              INTEGER NOT NULL,
    signature             TEXT    NOT NULL,
    -- What the latest payment bought; NULL for the opening state.
    window_stream         TEXT,
    window_first_segment  INTEGER,
    window_segment_count  INTEGER,
    -- open | final | closing | closed | refunded
    status                TEXT    NOT NULL,
    -- The signed close, recorded before it is broadcast, so a restart
    -- re-broadcasts the same transaction instead of sending another.
    close_tx              TEXT,
    close_tx_raw          TEXT,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE INDEX channels_by_client ON channels (client_public_key, created_at);
CREATE INDEX channels_by_status ON channels (status, settle_by);

-- Small named counters, e.g. the last block whose events were read.
CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
