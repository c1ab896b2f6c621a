"""Keyset pagination for the list routes (`/payments`, `/transfers`, `/events`).

A page is read after (or, newest first, before) the sort key of the last row of the previous page; that key
travels as an opaque cursor, the unpadded URL-safe base64 of a JSON list of its parts as text. A cursor this
API did not make is a 400 naming the parameter it came in.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from web.errors import ApiError
from web.validation import MAX_BIGINT, Field, ascii_number, payment_uuid

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# next_cursor values: unpadded URL-safe base64 of a short JSON list.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"
_CURSOR = re.compile(CURSOR_PATTERN[1:-1])


def page_size(value: str | None) -> int:
    """The `limit` parameter: ASCII digits, 1 to MAX_LIMIT; DEFAULT_LIMIT when absent."""
    if value is None:
        return DEFAULT_LIMIT
    number = ascii_number(value, MAX_LIMIT)
    if number is None or number < 1:
        raise ApiError("invalid_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}.", "limit")
    return number


def limit_field() -> Field:
    """The `limit` query parameter of every list."""
    schema = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}
    return Field("limit", schema, page_size, description="Page size, written in ASCII digits")


# --- the parts of a sort key, written into and read from a cursor -------------------------------

def _time_part(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("a cursor's time carries its offset")
    return value.astimezone(UTC)


def _uuid_part(text: str) -> Any:
    value = payment_uuid(text)
    if value is None:
        raise ValueError("not a UUID written 8-4-4-4-12")
    return value


def _number_part(text: str) -> int:
    value = ascii_number(text, MAX_BIGINT)
    if value is None:
        raise ValueError("not a row number")
    return value


@dataclass(frozen=True)
class KeyPart:
    column: InstrumentedAttribute[Any]
    read: Callable[[str], Any]  # raises ValueError (or OverflowError) for text this API did not write
    write: Callable[[Any], str] = str


def time_key(column: InstrumentedAttribute[Any]) -> KeyPart:
    return KeyPart(column, _time_part, datetime.isoformat)


def uuid_key(column: InstrumentedAttribute[Any]) -> KeyPart:
    return KeyPart(column, _uuid_part)


def number_key(column: InstrumentedAttribute[Any]) -> KeyPart:
    return KeyPart(column, _number_part)


# --- pages ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_cursor: str | None  # the next page's cursor; None on the last page
    position: str | None  # a cursor after the last row read (or where the caller already was): to poll on from

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


@dataclass(frozen=True)
class Keyset:
    """A unique sort key of a list (its parts in order) and its direction."""

    parts: tuple[KeyPart, ...]
    newest_first: bool = False

    def cursor(self, raw: str | None, field: str = "cursor") -> tuple[Any, ...] | None:
        """The sort key a `next_cursor` value holds; None when none was given."""
        if raw is None:
            return None
        texts = _decode(raw) if _CURSOR.fullmatch(raw) else None
        try:
            if texts is None or len(texts) != len(self.parts):
                raise ValueError("not a cursor of this list")
            return tuple(part.read(text) for part, text in zip(self.parts, texts, strict=True))
        except (ValueError, OverflowError):
            raise ApiError("invalid_cursor", f"{field} must be a next_cursor value returned by this endpoint.",
                           field) from None

    def field(self, name: str, description: str) -> Field:
        """The query parameter a `next_cursor` comes back in."""
        schema = {"type": "string", "pattern": CURSOR_PATTERN}
        return Field(name, schema, lambda raw: self.cursor(raw, name), description=description)

    def after(self, key: tuple[Any, ...]) -> ColumnElement[bool]:
        """SQL: the rows past the sort key `key` (its values, or bind parameters) in the list's order."""
        columns = tuple_(*(part.column for part in self.parts))
        return columns < tuple_(*key) if self.newest_first else columns > tuple_(*key)

    def order(self) -> list[Any]:
        """The ORDER BY of the list."""
        columns = [part.column for part in self.parts]
        return [c.desc() for c in columns] if self.newest_first else columns

    def page(self, session: Session, query: Select[Any], limit: int, after: tuple[Any, ...] | None) -> Page:
        """Up to `limit` rows of `query` after the key `after`."""
        if after is not None:
            query = query.where(self.after(after))
        return self.page_of(list(session.scalars(query.order_by(*self.order()).limit(limit + 1))), limit, after)

    def page_of(self, rows: list[Any], limit: int, after: tuple[Any, ...] | None) -> Page:
        """The page of up to `limit` rows of `rows`, which are the list's next `limit + 1` rows after `after` (the
        one more tells whether there is a next page); each row has the sort key's columns as attributes."""
        page, has_more = rows[:limit], len(rows) > limit
        last = self._key(page[-1]) if page else after
        position = _encode(self.parts, last) if last is not None else None
        return Page(page, position if has_more else None, position)

    def encode(self, key: tuple[Any, ...]) -> str:
        """The cursor of the page after the row whose sort key is `key`."""
        return _encode(self.parts, key)

    def _key(self, row: Any) -> tuple[Any, ...]:
        return tuple(getattr(row, part.column.key) for part in self.parts)


def _encode(parts: tuple[KeyPart, ...], key: tuple[Any, ...]) -> str:
    texts = [part.write(value) for part, value in zip(parts, key, strict=True)]
    return base64.urlsafe_b64encode(json.dumps(texts).encode()).decode().rstrip("=")


def _decode(raw: str) -> list[str] | None:
    try:
        texts = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        return None
    return texts
