"""`db_manager.py reset`: the service's own tables, enum types and functions dropped (other objects of the database
are left alone), refused while a service process is connected. The CLI asks first and migrates to head after."""
from __future__ import annotations

import logging

from sqlalchemy import Enum as SAEnum
from sqlalchemy import text
from sqlalchemy.engine import Engine

import migrate
from database import SERVICE_APPLICATION_NAME, WATCHER_APPLICATION_NAME, describe_url
from models import Base

logger = logging.getLogger(__name__)

RESET_LOCK_TIMEOUT = "15s"
# The service's functions (the triggers and upkeep of the row counts, migration 0011, and of the dashboard's daily
# totals, migration 0014) are named with these prefixes.
FUNCTION_PREFIXES = ("row_counts_", "daily_totals_")


def service_objects() -> tuple[list[str], list[str]]:
    """The service's tables (dependents first, then alembic_version) and enum type names."""
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)] + ["alembic_version"]
    enums = sorted({
        c.type.name for t in Base.metadata.tables.values() for c in t.columns
        if isinstance(c.type, SAEnum) and c.type.name
    })
    return tables, enums


def drop_service_schema(engine: Engine) -> None:
    """Drop the service's tables, enum types and functions (nothing else of the database), under the migrations'
    lock."""
    tables, enums = service_objects()
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{RESET_LOCK_TIMEOUT}'"))
        conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": migrate.MIGRATION_LOCK_ID})
        for table in tables:
            conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))
        for enum in enums:
            conn.execute(text(f'DROP TYPE IF EXISTS "{enum}" CASCADE'))
        functions = conn.execute(text(
            "SELECT oid::regprocedure::text FROM pg_proc WHERE pronamespace = current_schema()::regnamespace "
            "AND proname LIKE ANY(:patterns)"), {"patterns": [f"{p}%" for p in FUNCTION_PREFIXES]}).scalars().all()
        for function in functions:
            conn.execute(text(f"DROP FUNCTION IF EXISTS {function} CASCADE"))
    logger.info("reset: dropped the service tables of %s", describe_url(str(engine.url)))


def running_services(engine: Engine) -> list[str]:
    """The service processes connected to this database now (gunicorn workers, `app.py`, `watcher.py`), by the
    application_name their connections carry."""
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND (application_name LIKE :service OR application_name LIKE :watcher) "
            "ORDER BY 1"), {"service": f"{SERVICE_APPLICATION_NAME}:%", "watcher": f"{WATCHER_APPLICATION_NAME}:%"}
        ).scalars())
