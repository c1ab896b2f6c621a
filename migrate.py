"""Schema creation and upgrades with Alembic, serialised across processes by an advisory lock.

Alembic is imported by the functions that use it: it costs about 190 ms and several MB to import, and only the
bootstrap, the watcher's start and the CLI migrate; the app's workers, which import this module with app.py, never
load it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from database import normalize_url

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

logger = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parent / "alembic.ini"
# Any constant works; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 0x7472_6F6E_0001


def alembic_config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    return AlembicConfig(str(ALEMBIC_INI))


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade_to_head(url: str) -> tuple[str | None, str | None]:
    """Upgrade the database to the newest revision; returns (before, after).

    The session-level advisory lock makes concurrent callers wait for each other,
    and the second one then finds the schema already at head.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    cfg = alembic_config()
    engine = create_engine(normalize_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            conn.commit()
            try:
                before = MigrationContext.configure(conn).get_current_revision()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
                after = MigrationContext.configure(conn).get_current_revision()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                conn.commit()
    finally:
        engine.dispose()
    if before != after:
        logger.info("database schema upgraded from %s to %s", before or "empty", after)
    return before, after
