"""Which migrations a rebuild replays into its own schema, and the release fingerprint."""

from __future__ import annotations

import pytest

from projections.migrate import migration_files, read_model_sql, shapes_read_model
from projections.release import fingerprint


@pytest.mark.parametrize(
    ("text", "shapes"),
    [
        pytest.param("CREATE INDEX i ON ${orders} (tenant);", True, id="read-model"),
        pytest.param("ALTER TABLE ${participants} SET (fillfactor = 90);", True, id="participants"),
        pytest.param("CREATE TABLE ${dead_letters} (x int);", False, id="service"),
        pytest.param("SELECT 1;", False, id="neither"),
    ],
)
def test_a_migration_shapes_the_read_model_when_it_names_its_tables(text, shapes):
    assert shapes_read_model("0099_x", text) is shapes


def test_a_migration_naming_both_kinds_of_table_is_refused():
    with pytest.raises(ValueError, match="0099_mixed mixes read-model and service tables"):
        shapes_read_model("0099_mixed", "UPDATE ${orders} SET x = (SELECT 1 FROM ${api_keys});")


def test_the_rebuild_schema_gets_every_read_model_statement_in_its_own_schema():
    replayed = "\n".join(read_model_sql("read_model_next"))
    live = "\n".join(sql for _, sql in migration_files())
    assert "read_model.orders" not in replayed and "read_model.participants" not in replayed
    indexes = live.count("ON read_model.orders")
    assert indexes > 10 and replayed.count("ON read_model_next.orders") == indexes


def test_the_fingerprint_names_the_package_version_and_a_digest():
    version, _, digest = fingerprint().partition("+")
    assert version and len(digest) == 12 and fingerprint() == fingerprint()
