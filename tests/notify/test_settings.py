"""NOTIFY_URLS, NOTIFY_EVENTS and NOTIFY_LANGUAGE read at start: Apprise's own parser, a bad entry stopping the start
with one line that names the variable and the entry but never its secret; the messages in both languages."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import ConfigError, load_config
from infra.locales import CATALOGUES
from infra.notify_targets import (
    ACCOUNT_EVENTS,
    DEFAULT_NOTIFY_EVENTS,
    NOTIFIABLE_EVENTS,
    OPERATOR_EVENTS,
    PAYMENT_EVENTS,
    NotifyTarget,
)
from models import ACCOUNT_EVENT_TYPES, PAYMENT_EVENT_TYPES
from notify.messages import TEST_MESSAGE, event_facts, render
from notify.sending import redact

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456789:AAHsecretsecretsecretsecretsecret12"
BAD_TOKEN = "AAHsecretsecretsecretsecretsecret12"  # no bot id: no Telegram URL Apprise accepts


def test_notify_urls_are_split_by_apprises_parser_and_shown_by_scheme_only() -> None:
    raw = (f"tgram://{TOKEN}/4242, json://127.0.0.1:9/hook "
           "mailto://ops:mailpw@example.com?to=a@example.com,b@example.com")
    config = load_config({"NOTIFY_URLS": raw})
    assert [t.scheme for t in config.notify_targets] == ["tgram", "json", "mailto"]
    assert config.notify_targets[2].url.endswith("?to=a@example.com,b@example.com")  # its commas stay in it
    assert TOKEN not in repr(config) and "mailpw" not in repr(config)
    assert config.notify_events == frozenset(DEFAULT_NOTIFY_EVENTS) and config.notify_language == "en"


@pytest.mark.parametrize("raw, says", [
    (f"json://127.0.0.1:9/ok tgram://{BAD_TOKEN}/42",
     "NOTIFY_URLS entry 2 (tgram://…) is not a URL Apprise can send to"),
    (f"nosuch://{BAD_TOKEN}@host", "NOTIFY_URLS entry 1 (nosuch://…) is not a URL Apprise can send to"),
    ("json://127.0.0.1:9/a json://127.0.0.1:9/a", "NOTIFY_URLS entry 2 (json://…) repeats an earlier entry"),
])
def test_a_malformed_notify_url_is_named_without_its_secret(raw: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"NOTIFY_URLS": raw})
    assert str(refused.value).startswith(says) and BAD_TOKEN not in str(refused.value)


def test_a_malformed_notify_url_stops_the_start_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_URLS": f"json://127.0.0.1:9/ok, tgram://{BAD_TOKEN}/42",
           "RATE_SOURCES": "none"}
    started = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert started.returncode == 2 and started.stdout == ""
    [line] = started.stderr.strip().splitlines()
    assert line.startswith("configuration error: NOTIFY_URLS entry 2 (tgram://…)") and BAD_TOKEN not in line


@pytest.mark.parametrize("name, value, says", [
    ("NOTIFY_EVENTS", "payment.completed,payment.lost", "NOTIFY_EVENTS names unknown event 'payment.lost'"),
    ("NOTIFY_LANGUAGE", "fr", "NOTIFY_LANGUAGE must be one of en, zh, got 'fr'"),
])
def test_notify_events_and_language_are_checked(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config({name: value})


def test_notify_events_may_name_every_webhook_type_and_the_operator_events() -> None:
    assert PAYMENT_EVENTS == PAYMENT_EVENT_TYPES and ACCOUNT_EVENTS == ACCOUNT_EVENT_TYPES
    assert load_config({"NOTIFY_EVENTS": " webhook.failed  upstream.recovered"}).notify_events == {
        "webhook.failed", "upstream.recovered"}
    assert load_config({"NOTIFY_EVENTS": "none"}).notify_events == frozenset()
    assert set(OPERATOR_EVENTS) < set(NOTIFIABLE_EVENTS)


@pytest.mark.parametrize("language", sorted(CATALOGUES))
def test_every_event_has_its_message_in_every_language(language: str) -> None:
    facts = {"order_id": "o-1", "expected": "10", "received": "10", "amount": "10", "tx": "ab…cd", "link": "L",
             "upstream": "U", "currency": "JPY", "webhook_type": "payment.completed", "merchant": "Shop"}
    for event_type in (*NOTIFIABLE_EVENTS, TEST_MESSAGE):
        title, body = render(event_type, facts, language)
        assert title and "{" not in title + body and "\n" not in title, (event_type, title, body)


def test_a_message_is_made_of_named_facts_only() -> None:
    data = {"order_id": "o-2", "expected_amount_usdt": "5", "received_amount_usdt": "5", "transaction_hash": "f" * 64,
            "checkout_url": "https://pay.example/pay/tok", "callback_url": "https://shop.example/hook?key=k",
            "metadata": {"api_key": "tum_x"}}
    title, body = render("payment.completed", event_facts("payment.completed", data))
    assert title == "Payment received: 5 USDT"
    assert body == "Order o-2\nReceived 5 of 5 USDT\nTransaction ffffffff…ffffff\nhttps://pay.example/pay/tok"


def test_what_apprise_says_of_a_failure_is_stored_without_any_part_of_the_url() -> None:
    target = NotifyTarget.of(f"tgram://{TOKEN}/4242?topic=sales")
    said = f"Failed to send Telegram notification to 4242 via https://api.telegram.org/bot{TOKEN}/sendMessage: 401"
    redacted = redact(said, target)
    assert TOKEN not in redacted and TOKEN.split(":")[1] not in redacted and "4242" not in redacted
    assert redacted.startswith("Failed to send Telegram notification")
