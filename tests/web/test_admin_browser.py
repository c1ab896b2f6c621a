"""The dashboard in a real browser (system Chromium, tests/browser.py), against the app on a real server with its
watcher on the TronGrid simulator and its webhook dispatcher: log in, the overview's numbers, search, assign an
unmatched transfer, retry a failed webhook, create, use and revoke an API key.

ADMIN_SCREENSHOTS=docs writes the dashboard's screenshots (desktop and phone) into docs/."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from console import accounts
from delivery.webhooks import WebhookDispatcher
from models import ApiKey, EventState, Payment, PaymentStatus, Transfer, TransferStatus, WebhookEvent
from tests.browser import chrome, console_errors, requested_urls, screenshot, serve, skip_without_browser
from tests.conftest import TEST_API_KEY, WALLET, add_transfer, create, pay, wait_for
from web.services import services_of

skip_without_browser()

from selenium.webdriver.common.by import By  # noqa: E402

NAME, PASSWORD = "alice", "correct horse battery"
AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
SHOTS = "ADMIN_SCREENSHOTS"


@pytest.fixture
def site(config, db, sim, new_watcher) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    """(base URL, app): the live app (tests/browser.serve) with its webhook dispatcher too, and an admin."""
    with db.transaction() as session:
        accounts.create_admin(session, NAME, PASSWORD)
    for base, app in serve(config, db, sim, new_watcher):
        services = services_of(app)
        dispatcher = WebhookDispatcher(db, services.config, private_callbacks=services.private_callbacks)
        dispatcher.start()
        services.wake_dispatcher = dispatcher.notify
        try:
            yield base, app
        finally:
            dispatcher.stop(5)


def log_in(browser, base: str, path: str = "/admin") -> None:  # type: ignore[no-untyped-def]
    browser.get(base + path)
    assert "/admin/login" in browser.current_url
    browser.find_element(By.ID, "name").send_keys(NAME)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form[action='/admin/login'] button").click()
    assert wait_for(lambda: browser.current_url == base + path, 5), browser.current_url


def number(browser, element_id: str) -> int:  # type: ignore[no-untyped-def]
    return int(browser.find_element(By.ID, element_id).text)


def phone_shot(base: str, path: str, tmp_path: Path, name: str) -> None:
    """The page at 360 px, as a phone shows it: no horizontal scrolling; its screenshot."""
    phone = chrome(width=360, height=780, phone=True)
    try:
        cookie = PHONE_COOKIES.pop()
        phone.get(base + "/admin/login")
        phone.add_cookie(cookie)
        phone.get(base + path)
        assert phone.execute_script("return document.documentElement.scrollWidth;") <= 360
        screenshot(phone, tmp_path, name, SHOTS)
    finally:
        phone.quit()


PHONE_COOKIES: list[dict[str, Any]] = []


def share_session(browser) -> None:  # type: ignore[no-untyped-def]
    PHONE_COOKIES.append({k: v for k, v in browser.get_cookie("tum_admin").items() if k != "sameSite"})


def scanned(session: Any, column: Any) -> dict[str, int]:
    """Rows per value of an enum column, every value listed: counted from the table itself."""
    counts = {member.value: 0 for member in column.type.enum_class}
    for value, n in session.execute(select(column, func.count()).group_by(column)):
        counts[value.value] = n
    return counts


def test_log_in_and_the_overview_matches_the_database(browser, site, sim, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base, app = site
    client = app.test_client()
    paid = create(client, AUTH, "10", order_id="ORD-2001")
    for n in range(3):
        create(client, AUTH, f"{n + 1}.5", order_id=f"ORD-200{n + 2}")
    pay(sim, WALLET, 10_000_000)
    assert wait_for(lambda: client.get(f"/payments/{paid['id']}", headers=AUTH).get_json()["status"] == "completed")
    browser.get_log("performance")
    browser.get_log("browser")
    log_in(browser, base)
    with db.Session() as session:
        payments, events, transfers = (scanned(session, column) for column in (
            Payment.status, WebhookEvent.state, Transfer.status))  # the tables counted, not the kept counts
    assert number(browser, "count-total") == sum(payments.values()) == 4
    for status in ("pending", "completed", "failed", "expired"):
        assert number(browser, f"count-{status}") == payments[status]
    assert number(browser, "count-webhooks-pending") == events["pending"]
    assert number(browser, "count-webhooks-failed") == events["failed"]
    assert number(browser, "count-unmatched") == transfers["unmatched"]
    assert "4 payments created, 10 USDT credited" in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart rect")
    assert console_errors(browser) == []
    assert all(url.startswith((base, "data:")) for url in requested_urls(browser))
    screenshot(browser, tmp_path, "dashboard-overview-desktop.png", SHOTS)
    share_session(browser)
    phone_shot(base, "/admin", tmp_path, "dashboard-overview-phone.png")


def search(browser, base: str, text: str) -> str:  # type: ignore[no-untyped-def]
    browser.get(base + "/admin/payments")
    field = browser.find_element(By.ID, "q")
    field.clear()
    field.send_keys(text)
    browser.find_element(By.CSS_SELECTOR, "form[role=search] button").click()
    assert wait_for(lambda: "q=" in browser.current_url, 5)  # the answer to the form, not the page it was on
    return browser.find_element(By.TAG_NAME, "main").text


def test_search_finds_a_payment_by_each_of_its_three_keys(browser, site, sim) -> None:  # type: ignore[no-untyped-def]
    base, app = site
    client = app.test_client()
    wanted = create(client, AUTH, "7", order_id="ORD-3001", wallet="TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre")
    other = create(client, AUTH, "8", order_id="ORD-3002")
    tx = pay(sim, wanted["wallet_address"], 7_000_000)
    assert wait_for(lambda: client.get(f"/payments/{wanted['id']}", headers=AUTH).get_json()["status"] == "completed")
    log_in(browser, base, "/admin/payments")
    for key in ("ORD-3001", wanted["wallet_address"], tx):
        found = search(browser, base, key)
        assert "ORD-3001" in found and other["order_id"] not in found, key
    browser.find_element(By.LINK_TEXT, "ORD-3001").click()
    assert wait_for(lambda: f"/admin/payments/{wanted['id']}" in browser.current_url, 5)
    assert tx in browser.find_element(By.TAG_NAME, "main").text


def test_assign_an_unmatched_transfer(browser, site, db, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base, app = site
    payment = create(app.test_client(), AUTH, "12", order_id="ORD-4001")
    with db.transaction() as session:
        transfer = add_transfer(session, "12", TransferStatus.unmatched, wallet=WALLET, log_index=2)
        transfer.reason = "no_candidate"
    log_in(browser, base, "/admin/transfers")
    assert transfer.transaction_hash in browser.page_source
    screenshot(browser, tmp_path, "dashboard-unmatched-desktop.png", SHOTS)
    share_session(browser)
    phone_shot(base, "/admin/transfers", tmp_path, "dashboard-unmatched-phone.png")
    browser.find_element(By.ID, f"pay-{transfer.id}").send_keys(payment["id"])
    browser.find_element(By.CSS_SELECTOR, f"form[action='/admin/transfers/{transfer.id}/assign'] button").click()
    assert wait_for(lambda: f"/admin/payments/{payment['id']}" in browser.current_url, 5)
    assert browser.find_element(By.ID, "received").text == "12 USDT"
    timeline = browser.find_element(By.ID, "timeline").text
    assert f"assigned transfer {transfer.transaction_hash}:2 to this payment (by admin {NAME})" in timeline
    with db.Session() as session:
        assert session.get(Payment, uuid.UUID(payment["id"])).status == PaymentStatus.completed  # type: ignore[union-attr]


def test_retry_a_failed_webhook_and_see_it_delivered(browser, site, db, receiver, tmp_path) -> None:  # type: ignore[no-untyped-def]
    base, app = site
    payment = create(app.test_client(), AUTH, "5", order_id="ORD-5001", callback_url=receiver.url("/hook"))
    with db.transaction() as session:
        session.add(WebhookEvent(id=f"evt_{uuid.uuid4().hex}", payment_id=uuid.UUID(payment["id"]),
                                 type="payment.expired", body="{}", callback_url=receiver.url("/hook"),
                                 state=EventState.failed, attempts=8, last_status_code=500,
                                 last_error="HTTP 500 from the receiver"))
    log_in(browser, base, f"/admin/payments/{payment['id']}")
    assert "failed" in browser.find_element(By.ID, "events").text
    browser.find_element(By.ID, "retry-webhook").click()
    assert wait_for(lambda: len(receiver.to("/hook")) == 1, 10)

    def delivered() -> bool:
        browser.refresh()
        return "delivered" in browser.find_element(By.ID, "events").text
    assert wait_for(delivered, 10)
    assert f"(by admin {NAME})" in browser.find_element(By.ID, "timeline").text
    screenshot(browser, tmp_path, "dashboard-payment-desktop.png", SHOTS)
    share_session(browser)
    phone_shot(base, f"/admin/payments/{payment['id']}", tmp_path, "dashboard-payment-phone.png")


def test_create_a_key_use_it_on_the_api_and_revoke_it(browser, site, db) -> None:  # type: ignore[no-untyped-def]
    base, _ = site
    log_in(browser, base, "/admin/keys")
    browser.find_element(By.ID, "key-name").send_keys("shop")
    browser.find_element(By.ID, "create-key").click()
    assert wait_for(lambda: browser.find_elements(By.ID, "new-key"), 5)
    key = browser.find_element(By.ID, "new-key").text
    assert requests.get(f"{base}/payments", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200
    browser.get(base + "/admin/keys")
    assert key not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, f"button[aria-label='Revoke {key[:12]}']").click()

    def revoked() -> bool:
        with db.Session() as session:
            return session.scalar(select(ApiKey.revoked_at).where(ApiKey.prefix == key[:12])) is not None
    assert wait_for(revoked, 5)
    assert requests.get(f"{base}/payments", headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 401
    with db.Session() as session:
        assert session.scalar(select(Transfer.id).limit(1)) is None  # nothing else touched
