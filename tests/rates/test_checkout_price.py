"""The checkout page shows the price beside the USDT amount, in a real browser (system Chromium, as
tests/web/test_checkout_browser.py drives it), in English and in Chinese."""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from tests.conftest import HOOK, WALLET

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no system browser: {CHROMIUM} and {CHROMEDRIVER} are needed", allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402

from tests.browser import chrome  # noqa: E402


@pytest.fixture
def live_app(config, db) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    from werkzeug.serving import make_server

    from app import create_app
    from web.services import services_of

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_app(config.with_overrides(rate_sources=(), fixed_rates=(("CNY", Decimal("7.22")),)), database=db)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    services_of(app).links.base_url = base
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield base, app
    server.shutdown()


def test_the_payer_sees_the_price_the_amount_and_the_locked_rate(live_app, auth):
    _, app = live_app
    r = app.test_client().post("/payments", headers=auth, json={
        "wallet_address": WALLET, "price_amount": "720", "price_currency": "CNY", "order_id": "tea-720",
        "callback_url": HOOK})
    assert r.status_code == 201, r.get_json()
    payment = r.get_json()
    locked = payment["created_at"][11:16]
    browser = chrome()
    try:
        browser.get(payment["checkout_url"] + "?lang=en")
        line = browser.find_element(By.ID, "price-line")
        assert line.is_displayed()
        assert line.text == f"¥720.00 → 99.73 USDT, rate 7.22 CNY per USDT, locked {locked} UTC"
        assert browser.find_element(By.ID, "amount").text == "99.73"
        browser.get(payment["checkout_url"] + "?lang=zh")
        assert browser.find_element(By.ID, "price-line").text == \
            f"¥720.00 → 99.73 USDT，汇率 7.22 CNY/USDT，锁定于 {locked} UTC"
        # a payment given in USDT has no price line
        plain = app.test_client().post("/payments", headers=auth, json={
            "wallet_address": WALLET, "expected_amount_usdt": "5", "order_id": "plain-5", "callback_url": HOOK})
        browser.get(plain.get_json()["checkout_url"])
        assert browser.find_element(By.ID, "amount").text == "5"
        assert browser.find_elements(By.ID, "price-line") == []
    finally:
        browser.quit()
