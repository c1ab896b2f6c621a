"""service_state: small named JSON values every process shares through the database (the watcher's report, the
accepted solid head and the cursors of each chain, the webhook signing secrets)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import ServiceState

WATCHER_STATUS = "watcher_status"  # the watcher's last cycle, as /health shows it


def read_state(session: Session, key: str, *, for_update: bool = False) -> Any:
    """The value stored under `key`, or None; `for_update` locks its row until the transaction ends."""
    query = select(ServiceState.value).where(ServiceState.key == key)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def write_state(session: Session, key: str, value: Any) -> None:
    """Store `value` under `key`, replacing what was there."""
    session.execute(
        insert(ServiceState).values(key=key, value=value)
        .on_conflict_do_update(index_elements=["key"], set_={"value": value, "updated_at": func.now()})
    )


def insert_state(session: Session, key: str, value: Any) -> bool:
    """Store `value` under `key` unless something is stored there already; True if this call stored it (of several
    processes doing this at once, exactly one wins)."""
    inserted = session.execute(
        insert(ServiceState).values(key=key, value=value)
        .on_conflict_do_nothing(index_elements=["key"]).returning(ServiceState.key)
    )
    return inserted.first() is not None


# The chain's head as the watcher last accepted it ({"number", "solid_number", "timestamp"}): how many blocks money
# seen above the solid head has behind it (its confirmations), and the usual depth to finality.
CHAIN_HEAD = "chain_head"
