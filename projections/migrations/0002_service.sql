-- Service tables: API keys (hashes only) and per-tenant features.
CREATE TABLE ${api_keys} (
    id          text        PRIMARY KEY,
    tenant      text        NOT NULL,
    key_hash    bytea       NOT NULL UNIQUE,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant_idx ON ${api_keys} (tenant);

CREATE TABLE ${tenant_features} (
    tenant      text        NOT NULL,
    feature     text        NOT NULL,
    enabled     boolean     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, feature)
);
