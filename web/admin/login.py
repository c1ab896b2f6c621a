"""Logging in and out of the dashboard, the second factor, and an admin's own account page (turning TOTP on)."""
from __future__ import annotations

import logging
from urllib.parse import urlencode

import segno
from flask import Response, g, redirect, request
from markupsafe import Markup

from console import accounts, sessions, throttle
from console.audit import record_action
from models import Admin
from web.admin.common import (
    COOKIE,
    HOME,
    LOGIN_COOKIE,
    admin,
    check_login_token,
    forget_cookie,
    new_login_token,
    page,
    safe_next,
    set_cookie,
    text_field,
)
from web.pages import catalogue
from web.services import services

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = int(throttle.WINDOW.total_seconds())


def login_page(status: int = 200, error: str | None = None, name: str = "") -> Response:
    token = new_login_token()
    response = page("admin/login.html", status, login_csrf=token, error=error, name=name,
                    next=safe_next(request.values.get("next")))
    set_cookie(response, LOGIN_COOKIE, token, max_age=3600)
    if status == 429:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def login_form() -> Response:
    if g.admin is not None:
        return redirect(safe_next(request.args.get("next")), 303)  # type: ignore[return-value]
    return login_page()


def client_address() -> str:
    return request.remote_addr or "-"  # behind nginx, the address nginx saw (app.ProxiedClientAddress)


def signed_in(token: str, verified: bool) -> Response:
    target = safe_next(request.form.get("next"))
    location = target if verified else f"{HOME}/login/code?{urlencode({'next': target})}"
    response = redirect(location, 303)
    set_cookie(response, COOKIE, token, max_age=None)  # a browser session's cookie; the server ends it when idle
    forget_cookie(response, LOGIN_COOKIE)
    return response  # type: ignore[return-value]


def login() -> Response:
    check_login_token()
    name, password = text_field(request.form.get("name"), 64), request.form.get("password", "")
    t = catalogue()
    with services().db.transaction() as session:
        throttle.take_turn(session, name, client_address())
        if throttle.is_blocked(session, name, client_address()):
            return login_page(429, t["admin_throttled"], name)
        found = accounts.password_matches(session, name, password)
        if found is None:
            blocked = throttle.record_failure(session, name, client_address())
            logger.warning("dashboard login refused for %r from %s", name, client_address())
            return login_page(429 if blocked else 401, t["admin_throttled" if blocked else "admin_bad_login"], name)
        token = sessions.open_session(session, found, verified=not found.totp_enabled)
        if not found.totp_enabled:
            record_action(session, found.name, "login", "signed in to the dashboard", address=client_address())
    return signed_in(token, verified=not found.totp_enabled)


def code_form() -> Response:
    if g.pending is None:
        return redirect(f"{HOME}/login", 303)  # type: ignore[return-value]
    return page("admin/code.html", code_csrf=g.pending.csrf_token, next=safe_next(request.args.get("next")))


def code() -> Response:
    pending = g.pending
    if pending is None:
        return redirect(f"{HOME}/login", 303)  # type: ignore[return-value]
    if not sessions.csrf_matches(pending.csrf_token, request.form.get("csrf_token")):
        return page("admin/message.html", 403, title=catalogue()["admin_problem"], message=catalogue()["admin_csrf"])
    t, address = catalogue(), client_address()
    with services().db.transaction() as session:
        throttle.take_turn(session, pending.admin_name, address)
        blocked = throttle.is_blocked(session, pending.admin_name, address)
        stored = session.get(Admin, pending.admin_id, with_for_update=True)
        if not blocked and stored is not None and accounts.totp_accepts(stored, request.form.get("code", "")):
            token = sessions.mark_verified(session, request.cookies[COOKIE])
            record_action(session, stored.name, "login", "signed in to the dashboard (two-factor)", address=address)
            return signed_in(token, verified=True)
        if not blocked:
            blocked = throttle.record_failure(session, pending.admin_name, address)
    status = 429 if blocked else 401
    response = page("admin/code.html", status, code_csrf=pending.csrf_token, next=safe_next(request.form.get("next")),
                    error=t["admin_throttled" if blocked else "admin_bad_code"])
    if blocked:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def logout() -> Response:
    with services().db.transaction() as session:
        sessions.end_session(session, request.cookies.get(COOKIE))
        record_action(session, admin().admin_name, "logout", "signed out of the dashboard")
    response = redirect(f"{HOME}/login", 303)
    forget_cookie(response, COOKIE)
    return response  # type: ignore[return-value]


# --- the admin's own account: two-factor login ------------------------------------------------------------

def qr(uri: str) -> Markup:
    return Markup(segno.make(uri, error="m").svg_inline(scale=4, omitsize=True))


def account(enrolling: str | None = None, error: str | None = None, status: int = 200) -> Response:
    with services().db.Session() as session:
        stored = session.get(Admin, admin().admin_id)
        enabled = bool(stored and stored.totp_enabled)
        secret = stored.totp_secret if stored and enrolling else None
    return page("admin/account.html", status, totp_enabled=enabled, enrolling=enrolling,
                enrol_qr=qr(enrolling) if enrolling else None, secret=secret, error=error)


def account_page() -> Response:
    return account()


def totp_start() -> Response:
    with services().db.transaction() as session:
        stored = session.get(Admin, admin().admin_id, with_for_update=True)
        try:
            uri = accounts.start_totp(stored)  # type: ignore[arg-type]
        except accounts.AccountError as exc:
            return account(error=str(exc), status=409)
        record_action(session, stored.name, "totp_enrol", "began enrolling two-factor login")  # type: ignore[union-attr]
    return account(enrolling=uri)


def totp_confirm() -> Response:
    with services().db.transaction() as session:
        stored = session.get(Admin, admin().admin_id, with_for_update=True)
        try:
            accounts.confirm_totp(stored, request.form.get("code", ""))  # type: ignore[arg-type]
        except accounts.AccountError as exc:
            uri = accounts.provisioning_uri(stored) if stored and stored.totp_secret else None  # type: ignore[arg-type]
            return account(enrolling=uri, error=str(exc), status=400)
        record_action(session, stored.name, "totp_on", "turned two-factor login on")  # type: ignore[union-attr]
    return redirect(f"{HOME}/account", 303)  # type: ignore[return-value]


ROUTES = (
    ("/login", "login_form", login_form, ("GET",)),
    ("/login", "login", login, ("POST",)),
    ("/login/code", "code_form", code_form, ("GET",)),
    ("/login/code", "code", code, ("POST",)),
    ("/logout", "logout", logout, ("POST",)),
    ("/account", "account", account_page, ("GET",)),
    ("/account/totp", "totp_start", totp_start, ("POST",)),
    ("/account/totp/confirm", "totp_confirm", totp_confirm, ("POST",)),
)
