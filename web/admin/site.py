"""The dashboard's blueprint, built per app: its routes (web/admin/login.py, web/admin/views.py) behind the session
guard, CSRF check and page headers of web/admin/common.py."""
from __future__ import annotations

from flask import Blueprint

from ledger.errors import Refused
from web.admin import common, login, views
from web.errors import ApiError


def blueprint() -> Blueprint:
    bp = Blueprint("admin", __name__, url_prefix=common.HOME, template_folder="../templates")
    bp.before_request(common.load_session)
    bp.after_request(common.headers)
    for error in (ApiError, Refused, 403):
        bp.register_error_handler(error, common.html_error)
    for rule, endpoint, view, methods in login.ROUTES + views.ROUTES:
        bp.add_url_rule(rule, endpoint, view, methods=list(methods))
    return bp
