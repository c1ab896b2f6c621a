"""The HTTP API as a merchant uses it (money, replays, errors, keys, lists), against a real PostgreSQL."""
from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, timedelta
from decimal import Decimal

import psycopg2.extensions
import pytest
from sqlalchemy import DateTime, event, literal, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from database import Database, driver_execute
from infra.config import Config
from infra.times import iso
from ledger.serialize import serialize_payment
from ledger.service_state import CHAIN_HEAD, write_state
from models import Payment, PaymentLog, PaymentStatus, TransferStatus, UnconfirmedTransfer, WebhookEvent
from tests.conftest import HOOK, WALLET, WALLET_B, add_transfer, assert_error, count_rows, payment_body, set_fields
from web.auth import create_api_key, revoke_api_key


def test_create_returns_payment_with_plain_amount_strings(client, auth, db):
    r = client.post("/payments", json=payment_body(expected_amount_usdt="10.50", metadata={"cart": 7}), headers=auth)
    assert r.status_code == 201
    p = r.get_json()
    assert p["expected_amount_usdt"] == "10.5"
    assert p["received_amount_usdt"] == "0"
    assert p["status"] == "pending" and p["failure_reason"] is None and p["paid_late"] is False
    assert p["transfers"] == [] and p["metadata"] == {"cart": 7}
    assert p["created_at"].endswith("Z") and p["expires_at"] > p["created_at"]
    with db.Session() as s:
        assert s.get(Payment, uuid.UUID(p["id"])).expected_amount_usdt == Decimal("10.5")


@pytest.mark.parametrize("raw, shown", [
    (b'"10"', "10"), (b"10", "10"), (b"10.25", "10.25"), (b'"0.000001"', "0.000001"),
    (b'"100.100000"', "100.1"), (b"12345678901234.5", "12345678901234.5"),
])
def test_amounts_in_strings_and_exact_json_numbers(client, auth, raw, shown):
    payload = (b'{"wallet_address": "%s", "expected_amount_usdt": %s, "order_id": "o", '
               b'"callback_url": "http://127.0.0.1:9/h"}' % (WALLET.encode(), raw))
    r = client.post("/payments", data=payload, headers=auth, content_type="application/json")
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["expected_amount_usdt"] == shown


@pytest.mark.parametrize("raw", [
    b'"1e1"', b"1e1", b"1E+1", b'"NaN"', b"NaN", b"Infinity", b'"-Infinity"', b"true", b"false", b"null",
    b'"0"', b"0", b'"-5"', b"-5", b'"1.0000001"', b"0.0000001", b'"abc"', b"[]", b"{}", b'" "', b'"1,5"',
    b'"100000000000000"',
])
def test_bad_amounts_are_400_and_store_nothing(client, auth, db, raw):
    payload = (b'{"wallet_address": "%s", "expected_amount_usdt": %s, "order_id": "o", '
               b'"callback_url": "http://127.0.0.1:9/h"}' % (WALLET.encode(), raw))
    r = client.post("/payments", data=payload, headers=auth, content_type="application/json")
    assert r.status_code == 400
    err = r.get_json()
    if raw in (b"NaN", b"Infinity"):  # bare NaN/Infinity are not JSON at all
        assert err["error"] == "invalid_json"
    else:
        assert err["field"] == "expected_amount_usdt" and err["error"] in ("invalid_amount", "null_value")
    assert err["message"]
    assert count_rows(db) == 0 and count_rows(db, PaymentLog) == 0


@pytest.mark.parametrize("field, value, code", [
    ("wallet_address", "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqy", "invalid_wallet_address"),  # checksum
    ("wallet_address", "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oq", "invalid_wallet_address"),  # 33 chars
    ("wallet_address", "1BoatSLRHtKNngkdXEeobR76b53LETtpyT", "invalid_wallet_address"),  # bitcoin prefix
    ("wallet_address", 12, "invalid_wallet_address"),
    ("wallet_address", None, "missing_field"),
    ("order_id", "", "invalid_order_id"),
    ("order_id", "x" * 129, "invalid_order_id"),
    ("order_id", "tab\there", "invalid_order_id"),
    ("order_id", 5, "invalid_order_id"),
    ("callback_url", "ftp://example.com/x", "invalid_callback_url"),
    ("callback_url", "http:///nohost", "invalid_callback_url"),
    ("callback_url", "not a url", "invalid_callback_url"),
    ("expires_in_seconds", 59, "invalid_expires_in_seconds"),
    ("expires_in_seconds", 2_592_001, "invalid_expires_in_seconds"),
    ("expires_in_seconds", "600", "invalid_expires_in_seconds"),
    ("expires_in_seconds", True, "invalid_expires_in_seconds"),
    ("metadata", [1, 2], "invalid_metadata"),
    ("metadata", {"big": "x" * 5000}, "invalid_metadata"),
    ("unique_amount", "yes", "invalid_unique_amount"),
    ("colour", "red", "unknown_field"),
])
def test_each_validation_error_names_its_field_and_stores_nothing(client, auth, db, field, value, code):
    payload = payment_body()
    if value is None:
        payload.pop(field)
    else:
        payload[field] = value
    r = client.post("/payments", json=payload, headers=auth)
    assert r.status_code == 400
    assert r.get_json()["error"] == code and r.get_json()["field"] == field
    assert count_rows(db) == 0


def test_not_json_and_non_object_bodies(client, auth, db):
    for data in (b"hello", b"", b"[1]", b'{"a": NaN}'):
        r = client.post("/payments", data=data, headers=auth, content_type="application/json")
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_json"
    assert count_rows(db) == 0


def test_body_over_64_kb_is_413(client, auth, db):
    r = client.post("/payments", data=b'{"x": "' + b"a" * 70_000 + b'"}', headers=auth,
                    content_type="application/json")
    assert r.status_code == 413 and r.get_json()["error"] == "payload_too_large"
    assert count_rows(db) == 0


def test_unknown_route_is_json_404(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.is_json and r.get_json()["error"] == "not_found"
    r = client.delete("/payments")
    assert r.status_code == 405 and r.is_json


def stored_key(db, name: str) -> tuple[dict[str, str], str]:
    """A new API key kept (hashed) in the database: its Authorization header and its prefix."""
    with db.transaction() as s:
        made = create_api_key(s, name)
    return {"Authorization": f"Bearer {made.key}"}, made.prefix


def revoke(db, prefix: str) -> None:
    with db.transaction() as s:
        revoke_api_key(s, prefix)


def test_auth_required_and_db_keys_can_be_revoked(client, db):
    assert client.get("/payments").status_code == 401
    assert client.get("/payments", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/payments", headers={"Authorization": "Basic abc"}).status_code == 401
    headers, prefix = stored_key(db, "ci")
    assert client.get("/payments", headers=headers).status_code == 200
    revoke(db, prefix)
    r = client.get("/payments", headers=headers)
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"
    for path in ("/health", "/stats", "/openapi.json"):
        assert client.get(path).status_code == 200


def test_replay_returns_existing_and_other_body_conflicts(client, auth, db):
    first = client.post("/payments", json=payment_body(), headers=auth)
    again = client.post("/payments", json=payment_body(), headers=auth)
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    other = client.post("/payments", json=payment_body(expected_amount_usdt="11"), headers=auth)
    assert other.status_code == 409 and other.get_json()["error"] == "order_id_conflict"
    assert count_rows(db) == 1


def test_amount_in_use_and_unique_amount(client, auth, db):
    assert client.post("/payments", json=payment_body(order_id="a"), headers=auth).status_code == 201
    clash = client.post("/payments", json=payment_body(order_id="b"), headers=auth)
    assert clash.status_code == 409 and clash.get_json()["error"] == "amount_in_use"
    # another wallet may use the same amount
    other_wallet = client.post("/payments", json=payment_body(order_id="c", wallet_address=WALLET_B), headers=auth)
    assert other_wallet.status_code == 201
    raised = client.post("/payments", json=payment_body(order_id="d", unique_amount=True), headers=auth)
    assert raised.status_code == 201 and raised.get_json()["expected_amount_usdt"] == "10.5001"
    second = client.post("/payments", json=payment_body(order_id="e", unique_amount=True), headers=auth)
    assert second.get_json()["expected_amount_usdt"] == "10.5002"
    # replaying a raised request gives the same payment, with its raised amount
    replay = client.post("/payments", json=payment_body(order_id="d", unique_amount=True), headers=auth)
    assert replay.status_code == 200 and replay.get_json()["expected_amount_usdt"] == "10.5001"
    assert count_rows(db) == 4


def test_unique_amount_gives_up_after_100_steps(client, auth):
    for i in range(101):
        amount = f"{Decimal('5') + Decimal(i) / 10000}"
        assert client.post("/payments", json=payment_body(order_id=f"x{i}", expected_amount_usdt=amount),
                           headers=auth).status_code == 201
    r = client.post("/payments", json=payment_body(order_id="last", expected_amount_usdt="5", unique_amount=True),
                    headers=auth)
    assert r.status_code == 409 and r.get_json()["error"] == "amount_in_use"


def test_a_payment_closed_with_nothing_received_frees_its_amount(client, auth, db):
    """Cancelled (or expired) with nothing received: its amount is free again, though it stays a candidate for late
    money; one that received part of it keeps blocking what it still awaits during the late window."""
    pid = client.post("/payments", json=payment_body(order_id="a"), headers=auth).get_json()["id"]
    assert client.post(f"/payments/{pid}/cancel", headers=auth).status_code == 200
    again = client.post("/payments", json=payment_body(order_id="b"), headers=auth)
    assert again.status_code == 201 and again.get_json()["expected_amount_usdt"] == "10.5"
    set_fields(db, again.get_json(), status=PaymentStatus.expired, received_amount_usdt=Decimal("0.5"))
    assert client.post("/payments", json=payment_body(order_id="c", expected_amount_usdt="10"),
                       headers=auth).status_code == 409
    assert client.post("/payments", json=payment_body(order_id="d"), headers=auth).status_code == 201


def test_concurrent_creates_cannot_both_take_one_amount(app, auth, db):
    results: list[int] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        r = client.post("/payments", json=payment_body(order_id=f"race-{i}"), headers=auth)
        results.append(r.status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [409] * 7
    assert count_rows(db) == 1


def test_concurrent_unique_amount_creates_get_distinct_amounts(app, auth):
    amounts: list[str] = []
    barrier = threading.Barrier(6)

    def create(i: int) -> None:
        barrier.wait()
        r = app.test_client().post("/payments", json=payment_body(order_id=f"u-{i}", unique_amount=True), headers=auth)
        assert r.status_code == 201
        amounts.append(r.get_json()["expected_amount_usdt"])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(amounts) == ["10.5", "10.5001", "10.5002", "10.5003", "10.5004", "10.5005"]


def test_concurrent_replays_of_one_order_make_one_payment(app, auth, db):
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def create() -> None:
        barrier.wait()
        codes.append(app.test_client().post("/payments", json=payment_body(), headers=auth).status_code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 5 + [201]
    assert count_rows(db) == 1


def test_get_payment_and_404s(client, auth):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    r = client.get(f"/payments/{pid}", headers=auth)
    assert r.status_code == 200 and r.get_json()["order_id"] == "order-1"
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        r = client.get(f"/payments/{bad}", headers=auth)
        assert r.status_code == 404 and r.get_json()["error"] == "payment_not_found"


def test_list_pages_newest_first_with_filters(client, auth):
    ids = [client.post("/payments", json=payment_body(order_id=f"p{i}", expected_amount_usdt=str(i + 1)),
                       headers=auth).get_json()["id"] for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        url = "/payments?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url, headers=auth).get_json()
        seen += [p["id"] for p in page["payments"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == list(reversed(ids))
    one = client.get("/payments?order_id=p3", headers=auth).get_json()["payments"]
    assert [p["order_id"] for p in one] == ["p3"]
    assert client.get(f"/payments?wallet_address={WALLET_B}", headers=auth).get_json()["payments"] == []
    assert len(client.get("/payments?status=pending", headers=auth).get_json()["payments"]) == 7
    for bad in ("limit=0", "limit=201", "limit=x", "status=paid", "cursor=garbage"):
        r = client.get(f"/payments?{bad}", headers=auth)
        assert r.status_code == 400 and r.get_json()["field"] == bad.split("=")[0]


def test_list_pages_show_each_payment_as_the_orm_shows_it(client, auth, db):
    """A page is read in one statement, one row per credited transfer: a payment with several transfers is still
    one payment of the page's `limit` (also when it is the one read past the page to know there is a next), and
    each payment shows what the ORM's serializer shows (transfers in chain order, open unconfirmed money with its
    confirmations, counts), under every filter, with ties of created_at broken by id, across cursors."""
    ids = [client.post("/payments", json=payment_body(order_id=f"t{i}", expected_amount_usdt=str(10 + i)),
                       headers=auth).get_json()["id"] for i in range(5)]
    other = client.post("/payments", json=payment_body(order_id="elsewhere", wallet_address=WALLET_B),
                        headers=auth).get_json()["id"]
    chain_ms = 1_700_000_000_000
    with db.transaction() as s:
        for pid, count in ((ids[3], 3), (ids[2], 2), (ids[1], 1)):
            payment = s.get(Payment, uuid.UUID(pid))
            for k in range(count):  # written newest first: only the ORDER BY puts them in chain order
                transfer = add_transfer(s, f"{count - k}.5", TransferStatus.credited, payment, log_index=k,
                                        wallet=payment.wallet_address)
                transfer.block_timestamp = chain_ms - k * 3000
        busy = s.get(Payment, uuid.UUID(ids[3]))
        for n, cleared in ((1030, None), (1031, busy.created_at)):
            s.add(UnconfirmedTransfer(transaction_hash=f"{n:064x}", log_index=0, payment_id=busy.id,
                                      from_address=busy.wallet_address, to_address=busy.wallet_address,
                                      amount_usdt=Decimal("2"), block_number=n, block_id="cd" * 32,
                                      block_timestamp=1, cleared_at=cleared))
        write_state(s, CHAIN_HEAD, {"number": 1040, "id": "ef" * 32, "timestamp": chain_ms})
        s.get(Payment, uuid.UUID(ids[0])).status = PaymentStatus.expired
        s.get(Payment, uuid.UUID(ids[0])).created_at = s.get(Payment, uuid.UUID(ids[1])).created_at  # a tie
    with db.Session() as s:
        rows = {str(p.id): p for p in s.scalars(select(Payment))}
        orm = {pid: serialize_payment(s, payment) for pid, payment in rows.items()}
        newest_first = [str(p.id) for p in sorted(rows.values(), key=lambda p: (p.created_at, p.id), reverse=True)]
    assert [t["amount_usdt"] for t in orm[ids[3]]["transfers"]] == ["1.5", "2.5", "3.5"]
    assert orm[ids[3]]["unconfirmed_transfers"][0]["confirmations"] == 11 and orm[ids[3]]["transfers_count"] == 3
    assert client.get(f"/payments/{ids[3]}", headers=auth).get_json() == orm[ids[3]]
    mine = [pid for pid in newest_first if pid != other]
    for query, expected in (("", newest_first), ("&status=pending", [p for p in newest_first if p != ids[0]]),
                            ("&order_id=t3", [ids[3]]), (f"&wallet_address={WALLET}", mine),
                            (f"&wallet_address={WALLET}&status=pending", [p for p in mine if p != ids[0]])):
        pages: list[list[dict]] = []
        cursor = None
        while True:
            page = client.get(f"/payments?limit=2{query}" + (f"&cursor={cursor}" if cursor else ""),
                              headers=auth).get_json()
            pages.append(page["payments"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [min(2, len(expected) - i) for i in range(0, len(expected), 2)], query
        assert [p for page in pages for p in page] == [orm[pid] for pid in expected], query
    assert client.get("/payments?order_id=nothing", headers=auth).get_json() == {"payments": [], "next_cursor": None}


def test_cancel_only_pending_without_money(client, auth, db):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    r = client.post(f"/payments/{pid}/cancel", headers=auth)
    assert r.status_code == 200
    assert r.get_json()["status"] == "failed" and r.get_json()["failure_reason"] == "cancelled"
    again = client.post(f"/payments/{pid}/cancel", headers=auth)
    assert again.status_code == 409 and again.get_json()["error"] == "not_cancellable"
    pid2 = client.post("/payments", json=payment_body(order_id="paid", expected_amount_usdt="3"),
                       headers=auth).get_json()["id"]
    with db.transaction() as s:
        s.get(Payment, uuid.UUID(pid2)).received_amount_usdt = Decimal("1")
    assert client.post(f"/payments/{pid2}/cancel", headers=auth).status_code == 409
    assert client.post("/payments/nope/cancel", headers=auth).status_code == 404


def test_logs_are_the_audit_trail_oldest_first(client, auth):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    logs = client.get(f"/payments/{pid}/logs", headers=auth).get_json()["logs"]
    kinds = [entry["event_type"] for entry in logs]
    assert kinds[0] == "created" and "cancelled" in kinds and "webhook_queued" in kinds
    assert client.get("/payments/nope/logs", headers=auth).status_code == 404


def test_callback_retry(client, auth):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    r = client.post(f"/payments/{pid}/callback/retry", headers=auth)
    assert r.status_code == 409 and r.get_json()["error"] == "no_event"
    client.post(f"/payments/{pid}/cancel", headers=auth)
    events = client.get("/events", headers=auth).get_json()["events"]
    r = client.post(f"/payments/{pid}/callback/retry", headers=auth)
    assert r.status_code == 202 and r.get_json()["event_id"] == events[-1]["id"]


def test_stats_and_health_count_payments(client, auth):
    for i in range(3):
        client.post("/payments", json=payment_body(order_id=f"s{i}", expected_amount_usdt=str(i + 1)), headers=auth)
    pid = client.get("/payments?limit=1", headers=auth).get_json()["payments"][0]["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    stats = client.get("/stats").get_json()
    assert stats["total_payments"] == 3 and stats["pending_payments"] == 2 and stats["failed_payments"] == 1
    assert stats["completed_payments"] == 0 and stats["expired_payments"] == 0
    assert stats["unmatched_transfers"] == 0 and stats["webhooks_pending"] == 1 and stats["webhooks_failed"] == 0
    assert stats["polling_interval"] == 0.2 and stats["uptime_seconds"] >= 0
    health = client.get("/health").get_json()
    assert health["database"] == "connected" and health["active_payments"] == 2 and health["total_payments"] == 3
    # no watcher has ever run against this database
    assert health["status"] == "degraded" and health["watcher"]["running"] is False


def test_health_is_503_when_database_is_unreachable(config: Config):
    from app import create_app

    dead = Database("postgresql://postgres@127.0.0.1:1/none", pool_pre_ping=False)
    client = create_app(config, database=dead).test_client()
    r = client.get("/health")
    assert r.status_code == 503
    assert r.get_json()["status"] == "unhealthy" and r.get_json()["database"] == "disconnected"
    r = client.get("/payments", headers={"Authorization": "Bearer x"})
    assert r.status_code == 503 and r.get_json()["error"] == "database_unavailable"


def test_a_revoked_key_stops_working_within_the_cache_time(config, db):
    from app import create_app

    client = create_app(config.with_overrides(api_key_cache_seconds=0.5), database=db).test_client()
    headers, prefix = stored_key(db, "cached")
    assert client.get("/payments", headers=headers).status_code == 200
    revoke(db, prefix)
    assert client.get("/payments", headers=headers).status_code == 200  # remembered for up to 0.5 s
    time.sleep(0.6)
    assert client.get("/payments", headers=headers).status_code == 401
    assert client.get("/payments", headers={"Authorization": "Bearer never-valid"}).status_code == 401


def raw_create(client, auth, amount_json: str, order_id: str = "o", extra: str = ""):
    """POST /payments with the amount written as given (JSON text), and `extra` members appended."""
    payload = (
        f'{{"wallet_address": "{WALLET}", "expected_amount_usdt": {amount_json}, '
        f'"order_id": "{order_id}", "callback_url": "{HOOK}"{extra}}}'
    )
    return client.post("/payments", data=payload.encode(), headers=auth, content_type="application/json")


# --- money in and out, exactly -------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    ("1.0", "1"),
    ("10.50", "10.5"),
    ("0.1", "0.1"),
    ("0.000001", "0.000001"),
    ('"99999999999999.999999"', "99999999999999.999999"),
    ("99999999999999.999999", "99999999999999.999999"),
    ("1000000", "1000000"),
])
def test_exact_money_in_and_out(client, auth, db, raw, shown):
    r = raw_create(client, auth, raw)
    assert r.status_code == 201, r.get_json()
    p = r.get_json()
    assert p["expected_amount_usdt"] == shown
    with db.Session() as s:
        assert s.get(Payment, uuid.UUID(p["id"])).expected_amount_usdt == Decimal(shown)
    # the created log's metadata carries money as strings too
    logs = client.get(f"/payments/{p['id']}/logs", headers=auth).get_json()["logs"]
    assert logs[0]["metadata"]["expected_amount_usdt"] == shown


@pytest.mark.parametrize("raw", [
    "0.30000000000000004",  # 0.1 + 0.2 as a float prints
    "1.0000000",           # 7 decimals, even if zero
    '"1.0000000"',
    '"+5"', '"5."', '".5"', '"1e-3"', '"0x10"', '"1 000"', '"inf"', '"-0"', "-0", "0.0", '"0.000000"',
    '"007.100"',  # leading zeros are refused like any other malformed amount
    '"100000000000000"', "100000000000000",
])
def test_bad_amounts_are_400_with_field(client, auth, db, raw):
    r = raw_create(client, auth, raw)
    assert_error(r, 400, "expected_amount_usdt")
    assert count_rows(db) == 0 and count_rows(db, PaymentLog) == 0


@pytest.mark.parametrize("raw", ['"\\u0661\\u0660"', '"\\uff11\\uff10"', '"1\\u0660.5"'])
def test_non_ascii_digits_are_not_a_plain_decimal(client, auth, db, raw):
    r = raw_create(client, auth, raw)
    assert_error(r, 400, "expected_amount_usdt")
    assert count_rows(db) == 0


# --- idempotent replay ---------------------------------------------------------------------------

def test_replay_is_insensitive_to_key_order_and_amount_spelling(client, auth, db):
    first = raw_create(client, auth, '"10.5"', order_id="r1", extra=', "metadata": {"a": 1, "b": "x"}')
    assert first.status_code == 201
    pid = first.get_json()["id"]
    for amount in ("10.5", '"10.50"', "10.500000", '"10.500000"'):
        again = raw_create(client, auth, amount, order_id="r1", extra=', "metadata": {"b": "x", "a": 1}')
        assert again.status_code == 200, again.get_json()
        assert again.get_json()["id"] == pid
    reordered = json.dumps({"callback_url": HOOK, "order_id": "r1", "metadata": {"b": "x", "a": 1},
                            "expected_amount_usdt": "10.5", "wallet_address": WALLET})
    r = client.post("/payments", data=reordered, headers=auth, content_type="application/json")
    assert r.status_code == 200 and r.get_json()["id"] == pid
    assert count_rows(db) == 1


def test_replay_after_cancel_returns_the_cancelled_payment(client, auth, db):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    assert client.post(f"/payments/{pid}/cancel", headers=auth).status_code == 200
    again = client.post("/payments", json=payment_body(), headers=auth)
    assert again.status_code == 200
    got = again.get_json()
    assert got["id"] == pid and got["status"] == "failed" and got["failure_reason"] == "cancelled"
    assert count_rows(db) == 1


def test_replay_after_completion_returns_completed_payment(client, auth, db):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    with db.transaction() as s:
        p = s.get(Payment, uuid.UUID(pid))
        p.status, p.received_amount_usdt = PaymentStatus.completed, Decimal("10.5")
    again = client.post("/payments", json=payment_body(), headers=auth)
    assert again.status_code == 200 and again.get_json()["status"] == "completed"
    assert again.get_json()["received_amount_usdt"] == "10.5"


@pytest.mark.parametrize("change", [
    {"wallet_address": WALLET_B},
    {"callback_url": "http://127.0.0.1:9/other"},
    {"metadata": {"a": 2}},
    {"expires_in_seconds": 600},
    {"unique_amount": True},
    {"expected_amount_usdt": "10.500001"},
])
def test_same_order_other_body_is_409_order_id_conflict(client, auth, db, change):
    assert client.post("/payments", json=payment_body(metadata={"a": 1}), headers=auth).status_code == 201
    r = client.post("/payments", json=payment_body(**{"metadata": {"a": 1}, **change}), headers=auth)
    err = assert_error(r, 409, "order_id")
    assert err["error"] == "order_id_conflict"
    assert count_rows(db) == 1 and count_rows(db, PaymentLog) == 1


def test_amount_in_use_stores_nothing(client, auth, db):
    assert client.post("/payments", json=payment_body(order_id="a"), headers=auth).status_code == 201
    r = client.post("/payments", json=payment_body(order_id="b", expected_amount_usdt=10.5), headers=auth)
    err = assert_error(r, 409)
    assert err["error"] == "amount_in_use"
    assert count_rows(db) == 1 and count_rows(db, PaymentLog) == 1


def test_remaining_not_expected_amount_is_what_is_reserved(client, auth, db):
    """A partly paid payment reserves its remaining amount, not its expected amount."""
    pid = client.post("/payments", json=payment_body(order_id="a", expected_amount_usdt="10"),
                      headers=auth).get_json()["id"]
    with db.transaction() as s:
        s.get(Payment, uuid.UUID(pid)).received_amount_usdt = Decimal("4")
    clash = client.post("/payments", json=payment_body(order_id="b", expected_amount_usdt="6"), headers=auth)
    assert assert_error(clash, 409)["error"] == "amount_in_use"
    ok = client.post("/payments", json=payment_body(order_id="c", expected_amount_usdt="10"), headers=auth)
    assert ok.status_code == 201 and ok.get_json()["expected_amount_usdt"] == "10"
    raised = client.post("/payments", json=payment_body(order_id="d", expected_amount_usdt="6", unique_amount=True),
                         headers=auth)
    assert raised.status_code == 201 and raised.get_json()["expected_amount_usdt"] == "6.0001"


def test_completed_payment_frees_its_amount(client, auth, db):
    pid = client.post("/payments", json=payment_body(order_id="a"), headers=auth).get_json()["id"]
    with db.transaction() as s:
        p = s.get(Payment, uuid.UUID(pid))
        p.status, p.received_amount_usdt = PaymentStatus.completed, Decimal("10.5")
    assert client.post("/payments", json=payment_body(order_id="b"), headers=auth).status_code == 201


# --- metadata that PostgreSQL's JSONB cannot hold --------------------------------------------------

def test_metadata_with_huge_number_is_400_not_500(client, auth, db):
    r = raw_create(client, auth, '"5"', extra=', "metadata": {"n": 1e400}')
    assert assert_error(r, 400, "metadata")["error"] == "invalid_metadata"
    assert count_rows(db) == 0


def test_metadata_with_nul_character_is_400_not_500(client, auth, db):
    r = raw_create(client, auth, '"5"', extra=', "metadata": {"note": "a\\u0000b"}')
    assert_error(r, 400, "metadata")
    assert count_rows(db) == 0


def test_callback_url_with_nul_is_400(client, auth, db):
    r = client.post("/payments", json=payment_body(callback_url="http://127.0.0.1:9/h\u0000ook"), headers=auth)
    assert_error(r, 400, "callback_url")
    assert count_rows(db) == 0


@pytest.mark.parametrize("path, field", [("/payments?wallet_address=a%00b", "wallet_address"),
                                         ("/payments?order_id=a%00b", "order_id"),
                                         ("/transfers?wallet_address=a%00b", "wallet_address")])
def test_nul_in_query_filter_is_400_naming_it(client, auth, path, field):
    assert assert_error(client.get(path, headers=auth), 400, field)["error"] == f"invalid_{field}"


# --- error shape everywhere --------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("delete", "/payments/00000000-0000-0000-0000-000000000000"),
    ("put", "/payments"),
    ("get", "/payments/00000000-0000-0000-0000-000000000000/cancel"),
    ("get", "/payments/00000000-0000-0000-0000-000000000000/callback/retry"),
    ("post", "/health"),
    ("post", "/stats"),
    ("post", "/events"),
    ("post", "/transfers"),
])
def test_405_is_json_error(client, auth, method, path):
    r = getattr(client, method)(path, headers=auth)
    err = assert_error(r, 405)
    assert err["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/", "/payments/", "/payments/x/y", "/payments//logs", "/v1/payments",
                                  "/payments/00000000-0000-0000-0000-000000000000/logs/"])
def test_unknown_routes_are_json_404(client, auth, path):
    assert_error(client.get(path, headers=auth), 404)


@pytest.mark.parametrize("path", [
    "/payments/not-a-uuid", "/payments/not-a-uuid/logs",
    f"/payments/{uuid.UUID(int=1)}/logs",
])
def test_unknown_payment_404(client, auth, path):
    assert_error(client.get(path, headers=auth), 404)


@pytest.mark.parametrize("path", [f"/payments/{uuid.UUID(int=1)}/cancel", "/payments/nope/callback/retry",
                                  f"/payments/{uuid.UUID(int=1)}/callback/retry"])
def test_unknown_payment_404_on_post_routes(client, auth, path):
    assert_error(client.post(path, headers=auth), 404)


@pytest.mark.parametrize("data", [b"\xff\xfe{", b'{"a": 1,}', b"{'a': 1}", b'"str"', b"123", b"null",
                                  b'{"a": Infinity}', b'{"a": -Infinity}'])
def test_not_json_is_400(client, auth, db, data):
    r = client.post("/payments", data=data, headers=auth, content_type="application/json")
    assert_error(r, 400)
    assert count_rows(db) == 0


def test_413_without_content_type_and_nothing_stored(client, auth, db):
    big = json.dumps(payment_body(metadata={"x": "a" * 70_000})).encode()
    r = client.post("/payments", data=big, headers=auth)
    assert_error(r, 413)
    assert count_rows(db) == 0


def test_body_just_under_64kb_is_not_413(client, auth, db):
    payload = payment_body()
    payload["metadata"] = {"x": "y"}
    base = len(json.dumps(payload).encode())
    padded = json.dumps(payload).encode()[:-1] + b" " * (64 * 1024 - base) + b"}"
    assert len(padded) == 64 * 1024
    r = client.post("/payments", data=padded, headers=auth, content_type="application/json")
    assert r.status_code == 201, r.get_json()


@pytest.mark.parametrize("path, field", [
    ("/transfers?status=paid", "status"), ("/transfers?limit=0", "limit"), ("/transfers?limit=abc", "limit"),
    ("/transfers?cursor=garbage", "cursor"), ("/events?limit=201", "limit"),
    ("/payments?limit=-1", "limit"), ("/payments?status=cancelled", "status"),
])
def test_bad_query_params_are_400_with_field(client, auth, path, field):
    assert_error(client.get(path, headers=auth), 400, field)


def test_bad_events_after_names_the_after_field(client, auth):
    assert_error(client.get("/events?after=garbage", headers=auth), 400, "after")


# --- auth ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("post", "/payments"), ("get", "/payments"), ("get", f"/payments/{uuid.UUID(int=1)}"),
    ("post", f"/payments/{uuid.UUID(int=1)}/cancel"), ("get", f"/payments/{uuid.UUID(int=1)}/logs"),
    ("post", f"/payments/{uuid.UUID(int=1)}/callback/retry"), ("get", "/transfers"), ("get", "/events"),
    ("post", "/webhooks/test"), ("post", "/events/evt_1/retry"),
])
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ", "Bearer wrong",
                                    "Token tum_test_key_for_the_test_suite_only",
                                    "tum_test_key_for_the_test_suite_only"])
def test_every_merchant_route_needs_a_key(client, db, method, path, header):
    headers = {"Authorization": header} if header is not None else {}
    kwargs = {"json": payment_body()} if (method, path) == ("post", "/payments") else {}
    r = getattr(client, method)(path, headers=headers, **kwargs)
    assert assert_error(r, 401)["error"] == "unauthorized"
    assert count_rows(db) == 0


def test_operator_routes_need_no_key_and_ignore_a_bad_one(client):
    for path in ("/health", "/stats", "/openapi.json"):
        assert client.get(path).status_code == 200
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 200


# --- /events cursor --------------------------------------------------------------------------------

def test_events_cursor_pages_oldest_first_and_polls_from_the_end(client, auth):
    ids = []
    for i in range(3):
        pid = client.post("/payments", json=payment_body(order_id=f"e{i}", expected_amount_usdt=str(i + 1)),
                          headers=auth).get_json()["id"]
        client.post(f"/payments/{pid}/cancel", headers=auth)
        ids.append(pid)
    first = client.get("/events?limit=2", headers=auth).get_json()
    assert [e["payment_id"] for e in first["events"]] == ids[:2]
    assert all(e["type"] == "payment.cancelled" and e["state"] == "pending" and e["attempts"] == 0
               for e in first["events"])
    assert first["has_more"] and first["resume_cursor"] == first["next_cursor"]
    second = client.get(f"/events?limit=2&after={first['next_cursor']}", headers=auth).get_json()
    assert [e["payment_id"] for e in second["events"]] == ids[2:]
    # the last page ends a generic paginator (`while next_cursor:`); resume_cursor is where to poll on from
    assert second["next_cursor"] is None and not second["has_more"] and second["resume_cursor"]
    tail = client.get(f"/events?after={second['resume_cursor']}", headers=auth).get_json()
    assert tail["events"] == [] and tail["next_cursor"] is None and tail["resume_cursor"] == second["resume_cursor"]
    pid = client.post("/payments", json=payment_body(order_id="e9", expected_amount_usdt="9"),
                      headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    later = client.get(f"/events?after={tail['resume_cursor']}", headers=auth).get_json()
    assert [e["payment_id"] for e in later["events"]] == [pid]


def test_event_data_is_the_payment_at_event_time_with_money_strings(client, auth):
    pid = client.post("/payments", json=payment_body(expected_amount_usdt=7.25), headers=auth).get_json()["id"]
    cancelled = client.post(f"/payments/{pid}/cancel", headers=auth).get_json()
    event = client.get("/events", headers=auth).get_json()["events"][0]
    assert event["data"]["expected_amount_usdt"] == "7.25" and event["data"]["received_amount_usdt"] == "0"
    assert set(event["data"]) == set(cancelled)
    assert event["data"]["status"] == "failed" and event["data"]["failure_reason"] == "cancelled"


def test_stored_webhook_body_has_exactly_the_contract_keys(client, auth, db):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    with db.Session() as s:
        event = s.scalars(select(WebhookEvent)).one()
        sent = json.loads(event.body)
    assert set(sent) == {"id", "type", "created_at", "data"}
    assert sent["id"] == event.id and sent["type"] == "payment.cancelled"
    listed = client.get("/events", headers=auth).get_json()["events"][0]
    assert listed["created_at"] == sent["created_at"] and listed["id"] == sent["id"]
    got = client.get(f"/payments/{pid}", headers=auth).get_json()
    assert set(sent["data"]) == set(got)
    for key in ("expected_amount_usdt", "received_amount_usdt"):
        assert isinstance(sent["data"][key], str)


def test_retry_route_keeps_the_event_id_and_stats_count(client, auth):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    event_id = client.get("/events", headers=auth).get_json()["events"][0]["id"]
    for _ in range(2):
        r = client.post(f"/payments/{pid}/callback/retry", headers=auth)
        assert r.status_code == 202 and r.get_json()["event_id"] == event_id
    events = client.get("/events", headers=auth).get_json()["events"]
    assert [e["id"] for e in events] == [event_id]
    assert client.get("/stats").get_json()["webhooks_pending"] == 1


def test_stats_and_health_have_every_contract_field(client):
    stats = client.get("/stats").get_json()
    for key in ("total_payments", "pending_payments", "completed_payments", "failed_payments", "expired_payments",
                "uptime_seconds", "polling_interval", "unmatched_transfers", "webhooks_pending", "webhooks_failed"):
        assert key in stats, key
    health = client.get("/health").get_json()
    for key in ("status", "timestamp", "active_payments", "total_payments", "database", "watcher"):
        assert key in health, key


def test_private_callback_refused_at_creation_when_not_allowed(config, db, auth):
    from app import create_app

    strict = create_app(config.with_overrides(allow_private_callbacks=False), database=db)
    client = strict.test_client()
    for url in ("http://127.0.0.1:9/h", "http://169.254.169.254/latest", "http://[::1]/x", "http://10.0.0.1/",
                "http://localhost/x", "http://0.0.0.0/"):
        r = client.post("/payments", json=payment_body(callback_url=url), headers=auth)
        assert_error(r, 400, "callback_url")
        # the same rules for a test webhook's URL
        assert_error(client.post("/webhooks/test", json={"url": url}, headers=auth), 400, "url")
    assert count_rows(db) == 0 and count_rows(db, WebhookEvent) == 0


# --- test webhooks and event retries: what is refused (delivery: tests/delivery/test_webhooks.py) ------------

@pytest.mark.parametrize("body", [{"url": "ftp://127.0.0.1/x"}, {"url": "http://a b/"}, {"url": 5}, {"url": ""},
                                  {"url": "http://user@127.0.0.1/"}])
def test_test_webhook_with_a_bad_url_is_400_and_queues_nothing(client, auth, db, body):
    assert_error(client.post("/webhooks/test", json=body, headers=auth), 400, "url")
    assert count_rows(db, WebhookEvent) == 0


def test_test_webhook_needs_a_url_or_merchant_webhook_url(client, auth, db):
    for kwargs in ({}, {"json": {}}):
        assert assert_error(client.post("/webhooks/test", headers=auth, **kwargs), 400, "url")["error"] == \
            "missing_field"
    assert_error(client.post("/webhooks/test", json={"nope": 1}, headers=auth), 400, "nope")
    assert count_rows(db, WebhookEvent) == 0


@pytest.mark.parametrize("event_id", ["evt_" + "0" * 32, "x", "e" * 65, "%00"])
def test_retry_of_an_unknown_event_is_404(client, auth, event_id):
    assert assert_error(client.post(f"/events/{event_id}/retry", headers=auth), 404)["error"] == "event_not_found"


# --- underpayment tolerance ------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [("0", "0"), (0, "0"), ("0.000", "0"), ("0.5", "0.5"), ("10.5", "10.5"),
                                        (0.25, "0.25"), ("0.000001", "0.000001")])
def test_tolerance_is_an_amount_where_zero_is_allowed(client, auth, raw, shown):
    r = client.post("/payments", json=payment_body(underpayment_tolerance_usdt=raw), headers=auth)
    assert r.status_code == 201, r.get_json()
    assert (r.get_json()["underpayment_tolerance_usdt"], r.get_json()["shortfall_usdt"]) == (shown, "0")


@pytest.mark.parametrize("raw", ["10.500001", "11", "-1", "-0", "1e-1", "0.0000001", " 1", "01", "abc", True, [],
                                 {"x": 1}, "NaN"])
def test_bad_or_too_large_tolerance_is_400_and_stores_nothing(client, auth, db, raw):
    r = client.post("/payments", json=payment_body(underpayment_tolerance_usdt=raw), headers=auth)
    assert_error(r, 400, "underpayment_tolerance_usdt")
    assert count_rows(db) == 0


def test_default_tolerance_comes_from_the_setting_cut_to_the_amount(config, db, auth):
    from app import create_app

    client = create_app(config.with_overrides(underpayment_tolerance_usdt=Decimal("2")), database=db).test_client()

    def tolerance(amount: str, **extra: object) -> str:
        body = payment_body(order_id=uuid.uuid4().hex, expected_amount_usdt=amount, **extra)
        r = client.post("/payments", json=body, headers=auth)
        assert r.status_code == 201, r.get_json()
        return r.get_json()["underpayment_tolerance_usdt"]

    assert tolerance("10") == "2"
    assert tolerance("1.5") == "1.5"  # never more than the amount
    assert tolerance("20", underpayment_tolerance_usdt="0") == "0"  # an explicit value wins
    assert tolerance("30", underpayment_tolerance_usdt="7") == "7"


def test_a_request_made_before_tolerance_existed_still_replays(client, auth, db):
    """The fingerprint covers the fields sent: a body without the tolerance hashes as it did before the field."""
    from ledger.payments import request_fingerprint

    body = payment_body(order_id="before")
    assert client.post("/payments", json=body, headers=auth).status_code == 201
    then = {"wallet_address": WALLET, "expected_amount_usdt": "10.5", "order_id": "before", "callback_url": HOOK,
            "expires_in_seconds": None, "metadata": {}, "unique_amount": False}
    with db.Session() as s:
        stored = s.scalars(select(Payment.request_fingerprint).where(Payment.order_id == "before")).one()
    assert stored == request_fingerprint(then)
    assert client.post("/payments", json=body, headers=auth).status_code == 200
    with_tolerance = payment_body(order_id="after", expected_amount_usdt="11", underpayment_tolerance_usdt="0.5")
    assert client.post("/payments", json=with_tolerance, headers=auth).status_code == 201
    respelled = {**with_tolerance, "underpayment_tolerance_usdt": "0.50"}
    assert client.post("/payments", json=respelled, headers=auth).status_code == 200
    other = {**with_tolerance, "underpayment_tolerance_usdt": "0.4"}
    assert assert_error(client.post("/payments", json=other, headers=auth), 409)["error"] == "order_id_conflict"


def test_unique_amount_at_the_top_of_the_range_is_409_not_500(client, auth, db):
    top = "99999999999999.9999"
    assert client.post("/payments", json=payment_body(order_id="a", expected_amount_usdt=top),
                       headers=auth).status_code == 201
    r = client.post("/payments", json=payment_body(order_id="b", expected_amount_usdt=top, unique_amount=True),
                    headers=auth)
    # the next step up, 100000000000000, no longer fits NUMERIC(20,6)
    assert assert_error(r, 409, "expected_amount_usdt")["error"] == "amount_in_use"
    assert count_rows(db) == 1


def write_watcher_status(db, **values) -> None:
    import time

    from ledger.service_state import WATCHER_STATUS, write_state

    status = {"strategy": "account", "last_cycle_finished": time.time(), "last_cycle_seconds": 0.01,
              "seconds_behind": 0.0, "blocks_behind": None, "paused_until": None, "errors": 0, "last_error": None}
    status.update(values)
    with db.transaction() as s:
        write_state(s, WATCHER_STATUS, status)


def test_health_degraded_only_beyond_three_intervals(client, db, config):
    interval = config.polling_interval_seconds
    write_watcher_status(db, seconds_behind=3 * interval - 0.05)
    h = client.get("/health")
    assert h.status_code == 200 and h.get_json()["status"] == "healthy"
    write_watcher_status(db, seconds_behind=3 * interval + 5)
    h = client.get("/health")
    assert h.status_code == 200 and h.get_json()["status"] == "degraded"
    assert h.get_json()["watcher"]["seconds_behind"] == 3 * interval + 5
    import time

    write_watcher_status(db, last_cycle_finished=time.time() - 10 * interval)  # the watcher stopped cycling
    assert client.get("/health").get_json()["status"] == "degraded"
    write_watcher_status(db, paused_until=time.time() + 30)
    h = client.get("/health").get_json()
    assert h["status"] == "degraded" and h["watcher"]["upstream_paused_until"]


def test_stats_count_failed_webhooks(client, auth, db):
    from models import EventState

    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    with db.transaction() as s:
        s.scalars(select(WebhookEvent)).one().state = EventState.failed
    stats = client.get("/stats").get_json()
    assert stats["webhooks_failed"] == 1 and stats["webhooks_pending"] == 0
    assert client.get("/events", headers=auth).get_json()["events"][0]["state"] == "failed"


def test_create_and_read_take_one_connection_and_the_fewest_statements(client, auth, db):
    """A create is one message: the wallet lock, then one INSERT of the payment with its audit row that writes only
    when its order_id is free and its amount not in use (one implicit transaction); one that is refused there takes
    the path that says why: the transaction's start, the lock and the read under it, the INSERT, the commit.
    A read is one query, with no transaction around it. Each on one pooled connection (checked with its
    pre-ping)."""
    statements: list[str] = []
    checkouts: list[object] = []

    def on_statement(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    def on_checkout(*args) -> None:  # type: ignore[no-untyped-def]
        checkouts.append(args)

    # the process reads its database's checkout key once, at its first create: counted here is every one after it
    first = client.post("/payments", json=payment_body(order_id="first", expected_amount_usdt="2"), headers=auth)
    assert first.status_code == 201
    event.listen(db.engine, "before_cursor_execute", on_statement)
    event.listen(db.engine.pool, "checkout", on_checkout)
    try:
        created = client.post("/payments", json=payment_body(order_id="counted"), headers=auth)
        assert created.status_code == 201
        assert len(statements) == 1, statements
        lock, write = statements[0].split(";", 1)
        assert "pg_advisory_xact_lock" in lock
        assert " ".join(write.split()).startswith("WITH stored AS (INSERT INTO payments")
        assert "COMMIT" not in write and len(checkouts) == 1
        statements.clear()
        checkouts.clear()
        raised = client.post("/payments", json=payment_body(order_id="raised", unique_amount=True), headers=auth)
        assert raised.status_code == 201 and raised.get_json()["expected_amount_usdt"] == "10.5001"
        assert len(statements) == 4 and len(checkouts) == 1, statements
        begin, lock, read = statements[1].split(";", 2)
        assert begin == "BEGIN" and "pg_advisory_xact_lock" in lock and "FROM payments" in read
        assert statements[2].startswith("WITH") and statements[3] == "COMMIT"
        statements.clear()
        checkouts.clear()
        read = client.get(f"/payments/{created.get_json()['id']}", headers=auth)
        assert read.get_json() == created.get_json()
        assert len(statements) == 1 and len(checkouts) == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", on_statement)
        event.remove(db.engine.pool, "checkout", on_checkout)
    with db.Session() as s:
        pid = uuid.UUID(created.get_json()["id"])
        assert list(s.scalars(select(PaymentLog.event_type).where(PaymentLog.payment_id == pid))) == ["created"]


def test_a_statements_block_leaves_no_transaction_behind(db):
    """Database.statements: a block that fails between its BEGIN and its COMMIT has its transaction rolled back
    (the lock it held is free at once), and the pooled connection is back in the driver's usual mode."""
    wallet_lock_key = 7_000_001
    with pytest.raises(RuntimeError), db.statements() as connection:
        connection.exec_driver_sql(f"BEGIN; SELECT pg_advisory_xact_lock({wallet_lock_key})")
        raw = connection.connection.dbapi_connection
        raise RuntimeError("the caller fails with its transaction open")
    assert raw.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE and not raw.autocommit
    with db.engine.connect() as other:
        assert other.scalar(text(f"SELECT pg_try_advisory_lock({wallet_lock_key})"))
        other.execute(text(f"SELECT pg_advisory_unlock({wallet_lock_key})"))
    # a failed statement (an aborted transaction) is rolled back too
    with pytest.raises(IntegrityError), db.statements() as connection:
        connection.exec_driver_sql("BEGIN; SELECT 1/1; CREATE TEMP TABLE t (x int PRIMARY KEY); "
                                   "INSERT INTO t VALUES (1), (1); COMMIT")
    assert raw.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE and not raw.autocommit
    with db.statements() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM pg_tables WHERE tablename = 't'").scalar() == 0


def test_a_refused_create_leaves_its_wallet_free(client, auth, db):
    """An answer refused under the wallet's lock (amount in use) ends its transaction: the lock is not held."""
    assert client.post("/payments", json=payment_body(order_id="a"), headers=auth).status_code == 201
    refused = client.post("/payments", json=payment_body(order_id="b"), headers=auth)
    assert refused.status_code == 409 and refused.get_json()["error"] == "amount_in_use"
    with db.engine.connect() as other:
        other.execute(text("SET lock_timeout = '1s'"))
        other.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                      {"k": f"wallet:{payment_body()['wallet_address']}"})
        other.rollback()
    assert client.post("/payments", json=payment_body(order_id="c", expected_amount_usdt="11"),
                       headers=auth).status_code == 201


def test_driver_execute_keeps_what_connection_execute_guarantees(db):
    """The hot routes' statements skip SQLAlchemy's execution context, not its guarantees: listeners see them,
    errors are SQLAlchemy's, and a connection lost under one is invalidated rather than reused."""
    seen: list[str] = []

    def listener(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        with db.statements() as connection:
            assert driver_execute(connection, "SELECT %(x)s::int + 1", {"x": 1}) == [(2,)]
            with pytest.raises(ProgrammingError):
                driver_execute(connection, "SELECT nope FROM nowhere", {})
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert seen == ["SELECT %(x)s::int + 1", "SELECT nope FROM nowhere"]
    with db.statements() as connection:
        pid = driver_execute(connection, "SELECT pg_backend_pid()", {})[0][0]
        with db.engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as lost:
            driver_execute(connection, "SELECT 1", {})
        assert lost.value.connection_invalidated and connection.invalidated
    with db.statements() as connection:  # the pool hands out a working connection
        assert driver_execute(connection, "SELECT pg_backend_pid()", {})[0][0] != pid


def test_the_read_under_the_lock_returns_only_the_amounts_it_may_ask_about(client, auth, db):
    """One wallet with many open payments: the create's read sends back the remaining amounts from the requested
    one to 100 steps of 0.0001 above it, not one row per open payment; unique_amount still steps over them."""
    from ledger.payments import amounts_under_lock

    for cents in range(40):  # 10.00 .. 10.39, on one wallet
        amount = f"10.{cents:02d}"
        assert client.post("/payments", json=payment_body(order_id=f"many-{cents}", expected_amount_usdt=amount),
                           headers=auth).status_code == 201
    for order_id, amount in (("step-1", "10.0001"), ("step-2", "10.0002")):
        assert client.post("/payments", json=payment_body(order_id=order_id, expected_amount_usdt=amount),
                           headers=auth).status_code == 201
    with db.statements() as connection:
        _, in_use, awaited, taken = amounts_under_lock(connection, WALLET, "new-order", Decimal("10"), 3600)
    assert not taken and in_use == awaited == {10_000_000, 10_000_100, 10_000_200, 10_010_000}  # 10, +1, +2, +100
    answer = client.post("/payments", json=payment_body(order_id="unique", expected_amount_usdt="10",
                                                        unique_amount=True), headers=auth)
    assert answer.status_code == 201 and answer.get_json()["expected_amount_usdt"] == "10.0003"
    refused = client.post("/payments", json=payment_body(order_id="same", expected_amount_usdt="10.39"), headers=auth)
    assert refused.status_code == 409 and refused.get_json()["error"] == "amount_in_use"


def test_a_create_in_one_message_writes_what_the_two_message_path_writes(client, auth, db):
    """The one-message create and the two-message one store the same payment and audit row (the audit's
    expires_at written by PostgreSQL, as times.iso writes it)."""
    fast = client.post("/payments", json=payment_body(order_id="fast", metadata={"k": "v"}), headers=auth).get_json()
    slow = client.post("/payments", json=payment_body(order_id="slow", unique_amount=True, metadata={"k": "v"}),
                       headers=auth).get_json()
    assert slow["expected_amount_usdt"] == "10.5001"
    for answer in (fast, slow):
        assert client.get(f"/payments/{answer['id']}", headers=auth).get_json() == answer
    with db.Session() as s:
        rows = {p.order_id: p for p in s.scalars(select(Payment))}
        logs = {log.payment_id: log for log in s.scalars(select(PaymentLog))}
        for order_id in ("fast", "slow"):
            payment, log = rows[order_id], logs[rows[order_id].id]
            assert payment.expires_at - payment.created_at == timedelta(seconds=3600)
            assert log.event_metadata["expires_at"] == iso(payment.expires_at)
            assert set(log.event_metadata) == {"order_id", "expected_amount_usdt", "requested_amount_usdt",
                                               "underpayment_tolerance_usdt", "expires_at"}
    assert logs[rows["fast"].id].message == f"payment created for 10.5 USDT to {WALLET}"


def test_iso_sql_writes_what_iso_writes(db):
    from datetime import datetime, timezone

    from infra.times import iso_sql

    values = [datetime(2026, 12, 4, 13, 0, 0, tzinfo=UTC), datetime(2026, 12, 4, 13, 0, 0, 1, tzinfo=UTC),
              datetime(2026, 12, 4, 13, 0, 59, 999999, tzinfo=UTC),
              datetime(2026, 6, 1, 2, 3, 4, 500000, tzinfo=timezone(timedelta(hours=-7)))]
    with db.engine.connect() as connection:
        for value in values:
            written = connection.execute(select(iso_sql(literal(value, type_=DateTime(timezone=True))))).scalar_one()
            assert written == iso(value), value


def test_a_created_payment_is_answered_as_it_is_stored(client, auth):
    """Both create paths answer the metadata as PostgreSQL stored it (JSONB's form of the numbers), so the create's
    answer, a later read and the webhooks agree."""
    metadata = {"big": 1e16, "ratio": 1.50, "n": 7, "nested": {"x": [1, 2.0]}}
    fast = client.post("/payments", json=payment_body(order_id="m1", metadata=metadata), headers=auth)
    slow = client.post("/payments", json=payment_body(order_id="m2", metadata=metadata, unique_amount=True),
                       headers=auth)
    for answer in (fast, slow):
        assert answer.status_code == 201
        body = answer.get_json()
        assert body == client.get(f"/payments/{body['id']}", headers=auth).get_json()
        assert answer.get_data(as_text=True) == client.get(f"/payments/{body['id']}", headers=auth).get_data(
            as_text=True)


def test_a_lifetime_is_exact_seconds_in_any_session_time_zone(db):
    """expires_at is created_at plus exactly expires_in_seconds, also across a DST change in the session's zone."""
    from datetime import datetime, timezone

    from ledger.payments import lifetime_end

    start = datetime(2026, 3, 7, 12, 0, tzinfo=timezone(timedelta(hours=-5)))  # New York, 2 days before DST
    with db.engine.connect() as connection:
        connection.execute(text("SET TimeZone = 'America/New_York'"))
        end = connection.execute(select(lifetime_end(literal(start, type_=DateTime(timezone=True)))),
                                 {"lifetime_seconds": 172_800}).scalar_one()
        connection.rollback()
    assert end - start == timedelta(seconds=172_800)
