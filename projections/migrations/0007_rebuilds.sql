-- Rebuilds of the read model (`orderview rebuild`): one row each, updated every few seconds while
-- it runs, so that `orderview status` shows its phase, position and rate. A row whose rebuild is
-- not finished and whose process no longer holds the rebuild lock was killed.
CREATE TABLE ${rebuilds} (
    id           bigserial   PRIMARY KEY,
    source       text        NOT NULL,
    phase        text        NOT NULL,
    position     bigint      NOT NULL DEFAULT 0,
    total        bigint,
    rate         double precision,
    fingerprint  text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
