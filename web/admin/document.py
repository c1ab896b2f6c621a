"""The dashboard's part of /openapi.json: its pages and forms (HTML, for a browser with the dashboard's session
cookie; never an API key), listed from the routes' own tables so the document and the routes cannot drift."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ledger.serialize import STRING
from web.admin import login, views
from web.openapi import LANG, TOO_LARGE, Part, html

TAG = "dashboard"
REDIRECT = {"description": "To the login page (no session, or a session that ended) or, after a form, to the page "
                           "that shows its outcome", "headers": {"Location": {"schema": STRING}},
            "content": {"text/html": {"schema": STRING}}}
FORM_FIELDS = ("A form of the dashboard's pages (application/x-www-form-urlencoded), with the session's CSRF token in "
               "`csrf_token` (the login form: its own); another body is a 415, a missing or wrong token a 403.")


def operation_id(endpoint: str) -> str:
    return "admin" + "".join(part.capitalize() for part in endpoint.split("_"))


def summary(view: Callable[..., Any], endpoint: str) -> str:
    return (view.__doc__ or "").strip().split("\n")[0] or f"The dashboard's {endpoint.replace('_', ' ')}"


def operation(rule: str, endpoint: str, view: Callable[..., Any], method: str) -> dict[str, Any]:
    names = re.findall(r"<(?:[^:>]+:)?([^>]+)>", rule)
    # A form's fields are the page's (its CSRF token always): described in words, not as a requestBody, as the
    # forms are the pages' own and no client builds them.
    body = {"description": FORM_FIELDS} if method == "post" else {}
    return {
        "summary": f"Dashboard (HTML): {summary(view, endpoint)}",
        "parameters": [*({"name": name, "in": "path", "required": True, "schema": STRING} for name in names), LANG],
        **body,
        "responses": {"200": html("The page"), "303": REDIRECT,
                      "400": html("Bad input: nothing changed"), "401": html("Wrong name, password or code"),
                      "403": html("A form without its CSRF token: nothing changed"),
                      "404": html("No such payment, transfer or event"), "409": html("Refused: why, in the page"),
                      "413": TOO_LARGE, "415": html("A body that is not a urlencoded form"),
                      "429": html("Too many failed logins: wait a minute (Retry-After)")},
    }


def document_part() -> Part:
    paths: dict[str, Any] = {}
    operations = {}
    for rule, endpoint, view, methods in login.ROUTES + views.ROUTES:
        path = "/admin" + re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule)
        for method in (m.lower() for m in methods):
            paths.setdefault(path, {})[method] = operation(rule, endpoint, view, method)
            operations[path, method] = (operation_id(endpoint), TAG)
    return Part(paths=paths, operations=operations,
                tags={TAG: "The operator's dashboard (HTML pages and forms; its own login, never an API key)"})
