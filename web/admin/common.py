"""What every dashboard page goes through: the session cookie (looked up in the database on each request), the login
guard, the CSRF check of every form, the page headers of web/pages.py, and HTML answers for refusals.

CSRF: a short module of ours rather than Flask-WTF (which needs Flask's signed-cookie session, which the dashboard
does not use): each server-side session holds a random token that every form of its pages carries in the hidden
field `csrf_token`; a POST whose field does not match is a 403 and changes nothing. The login form, before any
session, uses a double-submit token: a random value in a SameSite=Strict cookie and in the form."""
from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Response, abort, g, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from console import sessions
from console.sessions import Current
from infra.locales import CATALOGUES
from ledger.errors import Refused
from web.errors import ApiError
from web.pages import LANGUAGE_COOKIE, catalogue, language, new_nonce, page_headers
from web.services import services

logger = logging.getLogger(__name__)

COOKIE = "tum_admin"
LOGIN_COOKIE = "tum_admin_login"  # the login form's double-submit CSRF token
HOME = "/admin"
FORM_TYPE = "application/x-www-form-urlencoded"  # what the dashboard's forms send; another body is a 415
# Reached without a verified session: the login pages (the second factor's page checks its half-open session).
PUBLIC_ENDPOINTS = {"admin.login", "admin.login_form", "admin.code", "admin.code_form"}


def secure_cookies() -> bool:
    return services().config.public_base_url.lower().startswith("https://")


def set_cookie(response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=HOME, httponly=True, samesite="Strict",
                        secure=secure_cookies())


def forget_cookie(response: Response, name: str) -> None:
    response.delete_cookie(name, path=HOME, httponly=True, samesite="Strict", secure=secure_cookies())


def safe_next(value: str | None) -> str:
    """Where login returns: a relative path on this site only (never `//host`, a scheme or a backslash)."""
    if not value or len(value) > 2000 or not value.startswith("/") or value.startswith("//") or "\\" in value \
            or any(ord(c) < 32 for c in value):
        return HOME
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else HOME


def asked_path() -> str:
    return request.full_path.rstrip("?") if request.query_string else request.path


def to_login() -> Response:
    return redirect(f"{HOME}/login?{urlencode({'next': asked_path()})}", 303)  # type: ignore[return-value]


def admin() -> Current:
    """The signed-in admin of this request (the guard let it through)."""
    return g.admin


def page(template: str, status: int = 200, **values: Any) -> Response:
    """A dashboard page in the request's language."""
    t = catalogue()
    body = render_template(template, t=t, lang=language(), nonce=g.nonce, me=g.get("admin"),
                           csrf=g.admin.csrf_token if g.get("admin") else None, path=request.path, **values)
    return Response(body, status, content_type="text/html; charset=utf-8")


def problem(status: int, message: str) -> Response:
    return page("admin/message.html", status, title=catalogue()["admin_problem"], message=message)


def load_session() -> None:
    """g.admin for a verified session (g.pending for one still owing its second factor); the guard, then the CSRF
    check of every POST (the login form's own double-submit excepted)."""
    new_nonce()
    if request.method == "POST" and request.content_length and request.mimetype != FORM_TYPE:
        return problem(415, catalogue()["admin_form_only"])  # type: ignore[return-value]
    token = request.cookies.get(COOKIE)
    found = None
    if token:
        with services().db.transaction() as session:
            found = sessions.current(session, token)
    g.admin = found if found is not None and found.verified else None
    g.pending = found if found is not None and not found.verified else None
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if g.admin is None:
        return to_login()  # type: ignore[return-value]
    if request.method == "POST" and not sessions.csrf_matches(g.admin.csrf_token, request.form.get("csrf_token")):
        return problem(403, catalogue()["admin_csrf"])  # type: ignore[return-value]
    return None


def headers(response: Response) -> Response:
    """The page headers; a language asked for with ?lang= is kept for the next pages."""
    asked = (request.args.get("lang") or "").lower()
    if asked in CATALOGUES:
        set_cookie(response, LANGUAGE_COOKIE, asked, max_age=365 * 86400)
    return page_headers(response)


def html_error(exc: Exception) -> Response:
    """Refusals inside the dashboard as its own pages, never the API's JSON."""
    if isinstance(exc, ApiError):
        return problem(exc.status, exc.message)
    if isinstance(exc, Refused):
        return problem(409, exc.message)
    if isinstance(exc, HTTPException):
        return problem(exc.code or 500, exc.description or "")
    raise exc


def text_field(value: str | None, limit: int) -> str:
    """A form or query field as text the database stores: at most `limit` characters, without control characters
    (PostgreSQL refuses NUL), trimmed."""
    return "".join(c for c in (value or "")[:limit] if c.isprintable()).strip()


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


def check_login_token() -> None:
    cookie, field = request.cookies.get(LOGIN_COOKIE), request.form.get("csrf_token")
    if not cookie or not sessions.csrf_matches(cookie, field):
        abort(403, catalogue()["admin_csrf"])
