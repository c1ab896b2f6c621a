"""Alembic migrations: an empty database upgrades to head, matches the models, and downgrades cleanly."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import migrate
from models import Base


def test_empty_database_upgrades_to_head_and_matches_the_models(empty_url):
    before, after = migrate.upgrade_to_head(empty_url)
    assert before is None and after == migrate.head_revision()
    engine = create_engine(empty_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        tables = set(inspect(conn).get_table_names())
        indexes = {i["name"] for i in inspect(conn).get_indexes("payments")}
    engine.dispose()
    assert diff == []
    assert {"payments", "payment_logs", "transfers", "webhook_events", "api_keys", "wallet_cursors",
            "service_state"} <= tables
    assert {"ix_payments_wallet_address", "ix_payments_order_id", "ix_payments_status",
            "ix_payments_created_at"} <= indexes
    assert migrate.upgrade_to_head(empty_url) == (after, after)  # idempotent


def test_downgrade_to_base_and_up_again(empty_url):
    migrate.upgrade_to_head(empty_url)
    cfg = migrate.alembic_config()
    engine = create_engine(empty_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    assert migrate.upgrade_to_head(empty_url)[1] == migrate.head_revision()
