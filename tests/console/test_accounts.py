"""Admin accounts: Argon2 passwords, TOTP codes (console/accounts.py); the HTTP side is tests/web/test_admin.py."""
from __future__ import annotations

import pyotp
import pytest

from console import accounts

NAME, PASSWORD = "alice", "correct horse battery"


@pytest.fixture
def admin(db) -> str:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        accounts.create_admin(session, NAME, PASSWORD)
    return NAME


def test_passwords_are_argon2id_hashes_checked_as_such(db, admin) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        stored = accounts.find_admin(session, NAME)
        assert stored is not None and stored.password_hash.startswith("$argon2id$") and PASSWORD not in \
            stored.password_hash
        assert accounts.password_matches(session, NAME, PASSWORD) is stored
        assert accounts.password_matches(session, NAME, PASSWORD + "x") is None
        assert accounts.password_matches(session, "nobody", PASSWORD) is None
        assert accounts.password_matches(session, "bad name!", PASSWORD) is None


@pytest.mark.parametrize(("name", "password", "wrong"), [("a b", PASSWORD, "name"), ("x" * 65, PASSWORD, "name"),
                                                         ("bob", "short", "password"), (NAME, PASSWORD, "exists")])
def test_bad_names_passwords_and_duplicates_are_refused(db, admin, name: str, password: str, wrong: str) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session, pytest.raises(accounts.AccountError):
        accounts.create_admin(session, name, password)


def test_a_totp_code_is_taken_once(db, admin) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        found = accounts.find_admin(session, NAME)
        accounts.start_totp(found)  # type: ignore[arg-type]
        code = pyotp.TOTP(found.totp_secret).now()  # type: ignore[union-attr]
        assert accounts.totp_accepts(found, code)  # type: ignore[arg-type]
        assert not accounts.totp_accepts(found, code)  # type: ignore[arg-type]
