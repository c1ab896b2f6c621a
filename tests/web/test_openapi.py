"""/openapi.json documents exactly the routes the app serves."""
from __future__ import annotations

import re
import time

from tests.conftest import assert_error, payment_body
from web.errors import ApiError


def flask_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((path, method.lower()))
    return routes


def test_openapi_lists_every_route_and_only_those(app, client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert documented == flask_routes(app)


def test_openapi_refs_resolve_and_payment_schema_matches_responses(client, auth):
    spec = client.get("/openapi.json").get_json()
    text = str(spec)
    for name in re.findall(r"#/components/schemas/(\w+)", text):
        assert name in spec["components"]["schemas"]
    created = client.post("/payments", headers=auth, json={
        "wallet_address": "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx", "expected_amount_usdt": "1",
        "order_id": "spec", "callback_url": "http://127.0.0.1:9/h"}).get_json()
    assert set(created) == set(spec["components"]["schemas"]["Payment"]["properties"])
    stats = client.get("/stats").get_json()
    assert set(stats) == set(spec["components"]["schemas"]["Stats"]["properties"])
    health = client.get("/health").get_json()
    assert set(health) == set(spec["components"]["schemas"]["Health"]["properties"])


def test_every_documented_create_field_is_accepted_and_no_other(client, auth) -> None:
    """Each optional field of CreatePayment, sent with a valid value, is taken; a field it does not list is a 400."""
    spec = client.get("/openapi.json").get_json()
    create = spec["components"]["schemas"]["CreatePayment"]
    assert set(create["required"]) == {"wallet_address", "order_id", "callback_url"}
    # the amount: in USDT, or a price in fiat (tests/rates/test_pricing.py), exactly one of the two ways
    body = spec["paths"]["/payments"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [way["required"] for way in body["oneOf"]] == [["expected_amount_usdt"], ["price_amount", "price_currency"]]
    valid = {"expires_in_seconds": 600, "metadata": {"a": 1}, "unique_amount": True,
             "return_url": "https://shop.example/thanks", "underpayment_tolerance_usdt": "0.5"}
    assert set(create["properties"]) == set(create["required"]) | set(valid) | {
        "expected_amount_usdt", "price_amount", "price_currency"}
    for n, (name, value) in enumerate(valid.items()):
        body = payment_body(order_id=f"field-{n}", expected_amount_usdt=str(n + 1), **{name: value})
        r = client.post("/payments", headers=auth, json=body)
        assert r.status_code == 201, (name, r.get_json())
    assert assert_error(client.post("/payments", headers=auth, json=payment_body(order_id="x", nope=1)), 400,
                        "nope")["error"] == "unknown_field"


def schema_pattern(spec: dict, *path: str) -> re.Pattern[str]:
    node = spec
    for key in path:
        node = node[key]
    pattern = node["pattern"]
    assert pattern.startswith("^") and pattern.endswith("$")
    return re.compile(pattern[1:-1])  # used with fullmatch: "$" never admits a trailing newline


def accepts(check, sample: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether the API's own check takes `sample`."""
    try:
        check(sample)
    except ApiError:
        return False
    return True


AMOUNT_SAMPLES = ["1", "0.5", "10.50", "0.000001", "99999999999999.999999", "100000000000000", "0", "0.0", "00.5",
                  "01", " 1", "1 ", "1\n", "\u00a01", "1.0000001", "1e3", "-1", "+1", ".5", "5.", "\u0661", "0.000000",
                  "1.000000", "0.100000", "007.100"]


def test_the_amount_pattern_is_exactly_what_the_api_accepts(client) -> None:
    from web import validation

    spec = client.get("/openapi.json").get_json()
    string_form = spec["components"]["schemas"]["CreatePayment"]["properties"]["expected_amount_usdt"]["oneOf"][0]
    pattern = schema_pattern(string_form)
    for sample in AMOUNT_SAMPLES:
        accepted = accepts(validation.amount, sample)
        assert bool(pattern.fullmatch(sample)) == accepted, sample


def test_order_id_and_callback_patterns_admit_everything_the_api_accepts(client) -> None:
    from web import validation

    spec = client.get("/openapi.json").get_json()
    properties = spec["components"]["schemas"]["CreatePayment"]["properties"]
    order_pattern = schema_pattern(properties["order_id"])
    for sample in ["a", "order-1", "a b", "Ünïcode ✓", " a", "a ", "   ", "a\tb", "\u200b", "x" * 128]:
        accepted = accepts(validation.order_id, sample)
        if accepted:  # printable-ness is stated in words; the pattern admits every accepted id
            assert order_pattern.fullmatch(sample), sample
        if sample.isprintable():
            assert bool(order_pattern.fullmatch(sample)) == accepted, sample
    url_pattern = schema_pattern(properties["callback_url"])
    for sample in ["http://a.example/x", "HTTPS://a.example:8443/x?y=1#z", "http://[::1]:8080/", "ftp://a.example/",
                   "http://u@a.example/", "http://a.example\\x", "http://a.example/ x", "http:///x", "http://a.example/\x7f"]:
        accepted = accepts(validation.callback_url, sample)
        assert bool(url_pattern.fullmatch(sample)) == accepted, sample


def test_every_merchant_route_documents_its_error_answers(client) -> None:
    spec = client.get("/openapi.json").get_json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "security" in operation:
                assert {"400", "401", "503"} <= set(operation["responses"]), (method, path)
            if "requestBody" in operation:
                assert {"413", "415"} <= set(operation["responses"]), (method, path)


def test_every_kind_of_event_keeps_to_the_event_schema(client, auth, db):
    """A payment's event, both account-level events and a test webhook, as /events lists them."""
    import uuid

    import jsonschema_rs

    from ledger.matching import assign_transfer, credit_transfer
    from ledger.records import TransferLog

    spec = client.get("/openapi.json").get_json()
    a = client.post("/payments", headers=auth, json=payment_body(order_id="a", expected_amount_usdt="10")).get_json()
    client.post("/payments", headers=auth, json=payment_body(order_id="b", expected_amount_usdt="20"))
    short = TransferLog("ab" * 32, 0, "TVKG4gUar24bpAVrDv4GSzyDRtPkjPkogL", a["wallet_address"], 7_000_000, 1,
                        int(time.time() * 1000) + 1000)
    with db.transaction() as s:
        assert credit_transfer(s, short, 86400).result == "unmatched"
    with db.transaction() as s:
        assign_transfer(s, short.transaction_hash, 0, uuid.UUID(a["id"]), 86400)
    assert client.post("/webhooks/test", headers=auth, json={"url": "http://127.0.0.1:9/t"}).status_code == 202
    events = client.get("/events", headers=auth).get_json()["events"]
    assert [e["type"] for e in events] == ["transfer.unmatched", "payment.partial", "transfer.assigned",
                                           "webhook.test"]
    validator = jsonschema_rs.Draft202012Validator({**spec, "$ref": "#/components/schemas/Event"})
    for event in events:
        errors = [str(error) for error in validator.iter_errors(event)]
        assert errors == [], (event["type"], errors)
    assert not validator.is_valid({**events[0], "data": {"open_payments": []}})  # the schema does hold data to it
