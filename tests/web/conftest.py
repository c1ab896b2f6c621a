"""Fixtures of the browser tests (tests/browser.py has their helpers)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import chrome, serve


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    driver = chrome()
    yield driver
    driver.quit()


@pytest.fixture
def live(config, db, sim, new_watcher) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """(base URL, app): the app on a real server, its watcher running every 0.2 s against the simulator."""
    yield from serve(config, db, sim, new_watcher)


@pytest.fixture
def live_detecting(config, db, sim, new_watcher) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """The same, its watcher also reading above the solid head (DETECT_UNCONFIRMED)."""
    yield from serve(config, db, sim, new_watcher, detect_unconfirmed=True, watcher_strategy="blocks")
