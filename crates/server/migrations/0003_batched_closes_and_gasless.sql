-- Batched closes: one `closeMany` transaction closes several channels, so
-- one signed version belongs to every channel of its batch. A version is
-- now keyed by (tx_hash, channel_id); SQLite cannot change a primary key
-- in place, so the table is rebuilt, keeping the order rows were stored
-- in (`rowid`), which orders a close's versions.
CREATE TABLE close_attempts_batched (
    tx_hash    TEXT    NOT NULL,
    channel_id TEXT    NOT NULL,
    nonce      INTEGER NOT NULL,
    -- The EIP-2718 bytes, to broadcast the very same transaction again.
    raw        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    abandoned  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tx_hash, channel_id)
);
INSERT INTO close_attempts_batched (tx_hash, channel_id, nonce, raw, created_at, abandoned)
    SELECT tx_hash, channel_id, nonce, raw, created_at, abandoned FROM close_attempts ORDER BY rowid;
DROP TABLE close_attempts;
ALTER TABLE close_attempts_batched RENAME TO close_attempts;
CREATE INDEX close_attempts_by_channel ON close_attempts (channel_id, created_at);

-- Opened by the server with the client's authorization (`openChannel`):
-- such a channel is closed even when it holds none of the server's money,
-- once superseded or at its settlement margin, so the client, who may
-- hold no coin for gas, gets the deposit back (PROTOCOL.md 1.1).
ALTER TABLE channels ADD COLUMN gasless INTEGER NOT NULL DEFAULT 0;
