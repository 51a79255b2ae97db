-- What an operator needs from the dead-letter ledger (`orderview dlq`, `orderview status`).
--   event         the entry's `event` value exactly as received (NULL for rows leased before
--                 this migration until `orderview dlq` copies it from `<stream>:dlq`)
--   dlq_id        the entry's id in `<stream>:dlq`, so a drop deletes exactly it
--   reason        the class of the error: gap, poison, could not be applied, refused by database
--   replayed_*    the entry appended again by `dlq replay` (stream and new entry id)
--   dropped_at    deleted from `<stream>:dlq` by `dlq drop`
ALTER TABLE ${dead_letters}
    ADD COLUMN event        bytea,
    ADD COLUMN dlq_id       text,
    ADD COLUMN replayed_at  timestamptz,
    ADD COLUMN replayed_to  text,
    ADD COLUMN replayed_as  text,
    ADD COLUMN dropped_at   timestamptz,
    ADD COLUMN reason       text GENERATED ALWAYS AS (
        CASE WHEN error LIKE 'gap:%' OR error = 'gap' THEN 'gap'
             WHEN error LIKE 'could not be applied:%' THEN 'could not be applied'
             WHEN error LIKE 'refused by database:%' THEN 'refused by database'
             ELSE 'poison' END) STORED;

-- Newest first, per stream (`dlq list`), and the waiting ones counted by the projectors' metrics.
CREATE INDEX dead_letters_created_idx ON ${dead_letters} (stream, created_at DESC);
CREATE INDEX dead_letters_waiting_idx ON ${dead_letters} (stream, reason)
    WHERE published_at IS NOT NULL AND replayed_at IS NULL AND dropped_at IS NULL;

-- One row per stream consumer: its heartbeat (liveness for `orderview status`, written every few
-- seconds while it runs, `stopped_at` on a clean stop) and the last batch that applied events.
CREATE TABLE ${consumers} (
    stream      text        NOT NULL,
    consumer    text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz,
    applied_at  timestamptz,
    event_at    timestamptz,
    PRIMARY KEY (stream, consumer)
);
