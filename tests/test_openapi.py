"""/openapi.json documents exactly the routes the app serves."""
from __future__ import annotations

import re


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
    create_fields = set(spec["components"]["schemas"]["CreatePayment"]["properties"])
    import validation

    assert create_fields == validation.CREATE_FIELDS
