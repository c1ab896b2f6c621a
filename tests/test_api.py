"""The HTTP API of contract §2, against a real PostgreSQL."""
from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from auth import create_api_key, revoke_api_key
from config import Config
from database import Database
from models import Payment, PaymentLog

WALLET = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"
OTHER_WALLET = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"


def body(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "wallet_address": WALLET,
        "expected_amount_usdt": "10.5",
        "order_id": "order-1",
        "callback_url": "http://127.0.0.1:9/hook",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def count(db: Database, model: type = Payment) -> int:
    with db.Session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_create_returns_payment_with_plain_amount_strings(client, auth, db):
    r = client.post("/payments", json=body(expected_amount_usdt="10.50", metadata={"cart": 7}), headers=auth)
    assert r.status_code == 201
    p = r.get_json()
    assert p["expected_amount_usdt"] == "10.5"
    assert p["received_amount_usdt"] == "0"
    assert p["status"] == "pending" and p["failure_reason"] is None and p["paid_late"] is False
    assert p["transfers"] == [] and p["metadata"] == {"cart": 7}
    assert p["created_at"].endswith("Z") and p["expires_at"] > p["created_at"]
    with db.Session() as s:
        assert s.get(Payment, __import__("uuid").UUID(p["id"])).expected_amount_usdt == Decimal("10.5")


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
        assert err["field"] == "expected_amount_usdt" and err["error"] in ("invalid_amount", "missing_field")
    assert err["message"]
    assert count(db) == 0 and count(db, PaymentLog) == 0


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
    payload = body()
    if value is None:
        payload.pop(field)
    else:
        payload[field] = value
    r = client.post("/payments", json=payload, headers=auth)
    assert r.status_code == 400
    assert r.get_json()["error"] == code and r.get_json()["field"] == field
    assert count(db) == 0


def test_not_json_and_non_object_bodies(client, auth, db):
    for data in (b"hello", b"", b"[1]", b'{"a": NaN}'):
        r = client.post("/payments", data=data, headers=auth, content_type="application/json")
        assert r.status_code == 400 and r.get_json()["error"] == "invalid_json"
    assert count(db) == 0


def test_body_over_64_kb_is_413(client, auth, db):
    r = client.post("/payments", data=b'{"x": "' + b"a" * 70_000 + b'"}', headers=auth,
                    content_type="application/json")
    assert r.status_code == 413 and r.get_json()["error"] == "payload_too_large"
    assert count(db) == 0


def test_unknown_route_is_json_404(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.is_json and r.get_json()["error"] == "not_found"
    r = client.delete("/payments")
    assert r.status_code == 405 and r.is_json


def test_auth_required_and_db_keys_can_be_revoked(client, db):
    assert client.get("/payments").status_code == 401
    assert client.get("/payments", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/payments", headers={"Authorization": "Basic abc"}).status_code == 401
    with db.transaction() as s:
        made = create_api_key(s, "ci")
    headers = {"Authorization": f"Bearer {made.key}"}
    assert client.get("/payments", headers=headers).status_code == 200
    with db.transaction() as s:
        revoke_api_key(s, made.prefix)
    r = client.get("/payments", headers=headers)
    assert r.status_code == 401 and r.get_json()["error"] == "unauthorized"
    for path in ("/health", "/stats", "/openapi.json"):
        assert client.get(path).status_code == 200


def test_replay_returns_existing_and_other_body_conflicts(client, auth, db):
    first = client.post("/payments", json=body(), headers=auth)
    again = client.post("/payments", json=body(), headers=auth)
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    other = client.post("/payments", json=body(expected_amount_usdt="11"), headers=auth)
    assert other.status_code == 409 and other.get_json()["error"] == "order_id_conflict"
    assert count(db) == 1


def test_amount_in_use_and_unique_amount(client, auth, db):
    assert client.post("/payments", json=body(order_id="a"), headers=auth).status_code == 201
    clash = client.post("/payments", json=body(order_id="b"), headers=auth)
    assert clash.status_code == 409 and clash.get_json()["error"] == "amount_in_use"
    # another wallet may use the same amount
    other_wallet = client.post("/payments", json=body(order_id="c", wallet_address=OTHER_WALLET), headers=auth)
    assert other_wallet.status_code == 201
    raised = client.post("/payments", json=body(order_id="d", unique_amount=True), headers=auth)
    assert raised.status_code == 201 and raised.get_json()["expected_amount_usdt"] == "10.5001"
    second = client.post("/payments", json=body(order_id="e", unique_amount=True), headers=auth)
    assert second.get_json()["expected_amount_usdt"] == "10.5002"
    # replaying a raised request gives the same payment, with its raised amount
    replay = client.post("/payments", json=body(order_id="d", unique_amount=True), headers=auth)
    assert replay.status_code == 200 and replay.get_json()["expected_amount_usdt"] == "10.5001"
    assert count(db) == 4


def test_unique_amount_gives_up_after_100_steps(client, auth):
    for i in range(101):
        amount = f"{Decimal('5') + Decimal(i) / 10000}"
        assert client.post("/payments", json=body(order_id=f"x{i}", expected_amount_usdt=amount),
                           headers=auth).status_code == 201
    r = client.post("/payments", json=body(order_id="last", expected_amount_usdt="5", unique_amount=True),
                    headers=auth)
    assert r.status_code == 409 and r.get_json()["error"] == "amount_in_use"


def test_cancelled_payment_keeps_its_amount_reserved_during_late_window(client, auth):
    pid = client.post("/payments", json=body(order_id="a"), headers=auth).get_json()["id"]
    assert client.post(f"/payments/{pid}/cancel", headers=auth).status_code == 200
    assert client.post("/payments", json=body(order_id="b"), headers=auth).status_code == 409


def test_concurrent_creates_cannot_both_take_one_amount(app, auth, db):
    results: list[int] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        r = client.post("/payments", json=body(order_id=f"race-{i}"), headers=auth)
        results.append(r.status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [201] + [409] * 7
    assert count(db) == 1


def test_concurrent_unique_amount_creates_get_distinct_amounts(app, auth):
    amounts: list[str] = []
    barrier = threading.Barrier(6)

    def create(i: int) -> None:
        barrier.wait()
        r = app.test_client().post("/payments", json=body(order_id=f"u-{i}", unique_amount=True), headers=auth)
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
        codes.append(app.test_client().post("/payments", json=body(), headers=auth).status_code)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 5 + [201]
    assert count(db) == 1


def test_get_payment_and_404s(client, auth):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    r = client.get(f"/payments/{pid}", headers=auth)
    assert r.status_code == 200 and r.get_json()["order_id"] == "order-1"
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        r = client.get(f"/payments/{bad}", headers=auth)
        assert r.status_code == 404 and r.get_json()["error"] == "payment_not_found"


def test_list_pages_newest_first_with_filters(client, auth):
    ids = [client.post("/payments", json=body(order_id=f"p{i}", expected_amount_usdt=str(i + 1)),
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
    assert client.get(f"/payments?wallet_address={OTHER_WALLET}", headers=auth).get_json()["payments"] == []
    assert len(client.get("/payments?status=pending", headers=auth).get_json()["payments"]) == 7
    for bad in ("limit=0", "limit=201", "limit=x", "status=paid", "cursor=garbage"):
        r = client.get(f"/payments?{bad}", headers=auth)
        assert r.status_code == 400 and r.get_json()["field"] == bad.split("=")[0]


def test_cancel_only_pending_without_money(client, auth, db):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    r = client.post(f"/payments/{pid}/cancel", headers=auth)
    assert r.status_code == 200
    assert r.get_json()["status"] == "failed" and r.get_json()["failure_reason"] == "cancelled"
    again = client.post(f"/payments/{pid}/cancel", headers=auth)
    assert again.status_code == 409 and again.get_json()["error"] == "not_cancellable"
    pid2 = client.post("/payments", json=body(order_id="paid", expected_amount_usdt="3"), headers=auth).get_json()["id"]
    with db.transaction() as s:
        s.get(Payment, __import__("uuid").UUID(pid2)).received_amount_usdt = Decimal("1")
    assert client.post(f"/payments/{pid2}/cancel", headers=auth).status_code == 409
    assert client.post("/payments/nope/cancel", headers=auth).status_code == 404


def test_logs_are_the_audit_trail_oldest_first(client, auth):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    logs = client.get(f"/payments/{pid}/logs", headers=auth).get_json()["logs"]
    kinds = [entry["event_type"] for entry in logs]
    assert kinds[0] == "created" and "cancelled" in kinds and "webhook_queued" in kinds
    assert client.get("/payments/nope/logs", headers=auth).status_code == 404


def test_callback_retry(client, auth):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    r = client.post(f"/payments/{pid}/callback/retry", headers=auth)
    assert r.status_code == 409 and r.get_json()["error"] == "no_event"
    client.post(f"/payments/{pid}/cancel", headers=auth)
    events = client.get("/events", headers=auth).get_json()["events"]
    r = client.post(f"/payments/{pid}/callback/retry", headers=auth)
    assert r.status_code == 202 and r.get_json()["event_id"] == events[-1]["id"]


def test_stats_and_health_count_payments(client, auth):
    for i in range(3):
        client.post("/payments", json=body(order_id=f"s{i}", expected_amount_usdt=str(i + 1)), headers=auth)
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
    client = create_app(config, database=dead, run_bootstrap=False).test_client()
    r = client.get("/health")
    assert r.status_code == 503
    assert r.get_json()["status"] == "unhealthy" and r.get_json()["database"] == "disconnected"
    r = client.get("/payments", headers={"Authorization": "Bearer x"})
    assert r.status_code == 503 and r.get_json()["error"] == "database_unavailable"


def test_a_revoked_key_stops_working_within_the_cache_time(config, db):
    from app import create_app

    client = create_app(config.with_overrides(api_key_cache_seconds=0.5), database=db,
                        run_bootstrap=False).test_client()
    with db.transaction() as s:
        made = create_api_key(s, "cached")
    headers = {"Authorization": f"Bearer {made.key}"}
    assert client.get("/payments", headers=headers).status_code == 200
    with db.transaction() as s:
        revoke_api_key(s, made.prefix)
    assert client.get("/payments", headers=headers).status_code == 200  # remembered for up to 0.5 s
    time.sleep(0.6)
    assert client.get("/payments", headers=headers).status_code == 401
    assert client.get("/payments", headers={"Authorization": "Bearer never-valid"}).status_code == 401
