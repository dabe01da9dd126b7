-- gwsync's PostgreSQL layout, schema 6: the last deliveries to each tenant's phone system
-- (`presence::deliveries`, `cluster::deliveries`). Only the leader delivers; it writes each
-- attempt here, so the console's phone-system page shows them on whichever replica answers,
-- and a new leader's list goes on from the old one's. The newest 20 per tenant are kept; a
-- tenant's go with it.
CREATE TABLE IF NOT EXISTS phone_deliveries (
    id bigserial PRIMARY KEY,
    tenant text COLLATE "C" NOT NULL,
    data text NOT NULL
);
CREATE INDEX IF NOT EXISTS phone_deliveries_tenant_id ON phone_deliveries (tenant, id);
