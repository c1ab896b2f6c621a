"""Every log line written while the deposit-address tests run (at DEBUG, whatever the logger) is kept and read at
the end: the account key, or any long piece of it, is in none of them."""
from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.deposits.test_derivation import ACCOUNT_XPUB


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + (record.exc_text or ""))


@pytest.fixture(scope="package", autouse=True)
def no_log_line_shows_the_key() -> Iterator[None]:
    keep, root = Keep(), logging.getLogger()
    level = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(keep)
    root.setLevel(level)
    pieces = [ACCOUNT_XPUB[i:i + 24] for i in range(0, len(ACCOUNT_XPUB) - 24, 12)]
    assert keep.lines, "the tests logged something"
    assert [line for line in keep.lines if any(piece in line for piece in pieces)] == []
