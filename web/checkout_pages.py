"""The payer's routes: the hosted checkout page `/pay/<token>`, the status it polls, and "I already paid".

Public, scoped by the checkout token (ledger/checkout.py); they show nothing of the payment but what the payer
needs. The page is server-rendered, self-contained (no outside resource; a strict Content-Security-Policy with a
nonce), works without JavaScript (it reloads itself, its form posts plainly), and speaks each language of
`web/locales/`. These are not API routes: the claim takes a browser's form as well as JSON (the API's JSON-only rule
is web/api.py's, for its own blueprint).
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import segno
from flask import Blueprint, Response, current_app, g, jsonify, render_template, request
from markupsafe import Markup

from chain.claims import (
    FOUND,
    ClaimResult,
    check_transaction,
    parse_tx_hash,
    request_read,
)
from infra.money import format_amount, format_rate
from ledger.checkout import PAY_PATH, find_by_token
from models import Payment
from tron_client import TronClient, make_client
from web import validation as v
from web.api import read_capped_body
from web.errors import ApiError
from web.pages import catalogue, language, new_nonce, page_headers
from web.services import services
from web.status_board import NOT_SEEN, Seen, seconds_left, seen_of, status_of

logger = logging.getLogger(__name__)

pages = Blueprint("checkout", __name__, template_folder="templates")


@pages.before_request
def start() -> None:
    new_nonce()


@pages.after_request
def security_headers(response: Response) -> Response:
    return page_headers(response, services().config.checkout_frame_ancestors)


def not_found_page() -> tuple[str, int]:
    return render_template("checkout_404.html", t=catalogue()), 404


def find(token: str) -> tuple[Payment | None, Seen]:
    """The payment of a checkout token, and what it has seen above the solid head."""
    with services().db.Session() as session:
        payment = find_by_token(session, token)
        if payment is None:
            return None, NOT_SEEN
        seen = seen_of(session, [payment.id])[payment.id]
        session.expunge(payment)
        return payment, seen


def qr_svg(address: str) -> Markup:
    return Markup(segno.make(address, error="m").svg_inline(scale=4, omitsize=True))


def countdown_text(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# How a price is written on the page: the symbol before it for the usual currencies, the code after it otherwise.
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "CNY": "¥", "JPY": "¥", "GBP": "£", "HKD": "HK$", "KRW": "₩", "INR": "₹",
                    "RUB": "₽", "TRY": "₺"}


def written_price(amount: Decimal, currency: str) -> str:
    """`¥720.00`, `720.50 CHF`: two decimals unless the price has more."""
    text = format(amount.quantize(Decimal("0.01")), "f") if amount == amount.quantize(Decimal("0.01")) \
        else format_amount(amount)
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def price_line(payment: Payment, t: dict[str, str]) -> str | None:
    """A payment priced in fiat: its price, its USDT amount and the rate locked at creation, in the page's language
    ("¥720.00 → 100 USDT, rate 7.2 CNY per USDT, locked 12:03 UTC"); None for one given in USDT."""
    if payment.price_amount is None or payment.price_currency is None:
        return None
    return t["price_line"].format(price=written_price(payment.price_amount, payment.price_currency),
                                  amount=format_amount(payment.expected_amount_usdt),
                                  rate=format_rate(payment.rate), currency=payment.price_currency,
                                  time=payment.created_at.astimezone(UTC).strftime("%H:%M"))


def render_page(token: str, payment: Payment, status: dict[str, Any], *, claim_message: str | None = None,
                claim_hash: str | None = None) -> str:
    config = services().config
    simulate = services().simulate_path  # plugged in by the sandbox network: the page's "simulate payment"
    left = seconds_left(payment.expires_at, datetime.now(UTC))
    t = catalogue()
    return render_template(
        "checkout.html", t=t, lang=language(), price_line=price_line(payment, t), nonce=g.nonce,
        merchant_name=config.merchant_name,
        order_id=payment.order_id, wallet=payment.wallet_address, qr_svg=qr_svg(payment.wallet_address),
        status=status, seconds_left=left, countdown_text=countdown_text(left), return_url=payment.return_url,
        refresh=status["status"] != "completed" and not status["paid_late"], sandbox=simulate is not None,
        refresh_seconds=5 if status["confirmations"] is not None else 15,
        status_url=f"{PAY_PATH}{token}/status", claim_url=f"{PAY_PATH}{token}/claim",
        simulate_url=simulate(token) if simulate is not None else None, claim_message=claim_message,
        claim_hash=claim_hash)


@pages.get("/pay/<token>")
def page(token: str) -> Any:
    payment, seen = find(token)
    if payment is None:
        return not_found_page()
    status = services().status_board.remember(token, payment, seen)
    return render_page(token, payment, status)


@pages.get("/pay/<token>/status")
def status(token: str) -> Any:
    board = services().status_board
    answer = board.get(services().db.Session, token)
    if answer is None:
        payment, seen = find(token)
        if payment is None:
            raise ApiError("not_found", "No checkout page has this address.", status=404)
        answer = board.remember(token, payment, seen)
    return jsonify(answer)


# --- "I already paid" ------------------------------------------------------------------------------

def claim_fields() -> tuple[Any, bool]:
    """(the transaction hash as sent, whether a browser form sent it): a JSON object or a urlencoded form."""
    raw = read_capped_body(current_app.config["MAX_CONTENT_LENGTH"])
    content_type = request.headers.get("Content-Type")
    if v.is_json_media_type(content_type):
        body = v.require_object(v.parse_json_body(raw))
        unknown = sorted(set(body) - {"transaction_hash"})
        if unknown:
            raise ApiError("unknown_field", f"Unknown field {unknown[0][:40]!r}: send transaction_hash only.",
                           unknown[0][:128])
        return body.get("transaction_hash"), False
    if (content_type or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(raw.decode("utf-8"), max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            raise ApiError("invalid_form", "The form could not be read.") from None
        return (form.get("transaction_hash") or [None])[0], True
    raise ApiError("unsupported_media_type", "Send transaction_hash as JSON or as a form.", status=415)


def claim_client() -> TronClient:
    """The TRON client claims use: the in-process watcher's upstreams when it runs here, so claims and the watcher
    share one request budget (TRONGRID_MAX_RPS); else one of their own."""
    shared = services()
    if shared.chain_client is None:
        shared.chain_client = make_client(shared.config)
    return shared.chain_client


def claim_message(result: ClaimResult) -> str:
    return catalogue()[f"claim_{result.outcome}"].replace("{amount}", result.amount_usdt or "")


def answer_claim(token: str, payment: Payment, tx_hash: str) -> ClaimResult:
    result = check_transaction(claim_client(), payment, tx_hash, services().claim_turns)
    logger.info("claim on payment %s: transaction %s is %s", payment.id, tx_hash, result.outcome,
                extra={"tx": tx_hash})
    if result.outcome == FOUND and result.block_timestamp is not None:
        with services().db.transaction() as session:
            request_read(session, payment.wallet_address, tx_hash, result.block_timestamp)
        services().status_board.forget(token)
        services().wake_watcher()
    return result


@pages.post("/pay/<token>/claim")
def claim(token: str) -> Any:
    value, from_form = claim_fields()
    payment, seen = find(token)
    if payment is None:
        if from_form:
            return not_found_page()
        raise ApiError("not_found", "No checkout page has this address.", status=404)
    code, message, tx_hash, result = 200, None, parse_tx_hash(value), None
    wait = services().claim_limiter.allow(token)
    if wait is None:  # behind nginx, the address nginx saw (app.ProxiedClientAddress)
        wait = services().address_limiter.allow(request.remote_addr or "")
    if wait is not None:
        code, message = 429, catalogue()["claim_rate_limited"]
    elif tx_hash is None:
        code, message = 400, catalogue()["claim_invalid"]
    else:
        result = answer_claim(token, payment, tx_hash)
        message = claim_message(result)
    if from_form:
        page_status = status_of(payment, seen)
        response = Response(render_page(token, payment, page_status, claim_message=message,
                                        claim_hash=value if isinstance(value, str) else None), code)
    elif result is None:
        error = "rate_limited" if code == 429 else "invalid_transaction_hash"
        response = jsonify({"error": error, "message": message, **({"field": "transaction_hash"} if code == 400
                                                                   else {})})
        response.status_code = code
    else:
        response = jsonify({**result.to_dict(), "message": message})
    if wait is not None:
        response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    return response
