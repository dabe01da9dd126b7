-- gwsync's PostgreSQL layout, schema 2: the tables replicas coordinate through (DESIGN §10).
-- They hold only leases and heartbeats. Builds before this migration created them at start
-- with these same statements, so a database made by one of those already has them: IF NOT
-- EXISTS lets this migration apply there too, keeping their rows.

-- A row per calendar some replica is syncing (or holds for its rerun), until its lease runs out.
CREATE TABLE IF NOT EXISTS sync_claims (
    tenant TEXT NOT NULL,
    user_email TEXT NOT NULL,
    holder TEXT NOT NULL,
    until TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, user_email)
);

-- Each replica's heartbeat: the live ones share every Google project's quota.
CREATE TABLE IF NOT EXISTS cluster_members (
    id TEXT PRIMARY KEY,
    last_seen TIMESTAMPTZ NOT NULL
);
