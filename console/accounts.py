"""Admin accounts: a name, an Argon2 password hash (argon2-cffi's defaults, RFC 9106's second recommendation), and
TOTP two-factor login once the admin turns it on (pyotp: RFC 6238, 30 s steps, one step of drift either way, each
code taken once)."""
from __future__ import annotations

import logging
import re
import time

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models import Admin, AdminSession

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024
TOTP_ISSUER = "tron-usdt-monitor"
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class AccountError(Exception):
    """An account operation cannot be done; the message is meant for a person."""


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise AccountError("an admin name is 1 to 64 letters, digits or . _ @ -")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise AccountError(f"a password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    return password


def find_admin(session: Session, name: str) -> Admin | None:
    return session.scalar(select(Admin).where(Admin.name == name))


def create_admin(session: Session, name: str, password: str) -> Admin:
    if find_admin(session, check_name(name)) is not None:
        raise AccountError(f"an admin named {name!r} exists already")
    admin = Admin(name=name, password_hash=_hasher.hash(check_password(password)))
    session.add(admin)
    session.flush()
    logger.info("admin %s created", name)
    return admin


def existing(session: Session, name: str) -> Admin:
    admin = find_admin(session, name)
    if admin is None:
        raise AccountError(f"no admin is named {name!r}")
    return admin


def delete_admin(session: Session, name: str) -> None:
    """The admin and every session of theirs, at once."""
    session.delete(existing(session, name))
    session.flush()
    logger.info("admin %s deleted", name)


def set_password(session: Session, name: str, password: str, *, totp_off: bool = False) -> None:
    """A new password (and, for an admin who lost the device, two-factor login off); every session of the admin ends
    (whoever knew the old one is logged out)."""
    admin = existing(session, name)
    admin.password_hash = _hasher.hash(check_password(password))
    if totp_off:
        disable_totp(admin)
    session.execute(delete(AdminSession).where(AdminSession.admin_id == admin.id))
    logger.info("admin %s: password changed", name)


def list_admins(session: Session) -> list[Admin]:
    return list(session.scalars(select(Admin).order_by(Admin.name)))


def password_matches(session: Session, name: str, password: str) -> Admin | None:
    """The admin when the password is theirs, else None (after the same work for an unknown name); a hash made with
    older parameters is made again."""
    admin = find_admin(session, name) if NAME_PATTERN.fullmatch(name) else None
    try:
        _hasher.verify(admin.password_hash if admin else _DUMMY_HASH, password[:MAX_PASSWORD_LENGTH])
    except (VerificationError, InvalidHashError):
        return None
    if admin is not None and _hasher.check_needs_rehash(admin.password_hash):
        admin.password_hash = _hasher.hash(password)
    return admin


# --- TOTP -------------------------------------------------------------------------------------------------

def start_totp(admin: Admin) -> str:
    """A new secret for the admin to enrol (not required until `confirm_totp`): its otpauth:// URI, for the QR."""
    if admin.totp_enabled:
        raise AccountError("two-factor login is on already")
    admin.totp_secret = pyotp.random_base32()
    return provisioning_uri(admin)


def provisioning_uri(admin: Admin) -> str:
    if admin.totp_secret is None:
        raise AccountError("no two-factor enrolment is under way")
    return pyotp.TOTP(admin.totp_secret).provisioning_uri(name=admin.name, issuer_name=TOTP_ISSUER)


def totp_accepts(admin: Admin, code: str, now: float | None = None) -> bool:
    """A 6-digit code of the admin's secret for now (one step either way), never one taken before."""
    if admin.totp_secret is None or not re.fullmatch(r"\d{6}", code.strip()):
        return False
    totp, now = pyotp.TOTP(admin.totp_secret), time.time() if now is None else now
    step = int(now // totp.interval)
    for candidate in (step - 1, step, step + 1):
        if candidate > (admin.totp_last_step or -1) and totp.at(candidate * totp.interval) == code.strip():
            admin.totp_last_step = candidate
            return True
    return False


def confirm_totp(admin: Admin, code: str) -> None:
    """Two-factor login on, once the admin shows a code of the enrolled secret."""
    if admin.totp_enabled or admin.totp_secret is None:
        raise AccountError("no two-factor enrolment is under way")
    if not totp_accepts(admin, code):
        raise AccountError("the code does not match: check the device's clock and try the next code")
    admin.totp_enabled = True
    logger.info("admin %s: two-factor login on", admin.name)


def disable_totp(admin: Admin) -> None:
    admin.totp_enabled, admin.totp_secret, admin.totp_last_step = False, None, None
    logger.info("admin %s: two-factor login off", admin.name)
