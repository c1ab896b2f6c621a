"""What one process's routes share, built once by the app factory (app.py) and reached through the app: the
configuration, the database and its checkout links, the API keys' cache, the checkout pages' statuses and claim
limits, and the hooks into this process's background workers. Nothing here is a module global: two apps in one
process share nothing."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from chain.claims import CLAIMS_PER_ADDRESS_PER_MINUTE, ClaimLimiter, claims_in_flight
from database import Database
from infra.config import Config
from infra.ssrf import PrivateCallbacks
from ledger.checkout import CheckoutLinks, links_of
from web.auth import KeyCache
from web.status_board import StatusBoard

# How stale a polled status may be: the page's database cost (docs/api.md, "The checkout page").
STATUS_TTL_SECONDS = 2.0


def nothing() -> None:
    """A hook with nothing behind it: no such worker runs in this process."""


@dataclass
class Services:
    """What the routes and background threads share within one process."""

    config: Config
    db: Database  # opened with this process's checkout links (ledger.checkout.with_links)
    private_callbacks: PrivateCallbacks
    started_at: float = field(default_factory=time.time)
    background: list[Any] = field(default_factory=list)  # what start_background started: stopped in reverse
    key_cache: KeyCache = field(init=False)
    status_board: StatusBoard = field(default_factory=lambda: StatusBoard(STATUS_TTL_SECONDS))  # polled pages
    claim_limiter: ClaimLimiter = field(default_factory=ClaimLimiter)  # claims per checkout token
    address_limiter: ClaimLimiter = field(default_factory=lambda: ClaimLimiter(CLAIMS_PER_ADDRESS_PER_MINUTE))
    claim_turns: threading.BoundedSemaphore = field(default_factory=claims_in_flight)  # claims at the upstream
    # Set by the composition root when this process runs the worker (app.start_background):
    wake_dispatcher: Callable[[], None] = nothing  # a queued event goes out now rather than at the next poll
    wake_watcher: Callable[[], None] = nothing  # a claim's block is read now rather than at the next cycle
    chain_client: Any = None  # the watcher's TronClient: claims share its request budget (TRONGRID_MAX_RPS)
    document_parts: list[Any] = field(default_factory=list)  # /openapi.json's parts plugged in (the sandbox's)
    simulate_path: Callable[[str], str] | None = None  # a checkout token's "simulate payment" (the sandbox's route)

    def __post_init__(self) -> None:
        self.key_cache = KeyCache(self.config.api_key_cache_seconds)

    @property
    def links(self) -> CheckoutLinks:
        """The checkout links the database's sessions carry: the API's answers and the core's webhook bodies name a
        payment's page through the same object."""
        return links_of(self.db)


def services_of(app: Flask) -> Services:
    return app.extensions["tron"]


def services() -> Services:
    """The services of the app handling this request."""
    return services_of(current_app)  # type: ignore[arg-type]
