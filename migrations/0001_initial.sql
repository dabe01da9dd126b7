-- gwsync's PostgreSQL layout, schema 1. Every `data` column holds the same JSON the sled store
-- writes for that record (text, not jsonb: jsonb refuses \u0000, which calendar text may hold).
-- Key columns are COLLATE "C" so listings come in byte order, as sled's do.

CREATE TABLE gwsync_meta (
    key text COLLATE "C" PRIMARY KEY,
    value bigint NOT NULL
);

CREATE TABLE tenants (
    id text COLLATE "C" PRIMARY KEY,
    data text NOT NULL
);

CREATE TABLE credentials (
    tenant text COLLATE "C" PRIMARY KEY,
    data text NOT NULL
);

-- A deleted tenant's key, kept until its orphaned channels are stopped.
CREATE TABLE retired_credentials (
    tenant text COLLATE "C" PRIMARY KEY,
    data text NOT NULL
);

CREATE TABLE users (
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (tenant, email)
);

-- The tables a write for a user must not outlive: their rows go with the user row.
CREATE TABLE calendars (
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (tenant, email),
    FOREIGN KEY (tenant, email) REFERENCES users (tenant, email) ON DELETE CASCADE
);

CREATE TABLE events (
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    id text COLLATE "C" NOT NULL,
    -- The series an exception belongs to: deleting the series takes it.
    recurring_event_id text COLLATE "C",
    data text NOT NULL,
    PRIMARY KEY (tenant, email, id),
    FOREIGN KEY (tenant, email) REFERENCES users (tenant, email) ON DELETE CASCADE
);
CREATE INDEX events_series ON events (tenant, email, recurring_event_id) WHERE recurring_event_id IS NOT NULL;

CREATE TABLE outbox (
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    sequence bigint NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (tenant, email, sequence),
    FOREIGN KEY (tenant, email) REFERENCES users (tenant, email) ON DELETE CASCADE
);

-- A mark may come before its user exists (a notification racing a creation), as in sled.
CREATE TABLE dirty (
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    generation bigint NOT NULL,
    PRIMARY KEY (tenant, email)
);

CREATE TABLE presence (
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (tenant, email)
);

-- Channels outlive their user (orphaned, until the keeper stops them): no foreign key.
CREATE TABLE channels (
    id text COLLATE "C" PRIMARY KEY,
    tenant text COLLATE "C" NOT NULL,
    email text COLLATE "C" NOT NULL,
    data text NOT NULL
);
CREATE INDEX channels_user ON channels (tenant, email);

CREATE TABLE contact_books (
    tenant text COLLATE "C" NOT NULL,
    book text COLLATE "C" NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (tenant, book)
);

CREATE TABLE contacts (
    tenant text COLLATE "C" NOT NULL,
    book text COLLATE "C" NOT NULL,
    resource_name text COLLATE "C" NOT NULL,
    data text NOT NULL,
    PRIMARY KEY (tenant, book, resource_name)
);

CREATE TABLE tokens (
    id text COLLATE "C" PRIMARY KEY,
    digest text COLLATE "C" NOT NULL,
    tenant text COLLATE "C",
    data text NOT NULL
);
CREATE INDEX tokens_digest ON tokens (digest);
CREATE INDEX tokens_tenant ON tokens (tenant) WHERE tenant IS NOT NULL;

CREATE SEQUENCE audit_ids;

CREATE TABLE audit (
    id bigint PRIMARY KEY,
    tenant text COLLATE "C",
    at timestamptz NOT NULL,
    data text NOT NULL
);
CREATE INDEX audit_tenant ON audit (tenant, id) WHERE tenant IS NOT NULL;
CREATE INDEX audit_at ON audit (at);
