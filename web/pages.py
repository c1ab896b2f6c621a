"""What every server-rendered page shares (the checkout page, web/checkout_pages.py; the dashboard, web/admin/): the
language catalogues of `web/locales/`, the choice of language, a nonce per request, and the headers: a strict
Content-Security-Policy (no inline script or style without the nonce, no outside resource), no caching, no
framing unless allowed."""
from __future__ import annotations

import secrets
from collections.abc import Sequence

from flask import Response, g, request

from infra.locales import CATALOGUES, DEFAULT_LANGUAGE

LANGUAGE_COOKIE = "lang"  # the dashboard keeps the language chosen with ?lang= (its pages link without it)


def language() -> str:
    """`?lang=` when it names a catalogue, else the one a page kept in the `lang` cookie, else the best of
    Accept-Language, else English."""
    for asked in ((request.values.get("lang") or "").lower(), (request.cookies.get(LANGUAGE_COOKIE) or "").lower()):
        if asked in CATALOGUES:
            return asked
    best = request.accept_languages.best_match(list(CATALOGUES))
    return best if best in CATALOGUES else DEFAULT_LANGUAGE


def catalogue() -> dict[str, str]:
    return CATALOGUES[language()]


def new_nonce() -> None:
    """A nonce for this response's own script and style elements (a before_request hook)."""
    g.nonce = secrets.token_urlsafe(16)


def page_headers(response: Response, frame_ancestors: Sequence[str] = ()) -> Response:
    """The headers of a page: `frame_ancestors` empty means no framing at all."""
    ancestors = " ".join(frame_ancestors) or "'none'"
    nonce = g.get("nonce", "")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
        f"img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}")
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if not frame_ancestors:
        response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response
