-- gwsync's PostgreSQL layout, schema 3: coalescing dirty marks across replicas (DESIGN §10).
--
-- `dirty.read_generation` is the generation the last sync to claim the calendar read before
-- fetching, and `read_windows.next_read_at` the earliest a sync may read the calendar's mark
-- again (the reader's settling window; an earlier read is refused). A notification needs a
-- new mark only when the pending one has been read (a sync that started before it may miss
-- its change); while `generation > read_generation` the pending mark is unread and covers it,
-- and it stays unread at least until `next_read_at`, so a replica that does not hold the
-- calendar writes nothing for most notifications and does not even ask again before then.
-- The window has its own row, not the mark's, so the promise outlasts a mark that is cleared
-- and made anew; and not the calendar's, which the first sync (the one at registration)
-- writes only after its read. It goes with the user row.
ALTER TABLE dirty ADD COLUMN IF NOT EXISTS read_generation BIGINT NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS read_windows (
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    next_read_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, email),
    FOREIGN KEY (tenant, email) REFERENCES users (tenant, email) ON DELETE CASCADE
);

-- The schema each live replica runs. A build from before this migration neither records its
-- reads nor fills this column (NULL), so while one is alive the others mark every notification
-- anew, as it does (a rolling upgrade stays correct).
ALTER TABLE cluster_members ADD COLUMN IF NOT EXISTS schema_version INTEGER;
