"""The Flask application factory. Nothing happens at import; `python app.py` serves for development."""
from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack
from typing import Any

from flask import Flask, g, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, MethodNotAllowed

import migrate
from database import Database, DatabaseError, current_deadline, database_deadline, resolve_database_url
from delivery.signing import ensure_webhook_secret
from delivery.webhooks import WebhookDispatcher
from infra.config import Config, first_line, load_config, startup_config, warn_if_payers_cannot_reach
from infra.lifecycle import ignore_stop_signals, interrupt_on_sigterm
from infra.urls import parse_ip
from ledger.checkout import open_ledger, with_links
from ledger.errors import Refused
from notify.dispatcher import NotificationDispatcher
from notify.outbox import with_notifications
from rates.refresher import start_refresher
from sandbox import api as sandbox_api
from sandbox.document import document_part
from sandbox.inbox import private_callbacks
from sandbox.node import with_sandbox_upstream
from watcher import Watcher
from web import api, checkout_pages, metrics, openapi
from web.admin import document as admin_document
from web.admin import site as admin_site
from web.api import API_DB_DEADLINE_SECONDS, HEALTH_DB_DEADLINE_SECONDS, HEALTH_ENDPOINT
from web.auth import ensure_initial_key
from web.errors import ApiError, error_body
from web.services import Services, services_of
from web.validation import BODY_TOO_LARGE, MAX_BODY_BYTES

logger = logging.getLogger(__name__)


class ProxiedClientAddress:
    """WSGI: the client's real address (`request.remote_addr`, which the claim limit counts by) for a request that
    came through nginx. gunicorn behind nginx listens on a Unix socket only nginx can reach (deploy/), so a request
    whose peer has no IP address came through it, and nginx's X-Forwarded-For (set to the address it saw, never
    appended to) is believed. On TCP the peer's own address stands: anyone could send the header."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if parse_ip(environ.get("REMOTE_ADDR") or "") is None:
            forwarded = (environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")[-1].strip()
            environ["REMOTE_ADDR"] = forwarded if parse_ip(forwarded) is not None else ""
        return self.wsgi_app(environ, start_response)


def error_response(status: int, code: str, message: str, field_name: str | None = None) -> Any:
    response = jsonify(error_body(code, message, field_name))
    response.status_code = status
    return response


HTTP_ERROR_CODES = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Send a valid API key as 'Authorization: Bearer <key>'."),
    404: ("not_found", "There is nothing at this address; see /openapi.json for the routes."),
    405: ("method_not_allowed", "This method is not allowed here; see /openapi.json for the routes."),
    413: ("payload_too_large", BODY_TOO_LARGE),
    415: ("unsupported_media_type", "Send the request body as JSON with 'Content-Type: application/json'."),
}


def database_unavailable() -> Any:
    return error_response(503, "database_unavailable", "The database is unreachable; try again shortly.")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _invalid(exc: ApiError) -> Any:
        return error_response(exc.status, exc.code, exc.message, exc.field)

    @app.errorhandler(Refused)
    def _refused(exc: Refused) -> Any:  # the payment rules' refusals: a conflict with what is stored
        return error_response(409, exc.code, exc.message, exc.field)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        status = exc.code or 500
        code, message = HTTP_ERROR_CODES.get(status, ("http_error", exc.description or "Request failed."))
        response = error_response(status, code, message)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        deadline = current_deadline()
        if deadline is not None and deadline.expired:
            logger.error("database did not answer within %gs: %s", deadline.seconds, exc)
            return database_unavailable()
        if isinstance(exc, (OperationalError, InterfaceError, PoolTimeout, DatabaseError)):
            logger.error("database unavailable: %s", exc)
            return database_unavailable()
        logger.exception("unhandled error")
        return error_response(500, "internal_error", "An unexpected error occurred; it has been logged.")


def register_database_deadline(app: Flask) -> None:
    """Each request's database work runs under a client-side deadline (database.database_deadline)."""

    @app.before_request
    def _start() -> None:
        name = "HEALTH_DB_DEADLINE_SECONDS" if request.endpoint == HEALTH_ENDPOINT else "API_DB_DEADLINE_SECONDS"
        stack = ExitStack()
        stack.enter_context(database_deadline(app.config[name]))
        g.database_deadline = stack

    @app.teardown_request
    def _end(exc: BaseException | None) -> None:
        stack = g.pop("database_deadline", None)
        if stack is not None:
            stack.close()


def bootstrap(config: Config, db: Database) -> None:
    """Schema, first API key and webhook secret: idempotent and safe with many processes. Run once per start,
    before serving: by `python app.py`, and by gunicorn.conf.py's on_starting (in a child process)."""
    migrate.upgrade_to_head(db.url)
    with db.transaction() as session:
        created = ensure_initial_key(session, config.api_keys)
    if created is not None:
        print(f"Created the first API key (shown only once, store it now): {created.key}", flush=True)
    secret = ensure_webhook_secret(db, config)
    if secret is not None:
        print(f"Generated the webhook signing secret (shown only once): {secret}", flush=True)
    warn_if_payers_cannot_reach(config)


def bootstrap_from_environment(config: Config | None = None) -> int:
    """Run `bootstrap` once for `config` (default: the environment's), on a database connection of its own.

    Returns an exit status; a bad setting or an unreachable database is one line on stderr."""
    config = config or startup_config()
    try:
        db = open_ledger(resolve_database_url(config.database_url), config.public_base_url)
        try:
            bootstrap(config, db)
        finally:
            db.dispose()
    except (DatabaseError, SQLAlchemyError) as exc:
        print(f"database error: {first_line(exc)}", file=sys.stderr)
        return 1
    return 0


def create_app(config: Config | None = None, *, database: Database | None = None) -> Flask:
    """Build the app and nothing more: no migration, no key made or printed (that is `bootstrap`'s, run once before
    serving), no thread started (`start_background`). With no arguments: configuration from the environment and
    `.env`, as `gunicorn -c gunicorn.conf.py "app:create_app()"` builds it in each worker. `database`: the one to
    use (its engine and pool), whose sessions then carry this app's checkout links."""
    config = config or load_config()
    db = with_notifications(with_links(database or Database(resolve_database_url(config.database_url)),
                                       config.public_base_url), config)
    services = Services(config=config, db=db, private_callbacks=private_callbacks(config),
                        document_parts=[document_part(routes=config.is_sandbox), admin_document.document_part()],
                        simulate_path=sandbox_api.simulate_path if config.is_sandbox else None)

    app = Flask(__name__)
    app.wsgi_app = ProxiedClientAddress(app.wsgi_app)  # type: ignore[method-assign]
    app.url_map.merge_slashes = False  # "/payments//logs" is a JSON 404, not an HTML redirect
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["HEALTH_DB_DEADLINE_SECONDS"] = HEALTH_DB_DEADLINE_SECONDS
    app.config["API_DB_DEADLINE_SECONDS"] = API_DB_DEADLINE_SECONDS
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["tron"] = services
    register_error_handlers(app)
    register_database_deadline(app)

    app.register_blueprint(api.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)
    if config.is_sandbox:  # on every other network its routes do not exist: a JSON 404
        app.register_blueprint(sandbox_api.bp)
    app.register_blueprint(checkout_pages.pages)
    app.register_blueprint(admin_site.blueprint())
    return app


def start_background(app: Flask) -> None:
    """Start the watcher (if enabled) and the webhook dispatcher in this process, once; on the sandbox network first
    this process's node of the sandbox chain, the watcher's upstream (sandbox/node.py)."""
    services = services_of(app)
    if services.background:
        return
    services.config, node = with_sandbox_upstream(services.db, services.config)
    if node is not None:
        services.background.append(node)

    dispatcher = WebhookDispatcher(services.db, services.config, private_callbacks=services.private_callbacks)
    dispatcher.start()
    services.background.append(dispatcher)
    notifier = NotificationDispatcher(services.db, services.config)  # its own threads, schedule and deadline
    notifier.start()
    services.background.append(notifier)
    refresher = start_refresher(services.db, services.config)  # fiat quotes, one fetch at a time across processes
    if refresher is not None:
        services.background.append(refresher)

    def wake_dispatchers() -> None:
        dispatcher.notify()
        notifier.notify()

    services.wake_dispatcher = wake_dispatchers
    if services.config.watcher_enabled:
        watcher = Watcher(services.db, services.config, on_events=services.wake_dispatcher)
        watcher.start()
        services.background.append(watcher)
        services.wake_watcher = watcher.wake
        services.chain_client = watcher.client.rotated(0)  # claims share the watcher's request budget


def stop_background(app: Flask, timeout: float = 10.0) -> None:
    """Stop the background parts, newest first, all within `timeout` seconds together (not each: a worker's stop
    must not grow with the number of its parts); a part left no time is still told to stop."""
    services = services_of(app)
    deadline = time.monotonic() + timeout
    while services.background:
        services.background.pop().stop(max(0.0, deadline - time.monotonic()))


def main() -> int:
    """`python app.py`: the bootstrap, then the development server with the background threads, until Ctrl-C or
    SIGTERM; both end it cleanly, the embedded PostgreSQL it started included."""
    interrupt_on_sigterm()
    try:
        config = startup_config()
        status = bootstrap_from_environment(config)
        if status != 0:
            return status
        app = create_app(config)
    except (DatabaseError, SQLAlchemyError) as exc:
        print(f"database error: {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # stopped while starting
        return 130
    try:
        start_background(app)
        app.run(host=config.host, port=config.port, threaded=True, use_reloader=False)  # returns on Ctrl-C, SIGTERM
    except KeyboardInterrupt:  # stopped before the server's own loop caught it
        pass
    finally:
        ignore_stop_signals()
        stop_background(app)
    return 0


if __name__ == "__main__":
    import app  # this module under its own name, so its log lines say "app", not "__main__"

    sys.exit(app.main())
