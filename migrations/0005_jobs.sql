-- gwsync's PostgreSQL layout, schema 5: long admin requests' records (`crate::jobs`,
-- `cluster::jobs`). A job runs on the replica that was asked; its record here lets any replica
-- answer `GET /api/v1/jobs/{id}`, since a balancer rarely sends the next request to the same
-- one. `replica` is the runner's id in `cluster_members`: a record that never finished, whose
-- replica no longer heartbeats, reads as interrupted. The newest records are kept.
CREATE TABLE IF NOT EXISTS cluster_jobs (
    id text COLLATE "C" PRIMARY KEY,
    replica text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished boolean NOT NULL DEFAULT false,
    data text NOT NULL
);
CREATE INDEX IF NOT EXISTS cluster_jobs_started_at ON cluster_jobs (started_at);
