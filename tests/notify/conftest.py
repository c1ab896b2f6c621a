"""Operator notifications against real receivers on 127.0.0.1, reached through Apprise's json:// and form://
schemes from the child process each attempt runs in."""
from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qs

import pytest

from infra.config import Config
from infra.notify_targets import NOTIFIABLE_EVENTS, NotifyTarget
from tests.conftest import Receiver

# A password in the target URLs: what must never be shown (Apprise's json:// and form:// send it as basic auth).
SECRET = "pw" + secrets.token_hex(8)


def targets(receiver: Receiver, *paths: str) -> tuple[NotifyTarget, ...]:
    port = receiver.server.server_address[1]
    scheme = {"/json": "json", "/form": "form"}
    return tuple(NotifyTarget.of(f"{scheme.get(path, 'json')}://ops:{SECRET}@127.0.0.1:{port}{path}")
                 for path in paths)


@pytest.fixture
def config(config: Config, receiver: Receiver) -> Config:
    """The test configuration with two notification targets (json:// and form://), every event named, two quick
    retries and a short deadline."""
    return config.with_overrides(notify_targets=targets(receiver, "/json", "/form"),
                                 notify_events=frozenset(NOTIFIABLE_EVENTS), notify_retry_schedule=(0, 0),
                                 notify_timeout_seconds=4.0)


def messages(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    """What arrived at `path`: title and message, from Apprise's JSON body or its form."""
    found = []
    for request in receiver.to(path):
        if request.headers.get("content-type", "").startswith("application/json"):
            found.append(json.loads(request.body))
        else:
            found.append({k: v[0] for k, v in parse_qs(request.body.decode()).items()})
    return found
