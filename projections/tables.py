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
# Written by `orderview rebuild` (projections/rebuilds.py); `orderview status` reads it.
REBUILDS = f"{SERVICE_SCHEMA}.rebuilds"

# A rebuild fills NEXT_SCHEMA; the swap renames READ_SCHEMA to OLD_SCHEMA and NEXT_SCHEMA to
# READ_SCHEMA in one transaction, then drops OLD_SCHEMA.
NEXT_SCHEMA = f"{READ_SCHEMA}_next"
OLD_SCHEMA = f"{READ_SCHEMA}_old"

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
    "rebuilds": REBUILDS,
}
# The placeholders that name the read model: a migration using one of them is replayed into a
# rebuild's schema, and must use no service placeholder (see migrate.read_model_migrations).
READ_MODEL_NAMES = ("read_schema", "orders", "participants")


def read_model_names(schema: str) -> dict[str, str]:
    """NAMES with the read model's tables in `schema` (a rebuild's)."""
    return {**NAMES, "read_schema": schema, "orders": f"{schema}.orders",
            "participants": f"{schema}.participants"}  # fmt: skip
