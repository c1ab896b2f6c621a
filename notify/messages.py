"""What a person reads on a phone: a title line and a short body, in NOTIFY_LANGUAGE, from the catalogues the
checkout page uses (`infra/locales.py`, keys `notify.<event type>` for the titles, `notify_*` for the lines).

A message is made from named facts only (order id, amounts, a shortened transaction hash, the payment's page, the
operator event's own few words): never from a webhook body, so no callback URL, key, secret or xpub can reach one.
"""
from __future__ import annotations

from typing import Any

from infra.locales import CATALOGUES, DEFAULT_LANGUAGE

TEST_MESSAGE = "test"
# The body's lines, in order: each shown when the facts it names are known.
LINES = (
    ("notify_order", ("order_id",)),
    ("notify_amounts", ("received", "expected")),
    ("notify_amount", ("amount",)),
    ("notify_transaction", ("tx",)),
)
# An event's own line of detail, after those.
DETAILS = {
    "transfer.unmatched": "notify_unmatched_detail",
    "webhook.failed": "notify_webhook_detail",
    "upstream.degraded": "notify_upstream_degraded_detail",
    "upstream.recovered": "notify_upstream_recovered_detail",
    "rate.unavailable": "notify_rate_detail",
    TEST_MESSAGE: "notify_test_detail",
}
MAX_FACT_CHARS = 200
MAX_BODY_CHARS = 1500


# The dashboard's page of one payment (web/admin/views.py serves it; its login returns there): a notification about a
# payment links to it, not to the payer's checkout page.
DASHBOARD_PAYMENT_PATH = "/admin/payments/{payment_id}"


def dashboard_link(public_base_url: str, payment_id: object) -> str:
    return public_base_url.rstrip("/") + DASHBOARD_PAYMENT_PATH.format(payment_id=payment_id)


class Facts(dict[str, str]):
    """The facts of a message; a placeholder with no fact reads as a dash, never as an error."""

    def __missing__(self, key: str) -> str:
        return "-"


def event_facts(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """What a notification of a webhook event may say, picked by name from the event's data (the payment, the
    transfer, or both): order id, amounts, the transaction, the payment's page. Nothing else of the data (its
    callback_url, its metadata) is read."""
    payment = data.get("payment") if "payment" in data else data if "order_id" in data else None
    transfer = data.get("transfer") if "transfer" in data else data if "order_id" not in data else None
    facts: dict[str, Any] = {}
    if payment:
        facts.update(order_id=payment.get("order_id"), expected=payment.get("expected_amount_usdt"),
                     received=payment.get("received_amount_usdt"), tx=short_hash(payment.get("transaction_hash")),
                     link=payment.get("checkout_url"))
        if event_type == "payment.detected":
            facts["amount"] = payment.get("unconfirmed_amount_usdt")
    if transfer:
        facts.update(amount=transfer.get("amount_usdt"), tx=short_hash(transfer.get("transaction_hash")),
                     to_address=transfer.get("to"), reason=transfer.get("reason"))
    return facts


def short_hash(tx: str | None) -> str | None:
    """A transaction hash as a person compares it: its first 8 and last 6 characters."""
    return None if not tx else tx if len(tx) <= 16 else f"{tx[:8]}…{tx[-6:]}"


def render(event_type: str, facts: dict[str, Any], language: str = DEFAULT_LANGUAGE) -> tuple[str, str]:
    """The title and body of a notification of `event_type`."""
    texts = CATALOGUES.get(language, CATALOGUES[DEFAULT_LANGUAGE])
    known = Facts({name: str(value)[:MAX_FACT_CHARS] for name, value in facts.items() if value not in (None, "")})
    if f"notify_reason.{known.get('reason')}" in texts:  # why a transfer is unmatched or a rate missing, in words
        known["reason"] = texts[f"notify_reason.{known['reason']}"]
    title = texts[f"notify.{event_type}"].format_map(known)
    lines = [texts[key].format_map(known) for key, needs in LINES
             if all(name in known for name in needs) and not covered(key, event_type)]
    if event_type in DETAILS:
        lines.append(texts[DETAILS[event_type]].format_map(known))
    if "link" in known:
        lines.append(texts["notify_link"].format_map(known))
    return title.replace("\n", " "), "\n".join(lines)[:MAX_BODY_CHARS]


def covered(key: str, event_type: str) -> bool:
    """The line says again what the title already says (an expiry's title names its order)."""
    return key == "notify_order" and event_type in ("payment.expired", "payment.cancelled")
