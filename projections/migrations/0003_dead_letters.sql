-- The dead-letter ledger: one row per (stream, entry) ever dead-lettered. The consumer that
-- inserts the row (or takes over a stale lease) is the only one that writes it to `<stream>:dlq`,
-- so two consumers holding the same entry (a reclaim race) never write it twice. A lease is taken
-- over only when it is stale and the dead letter was never published.
CREATE TABLE ${dead_letters} (
    stream       text        NOT NULL,
    entry_id     text        NOT NULL,
    error        text        NOT NULL,
    lease_owner  text        NOT NULL,
    lease_at     timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    PRIMARY KEY (stream, entry_id)
);
