"""A client generated from /openapi.json by a tool none of us wrote (openapi-python-client) runs the README's quick
start against the service: create, replay, read, list every page, cancel, read the events to the end. Its models
parse every answer, so the document and the answers cannot drift apart unnoticed."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import HOOK, TEST_API_KEY, WALLET

BIN = Path(sys.executable).parent


@pytest.fixture
def generated(live_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The Python client openapi-python-client generates from the running service's document, imported."""
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(requests.get(f"{live_url}/openapi.json", timeout=10).json()))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff, to format
    done = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--path", str(document), "--meta", "none",
                           "--output-path", str(tmp_path / "tum_client")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr  # every schema understood
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module("tum_client"), live_url
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "tum_client" or m.startswith("tum_client.")]:
            del sys.modules[name]


def test_the_quick_start_through_a_generated_client(generated) -> None:  # type: ignore[no-untyped-def]
    from tum_client.api.events import list_events
    from tum_client.api.operator import get_health, get_stats
    from tum_client.api.payments import cancel_payment, create_payment, get_payment, list_payments
    from tum_client.models import CreatePayment, CreatePaymentMetadata, Payment, PaymentStatus

    module, base = generated
    client = module.AuthenticatedClient(base_url=base, token=TEST_API_KEY, raise_on_unexpected_status=True)

    body = CreatePayment(wallet_address=WALLET, expected_amount_usdt="25", order_id="order-1001", callback_url=HOOK,
                         expires_in_seconds=3600, metadata=CreatePaymentMetadata.from_dict({"customer": "42"}),
                         unique_amount=True)
    created = create_payment.sync_detailed(client=client, body=body)
    assert created.status_code == 201 and isinstance(created.parsed, Payment)
    payment = created.parsed
    assert payment.expected_amount_usdt == "25" and payment.status == PaymentStatus.PENDING
    assert payment.failure_reason is None and payment.completed_at is None and payment.transfers_count == 0
    replayed = create_payment.sync_detailed(client=client, body=body)
    assert replayed.status_code == 200 and replayed.parsed.id == payment.id

    read = get_payment.sync(client=client, payment_id=payment.id)
    assert read.order_id == "order-1001" and read.metadata.additional_properties == {"customer": "42"}

    for n in range(4):
        create_payment.sync(client=client, body=CreatePayment(
            wallet_address=WALLET, expected_amount_usdt=f"{n + 1}", order_id=f"more-{n}", callback_url=HOOK))
    seen, cursor, pages = [], None, 0
    while True:  # a generic paginator: until next_cursor is null
        page = list_payments.sync(client=client, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [p.order_id for p in page.payments]
        pages += 1
        cursor = page.next_cursor
        if not cursor:
            break
    assert pages == 3 and sorted(seen) == sorted(["order-1001", *(f"more-{n}" for n in range(4))])

    cancelled = cancel_payment.sync(client=client, payment_id=payment.id)
    assert cancelled.status == PaymentStatus.FAILED and cancelled.failure_reason.value == "cancelled"

    events, after, rounds = [], None, 0
    while rounds < 10:  # events to the end: next_cursor null on the last page
        page = list_events.sync(client=client, limit=1, **({"after": after} if after else {}))
        events += page.events
        rounds += 1
        after = page.next_cursor
        if not after:
            break
    assert [e.type_.value for e in events] == ["payment.cancelled"] and page.resume_cursor
    assert isinstance(events[0].data, Payment) and events[0].data.status == PaymentStatus.FAILED

    assert get_health.sync(client=client).status.value in ("healthy", "degraded")
    assert get_stats.sync(client=client).total_payments == 5


def test_every_operation_has_an_id_a_tag_and_named_schemas(client) -> None:  # type: ignore[no-untyped-def]
    doc = client.get("/openapi.json").get_json()
    ids = [op["operationId"] for methods in doc["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)) and all(op_id[0].islower() for op_id in ids)
    assert all(op.get("tags") for methods in doc["paths"].values() for op in methods.values())
    assert doc["servers"] == [{"url": "http://127.0.0.1:5000"}]
    # every JSON answer is a named schema (or an array of one): a generated client names its types after them
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                assert schema is None or "$ref" in schema, (method, path, status, schema)
    schemas = doc["components"]["schemas"]
    never_null = {"Payment": ["created_at", "expires_at"], "Event": ["created_at"], "Health": ["timestamp"],
                  "Transfer": ["block_timestamp"]}
    for name, fields in never_null.items():
        for field in fields:
            assert "null" not in json.dumps(schemas[name]["properties"][field]), (name, field)
    assert schemas["Payment"]["properties"]["failure_reason"] == {
        "anyOf": [{"$ref": "#/components/schemas/FailureReason"}, {"type": "null"}]}
