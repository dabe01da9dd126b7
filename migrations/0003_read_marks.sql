-- gwsync's PostgreSQL layout, schema 3: coalescing dirty marks across replicas (DESIGN §10).
--
-- `dirty.read_generation` is the generation the last sync to claim the calendar read before
-- fetching, and `calendars.next_read_at` the earliest a sync may read the calendar's mark
-- again (the reader's settling window; an earlier read is refused). A notification needs a
-- new mark only when the pending one has been read (a sync that started before it may miss
-- its change); while `generation > read_generation` the pending mark is unread and covers it,
-- and it stays unread at least until `next_read_at`, so a replica that does not hold the
-- calendar writes nothing for most notifications and does not even ask again before then.
-- `next_read_at` lives with the calendar, not the mark, so the promise outlasts a mark that
-- is cleared and made anew.
ALTER TABLE dirty ADD COLUMN IF NOT EXISTS read_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE calendars ADD COLUMN IF NOT EXISTS next_read_at TIMESTAMPTZ;

-- The schema each live replica runs. A build from before this migration neither records its
-- reads nor fills this column (NULL), so while one is alive the others mark every notification
-- anew, as it does (a rolling upgrade stays correct).
ALTER TABLE cluster_members ADD COLUMN IF NOT EXISTS schema_version INTEGER;
