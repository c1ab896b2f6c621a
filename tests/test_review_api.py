"""Review tests: the HTTP API of contract §2 as a merchant uses it (money, replays, errors, auth)."""
from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from models import Payment, PaymentLog, PaymentStatus, WebhookEvent

WALLET = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"
OTHER_WALLET = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"
HOOK = "http://127.0.0.1:9/hook"


def body(**overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "wallet_address": WALLET,
        "expected_amount_usdt": "10.5",
        "order_id": "order-1",
        "callback_url": HOOK,
    }
    data.update(overrides)
    return data


def raw_create(client, auth, amount_json: str, order_id: str = "o", extra: str = ""):
    payload = (
        f'{{"wallet_address": "{WALLET}", "expected_amount_usdt": {amount_json}, '
        f'"order_id": "{order_id}", "callback_url": "{HOOK}"{extra}}}'
    )
    return client.post("/payments", data=payload.encode(), headers=auth, content_type="application/json")


def count(db, model: type = Payment) -> int:
    with db.Session() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def assert_error(r, status: int, field: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:300])
    assert r.is_json, r.get_data(as_text=True)[:300]
    err = r.get_json()
    assert isinstance(err.get("error"), str) and err["error"]
    assert isinstance(err.get("message"), str) and err["message"]
    if field is not None:
        assert err.get("field") == field, err
    return err


# --- §2 money in -------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    ("1.0", "1"),
    ("10.50", "10.5"),
    ("0.1", "0.1"),
    ("0.000001", "0.000001"),
    ('"99999999999999.999999"', "99999999999999.999999"),
    ("99999999999999.999999", "99999999999999.999999"),
    ("1000000", "1000000"),
])
def test_review_exact_money_in_and_out(client, auth, db, raw, shown):
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
def test_review_bad_amounts_are_400_with_field(client, auth, db, raw):
    r = raw_create(client, auth, raw)
    assert_error(r, 400, "expected_amount_usdt")
    assert count(db) == 0 and count(db, PaymentLog) == 0


@pytest.mark.parametrize("raw", ['"\\u0661\\u0660"', '"\\uff11\\uff10"', '"1\\u0660.5"'])
def test_review_non_ascii_digits_are_not_a_plain_decimal(client, auth, db, raw):
    r = raw_create(client, auth, raw)
    assert_error(r, 400, "expected_amount_usdt")
    assert count(db) == 0


# --- idempotent replay ---------------------------------------------------------------------------

def test_review_replay_is_insensitive_to_key_order_and_amount_spelling(client, auth, db):
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
    assert count(db) == 1


def test_review_replay_after_cancel_returns_the_cancelled_payment(client, auth, db):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    assert client.post(f"/payments/{pid}/cancel", headers=auth).status_code == 200
    again = client.post("/payments", json=body(), headers=auth)
    assert again.status_code == 200
    got = again.get_json()
    assert got["id"] == pid and got["status"] == "failed" and got["failure_reason"] == "cancelled"
    assert count(db) == 1


def test_review_replay_after_completion_returns_completed_payment(client, auth, db):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    with db.transaction() as s:
        p = s.get(Payment, uuid.UUID(pid))
        p.status, p.received_amount_usdt = PaymentStatus.completed, Decimal("10.5")
    again = client.post("/payments", json=body(), headers=auth)
    assert again.status_code == 200 and again.get_json()["status"] == "completed"
    assert again.get_json()["received_amount_usdt"] == "10.5"


@pytest.mark.parametrize("change", [
    {"wallet_address": OTHER_WALLET},
    {"callback_url": "http://127.0.0.1:9/other"},
    {"metadata": {"a": 2}},
    {"expires_in_seconds": 600},
    {"unique_amount": True},
    {"expected_amount_usdt": "10.500001"},
])
def test_review_same_order_other_body_is_409_order_id_conflict(client, auth, db, change):
    assert client.post("/payments", json=body(metadata={"a": 1}), headers=auth).status_code == 201
    r = client.post("/payments", json=body(**{"metadata": {"a": 1}, **change}), headers=auth)
    err = assert_error(r, 409, "order_id")
    assert err["error"] == "order_id_conflict"
    assert count(db) == 1 and count(db, PaymentLog) == 1


def test_review_amount_in_use_stores_nothing(client, auth, db):
    assert client.post("/payments", json=body(order_id="a"), headers=auth).status_code == 201
    r = client.post("/payments", json=body(order_id="b", expected_amount_usdt=10.5), headers=auth)
    err = assert_error(r, 409)
    assert err["error"] == "amount_in_use"
    assert count(db) == 1 and count(db, PaymentLog) == 1


def test_review_remaining_not_expected_amount_is_what_is_reserved(client, auth, db):
    """A partly paid payment reserves its remaining amount (§4), not its expected amount."""
    pid = client.post("/payments", json=body(order_id="a", expected_amount_usdt="10"), headers=auth).get_json()["id"]
    with db.transaction() as s:
        s.get(Payment, uuid.UUID(pid)).received_amount_usdt = Decimal("4")
    clash = client.post("/payments", json=body(order_id="b", expected_amount_usdt="6"), headers=auth)
    assert assert_error(clash, 409)["error"] == "amount_in_use"
    ok = client.post("/payments", json=body(order_id="c", expected_amount_usdt="10"), headers=auth)
    assert ok.status_code == 201 and ok.get_json()["expected_amount_usdt"] == "10"
    raised = client.post("/payments", json=body(order_id="d", expected_amount_usdt="6", unique_amount=True),
                         headers=auth)
    assert raised.status_code == 201 and raised.get_json()["expected_amount_usdt"] == "6.0001"


def test_review_completed_payment_frees_its_amount(client, auth, db):
    pid = client.post("/payments", json=body(order_id="a"), headers=auth).get_json()["id"]
    with db.transaction() as s:
        p = s.get(Payment, uuid.UUID(pid))
        p.status, p.received_amount_usdt = PaymentStatus.completed, Decimal("10.5")
    assert client.post("/payments", json=body(order_id="b"), headers=auth).status_code == 201


# --- metadata that PostgreSQL's JSONB cannot hold --------------------------------------------------

def test_review_metadata_with_huge_number_is_400_not_500(client, auth, db):
    r = raw_create(client, auth, '"5"', extra=', "metadata": {"n": 1e400}')
    assert r.status_code in (201, 400), (r.status_code, r.get_json())
    if r.status_code == 400:
        assert r.get_json()["field"] == "metadata"


def test_review_metadata_with_nul_character_is_400_not_500(client, auth, db):
    r = raw_create(client, auth, '"5"', extra=', "metadata": {"note": "a\\u0000b"}')
    assert_error(r, 400, "metadata")
    assert count(db) == 0


def test_review_callback_url_with_nul_is_400(client, auth, db):
    r = client.post("/payments", json=body(callback_url="http://127.0.0.1:9/h\u0000ook"), headers=auth)
    assert_error(r, 400, "callback_url")
    assert count(db) == 0


@pytest.mark.parametrize("path", ["/payments?wallet_address=a%00b", "/payments?order_id=a%00b",
                                  "/transfers?wallet_address=a%00b"])
def test_review_nul_in_query_filter_is_not_a_500(client, auth, path):
    r = client.get(path, headers=auth)
    assert r.status_code in (200, 400), (r.status_code, r.get_json())


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
def test_review_405_is_json_error(client, auth, method, path):
    r = getattr(client, method)(path, headers=auth)
    err = assert_error(r, 405)
    assert err["error"] == "method_not_allowed"


@pytest.mark.parametrize("path", ["/", "/payments/", "/payments/x/y", "/payments//logs", "/v1/payments",
                                  "/payments/00000000-0000-0000-0000-000000000000/logs/"])
def test_review_unknown_routes_are_json_404(client, auth, path):
    assert_error(client.get(path, headers=auth), 404)


@pytest.mark.parametrize("path", [
    "/payments/not-a-uuid", "/payments/not-a-uuid/logs",
    f"/payments/{uuid.UUID(int=1)}/logs",
])
def test_review_unknown_payment_404(client, auth, path):
    assert_error(client.get(path, headers=auth), 404)


@pytest.mark.parametrize("path", [f"/payments/{uuid.UUID(int=1)}/cancel", "/payments/nope/callback/retry",
                                  f"/payments/{uuid.UUID(int=1)}/callback/retry"])
def test_review_unknown_payment_404_on_post_routes(client, auth, path):
    assert_error(client.post(path, headers=auth), 404)


@pytest.mark.parametrize("data", [b"\xff\xfe{", b'{"a": 1,}', b"{'a': 1}", b'"str"', b"123", b"null",
                                  b'{"a": Infinity}', b'{"a": -Infinity}'])
def test_review_not_json_is_400(client, auth, db, data):
    r = client.post("/payments", data=data, headers=auth, content_type="application/json")
    assert_error(r, 400)
    assert count(db) == 0


def test_review_413_without_content_type_and_nothing_stored(client, auth, db):
    big = json.dumps(body(metadata={"x": "a" * 70_000})).encode()
    r = client.post("/payments", data=big, headers=auth)
    assert_error(r, 413)
    assert count(db) == 0


def test_review_body_just_under_64kb_is_not_413(client, auth, db):
    payload = body()
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
def test_review_bad_query_params_are_400_with_field(client, auth, path, field):
    assert_error(client.get(path, headers=auth), 400, field)


def test_review_bad_events_after_names_the_after_field(client, auth):
    assert_error(client.get("/events?after=garbage", headers=auth), 400, "after")


# --- auth ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [
    ("post", "/payments"), ("get", "/payments"), ("get", f"/payments/{uuid.UUID(int=1)}"),
    ("post", f"/payments/{uuid.UUID(int=1)}/cancel"), ("get", f"/payments/{uuid.UUID(int=1)}/logs"),
    ("post", f"/payments/{uuid.UUID(int=1)}/callback/retry"), ("get", "/transfers"), ("get", "/events"),
])
@pytest.mark.parametrize("header", [None, "Bearer", "Bearer ", "Bearer wrong",
                                    "Token tum_test_key_for_the_test_suite_only",
                                    "tum_test_key_for_the_test_suite_only"])
def test_review_every_merchant_route_needs_a_key(client, db, method, path, header):
    headers = {"Authorization": header} if header is not None else {}
    kwargs = {"json": body()} if (method, path) == ("post", "/payments") else {}
    r = getattr(client, method)(path, headers=headers, **kwargs)
    assert assert_error(r, 401)["error"] == "unauthorized"
    assert count(db) == 0


def test_review_operator_routes_need_no_key_and_ignore_a_bad_one(client):
    for path in ("/health", "/stats", "/openapi.json"):
        assert client.get(path).status_code == 200
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 200


# --- /events cursor --------------------------------------------------------------------------------

def test_review_events_cursor_pages_oldest_first_and_polls_from_the_end(client, auth):
    ids = []
    for i in range(3):
        pid = client.post("/payments", json=body(order_id=f"e{i}", expected_amount_usdt=str(i + 1)),
                          headers=auth).get_json()["id"]
        client.post(f"/payments/{pid}/cancel", headers=auth)
        ids.append(pid)
    first = client.get("/events?limit=2", headers=auth).get_json()
    assert [e["payment_id"] for e in first["events"]] == ids[:2]
    assert all(e["type"] == "payment.cancelled" and e["state"] == "pending" and e["attempts"] == 0
               for e in first["events"])
    second = client.get(f"/events?limit=2&after={first['next_cursor']}", headers=auth).get_json()
    assert [e["payment_id"] for e in second["events"]] == ids[2:]
    tail = client.get(f"/events?after={second['next_cursor']}", headers=auth).get_json()
    assert tail["events"] == [] and tail["next_cursor"] == second["next_cursor"]
    pid = client.post("/payments", json=body(order_id="e9", expected_amount_usdt="9"), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    later = client.get(f"/events?after={tail['next_cursor']}", headers=auth).get_json()
    assert [e["payment_id"] for e in later["events"]] == [pid]


def test_review_event_data_is_the_payment_at_event_time_with_money_strings(client, auth):
    pid = client.post("/payments", json=body(expected_amount_usdt=7.25), headers=auth).get_json()["id"]
    cancelled = client.post(f"/payments/{pid}/cancel", headers=auth).get_json()
    event = client.get("/events", headers=auth).get_json()["events"][0]
    assert event["data"]["expected_amount_usdt"] == "7.25" and event["data"]["received_amount_usdt"] == "0"
    assert set(event["data"]) == set(cancelled)
    assert event["data"]["status"] == "failed" and event["data"]["failure_reason"] == "cancelled"


def test_review_stored_webhook_body_has_exactly_the_contract_keys(client, auth, db):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
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


def test_review_retry_route_keeps_the_event_id_and_stats_count(client, auth):
    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    event_id = client.get("/events", headers=auth).get_json()["events"][0]["id"]
    for _ in range(2):
        r = client.post(f"/payments/{pid}/callback/retry", headers=auth)
        assert r.status_code == 202 and r.get_json()["event_id"] == event_id
    events = client.get("/events", headers=auth).get_json()["events"]
    assert [e["id"] for e in events] == [event_id]
    assert client.get("/stats").get_json()["webhooks_pending"] == 1


def test_review_stats_and_health_have_every_contract_field(client):
    stats = client.get("/stats").get_json()
    for key in ("total_payments", "pending_payments", "completed_payments", "failed_payments", "expired_payments",
                "uptime_seconds", "polling_interval", "unmatched_transfers", "webhooks_pending", "webhooks_failed"):
        assert key in stats, key
    health = client.get("/health").get_json()
    for key in ("status", "timestamp", "active_payments", "total_payments", "database", "watcher"):
        assert key in health, key


def test_review_private_callback_refused_at_creation_when_not_allowed(config, db, auth):
    from app import create_app

    strict = create_app(config.with_overrides(allow_private_callbacks=False), database=db, run_bootstrap=False)
    client = strict.test_client()
    for url in ("http://127.0.0.1:9/h", "http://169.254.169.254/latest", "http://[::1]/x", "http://10.0.0.1/",
                "http://localhost/x", "http://0.0.0.0/"):
        r = client.post("/payments", json=body(callback_url=url), headers=auth)
        assert_error(r, 400, "callback_url")
    assert count(db) == 0


def test_review_unique_amount_at_the_top_of_the_range_is_409_not_500(client, auth, db):
    top = "99999999999999.9999"
    assert client.post("/payments", json=body(order_id="a", expected_amount_usdt=top), headers=auth).status_code == 201
    r = client.post("/payments", json=body(order_id="b", expected_amount_usdt=top, unique_amount=True), headers=auth)
    assert r.status_code in (201, 409), (r.status_code, r.get_json())
    if r.status_code == 201:
        assert Decimal(r.get_json()["expected_amount_usdt"]) <= Decimal("99999999999999.999999")


def write_watcher_status(db, **values) -> None:
    import time

    from service_state import WATCHER_STATUS, write_state

    status = {"strategy": "account", "last_cycle_finished": time.time(), "last_cycle_seconds": 0.01,
              "seconds_behind": 0.0, "blocks_behind": None, "paused_until": None, "errors": 0, "last_error": None}
    status.update(values)
    with db.transaction() as s:
        write_state(s, WATCHER_STATUS, status)


def test_review_health_degraded_only_beyond_three_intervals(client, db, config):
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


def test_review_stats_count_failed_webhooks(client, auth, db):
    from models import EventState

    pid = client.post("/payments", json=body(), headers=auth).get_json()["id"]
    client.post(f"/payments/{pid}/cancel", headers=auth)
    with db.transaction() as s:
        s.scalars(select(WebhookEvent)).one().state = EventState.failed
    stats = client.get("/stats").get_json()
    assert stats["webhooks_failed"] == 1 and stats["webhooks_pending"] == 0
    assert client.get("/events", headers=auth).get_json()["events"][0]["state"] == "failed"
