-- Batched closes: one `closeMany` transaction closes several channels, so
-- one signed version belongs to every channel of its batch: a version is
-- keyed by (tx_hash, channel_id).
ALTER TABLE close_attempts DROP CONSTRAINT close_attempts_pkey;
ALTER TABLE close_attempts ADD PRIMARY KEY (tx_hash, channel_id);

-- Opened by the server with the client's authorization (`openChannel`):
-- such a channel is closed even when it holds none of the server's money,
-- once superseded or at its settlement margin, so the client, who may
-- hold no coin for gas, gets the deposit back (PROTOCOL.md 1.1).
ALTER TABLE channels ADD COLUMN gasless BOOLEAN NOT NULL DEFAULT FALSE;
