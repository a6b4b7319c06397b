-- The whole schema of the PostgreSQL store, the same tables and columns as
-- the SQLite migrations leave (see migrations/), so one set of SQL
-- semantics serves both. Hex and decimal text, as there: amounts are
-- uint256 and stay exact as text; an operator can read them in psql.
--
-- `row_id` is the order a row was stored in (SQLite's `rowid`): the
-- newest channel of a client, and which channels a newer one superseded,
-- are decided by it, not by a clock.

CREATE TABLE channels (
    row_id                 BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    channel_id             TEXT    PRIMARY KEY,
    channel_address        TEXT    NOT NULL,
    client_wallet_address  TEXT    NOT NULL,
    client_public_key      TEXT    NOT NULL,
    deposit                TEXT    NOT NULL,
    expires_at             BIGINT  NOT NULL,
    -- Chain time after which the channel takes no payments and, holding
    -- server money, is closed: expiry less the settlement margin.
    settle_by              BIGINT  NOT NULL,
    client_balance         TEXT    NOT NULL,
    server_balance         TEXT    NOT NULL,
    sequence               BIGINT  NOT NULL,
    signature              TEXT    NOT NULL,
    -- What the latest payment bought; NULL for the opening state.
    window_stream          TEXT,
    window_first_segment   BIGINT,
    window_segment_count   BIGINT,
    status                 TEXT    NOT NULL
        CHECK (status IN ('open', 'final', 'closing', 'closed', 'refunded')),
    -- The newest signed close (recorded before it is broadcast, so a
    -- restart re-broadcasts the same transaction), or the close seen on
    -- chain once closed.
    close_tx               TEXT,
    -- pending: in a block, not yet `--confirmations` deep; confirmed; or
    -- missing: a reorg removed it, and nothing more is sold on it.
    open_state             TEXT    NOT NULL DEFAULT 'confirmed'
        CHECK (open_state IN ('pending', 'confirmed', 'missing')),
    -- The block holding the channel's `Opened` event, when known.
    open_block             BIGINT,
    open_block_hash        TEXT,
    -- The close in flight: the sequence it closes with, its nonce, the
    -- latest block number when its newest version was signed (fee bumps
    -- count blocks from there), and where a version was seen mined (a
    -- reorg can undo that).
    close_sequence         BIGINT,
    close_nonce            BIGINT,
    close_signed_at_block  BIGINT,
    close_mined_tx         TEXT,
    close_mined_block      BIGINT,
    close_mined_block_hash TEXT,
    close_mined_success    BOOLEAN,
    -- Unix milliseconds.
    created_at             BIGINT  NOT NULL,
    updated_at             BIGINT  NOT NULL
);

CREATE INDEX channels_by_client ON channels (client_public_key, row_id);
CREATE INDEX channels_by_status ON channels (status, settle_by);

-- Small named counters, e.g. the last block whose events were read.
CREATE TABLE meta (
    name  TEXT   PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Every signed close, oldest first (fee bumps re-sign at the same nonce;
-- whichever is mined wins, so all are kept). Rows of an abandoned close
-- (its nonce taken by another transaction, or reverted) stay, marked, as
-- history.
CREATE TABLE close_attempts (
    row_id     BIGINT  GENERATED ALWAYS AS IDENTITY UNIQUE,
    tx_hash    TEXT    PRIMARY KEY,
    channel_id TEXT    NOT NULL,
    nonce      BIGINT  NOT NULL,
    -- The EIP-2718 bytes, to broadcast the very same transaction again.
    raw        TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    abandoned  BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX close_attempts_by_channel ON close_attempts (channel_id, created_at, row_id);
