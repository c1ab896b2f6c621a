"""The hosted checkout page without a browser: checkout_url and return_url on payments, the page's HTML and headers,
the status it polls and its database cost, "I already paid" against the simulator, and the languages."""
from __future__ import annotations

import re
import time
import uuid
from html import unescape

import pytest
from sqlalchemy import event, select

from chain.claims import WALLET_CLAIMS
from infra.config import ConfigError, load_config
from infra.times import ms_to_datetime
from ledger.checkout import CHECKOUT_KEY, checkout_token
from ledger.payments import request_fingerprint
from ledger.service_state import read_state
from models import Payment, Transfer
from tests.conftest import (
    PAYER,
    WALLET,
    WALLET_B,
    assert_error,
    block_ts,
    count_rows,
    create,
    get,
    pay,
    payment_body,
    set_fields,
    wait_for,
)
from web.pages import CATALOGUES
from web.services import services_of
from web.status_board import StatusBoard

FAKE_TOKEN = "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"


def token_of(payment: dict) -> str:
    return payment["checkout_url"].rsplit("/", 1)[1]


def page_path(payment: dict) -> str:
    return f"/pay/{token_of(payment)}"


# --- the API side ------------------------------------------------------------------------------

def test_every_payment_carries_its_checkout_url_and_return_url(client, auth, db) -> None:
    payment = create(client, auth, "10.5", return_url="https://shop.example/orders/7")
    token = token_of(payment)
    assert payment["checkout_url"] == f"http://127.0.0.1:5000/pay/{token}"
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)  # 256 bits
    assert payment["id"].replace("-", "") not in token and payment["id"] not in token
    with db.Session() as s:
        key = read_state(s, CHECKOUT_KEY)
    assert token == checkout_token(key, payment["id"])
    assert payment["return_url"] == "https://shop.example/orders/7"
    shown = get(client, auth, payment)
    assert shown["checkout_url"] == payment["checkout_url"]  # re-emitted the same whenever shown
    listed = client.get("/payments", headers=auth).get_json()["payments"][0]
    assert listed["checkout_url"] == payment["checkout_url"]
    other = create(client, auth, "3")
    assert other["return_url"] is None and token_of(other) != token


def test_checkout_url_follows_public_base_url(config, db, auth) -> None:
    from app import create_app

    app = create_app(config.with_overrides(public_base_url="https://pay.shop.example/gw"), database=db)
    payment = create(app.test_client(), auth, "2")
    assert payment["checkout_url"].startswith("https://pay.shop.example/gw/pay/")


@pytest.mark.parametrize("bad", ["ftp://shop.example/x", "javascript:alert(1)", "shop.example/back",
                                 "https://user@shop.example/", "https://shop.example/a b", "http://", 5, True])
def test_return_url_is_an_http_url(client, auth, db, bad) -> None:
    r = client.post("/payments", json=payment_body(return_url=bad), headers=auth)
    assert assert_error(r, 400, "return_url")["error"] == "invalid_return_url"
    assert count_rows(db) == 0


def test_return_url_is_syntax_only_so_a_private_address_is_fine(config, db, auth) -> None:
    from app import create_app

    strict = create_app(config.with_overrides(allow_private_callbacks=False), database=db).test_client()
    body = payment_body(callback_url="https://example.com/hook", return_url="http://10.1.2.3/back")
    r = strict.post("/payments", json=body, headers=auth)
    assert r.status_code in (201, 400), r.get_json()
    if r.status_code == 400:  # no DNS here: only the callback may be refused, never the return_url
        assert r.get_json()["field"] == "callback_url"


def test_a_request_made_before_return_url_existed_still_replays(client, auth, db) -> None:
    body = payment_body(order_id="old-1", metadata={"a": 1})
    first = client.post("/payments", json=body, headers=auth)
    assert first.status_code == 201
    # The fingerprint is what the earlier version stored for this body: the fields it knew, all of them.
    old = request_fingerprint({"wallet_address": WALLET, "expected_amount_usdt": "10.5", "order_id": "old-1",
                               "callback_url": body["callback_url"], "expires_in_seconds": None,
                               "metadata": {"a": 1}, "unique_amount": False})
    with db.Session() as s:
        assert s.scalar(select(Payment.request_fingerprint)) == old
    assert client.post("/payments", json=body, headers=auth).status_code == 200
    changed = client.post("/payments", json={**body, "return_url": "https://shop.example/"}, headers=auth)
    assert assert_error(changed, 409, "order_id")["error"] == "order_id_conflict"
    with_url = payment_body(order_id="new-1", expected_amount_usdt="2", return_url="https://shop.example/")
    assert client.post("/payments", json=with_url, headers=auth).status_code == 201
    assert client.post("/payments", json=with_url, headers=auth).status_code == 200


# --- the page ----------------------------------------------------------------------------------

def test_the_page_shows_what_the_payer_needs_and_nothing_else(config, db, auth) -> None:
    from app import create_app

    app = create_app(config.with_overrides(merchant_name="Lotus Tea House"), database=db)
    client = app.test_client()
    payment = create(client, auth, "12.345", metadata={"secret_note": "vip-42"}, order_id="ORD-77",
                     return_url="https://shop.example/back")
    r = client.get(page_path(payment))
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert len(r.data) < 60 * 1024
    for shown in ("12.345", WALLET, "Lotus Tea House", "ORD-77", "<svg", "USDT on TRON (TRC20) only",
                  "https://shop.example/back", "I already paid"):
        assert shown in html, shown
    for hidden in (payment["id"], "vip-42", "secret_note", payment["callback_url"]):
        assert hidden not in html, hidden
    # No outside resource: the only URLs in the page are its own paths and the return link.
    urls = set(re.findall(r'(?:src|href|action)="([^"]*)"', html))
    assert urls <= {"https://shop.example/back", f"{page_path(payment)}/claim", "data:,"}, urls  # "data:,": no icon
    assert CATALOGUES["en"]["sandbox_banner"] not in html and "/simulate" not in html


def test_security_headers(client, auth) -> None:
    payment = create(client, auth, "1")
    r = client.get(page_path(payment))
    csp = r.headers["Content-Security-Policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp).group(1)
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    html = r.get_data(as_text=True)
    assert html.count(f'nonce="{nonce}"') == 2  # the one style and the one script
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert client.get(page_path(payment)).headers["Content-Security-Policy"] != csp  # a fresh nonce each time


def test_framing_follows_checkout_frame_ancestors(config, db, auth) -> None:
    from app import create_app

    app = create_app(config.with_overrides(checkout_frame_ancestors=("https://shop.example", "'self'")), database=db)
    client = app.test_client()
    r = client.get(page_path(create(client, auth, "1")))
    assert "frame-ancestors https://shop.example 'self'" in r.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in r.headers


def test_unknown_token_is_a_plain_404_page(client, auth) -> None:
    payment = create(client, auth, "1")
    token = token_of(payment)
    for path in (f"/pay/{token[:-1]}A" if token[-1] != "A" else f"/pay/{token[:-1]}B", "/pay/x",
                 f"/pay/{payment['id']}", f"/pay/{token}x"):
        r = client.get(path)
        assert r.status_code == 404 and r.mimetype == "text/html", path
        assert "Payment page not found" in r.get_data(as_text=True)
        assert r.headers["Referrer-Policy"] == "no-referrer"
    assert client.get(f"/pay/x{token[1:]}/status").status_code == 404


def test_languages_from_one_catalogue_each(client, auth) -> None:
    assert set(CATALOGUES) == {"en", "zh"}
    assert set(CATALOGUES["en"]) == set(CATALOGUES["zh"])
    path = page_path(create(client, auth, "1"))
    zh = client.get(path, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert CATALOGUES["zh"]["network_only"] in zh and 'lang="zh-Hans"' in zh
    assert CATALOGUES["zh"]["network_only"] in client.get(f"{path}?lang=zh").get_data(as_text=True)
    en = client.get(f"{path}?lang=en", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert CATALOGUES["en"]["network_only"] in en
    assert CATALOGUES["en"]["network_only"] in client.get(path, headers={"Accept-Language": "fr"}).get_data(
        as_text=True)


def test_sandbox_banner_and_simulate_button_only_on_the_sandbox_network(config, db, auth) -> None:
    from app import create_app

    app = create_app(config.with_overrides(tron_network="sandbox"), database=db)
    client = app.test_client()
    path = page_path(create(client, auth, "1"))
    html = client.get(path).get_data(as_text=True)
    assert CATALOGUES["en"]["sandbox_banner"] in html and CATALOGUES["en"]["simulate"] in html
    assert f'action="{path}/simulate"' in html


def test_without_javascript_the_page_refreshes_itself(client, auth, db) -> None:
    payment = create(client, auth, "5")
    html = client.get(page_path(payment)).get_data(as_text=True)
    assert '<noscript><meta http-equiv="refresh" content="15"></noscript>' in html
    set_fields(db, payment, status="completed", received_amount_usdt=5)
    done = client.get(page_path(payment)).get_data(as_text=True)
    assert 'http-equiv="refresh"' not in done  # nothing left to wait for
    assert re.search(r'id="view-completed"\s*>', done) and re.search(r'id="view-pay"\s*hidden', done)


# --- the status it polls -----------------------------------------------------------------------

def test_status_json_shows_partial_amounts_exactly(client, auth, db) -> None:
    payment = create(client, auth, "10.5")
    url = f"{page_path(payment)}/status"
    body = client.get(url).get_json()
    nothing_seen = {"unconfirmed_amount_usdt": "0", "confirmations": None, "confirmations_needed": None}
    assert body == {"status": "pending", "received_amount_usdt": "0", "remaining_usdt": "10.5",
                    "expires_at": payment["expires_at"], "paid_late": False, **nothing_seen}
    services_of(client.application).status_board.ttl = 0  # no cache: see each change at once
    set_fields(db, payment, received_amount_usdt=3.25)
    assert client.get(url).get_json()["remaining_usdt"] == "7.25"
    set_fields(db, payment, status="expired", received_amount_usdt=11, paid_late=True)
    assert client.get(url).get_json() == {"status": "expired", "received_amount_usdt": "11", "remaining_usdt": "0",
                                          "expires_at": payment["expires_at"], "paid_late": True, **nothing_seen}


def count_queries(db):  # type: ignore[no-untyped-def]
    counted = {"n": 0}

    def bump(*args: object) -> None:
        counted["n"] += 1

    event.listen(db.engine, "before_cursor_execute", bump)
    return counted, lambda: event.remove(db.engine, "before_cursor_execute", bump)


def test_many_pages_polling_cost_one_query_per_refresh(client, auth, db) -> None:
    """50 open pages polling: within one cache period, no query at all; after it, one query for them all."""
    payments = [create(client, auth, str(n + 1)) for n in range(50)]
    for p in payments:
        client.get(page_path(p))
    board: StatusBoard = services_of(client.application).status_board
    now = [1000.0]
    board.clock = lambda: now[0]
    with db.Session() as s:
        for p in payments:
            board.remember(token_of(p), s.get(Payment, uuid.UUID(p["id"])))
    counted, stop = count_queries(db)
    try:
        for _ in range(3):
            for p in payments:
                assert client.get(f"{page_path(p)}/status").status_code == 200
        assert counted["n"] == 0
        set_fields(db, payments[7], received_amount_usdt=1)
        counted["n"] = 0
        now[0] += board.ttl
        answers = [client.get(f"{page_path(p)}/status").get_json() for p in payments]
        assert counted["n"] <= 2  # the SELECT (plus a pre-ping when the pool hands out a connection)
        assert answers[7]["remaining_usdt"] == "7"
    finally:
        stop()


# --- "I already paid" --------------------------------------------------------------------------

@pytest.fixture
def chain_app(config, db, sim):  # type: ignore[no-untyped-def]
    from app import create_app

    return create_app(config.with_overrides(trongrid_api_url=sim.url, trongrid_max_rps=2000.0,
                                            watcher_strategy="account"), database=db)


@pytest.fixture
def chain_watcher(new_watcher, chain_app):  # type: ignore[no-untyped-def]
    from web.services import services_of

    return new_watcher(services_of(chain_app).config)


def claim(client, payment: dict, tx: object, **kwargs):  # type: ignore[no-untyped-def]
    return client.post(f"{page_path(payment)}/claim", json={"transaction_hash": tx}, **kwargs)


def test_claim_credits_a_real_transfer_in_chain_order_with_every_log(chain_app, chain_watcher, sim, auth, db):
    client = chain_app.test_client()
    payment = create(client, auth, "10")
    chain_watcher.run_once()
    earlier = pay(sim, WALLET, 4_000_000)  # unread money before the claimed transaction
    batch = sim.transaction([{"to": WALLET, "amount": 5_000_000, "from": PAYER},
                             {"to": WALLET_B, "amount": 1_000_000, "from": PAYER},
                             {"to": WALLET, "amount": 1_000_000, "from": PAYER}])
    sim.solidify()
    r = claim(client, payment, "0x" + batch.upper())
    assert r.status_code == 200
    assert r.get_json() == {"result": "found", "transaction_hash": batch, "amount_usdt": "6",
                            "message": "Found: 6 USDT sent to this address. It is being credited now."}
    with db.Session() as s:
        assert read_state(s, WALLET_CLAIMS)[WALLET]["transaction_hash"] == batch
        assert s.scalar(select(Payment.received_amount_usdt)) == 0  # nothing credited by the claim itself
    chain_watcher.run_once()
    shown = get(client, auth, payment)
    assert shown["status"] == "completed" and shown["received_amount_usdt"] == "10"
    assert [(t["transaction_hash"], t["log_index"]) for t in shown["transfers"]] == [
        (earlier, 0), (batch, 0), (batch, 2)]
    with db.Session() as s:
        stored = s.execute(select(Transfer.transaction_hash, Transfer.log_index, Transfer.status)
                           .where(Transfer.to_address == WALLET).order_by(Transfer.id)).all()
        assert [(h, i) for h, i, _ in stored] == [(earlier, 0), (batch, 0), (batch, 2)]
        assert read_state(s, WALLET_CLAIMS) == {}


def test_claim_refuses_what_does_not_count(chain_app, sim, auth, db) -> None:
    client = chain_app.test_client()
    sim.register_token(FAKE_TOKEN, "USDT", "Tether USD (fake)")
    too_early = pay(sim, WALLET, 1_000_000)
    payment = create(client, auth, "10")
    set_fields(db, payment, created_at=ms_to_datetime(block_ts(sim, too_early) + 1))
    sim.advance(3)
    fake = pay(sim, WALLET, 10_000_000, contract=FAKE_TOKEN)
    reverted = pay(sim, WALLET, 10_000_000, reverted=True)
    elsewhere = pay(sim, WALLET_B, 10_000_000)
    pending = sim.transfer(WALLET, 10_000_000, from_=PAYER)  # mined, not solidified
    sim.mine(1)
    outcomes = {tx: claim(client, payment, tx).get_json() for tx in (fake, reverted, elsewhere, pending, too_early)}
    assert {tx: o["result"] for tx, o in outcomes.items()} == {
        fake: "not_usdt", reverted: "failed", elsewhere: "other_wallet", pending: "not_solidified",
        too_early: "before_payment"}
    assert outcomes[reverted]["message"] == CATALOGUES["en"]["claim_failed"]
    assert outcomes[fake]["amount_usdt"] is None


def test_claim_input_and_rate_limit(chain_app, sim, auth) -> None:
    client = chain_app.test_client()
    payment = create(client, auth, "10")
    other = create(client, auth, "11")
    for bad in ("abc", "g" * 64, 12, "0x" + "1" * 63):  # refused, and counted: 4 of the 5 tries a minute
        r = claim(client, payment, bad)
        assert r.status_code == 400 and r.get_json()["field"] == "transaction_hash", bad
    r = claim(client, payment, "0" * 64)  # the fifth try this minute: still answered
    assert r.status_code == 200 and r.get_json()["result"] == "not_solidified"
    limited = claim(client, payment, "0" * 64)
    assert_error(limited, 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert claim(client, other, "0" * 64).status_code == 200  # per page
    assert_error(client.post(f"{page_path(other)}/claim", data="transaction_hash=00",
                             content_type="text/plain"), 415)
    assert_error(client.post(f"{page_path(other)}/claim", json={"transaction_hash": "0" * 64, "x": 1}), 400, "x")
    assert_error(claim(client, {"checkout_url": "http://h/pay/nope"}, "0" * 64), 404)
    assert claim(client, create(client, auth, "12"), None).status_code == 400
    assert sim.count("/walletsolidity/gettransactioninfobyid") == 2  # once per checked claim, never for a refused one


def test_claims_are_limited_per_client_address_across_pages(chain_app, sim, auth) -> None:
    """One address pressing "I already paid" on page after page: 30 claims a minute, whatever the pages; another
    address is not held up by it."""
    client = chain_app.test_client()
    pages = [create(client, auth, f"{20 + n}") for n in range(7)]
    answers = [client.post(f"{page_path(p)}/claim", json={"transaction_hash": "0" * 64},
                           environ_base={"REMOTE_ADDR": "203.0.113.5"}).status_code
               for p in pages for _ in range(5)]
    assert answers[:30] == [200] * 30 and answers[30:] == [429] * 5
    other = client.post(f"{page_path(create(client, auth, '30'))}/claim", json={"transaction_hash": "1" * 64},
                        environ_base={"REMOTE_ADDR": "203.0.113.6"})
    assert other.status_code == 200


def test_claim_as_a_plain_form_post(chain_app, chain_watcher, sim, auth) -> None:
    client = chain_app.test_client()
    payment = create(client, auth, "10")
    chain_watcher.run_once()
    tx = pay(sim, WALLET, 10_000_000)
    r = client.post(f"{page_path(payment)}/claim", data={"transaction_hash": tx, "lang": "zh"})
    assert r.status_code == 200 and r.mimetype == "text/html"
    assert CATALOGUES["zh"]["claim_found"].replace("{amount}", "10") in unescape(r.get_data(as_text=True))
    bad = client.post(f"{page_path(payment)}/claim", data={"transaction_hash": "nope"})
    assert bad.status_code == 400 and CATALOGUES["en"]["claim_invalid"] in unescape(bad.get_data(as_text=True))
    chain_watcher.run_once()
    assert get(client, auth, payment)["status"] == "completed"


def test_a_claim_wakes_the_watcher_at_once(chain_app, new_watcher, sim, auth) -> None:
    from web.services import services_of

    client = chain_app.test_client()
    services = services_of(chain_app)
    watcher = new_watcher(services.config.with_overrides(polling_interval_seconds=60))
    payment = create(client, auth, "10")
    watcher.start()  # its first cycle runs now, the next one in a minute
    assert wait_for(lambda: watcher.last_result is not None, 10)
    tx = pay(sim, WALLET, 10_000_000)  # after that first cycle: only a woken watcher reads it within the minute
    services.background.append(watcher)
    services.wake_watcher = watcher.wake  # as app.start_background plugs it in
    try:
        assert claim(client, payment, tx).get_json()["result"] == "found"
        deadline = time.monotonic() + 10
        while get(client, auth, payment)["status"] != "completed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert get(client, auth, payment)["status"] == "completed"
    finally:
        services.background.remove(watcher)


# --- configuration -----------------------------------------------------------------------------

def test_checkout_settings() -> None:
    base = load_config({"HOST": "0.0.0.0", "PORT": "8080"})
    assert base.public_base_url == "http://0.0.0.0:8080" and base.merchant_name is None
    assert base.checkout_frame_ancestors == ()
    config = load_config({"PUBLIC_BASE_URL": "https://pay.example/", "MERCHANT_NAME": "Lotus Tea",
                          "CHECKOUT_FRAME_ANCESTORS": "'self' https://shop.example,https://*.shop.example"})
    assert config.public_base_url == "https://pay.example" and config.merchant_name == "Lotus Tea"
    assert config.checkout_frame_ancestors == ("'self'", "https://shop.example", "https://*.shop.example")
    for env in ({"PUBLIC_BASE_URL": "pay.example"}, {"CHECKOUT_FRAME_ANCESTORS": "*"},
                {"CHECKOUT_FRAME_ANCESTORS": "https://a.example; script-src *"}, {"MERCHANT_NAME": "a\nb"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            load_config(env)


def test_a_public_base_url_payers_cannot_reach_is_a_warning_at_start_on_mainnet(config, db, caplog) -> None:
    from app import bootstrap

    for url, network, warned in (("http://0.0.0.0:5000", "mainnet", True), ("http://localhost:8080", "mainnet", True),
                                 ("http://127.0.0.1:5000", "nile", False), ("https://pay.example", "mainnet", False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="infra.config"):
            bootstrap(config.with_overrides(public_base_url=url, tron_network=network), db)
        assert any(f"PUBLIC_BASE_URL is {url}" in r.getMessage() for r in caplog.records) == warned, url


def test_a_stalled_upstream_holds_one_claim_thread_at_most(chain_app, sim, auth) -> None:
    """While the upstream stalls, one claim per process waits for it; the others answer "unavailable" within about
    a second instead of holding more of the process's request threads, and the API keeps answering."""
    import threading

    client = chain_app.test_client()
    payment = create(client, auth, "10")
    sim.set_fault("slow", count=None, seconds=3.0, path_prefix="/walletsolidity/gettransactioninfobyid")
    results: list[tuple[str, float]] = []

    def one_claim(n: int) -> None:
        started = time.monotonic()
        answer = claim(chain_app.test_client(), payment, f"{n:064x}")
        results.append((answer.get_json()["result"], time.monotonic() - started))

    threads = [threading.Thread(target=one_claim, args=(n + 1,)) for n in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    assert client.get(f"/payments/{payment['id']}", headers=auth).status_code == 200
    assert time.monotonic() - started < 1.0
    for thread in threads:
        thread.join(30)
    turned_away = [took for result, took in results if result == "unavailable"]
    assert len(results) == 3 and len(turned_away) >= 2, results
    assert sorted(turned_away)[1] < 2.5, results  # waited for their turn about a second, not for the upstream


def body_children(page: str) -> list[str]:
    """The tags of the elements directly inside <body>."""
    from html.parser import HTMLParser

    class Parser(HTMLParser):
        VOID = {"meta", "link", "br", "img", "input", "hr", "source"}

        def __init__(self) -> None:
            super().__init__()
            self.depth: int | None = None  # None until <body>
            self.children: list[str] = []

        def handle_starttag(self, tag: str, attrs: list) -> None:  # type: ignore[type-arg]
            if tag == "body":
                self.depth = 0
            elif self.depth is not None and tag not in self.VOID:
                if self.depth == 0:
                    self.children.append(tag)
                self.depth += 1

        def handle_endtag(self, tag: str) -> None:
            if self.depth and tag != "body" and tag not in self.VOID:
                self.depth -= 1

    parser = Parser()
    parser.feed(page)
    return parser.children


def test_every_part_of_the_pages_sits_in_a_landmark(config, db, auth) -> None:  # type: ignore[no-untyped-def]
    """axe's `region` and `landmark-one-main`: on the sandbox the banner is a header, the page its main; the
    unknown-token page has its main too."""
    from app import create_app

    client = create_app(config.with_overrides(tron_network="sandbox"), database=db).test_client()
    page = client.get(page_path(create(client, auth, "10"))).get_data(as_text=True)
    assert '<header class="sandbox" id="sandbox-banner">' in page
    assert set(body_children(page)) <= {"header", "main", "script", "noscript"}, body_children(page)
    missing = client.get("/pay/no-such-token")
    assert missing.status_code == 404 and body_children(missing.get_data(as_text=True)) == ["main"]
