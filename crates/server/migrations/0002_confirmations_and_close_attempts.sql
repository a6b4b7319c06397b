-- Version 1.1: where each channel's `open` stands (a reorg can remove it)
-- and every signed version of each close (fee bumps re-sign at the same
-- nonce; whichever is mined wins, so all are kept).

-- pending: seen in a block, not yet `--confirmations` deep;
-- confirmed: deep enough, or accepted by a server that trusted the latest
--   block (every channel stored before this migration);
-- missing: a reorg removed it; sold nothing more until it is back.
ALTER TABLE channels ADD COLUMN open_state TEXT NOT NULL DEFAULT 'confirmed';
-- The block holding the channel's `Opened` event, when known.
ALTER TABLE channels ADD COLUMN open_block INTEGER;
ALTER TABLE channels ADD COLUMN open_block_hash TEXT;

-- The close in flight: the sequence it closes with, the latest block
-- number when its newest version was signed (fee bumps count blocks from
-- there), and where a version was seen mined (a reorg can undo that).
ALTER TABLE channels ADD COLUMN close_sequence INTEGER;
ALTER TABLE channels ADD COLUMN close_nonce INTEGER;
ALTER TABLE channels ADD COLUMN close_signed_at_block INTEGER;
ALTER TABLE channels ADD COLUMN close_mined_tx TEXT;
ALTER TABLE channels ADD COLUMN close_mined_block INTEGER;
ALTER TABLE channels ADD COLUMN close_mined_block_hash TEXT;
ALTER TABLE channels ADD COLUMN close_mined_success INTEGER;

-- Every signed close, oldest first. Rows of an abandoned close (its nonce
-- taken by another transaction, or reverted) stay, marked, as history.
CREATE TABLE close_attempts (
    tx_hash    TEXT    PRIMARY KEY NOT NULL,
    channel_id TEXT    NOT NULL,
    nonce      INTEGER NOT NULL,
    -- The EIP-2718 bytes, to broadcast the very same transaction again.
    raw        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    abandoned  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX close_attempts_by_channel ON close_attempts (channel_id, created_at);

-- A close in flight under version 1 keeps being seen through: its one
-- signed version becomes its first attempt (the nonce is read back from
-- the bytes when it is loaded).
INSERT INTO close_attempts (tx_hash, channel_id, nonce, raw, created_at)
    SELECT close_tx, channel_id, -1, close_tx_raw, updated_at FROM channels
    WHERE status = 'closing' AND close_tx IS NOT NULL AND close_tx_raw IS NOT NULL;
UPDATE channels SET close_sequence = sequence, close_signed_at_block = 0 WHERE status = 'closing';
