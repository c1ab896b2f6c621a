"""The checkout page in a real browser: headless Chromium from the system's packages (/usr/bin/chromium through
/usr/bin/chromedriver; Selenium never downloads one), the app on a real server on 127.0.0.1, a running watcher
reading the TronGrid simulator. Without the browser these tests skip, saying why.

CHECKOUT_SCREENSHOTS=docs writes the README's two screenshots (desktop and phone) into docs/."""
from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import pytest

from infra.locales import CATALOGUES
from tests.browser import chrome, console_errors, requested_urls, screenshot, skip_without_browser
from tests.conftest import PAYER, WALLET, WALLET_B, create, pay, set_fields, wait_for

FAKE_TOKEN = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"
EN, ZH = CATALOGUES["en"], CATALOGUES["zh"]

skip_without_browser()

from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def open_payment(browser, live, amount: str, **extra: Any) -> dict:  # type: ignore[no-untyped-def]
    base, app = live
    payment = create(app.test_client(), {"Authorization": "Bearer tum_test_key_for_the_test_suite_only"}, amount,
                     **extra)
    browser.get(payment["checkout_url"])
    return payment


def shown(browser, element_id: str) -> bool:  # type: ignore[no-untyped-def]
    return browser.find_element(By.ID, element_id).is_displayed()


def text(browser, element_id: str) -> str:  # type: ignore[no-untyped-def]
    return browser.find_element(By.ID, element_id).text


def content(browser, element_id: str) -> str:  # type: ignore[no-untyped-def]
    """An element's text, shown or not (the claim's answer stays in the page once the payment completes). A page
    that reloads itself (without JavaScript it does, every few seconds) between the lookup and the read is read
    again: "" lets the caller's wait ask once more."""
    try:
        return browser.find_element(By.ID, element_id).get_attribute("textContent").strip()
    except (StaleElementReferenceException, NoSuchElementException):
        return ""


def test_renders_cleanly_with_a_qr_code_of_the_address(browser, live, tmp_path) -> None:
    base, _ = live
    browser.get_log("performance")
    browser.get_log("browser")
    open_payment(browser, live, "25.5", order_id="ORD-1024", return_url="https://shop.example/orders/1024")
    assert wait_for(lambda: text(browser, "countdown") not in ("", "0:00"), 5)
    assert text(browser, "amount") == "25.5" and text(browser, "address") == WALLET
    assert "Lotus Tea House" in browser.page_source and shown(browser, "copy-address")
    time.sleep(3.5)  # one status poll
    assert console_errors(browser) == []
    urls = requested_urls(browser)
    assert urls and all(url.startswith((base, "data:")) for url in urls), urls
    assert any(url.endswith("/status") for url in urls)
    png = screenshot(browser, tmp_path, "checkout-desktop.png")
    if shutil.which("zbarimg") is None:
        pytest.skip("zbarimg (zbar-tools) is not installed: the QR code is not decoded")
    decoded = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True, text=True, timeout=20)
    assert decoded.stdout.split() == [WALLET], decoded


def test_copy_buttons_copy(browser, live) -> None:
    open_payment(browser, live, "7.25")
    browser.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": live[0], "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    read_clipboard = "navigator.clipboard.readText().then(arguments[0], () => arguments[0](null));"
    browser.find_element(By.ID, "copy-address").click()
    assert wait_for(lambda: text(browser, "copy-address") == EN["copied"], 3)
    assert browser.execute_async_script(read_clipboard) == WALLET
    browser.find_element(By.ID, "copy-amount").click()
    assert wait_for(lambda: browser.execute_async_script(read_clipboard) == "7.25", 3)


def test_partial_then_full_payment_update_the_open_page_without_reload(browser, live, sim) -> None:
    base, _ = live
    open_payment(browser, live, "10", return_url=f"{base}/health")
    browser.execute_script("window.notReloaded = true;")
    pay(sim, WALLET, 4_000_000)
    assert wait_for(lambda: shown(browser, "partial"), 12)
    assert text(browser, "remaining") == "6" and text(browser, "received") == "4" and text(browser, "amount") == "6"
    pay(sim, WALLET, 6_000_000)
    assert wait_for(lambda: shown(browser, "view-completed"), 12)
    assert browser.execute_script("return window.notReloaded === true;")
    assert not shown(browser, "view-pay")
    assert wait_for(lambda: browser.current_url == f"{base}/health", 8)  # then on to the return_url


def test_the_countdown_reaches_the_expired_view(browser, live, db) -> None:
    base, app = live
    payment = create(app.test_client(), {"Authorization": "Bearer tum_test_key_for_the_test_suite_only"}, "3")
    set_fields(db, payment, expires_at=datetime.now(UTC) + timedelta(seconds=3))
    browser.get(payment["checkout_url"])
    assert shown(browser, "view-pay") and not shown(browser, "view-expired")
    assert wait_for(lambda: shown(browser, "view-expired"), 8)
    assert not shown(browser, "view-pay") and EN["expired_title"] in text(browser, "view-expired")


def test_chinese_page(browser, live) -> None:
    payment = open_payment(browser, live, "9")
    browser.get(payment["checkout_url"] + "?lang=zh")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "zh-Hans"
    assert ZH["network_only"] in browser.page_source and ZH["claim_title"] in text(browser, "claim")
    assert text(browser, "copy-address") == ZH["copy_button"]


def test_a_320_px_wide_screen_needs_no_horizontal_scrolling(live, tmp_path) -> None:
    phone = chrome(width=320, height=860, phone=True)
    try:
        open_payment(phone, live, "1234.567891", order_id="ORD-1025")
        assert phone.execute_script("return window.innerWidth;") == 320
        assert phone.execute_script("return document.documentElement.scrollWidth;") <= 320
        screenshot(phone, tmp_path, "checkout-phone.png")
    finally:
        phone.quit()


def claim_in_page(browser, tx: str) -> str:  # type: ignore[no-untyped-def]
    field = browser.find_element(By.ID, "tx")
    field.clear()
    field.send_keys(tx)
    browser.execute_script("document.getElementById('claim-message').textContent = '';")
    browser.find_element(By.ID, "claim-submit").click()
    assert wait_for(lambda: content(browser, "claim-message") != "", 8)
    return content(browser, "claim-message")


def test_the_tx_hash_form_credits_a_real_transfer_and_refuses_others(browser, live, sim) -> None:
    sim.register_token(FAKE_TOKEN, "USDT", "Tether USD")
    open_payment(browser, live, "10")
    fake = pay(sim, WALLET, 10_000_000, contract=FAKE_TOKEN)
    reverted = pay(sim, WALLET, 10_000_000, reverted=True)
    elsewhere = pay(sim, WALLET_B, 10_000_000)
    assert claim_in_page(browser, fake) == EN["claim_not_usdt"]
    assert claim_in_page(browser, reverted) == EN["claim_failed"]
    assert claim_in_page(browser, elsewhere) == EN["claim_other_wallet"]
    real = sim.transfer(WALLET, 10_000_000, from_=PAYER)
    sim.solidify()
    assert claim_in_page(browser, real) == EN["claim_found"].replace("{amount}", "10")
    assert wait_for(lambda: shown(browser, "view-completed"), 12)


def test_without_javascript_the_page_works_and_its_form_posts(live, sim) -> None:
    plain = chrome(javascript=False)
    try:
        open_payment(plain, live, "10")
        assert text(plain, "amount") == "10" and text(plain, "address") == WALLET
        assert not shown(plain, "copy-address")  # copying needs JavaScript: the text is there to select
        assert plain.find_elements(By.CSS_SELECTOR, "noscript")
        tx = pay(sim, WALLET, 10_000_000)
        plain.find_element(By.ID, "tx").send_keys(tx)
        plain.find_element(By.ID, "claim-submit").click()  # a plain form post, answered with the page
        assert wait_for(lambda: EN["claim_found"].replace("{amount}", "10") in content(plain, "claim-message"), 8)
    finally:
        plain.quit()


def test_money_seen_shows_confirming_with_its_progress_then_completes(browser, live_detecting, sim,
                                                                     tmp_path) -> None:
    open_payment(browser, live_detecting, "12", order_id="ORD-1026")
    assert not shown(browser, "seen")
    sim.transfer(WALLET, 12_000_000, from_=PAYER)
    sim.mine(1)  # in a block, not solidified (the simulator solidifies 2 blocks deep)
    assert wait_for(lambda: shown(browser, "seen"), 10)
    assert EN["seen_title"] in text(browser, "seen")
    assert text(browser, "seen-progress-text") == EN["confirmations"].format(n=1, needed=3)
    assert browser.find_element(By.ID, "seen-progress").get_attribute("value") == "1"
    assert content(browser, "received") == "0" and shown(browser, "view-pay")  # not received yet
    screenshot(browser, tmp_path, "checkout-confirming.png")
    sim.mine(2)
    assert wait_for(lambda: shown(browser, "view-completed"), 12)
    assert not shown(browser, "seen")


def test_confirming_without_javascript_in_chinese(live_detecting, sim) -> None:
    base, app = live_detecting
    auth = {"Authorization": "Bearer tum_test_key_for_the_test_suite_only"}
    payment = create(app.test_client(), auth, "3")
    sim.transfer(WALLET, 3_000_000, from_=PAYER)
    sim.mine(1)
    assert wait_for(lambda: app.test_client().get(f"/payments/{payment['id']}", headers=auth)
                    .get_json()["unconfirmed_transfers"], 10)
    status = app.test_client().get(urlparse(payment["checkout_url"]).path + "/status").get_json()
    assert status["unconfirmed_amount_usdt"] == "3" and status["confirmations"] >= 1
    assert status["confirmations_needed"] == 3  # its own block and the 2 the simulator solidifies behind
    plain = chrome(javascript=False)
    try:
        plain.get(payment["checkout_url"] + "?lang=zh")
        assert shown(plain, "seen") and ZH["seen_title"] in text(plain, "seen")
        assert ZH["no_js_refresh_seen"] in plain.page_source
        assert 'http-equiv="refresh" content="5"' in plain.page_source  # reloads sooner while confirming
    finally:
        plain.quit()
