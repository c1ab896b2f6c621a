"""Standard Webhooks signing: the signature header, and the secrets kept in the database and rotated."""
from __future__ import annotations

import base64
import hashlib
import hmac
import threading

import pytest
from sqlalchemy import text

from database import Database
from delivery.signing import (
    describe_webhook_secrets,
    ensure_webhook_secret,
    generate_secret,
    get_signing_secrets,
    rotate_webhook_secret,
    signature_header,
)
from infra.config import Config, SecretError, parse_secret

SECRET = generate_secret()


def test_the_signature_is_the_hmac_of_id_timestamp_and_body_one_per_secret() -> None:
    """Computed here from the formula, not by the library that signs."""
    other = generate_secret()
    header = signature_header([SECRET, other], "evt_1", 1_767_225_600, '{"a":1}')

    def expected(secret: str) -> str:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        digest = hmac.new(key, b'evt_1.1767225600.{"a":1}', hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode()

    assert header == f"{expected(SECRET)} {expected(other)}"


@pytest.mark.parametrize("secret", ["bad", "whsec_!!!notbase64", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_malformed_secret_is_refused(secret: str) -> None:
    with pytest.raises(SecretError):
        parse_secret(secret)


def test_environment_secret_and_database_rotation(db: Database) -> None:
    config = Config(webhook_secret=SECRET)
    with db.transaction() as session:
        assert get_signing_secrets(session, config) == [SECRET]
        assert describe_webhook_secrets(session, config)["source"] == "environment"
        new = rotate_webhook_secret(session, config)
    with db.transaction() as session:
        assert get_signing_secrets(session, config) == [new, SECRET]
        shown = describe_webhook_secrets(session, config)
        assert shown["current"] == new and shown["previous"] == SECRET and shown["environment_secret_superseded"]
    replaced = generate_secret()  # the operator sets WEBHOOK_SECRET to something else: it wins again
    with db.transaction() as session:
        assert get_signing_secrets(session, Config(webhook_secret=replaced)) == [replaced]


def test_previous_secret_expires(db: Database) -> None:
    config = Config(webhook_secret=None)
    with db.transaction() as session:
        first = get_signing_secrets(session, config)[0]
        new = rotate_webhook_secret(session, config)
    assert first != new
    with db.engine.begin() as conn:
        conn.execute(text(
            "UPDATE service_state SET value = jsonb_set(value, '{previous_expires_at}', '\"2000-01-01T00:00:00Z\"') "
            "WHERE key = 'webhook_secrets'"
        ))
    with db.transaction() as session:
        assert get_signing_secrets(session, config) == [new]


def test_secret_is_generated_once_by_concurrent_starts(db: Database) -> None:
    config = Config(webhook_secret=None)
    barrier = threading.Barrier(4)
    results: list[str | None] = []

    def start() -> None:
        barrier.wait()
        results.append(ensure_webhook_secret(db, config))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    generated = [r for r in results if r is not None]
    assert len(generated) == 1
    with db.transaction() as session:
        assert get_signing_secrets(session, config) == generated

