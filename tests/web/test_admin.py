"""The dashboard over plain HTTP (Flask's test client, the real database): accounts and sessions, the CSRF check, the
login throttle, two-factor login, the page headers, each page and each action with its audit row. The browser's
tests are tests/web/test_admin_browser.py; the CLI's admin commands are at the end."""
from __future__ import annotations

import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import func, select, update

from console import accounts
from console.totals import last_days
from models import AdminSession, ApiKey, LoginFailure, PaymentLog, PaymentStatus, TransferStatus
from notify.messages import dashboard_link
from tests.conftest import add_event, add_payment, add_transfer
from tests.test_db_manager import cli_env, ok, one_line_failure, run_cli

NAME, PASSWORD = "alice", "correct horse battery"
PAGES = ("/admin", "/admin/payments", "/admin/transfers", "/admin/transfers?status=set_aside", "/admin/events",
         "/admin/rates", "/admin/keys", "/admin/account")


@pytest.fixture
def admin(db) -> str:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        accounts.create_admin(session, NAME, PASSWORD)
    return NAME


def token_in(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def try_login(client, name: str = NAME, password: str = PASSWORD, next_path: str | None = None) -> Any:
    form = client.get("/admin/login" + (f"?next={next_path}" if next_path else ""))
    data = {"name": name, "password": password, "csrf_token": token_in(form.text)}
    if next_path is not None:
        data["next"] = next_path
    return client.post("/admin/login", data=data)


@pytest.fixture
def signed_in(client, admin):  # type: ignore[no-untyped-def]
    response = try_login(client)
    assert response.status_code == 303 and response.headers["Location"] == "/admin"
    return client


def csrf(client, path: str = "/admin") -> str:
    return token_in(client.get(path).text)


def audit(db, event_type: str) -> list[PaymentLog]:  # type: ignore[no-untyped-def]
    with db.Session() as session:
        return list(session.scalars(select(PaymentLog).where(PaymentLog.event_type == event_type)))


# --- sessions --------------------------------------------------------------------------------------------------

def test_login_sets_a_strict_http_only_cookie_and_opens_the_pages(client, admin) -> None:  # type: ignore[no-untyped-def]
    response = try_login(client)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("tum_admin=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie and "Path=/admin" in cookie
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        assert NAME in page.text
    [entry] = audit(client.application.extensions["tron"].db, "admin.login")
    assert entry.event_metadata["admin"] == NAME


def test_the_cookie_is_secure_behind_https(config, db, admin) -> None:  # type: ignore[no-untyped-def]
    from app import create_app

    client = create_app(replace(config, public_base_url="https://pay.example"), database=db).test_client()
    assert "Secure" in try_login(client).headers["Set-Cookie"]


def test_pages_ask_for_a_login_and_return_to_the_page_asked_for(client, admin) -> None:  # type: ignore[no-untyped-def]
    asked = client.get("/admin/payments?status=pending")
    assert asked.status_code == 303
    assert asked.headers["Location"] == "/admin/login?next=%2Fadmin%2Fpayments%3Fstatus%3Dpending"
    response = try_login(client, next_path="/admin/payments?status=pending")
    assert response.headers["Location"] == "/admin/payments?status=pending"


def test_a_notifications_link_opens_its_payment_after_the_login(client, admin, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        payment = add_payment(session)
        order_id, link = payment.order_id, dashboard_link("http://127.0.0.1:5000", payment.id)
    path = link.removeprefix("http://127.0.0.1:5000")  # what the phone opens, without the cookie
    asked = client.get(path)
    assert asked.status_code == 303 and asked.headers["Location"].startswith("/admin/login?next=")
    response = try_login(client, next_path=path)
    assert response.headers["Location"] == path
    page = client.get(path)
    assert page.status_code == 200 and order_id in page.text


@pytest.mark.parametrize("target", ["//evil.example/admin", "https://evil.example/", "/\\evil.example",
                                    "javascript:alert(1)", "admin"])
def test_next_takes_relative_paths_only(client, admin, target: str) -> None:  # type: ignore[no-untyped-def]
    assert try_login(client, next_path=target).headers["Location"] == "/admin"


def test_logout_ends_the_session_at_once(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    cookie = signed_in.get_cookie("tum_admin", path="/admin").value
    assert signed_in.post("/admin/logout", data={"csrf_token": csrf(signed_in)}).status_code == 303
    signed_in.set_cookie("tum_admin", cookie, path="/admin")  # the old token, sent again
    assert signed_in.get("/admin").status_code == 303
    with db.Session() as session:
        assert session.scalar(select(func.count()).select_from(AdminSession)) == 0
    assert [e.event_metadata["admin"] for e in audit(db, "admin.logout")] == [NAME]


@pytest.mark.parametrize("change", ["delete", "password"])
def test_deleting_an_admin_or_changing_the_password_ends_their_sessions(signed_in, db, change: str) -> None:  # type: ignore[no-untyped-def]
    assert signed_in.get("/admin").status_code == 200
    with db.transaction() as session:
        if change == "delete":
            accounts.delete_admin(session, NAME)
        else:
            accounts.set_password(session, NAME, "another long password")
    assert signed_in.get("/admin").status_code == 303


def test_a_session_idle_for_twelve_hours_is_over(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        session.execute(update(AdminSession).values(last_seen_at=datetime.now(UTC) - timedelta(hours=11, minutes=59)))
    assert signed_in.get("/admin").status_code == 200  # used: idle time starts again
    with db.transaction() as session:
        session.execute(update(AdminSession).values(last_seen_at=datetime.now(UTC) - timedelta(hours=12, minutes=1)))
    assert signed_in.get("/admin").status_code == 303


def test_an_api_key_never_opens_the_dashboard_and_a_session_never_opens_the_api(signed_in, auth, app) -> None:  # type: ignore[no-untyped-def]
    other = app.test_client()
    assert other.get("/admin", headers=auth).status_code == 303
    assert other.get("/admin/payments", headers=auth).headers["Location"].startswith("/admin/login")
    assert signed_in.get("/payments").status_code == 401
    assert signed_in.get("/stats").status_code == 200  # an operator route, open to all as before


def test_pages_in_chinese_keep_the_language_chosen(signed_in) -> None:  # type: ignore[no-untyped-def]
    chosen = signed_in.get("/admin?lang=zh")
    assert '<html lang="zh-Hans">' in chosen.text and ">概览</h1>" in chosen.text
    assert ">付款</h1>" in signed_in.get("/admin/payments").text  # the next page, linked without ?lang=
    assert ">Payments</h1>" in signed_in.get("/admin/payments?lang=en").text
    assert ">Payments</h1>" in signed_in.get("/admin/payments").text


# --- CSRF and the throttle ---------------------------------------------------------------------------------------

def test_a_form_without_its_csrf_token_changes_nothing(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        payment = add_payment(session)
    for data in ({"name": "k"}, {"name": "k", "csrf_token": "forged"}):
        refused = signed_in.post("/admin/keys", data=data)
        assert refused.status_code == 403 and "nothing was changed" in refused.text
    assert signed_in.post(f"/admin/payments/{payment.id}/cancel", data={}).status_code == 403
    assert signed_in.post("/admin/logout", data={}).status_code == 403
    with db.Session() as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0
        assert session.get(type(payment), payment.id).status == PaymentStatus.pending
    assert signed_in.post("/admin/keys", json={"csrf_token": csrf(signed_in)}).status_code == 415
    for field in ("name", "prefix"):  # a NUL (PostgreSQL refuses it) is dropped, never a 500
        assert signed_in.post("/admin/keys" + ("/revoke" if field == "prefix" else ""),
                              data={"csrf_token": csrf(signed_in), field: "a\x00b"}).status_code in (200, 409)
    assert signed_in.get("/admin").status_code == 200  # still signed in


def test_a_name_with_a_nul_is_a_failed_login_not_a_500(client, admin) -> None:  # type: ignore[no-untyped-def]
    assert try_login(client, name="ali\x00ce", password="wrong password").status_code == 401


def test_the_login_form_carries_its_own_token(client, admin) -> None:  # type: ignore[no-untyped-def]
    client.get("/admin/login")
    refused = client.post("/admin/login", data={"name": NAME, "password": PASSWORD, "csrf_token": "x"})
    assert refused.status_code == 403 and "Set-Cookie" not in refused.headers or \
        "tum_admin=" not in refused.headers.get("Set-Cookie", "")


def test_five_wrong_passwords_a_minute_give_429_per_name(client, admin, db) -> None:  # type: ignore[no-untyped-def]
    statuses = [try_login(client, password="wrong password").status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    refused = try_login(client)  # even the right password, until the minute has passed
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    with db.transaction() as session:  # counted in the database: a minute later, the name may try again
        session.execute(update(LoginFailure).values(failed_at=func.now() - timedelta(seconds=61)))
    assert try_login(client).status_code == 303


def test_five_failures_a_minute_from_one_address_give_429_whatever_the_names(client, admin) -> None:  # type: ignore[no-untyped-def]
    statuses = [try_login(client, name=f"user{n}", password="wrong password").status_code for n in range(5)]
    assert statuses == [401, 401, 401, 401, 429]
    assert try_login(client).status_code == 429
    elsewhere = client.application.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert try_login(elsewhere).status_code == 303


def test_a_burst_of_parallel_wrong_passwords_is_counted_one_by_one(live_url, admin, db) -> None:  # type: ignore[no-untyped-def]
    import concurrent.futures

    import requests

    def attempt(_: int) -> int:
        with requests.Session() as browser:
            form = browser.get(f"{live_url}/admin/login", timeout=10).text
            return browser.post(f"{live_url}/admin/login", timeout=10, allow_redirects=False, data={
                "name": NAME, "password": "wrong password", "csrf_token": token_in(form)}).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    assert statuses == [401] * 4 + [429] * 4
    with db.Session() as session:
        assert session.scalar(select(func.count()).select_from(LoginFailure)) == 5


# --- two-factor login ------------------------------------------------------------------------------------------

def test_totp_enrolled_from_the_console_then_required(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    enrolling = signed_in.post("/admin/account/totp", data={"csrf_token": csrf(signed_in)})
    assert enrolling.status_code == 200 and "<svg" in enrolling.text
    with db.Session() as session:
        secret = accounts.find_admin(session, NAME).totp_secret  # type: ignore[union-attr]
    totp = pyotp.TOTP(secret)
    wrong = signed_in.post("/admin/account/totp/confirm", data={"csrf_token": csrf(signed_in), "code": "000000"})
    assert wrong.status_code == 400
    assert signed_in.post("/admin/account/totp/confirm",
                          data={"csrf_token": csrf(signed_in), "code": totp.now()}).status_code == 303
    signed_in.post("/admin/logout", data={"csrf_token": csrf(signed_in)})

    half = try_login(signed_in, next_path="/admin/keys")
    assert half.headers["Location"].startswith("/admin/login/code")
    assert signed_in.get("/admin/keys").status_code == 303  # the password alone opens nothing
    form = signed_in.get(half.headers["Location"])
    assert signed_in.post("/admin/login/code", data={"csrf_token": token_in(form.text), "code": "000000",
                                                      "next": "/admin/keys"}).status_code == 401
    with db.transaction() as session:  # the code of the next step: a code already taken is refused
        session.execute(update(type(accounts.find_admin(session, NAME))).values(totp_last_step=None))
    done = signed_in.post("/admin/login/code", data={"csrf_token": token_in(form.text),
                                                      "code": totp.at(datetime.now(UTC) + timedelta(seconds=30)),
                                                      "next": "/admin/keys"})
    assert done.status_code == 303 and done.headers["Location"] == "/admin/keys"
    assert signed_in.get("/admin/keys").status_code == 200
    assert [e.event_metadata["admin"] for e in audit(db, "admin.totp_on")] == [NAME]


# --- the pages' rules --------------------------------------------------------------------------------------------

def test_every_page_has_the_checkout_pages_headers_and_no_inline_script(signed_in, db, app) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        payment = add_payment(session)
    for path in (*PAGES, f"/admin/payments/{payment.id}", "/admin/login", "/admin/payments?cursor=bad"):
        response = (app.test_client() if path == "/admin/login" else signed_in).get(path)
        assert response.status_code in (200, 400), path
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src 'nonce-" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "<script" not in response.text and " style=" not in response.text
        assert " src=" not in response.text and re.findall(r"<link [^>]*>", response.text) == [
            '<link rel="icon" href="data:,">']  # nothing loaded from anywhere
        nonce = re.search(r"'nonce-([^']+)'", csp).group(1)  # type: ignore[union-attr]
        assert f'<style nonce="{nonce}">' in response.text
        for field in re.findall(r"<(?:input|select)[^>]*\bid=\"([^\"]+)\"", response.text):
            assert f'for="{field}"' in response.text, (path, field)  # every control has its label


@pytest.mark.parametrize(("path", "status"), [
    ("/admin/payments?cursor=nonsense", 400), ("/admin/payments?from=2026-13-01", 400),
    ("/admin/payments?status=lost", 400), ("/admin/payments/not-a-uuid", 404),
    (f"/admin/payments/{uuid.uuid4()}", 404), ("/admin/transfers?status=credited", 400),
    ("/admin/events?state=nope", 400), ("/admin/events?cursor=%00", 400), ("/admin/payments?to=9999-12-31", 200),
    ("/admin/payments?q=a%00b", 200), ("/admin/payments?from=0001-01-01", 200),
])
def test_bad_input_is_a_clear_page_never_a_500(signed_in, path: str, status: int) -> None:  # type: ignore[no-untyped-def]
    response = signed_in.get(path)
    assert response.status_code == status and response.content_type.startswith("text/html")


def test_the_overview_counts_and_chart_come_from_the_database(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        done = add_payment(session, PaymentStatus.completed, "12", created_ago=timedelta(days=2))
        add_payment(session, created_ago=timedelta(minutes=1))
        add_transfer(session, "12", TransferStatus.credited, done)
        add_transfer(session, "3", TransferStatus.unmatched)
        add_event(session, done, __import__("models").EventState.failed)
    page = signed_in.get("/admin").text
    for key, value in (("total", 2), ("pending", 1), ("completed", 1), ("webhooks-failed", 1), ("unmatched", 1)):
        assert re.search(rf'id="count-{key}">(?:<a [^>]*>)?{value}<', page), key
    today = datetime.now(UTC).date()
    with db.Session() as session:
        days = {d.day: d for d in last_days(session, today)}
    assert days[today].usdt == 12 and sum(d.payments for d in days.values()) == 2
    assert "2 payments created, 12 USDT credited" in page and page.count("<rect") == 60


# --- searching and acting ------------------------------------------------------------------------------------

def test_search_finds_a_payment_by_order_id_address_or_transaction_hash(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        wanted = add_payment(session, PaymentStatus.completed, wallet="TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre")
        other = add_payment(session)
        transfer = add_transfer(session, "10.5", TransferStatus.credited, wanted,
                                wallet="TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre")
    for q in (wanted.order_id, wanted.wallet_address, transfer.transaction_hash, transfer.transaction_hash.upper()):
        page = signed_in.get("/admin/payments", query_string={"q": q}).text
        assert wanted.order_id in page and other.order_id not in page, q
    by_id = signed_in.get("/admin/payments", query_string={"q": str(wanted.id)})
    assert by_id.headers["Location"] == f"/admin/payments/{wanted.id}"


def test_payments_come_in_cursor_pages_with_their_filters(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        made = [add_payment(session, created_ago=timedelta(minutes=n)) for n in range(55)]
        add_payment(session, PaymentStatus.expired, created_ago=timedelta(days=3))
    first = signed_in.get("/admin/payments?status=pending").text
    cursor = re.search(r"cursor=([A-Za-z0-9_-]+)", first).group(1)  # type: ignore[union-attr]
    assert "status=pending&amp;cursor=" in first
    second = signed_in.get(f"/admin/payments?status=pending&cursor={cursor}").text
    seen = {p.order_id for p in made if p.order_id in first} | {p.order_id for p in made if p.order_id in second}
    assert len(seen) == 55 and "cursor=" not in second.split("<table")[1]
    day = (datetime.now(UTC) - timedelta(days=3)).date().isoformat()
    assert signed_in.get(f"/admin/payments?from={day}&to={day}").text.count("/admin/payments/") == 1


def test_cancel_and_retry_from_the_payment_page_name_the_admin(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        payment = add_payment(session)
    page = signed_in.get(f"/admin/payments/{payment.id}")
    assert 'id="cancel"' in page.text and 'id="retry-webhook"' not in page.text
    done = signed_in.post(f"/admin/payments/{payment.id}/cancel", data={"csrf_token": token_in(page.text)})
    assert done.status_code == 303
    after = signed_in.get(done.headers["Location"]).text
    assert "cancelled" in after and 'id="cancel"' not in after and "by admin alice" in after
    again = signed_in.post(f"/admin/payments/{payment.id}/cancel", data={"csrf_token": token_in(after)})
    assert again.status_code == 409  # the API's rule: only a pending payment that received nothing
    retried = signed_in.post(f"/admin/payments/{payment.id}/retry", data={"csrf_token": token_in(after)})
    assert retried.status_code == 303  # its payment.cancelled event, queued again
    assert [e.event_metadata["admin"] for e in audit(db, "admin.webhook_retry")] == [NAME]


def test_assign_an_unmatched_transfer_as_assign_transfer_does(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    with db.transaction() as session:
        payment = add_payment(session, amount="12", created_ago=timedelta(hours=2))
        transfer = add_transfer(session, "12", TransferStatus.unmatched, log_index=3)
    listing = signed_in.get("/admin/transfers").text
    assert transfer.transaction_hash in listing
    bad = signed_in.post(f"/admin/transfers/{transfer.id}/assign", data={"csrf_token": token_in(listing),
                                                                         "payment_id": "nope"})
    assert bad.status_code == 400
    done = signed_in.post(f"/admin/transfers/{transfer.id}/assign",
                          data={"csrf_token": token_in(listing), "payment_id": str(payment.id)})
    assert done.headers["Location"] == f"/admin/payments/{payment.id}?done=assigned"
    with db.Session() as session:
        types = list(session.scalars(select(PaymentLog.event_type).where(PaymentLog.payment_id == payment.id)))
        assert session.get(type(payment), payment.id).status == PaymentStatus.completed
    assert "assigned" in types and "admin.assign" in types
    again = signed_in.post(f"/admin/transfers/{transfer.id}/assign",
                           data={"csrf_token": token_in(listing), "payment_id": str(payment.id)})
    assert again.status_code == 409 and "already credited" in again.text


def test_events_are_listed_and_retried(signed_in, db) -> None:  # type: ignore[no-untyped-def]
    from models import EventState, WebhookEvent

    with db.transaction() as session:
        payment = add_payment(session)
        add_event(session, payment, EventState.failed)
    page = signed_in.get("/admin/events?state=failed").text
    event_id = re.search(r"/admin/events/(evt_[0-9a-f]+)/retry", page).group(1)  # type: ignore[union-attr]
    assert signed_in.post(f"/admin/events/{event_id}/retry", data={"csrf_token": token_in(page)}).status_code == 303
    with db.Session() as session:
        assert session.scalar(select(WebhookEvent.state).where(WebhookEvent.id == event_id)) == EventState.pending
    assert signed_in.post("/admin/events/evt_unknown/retry", data={"csrf_token": token_in(page)}).status_code == 404


def test_api_keys_created_once_listed_by_prefix_and_revoked(signed_in, db, app) -> None:  # type: ignore[no-untyped-def]
    created = signed_in.post("/admin/keys", data={"csrf_token": csrf(signed_in), "name": "shop"})
    key = re.search(r'id="new-key">([^<]+)<', created.text).group(1)  # type: ignore[union-attr]
    api = app.test_client()
    assert api.get("/payments", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    listing = signed_in.get("/admin/keys").text
    assert key not in listing and key[:12] in listing
    signed_in.post("/admin/keys/revoke", data={"csrf_token": token_in(listing), "prefix": key[:12]})
    assert api.get("/payments", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    assert [e.event_metadata["admin"] for e in audit(db, "admin.api_key_revoked")] == [NAME]
    assert signed_in.post("/admin/keys/revoke", data={"csrf_token": token_in(listing),
                                                      "prefix": "zz"}).status_code == 409


# --- the CLI -------------------------------------------------------------------------------------------------

def test_admin_commands(database_url: str, db) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    from tests.conftest import ROOT

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "db_manager.py", "--database-url", database_url, *args], cwd=ROOT,
                              env=cli_env(), input=stdin, capture_output=True, text=True, timeout=60)

    assert "created" in ok(run("create-admin", "bob", "--password-stdin", stdin="a long password\n"))
    assert "exists already" in one_line_failure(run("create-admin", "bob", "--password-stdin",
                                                    stdin="a long password\n"))
    assert "10 to" in one_line_failure(run("create-admin", "carol", "--password-stdin", stdin="short\n"))
    assert "not a terminal" in one_line_failure(run_cli(database_url, "create-admin", "carol"))
    assert re.search(r"bob\s+off", ok(run("list-admins")))
    with db.transaction() as session:
        accounts.start_totp(accounts.find_admin(session, "bob"))  # type: ignore[arg-type]
        accounts.find_admin(session, "bob").totp_enabled = True  # type: ignore[union-attr]
    assert re.search(r"bob\s+on", ok(run("list-admins")))
    ok(run("set-admin-password", "bob", "--password-stdin", "--totp-off", stdin="another long one\n"))
    assert re.search(r"bob\s+off", ok(run("list-admins")))
    with db.transaction() as session:
        assert accounts.password_matches(session, "bob", "another long one") is not None
        assert accounts.find_admin(session, "bob").password_hash.startswith("$argon2id$")  # type: ignore[union-attr]
    ok(run("delete-admin", "bob"))
    assert "no admin is named" in one_line_failure(run("delete-admin", "bob"))
    assert "no admins" in ok(run("list-admins"))
