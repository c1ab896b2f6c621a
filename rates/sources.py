"""The fiat rate sources, each as its provider documents its public API: one table each of what it asks (GET, from
the base URL in RATE_SOURCES) and how it reads the answer into quotes (units of the currency per 1 USDT, and when).
Adding a source is one more `Source` here and its name and base URL in infra.config.RATE_SOURCE_URLS.

Numbers are read exactly: a JSON number as a Decimal from its digits (never through a float), a string only when it
is a plain decimal. A quote that is not a positive, finite number of bounded size is no quote (`Reading.refused`);
an answer of another shape is an `AnswerError`: no quote from it at all."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from infra.currencies import ISO_4217

# What a stored rate holds (models.RATE: NUMERIC(30,12)): at most 18 integer digits; a rate below 10^-12 is none.
MAX_RATE = Decimal(10) ** 18
RATE_QUANTUM = Decimal("1e-12")
MAX_ANSWER_BYTES = 64 * 1024  # a source's answer (CoinGecko's for 20 currencies is under 1 KB)
_PLAIN_DECIMAL = re.compile(r"^[0-9]{1,30}(?:\.[0-9]{1,30})?$")


class AnswerError(ValueError):
    """An answer of another shape than the source documents: no quote from it."""


class QuoteError(ValueError):
    """One quote is not a positive, finite number of bounded size."""


@dataclass(frozen=True)
class Ask:
    """One request to a source: its path and query from the base URL, and the currencies its answer should quote."""

    path: str
    params: tuple[tuple[str, str], ...]
    currencies: tuple[str, ...]


@dataclass
class Reading:
    """What one answer says: a quote (rate, time) per currency, and the quotes refused, with why."""

    quotes: dict[str, tuple[Decimal, datetime]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Source:
    name: str
    docs: tuple[str, ...]  # the provider's documentation this adapter follows
    covers: frozenset[str]  # the ISO 4217 codes (upper case) the provider documents
    asks: Callable[[Sequence[str]], list[Ask]]  # the requests for these covered currencies
    read: Callable[[Any, Ask, datetime], Reading]  # an answer's JSON, the request, when it was fetched


def parse_json(content: bytes) -> Any:
    """An answer's JSON with every number as an exact Decimal; NaN and Infinity (not JSON) refused."""
    def refuse(constant: str) -> Any:
        raise AnswerError(f"the answer holds {constant}, which is not JSON")

    try:
        return json.loads(content.decode("utf-8"), parse_float=Decimal, parse_int=Decimal, parse_constant=refuse)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise AnswerError(f"the answer is not JSON ({type(exc).__name__})") from None


def positive_rate(value: Any) -> Decimal:
    """A quote as a rate: a JSON number read exactly (a Decimal from `parse_json`) or a plain decimal string (as
    Kraken writes prices); positive, finite, below 10^18, not below 10^-12; kept to 12 decimals."""
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise QuoteError(f"{value[:40]!r} is not a plain decimal")
        value = Decimal(value)
    if not isinstance(value, Decimal) or isinstance(value, bool):
        raise QuoteError(f"{type(value).__name__} is not a number")
    if not value.is_finite() or value <= 0:
        raise QuoteError(f"{value} is not a positive finite number")
    if value >= MAX_RATE:
        raise QuoteError(f"{value} is too large")
    try:
        rate = value.quantize(RATE_QUANTUM)
    except InvalidOperation:
        raise QuoteError(f"{value} cannot be read") from None
    if rate == 0:
        raise QuoteError(f"{value} is too small")
    return rate.normalize() if rate == rate.to_integral_value() else rate


# --- CoinGecko --------------------------------------------------------------------------------------------
# GET /api/v3/simple/price?ids=tether&vs_currencies=usd,eur,cny&include_last_updated_at=true
# -> {"tether": {"usd": 1.001, "eur": 0.921, "cny": 7.23, "last_updated_at": 1733550000}}
# https://docs.coingecko.com/v3.0.1/reference/simple-price (the public API's /simple/price),
# https://docs.coingecko.com/v3.0.1/reference/simple-supported-currencies (the vs_currencies it quotes).

# /simple/supported_vs_currencies, as CoinGecko's public API answered it (vendored: the list is what the provider
# documents; only its ISO 4217 codes can be prices here).
COINGECKO_VS_CURRENCIES = (
    "btc", "eth", "ltc", "bch", "bnb", "eos", "xrp", "xlm", "link", "dot", "yfi", "sol", "usd", "aed", "ars", "aud",
    "bdt", "bhd", "bmd", "brl", "cad", "chf", "clp", "cny", "czk", "dkk", "eur", "gbp", "gel", "hkd", "huf", "idr",
    "ils", "inr", "jpy", "krw", "kwd", "lkr", "mmk", "mxn", "myr", "ngn", "nok", "nzd", "php", "pkr", "pln", "rub",
    "sar", "sek", "sgd", "thb", "try", "twd", "uah", "vef", "vnd", "zar", "xdr", "xag", "xau", "bits", "sats",
)


def coingecko_asks(codes: Sequence[str]) -> list[Ask]:
    wanted = tuple(codes)
    return [Ask("/api/v3/simple/price", (("ids", "tether"), ("vs_currencies", ",".join(c.lower() for c in wanted)),
                                         ("include_last_updated_at", "true")), wanted)]


def coingecko_read(body: Any, ask: Ask, fetched_at: datetime) -> Reading:
    tether = body.get("tether") if isinstance(body, dict) else None
    if not isinstance(tether, dict):
        raise AnswerError("the answer has no object 'tether'")
    updated = tether.get("last_updated_at")
    if not isinstance(updated, Decimal) or not updated.is_finite() or updated != updated.to_integral_value() \
            or not 0 < updated < 10**11:
        raise AnswerError("tether.last_updated_at is not a Unix time in seconds")
    # A provider's clock ahead of ours does not make a quote younger than its fetch.
    quoted_at = min(datetime.fromtimestamp(int(updated), UTC), fetched_at)
    reading = Reading()
    for code in ask.currencies:
        if code.lower() not in tether:
            reading.refused.append(f"no tether.{code.lower()} in the answer")
            continue
        value = tether[code.lower()]
        if not isinstance(value, Decimal):  # documented as a JSON number; a string is another shape
            reading.refused.append(f"tether.{code.lower()}: {type(value).__name__} is not a JSON number")
            continue
        try:
            reading.quotes[code] = (positive_rate(value), quoted_at)
        except QuoteError as exc:
            reading.refused.append(f"tether.{code.lower()}: {exc}")
    return reading


# --- Kraken -----------------------------------------------------------------------------------------------
# GET /0/public/Ticker?pair=USDTEUR, one pair a request
# -> {"error": [], "result": {"USDTEUR": {"a": [...], "b": [...], "c": ["0.92150", "120.0"], ...}}}
# c[0] is the last trade's price; a non-empty `error` ("EQuery:Unknown asset pair") means no quote. The ticker has
# no time: a quote is as old as its fetch.
# https://docs.kraken.com/api/docs/rest-api/get-ticker-information

KRAKEN_FIATS = ("USD", "EUR", "GBP", "CAD", "AUD", "CHF", "JPY")  # the USDT pairs Kraken lists


def kraken_asks(codes: Sequence[str]) -> list[Ask]:
    return [Ask("/0/public/Ticker", (("pair", f"USDT{code}"),), (code,)) for code in codes]


def kraken_read(body: Any, ask: Ask, fetched_at: datetime) -> Reading:
    if not isinstance(body, dict) or not isinstance(body.get("error"), list):
        raise AnswerError("the answer has no list 'error'")
    reading = Reading()
    if body["error"]:
        reading.refused.append(f"{ask.currencies[0]}: {str(body['error'][0])[:120]}")
        return reading
    result = body.get("result")
    if not isinstance(result, dict) or len(result) != 1:
        raise AnswerError("the answer's 'result' is not an object with one pair")
    ticker = next(iter(result.values()))
    last = ticker.get("c") if isinstance(ticker, dict) else None
    if not isinstance(last, list) or not last:
        raise AnswerError("the pair has no last trade 'c'")
    if not isinstance(last[0], str):  # documented as a string
        reading.refused.append(f"{ask.currencies[0]} c[0]: {type(last[0]).__name__} is not a price string")
        return reading
    try:
        reading.quotes[ask.currencies[0]] = (positive_rate(last[0]), fetched_at)
    except QuoteError as exc:
        reading.refused.append(f"{ask.currencies[0]} c[0]: {exc}")
    return reading


# --- the sources by name ----------------------------------------------------------------------------------

def iso_codes(codes: Sequence[str]) -> frozenset[str]:
    """The ISO 4217 codes among a provider's list, upper case."""
    return frozenset(code.upper() for code in codes if code.upper() in ISO_4217)


SOURCES = {source.name: source for source in (
    Source("coingecko", ("https://docs.coingecko.com/v3.0.1/reference/simple-price",
                         "https://docs.coingecko.com/v3.0.1/reference/simple-supported-currencies"),
           iso_codes(COINGECKO_VS_CURRENCIES), coingecko_asks, coingecko_read),
    Source("kraken", ("https://docs.kraken.com/api/docs/rest-api/get-ticker-information",),
           iso_codes(KRAKEN_FIATS), kraken_asks, kraken_read),
)}
