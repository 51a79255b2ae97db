"""Every SQL table name of orderview, in one place.

The projection tables live in their own PostgreSQL schema so that a rebuild can fill a shadow
schema and swap it in; service tables (keys, features, migrations) live in `orderview`.
"""

READ_SCHEMA = "read_model"
SERVICE_SCHEMA = "orderview"

ORDERS = f"{READ_SCHEMA}.orders"
PARTICIPANTS = f"{READ_SCHEMA}.participants"

MIGRATIONS = f"{SERVICE_SCHEMA}.schema_migrations"
API_KEYS = f"{SERVICE_SCHEMA}.api_keys"
TENANT_FEATURES = f"{SERVICE_SCHEMA}.tenant_features"
DEAD_LETTERS = f"{SERVICE_SCHEMA}.dead_letters"
CONSUMERS = f"{SERVICE_SCHEMA}.consumers"
# Written by `orderview rebuild` (branch rebuild) when it exists; `orderview status` reads it.
REBUILDS = f"{SERVICE_SCHEMA}.rebuilds"

# Placeholders the migration files use, e.g. `${orders}`.
NAMES = {
    "read_schema": READ_SCHEMA,
    "service_schema": SERVICE_SCHEMA,
    "orders": ORDERS,
    "participants": PARTICIPANTS,
    "api_keys": API_KEYS,
    "tenant_features": TENANT_FEATURES,
    "dead_letters": DEAD_LETTERS,
    "consumers": CONSUMERS,
}
