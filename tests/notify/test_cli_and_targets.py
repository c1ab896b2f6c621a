"""`db_manager.py notify-test` against real receivers, a Telegram-shaped receiver for Apprise's Telegram plugin, and
the watcher announcing an upstream that stopped answering."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from apprise.plugins.telegram import NotifyTelegram
from sqlalchemy import select

from infra.config import Config
from models import Notification, PaymentLog
from notify import child
from notify.messages import render
from tests.conftest import TEST_API_KEY, Receiver, Reply, create, watcher_client
from tests.notify.conftest import SECRET, messages, targets
from watcher import Watcher
from web.services import services_of

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456789:AAHsecretsecretsecretsecretsecret12"


def test_notify_test_reports_each_target_by_scheme_only(database_url: str, receiver: Receiver) -> None:
    receiver.script("/form", Reply(500))
    urls = " ".join(t.url for t in targets(receiver, "/json", "/form"))
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_URLS": urls, "MERCHANT_NAME": "Test Shop", "NOTIFY_LANGUAGE": "en",
           "API_KEYS": TEST_API_KEY, "RATE_SOURCES": "none"}
    done = subprocess.run([sys.executable, "db_manager.py", "--database-url", database_url, "notify-test"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("1. json: delivered (") and lines[1].startswith("2. form: failed: ")
    assert done.stderr.strip() == "error: 1 of 2 target(s) failed"
    assert SECRET not in done.stdout + done.stderr and "127.0.0.1" not in done.stdout
    [sent] = messages(receiver, "/json")
    assert (sent["title"], sent["message"]) == ("Test notification",
                                                "Notifications from Test Shop reach this target.")


def test_notify_test_without_targets_says_so(database_url: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "RATE_SOURCES": "none"}
    done = subprocess.run([sys.executable, "db_manager.py", "--database-url", database_url, "notify-test"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stderr.strip() == "error: NOTIFY_URLS is not set: there is no target to test"


def test_a_telegram_target_gets_the_message(monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> None:
    """Apprise's Telegram plugin has its API address as a class attribute, not a URL field: the service cannot be
    pointed at another address, so this test runs the child's send in this process with the attribute set to a
    Telegram-shaped receiver on 127.0.0.1."""
    receiver.script(f"/bot{TOKEN}/sendMessage", Reply(200, {"content-type": "application/json"},
                                                       b'{"ok": true, "result": {"message_id": 1}}'))
    monkeypatch.setattr(NotifyTelegram, "notify_url", receiver.url("/bot"))
    title, body = render("payment.completed", {"order_id": "A<1>", "received": "10", "expected": "10",
                                               "link": "https://pay.example/pay/t"})
    outcome = child.send({"url": f"tgram://{TOKEN}/4242", "title": title, "body": body, "timeout": 5})
    assert outcome == {"ok": True, "error": None}
    [request] = receiver.to(f"/bot{TOKEN}/sendMessage")
    sent = json.loads(request.body)
    assert sent["chat_id"] == 4242 or sent["chat_id"] == "4242"
    assert "Payment received: 10 USDT" in sent["text"] and "Order A&lt;1&gt;" in sent["text"]
    assert "https://pay.example/pay/t" in sent["text"]


@pytest.fixture
def config(config: Config, receiver: Receiver) -> Config:
    return config.with_overrides(notify_targets=targets(receiver, "/json"), polling_interval_seconds=0.2,
                                 trongrid_api_url="http://127.0.0.1:9")  # nothing listens there


def test_the_watcher_announces_an_upstream_down_for_more_than_an_interval_once(app, client, auth, config) -> None:
    create(client, auth, "1")  # a watched wallet: the watcher asks its upstream
    watcher = Watcher(services_of(app).db, config, client=watcher_client(config))
    try:
        for _ in range(3):  # the second cycle is more than an interval after the first; the third says nothing more
            watcher.run_once()
            time.sleep(0.21)
    finally:
        watcher.stop()
    with services_of(app).db.Session() as session:
        notes = list(session.scalars(select(Notification)))
        logged = list(session.scalars(select(PaymentLog.event_type).where(PaymentLog.event_type.like("upstream%"))))
    assert [(n.event_type, n.title) for n in notes] == [("upstream.degraded", "Upstream degraded: http://127.0.0.1:9")]
    assert logged == ["upstream_degraded"]
