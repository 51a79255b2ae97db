-- The read model: orders denormalized for both API dialects, and participants.
CREATE SCHEMA IF NOT EXISTS ${read_schema};

-- One row per participant (customer). A row with seq = 0 is a placeholder: an order names this
-- participant but no participant event has been applied yet. Rendered fragments are copied into
-- the orders that name the participant.
CREATE TABLE ${participants} (
    tenant          text   NOT NULL,
    id              bigint NOT NULL,
    seq             bigint NOT NULL DEFAULT 0,
    name            text,
    email           text,
    updated_at      timestamptz,
    participant_v1  bytea  NOT NULL DEFAULT 'null',
    customer_v2     bytea  NOT NULL DEFAULT '"customerName":null,"customerEmail":null',
    PRIMARY KEY (tenant, id)
);

-- One row per order. `seq` is the last applied event of the aggregate (the projection's position);
-- `state` is the fold state (msgpack); doc_* are the responses rendered at write time, so that a
-- page is a concatenation:
--   doc_v1          dialect 1 order object without `items` and `participant`
--   items_v1        dialect 1 `items` array
--   participant_v1  dialect 1 `participant` object or null (copied from participants)
--   doc_v2          dialect 2 order object without customerName/customerEmail
--   customer_v2     `"customerName":…,"customerEmail":…` (copied from participants)
CREATE TABLE ${orders} (
    tenant              text        NOT NULL,
    id                  bigint      NOT NULL,
    seq                 bigint      NOT NULL,
    type                text        NOT NULL,
    status              text        COLLATE "C" NOT NULL,
    payment_status      text        NOT NULL,
    currency            text        NOT NULL,
    order_number        text        COLLATE "C",
    event_key           text        COLLATE "C",
    participant_id      bigint,
    location_id         text        COLLATE "C",
    scheduled_at        timestamptz,
    duration            integer,
    subtotal            numeric     NOT NULL,
    tax_total           numeric     NOT NULL,
    total               numeric     NOT NULL,
    submitted_at        timestamptz,
    confirmed_at        timestamptz,
    cancelled_at        timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    participant_name    text,
    participant_email   text,
    state               bytea       NOT NULL,
    doc_v1              bytea       NOT NULL,
    items_v1            bytea       NOT NULL,
    participant_v1      bytea       NOT NULL DEFAULT 'null',
    doc_v2              bytea       NOT NULL,
    customer_v2         bytea       NOT NULL DEFAULT '"customerName":null,"customerEmail":null',
    PRIMARY KEY (tenant, id)
);

-- Sorts (dialect 1: order_number, total, status, submitted_at, created_at; dialect 2: created_at).
-- Ties break by id; a backward scan serves the descending direction, and the query splits the
-- null section off so that "nulls last" holds in both directions.
CREATE INDEX orders_created_idx      ON ${orders} (tenant, created_at, id);
CREATE INDEX orders_total_idx        ON ${orders} (tenant, total, id);
CREATE INDEX orders_status_idx       ON ${orders} (tenant, status, id);
CREATE INDEX orders_order_number_idx ON ${orders} (tenant, order_number, id);
CREATE INDEX orders_submitted_idx    ON ${orders} (tenant, submitted_at, id);
-- Filters, each leading to the default sort (created_at, id) so a filtered first page is a range.
CREATE INDEX orders_status_created_idx      ON ${orders} (tenant, status, created_at, id);
CREATE INDEX orders_participant_created_idx ON ${orders} (tenant, participant_id, created_at, id);
CREATE INDEX orders_event_key_created_idx   ON ${orders} (tenant, event_key, created_at, id);
CREATE INDEX orders_type_created_idx        ON ${orders} (tenant, type, created_at, id);
CREATE INDEX orders_location_created_idx    ON ${orders} (tenant, location_id, created_at, id);
CREATE INDEX orders_scheduled_idx           ON ${orders} (tenant, scheduled_at, id);
