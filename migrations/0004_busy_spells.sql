-- gwsync's PostgreSQL layout, schema 4: busy spells (DESIGN §10).
--
-- `read_windows.busy_until`: a sync's read of the calendar's mark before it leaves a newer
-- generation unread in the same statement (a mark made ahead for the next read), and a busy
-- sync moves it later (`Store::read_dirty`'s `busy_for`). Every read before it so leaves an
-- unread mark behind, and no mark with a read generation can be cleared meanwhile, so a
-- notification up to `busy_until` rests on the unread mark it finds without writing one,
-- whichever replica reads next. A replica of schema 3 reads without making the mark ahead:
-- the others coalesce only while every live replica runs schema 4 (`cluster::members`).
ALTER TABLE read_windows ADD COLUMN IF NOT EXISTS busy_until timestamptz;
