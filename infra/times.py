"""Time: the database's clock, chain time (unix milliseconds, as TRON stamps blocks), and the ISO 8601 text
every answer, webhook and log shows (UTC, written with a ``Z``)."""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, ColumnElement, case, cast, func, select
from sqlalchemy.orm import Session


def db_now(session: Session) -> datetime:
    """The transaction's time on the database's clock: what `created_at` columns and leases are measured by."""
    return session.execute(select(func.now())).scalar_one()


def ms_to_datetime(ms: int) -> datetime:
    """A chain time (unix milliseconds) as a UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def to_ms(value: datetime) -> int:
    """A datetime as chain time (unix milliseconds)."""
    return int(value.timestamp() * 1000)


def iso_sql(value: ColumnElement[datetime]) -> ColumnElement[str]:
    """SQL: `iso(value)` written by PostgreSQL, for a statement that writes a time it computes into text (the
    microseconds only when there are some, as Python's isoformat)."""
    utc = func.timezone("UTC", value)
    fraction = case((cast(func.date_part("microseconds", value), BigInteger) % 1_000_000 == 0, ""),
                    else_=func.to_char(utc, ".US"))
    return func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS').concat(fraction).concat("Z")


def iso(value: datetime | None, timespec: str = "auto") -> str | None:
    """``2026-01-02T03:04:05.123456Z``; ``timespec="seconds"`` cuts it to the second."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def iso_ms(ms: int | None) -> str | None:
    """A chain time (unix milliseconds) as ISO 8601 text."""
    return None if ms is None else iso(ms_to_datetime(ms))


def iso_unix(seconds: float | None) -> str | None:
    """A unix time in seconds (this machine's clock) as ISO 8601 text."""
    return None if seconds is None else iso(datetime.fromtimestamp(float(seconds), tz=UTC))


def parse_iso(text: str | None) -> datetime | None:
    """The datetime of text written by :func:`iso` (or any ISO 8601 form Python reads); None for no text."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
