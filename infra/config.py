"""Configuration, read from the environment (and `.env`) once, validated in one place."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
import sys
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from urllib.parse import urlparse

from dotenv import load_dotenv

from infra.addresses import is_valid_address
from infra.currencies import is_iso_4217
from infra.locales import CATALOGUES, DEFAULT_LANGUAGE
from infra.logging_setup import LOG_FORMATS, configure_logging
from infra.money import MICRO, AmountError, parse_amount
from infra.notify_targets import (
    DEFAULT_NOTIFY_EVENTS,
    NotifySettingError,
    NotifyTarget,
    parse_notify_events,
    parse_notify_urls,
)
from infra.urls import CallbackUrlError, split_callback_url
from infra.xpub import DepositKey, XpubError

logger = logging.getLogger(__name__)

NETWORKS: dict[str, tuple[str, str]] = {
    "mainnet": ("https://api.trongrid.io", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"),
    "nile": ("https://nile.trongrid.io", "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf"),
    "shasta": ("https://api.shasta.trongrid.io", "TG3XXyExBkPp9nzdajDZsozEu4BkaSJozs"),
}
SANDBOX = "sandbox"  # the simulated chain run inside the service (sandbox/chain.py): no chain, no money
SANDBOX_USDT = NETWORKS["mainnet"][1]  # the sandbox chain's USDT token sits at mainnet's address
STRATEGIES = ("account", "blocks", "auto")
DEFAULT_RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
# Seconds between the attempts of one operator notification: a person wants it soon or not at all, so the schedule
# ends after about a day (a webhook's goes on for three).
DEFAULT_NOTIFY_SCHEDULE = (10, 60, 300, 1800, 7200, 21600, 43200)
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# The fiat rate sources RATE_SOURCES may name, with their public APIs' base URLs (rates/sources.py reads them).
RATE_SOURCE_URLS = {
    "coingecko": "https://api.coingecko.com",
    "kraken": "https://api.kraken.com",
}
# TRON_NETWORK=sandbox with neither FIXED_RATES nor RATE_SOURCES set: these, and no source is asked.
SANDBOX_FIXED_RATES = (("USD", Decimal(1)), ("EUR", Decimal("0.92")), ("CNY", Decimal("7.2")))
MAX_RATE_CURRENCIES = 20  # the most currencies the rate sources are asked for
# A CSP host source with a scheme: https://shop.example, https://*.shop.example, http://localhost:8080.
FRAME_SOURCE = re.compile(r"^https?://(?:\*\.)?[A-Za-z0-9.-]+(?::[0-9]{1,5})?$")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the variable."""


# The webhook signing secret's format, read here (the gunicorn master checks the settings without loading
# delivery.signing, SQLAlchemy and the app) and by delivery.signing.
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24


class SecretError(ValueError):
    """A webhook secret is malformed."""


def parse_secret(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError("must start with 'whsec_' followed by base64")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("must be 'whsec_' followed by valid base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise SecretError(f"must hold at least {MIN_SECRET_BYTES} bytes of key")
    return key


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 5000
    database_url: str | None = None
    tron_network: str = "mainnet"
    trongrid_api_url: str = NETWORKS["mainnet"][0]
    usdt_contract: str = NETWORKS["mainnet"][1]
    trongrid_api_key: str | None = None
    trongrid_max_rps: float = 10.0
    trongrid_timeout_seconds: float = 15.0
    tron_block_seconds: float = 3.0
    upstream_clock_skew_seconds: float = 30.0
    reconcile_interval_seconds: float = 300.0
    watcher_strategy: str = "auto"
    polling_interval_seconds: float = 3.0
    detect_unconfirmed: bool = True  # also read the blocks above the solid head (payment.detected)
    trongrid_daily_quota: int | None = None  # requests a day per upstream; None: 100,000 on TronGrid's hosts, else none
    payment_ttl_seconds: int = 3600
    late_payment_window_seconds: int = 86400
    webhook_secret: str | None = None
    webhook_retry_schedule: tuple[int, ...] = DEFAULT_RETRY_SCHEDULE
    webhook_timeout_seconds: float = 10.0
    api_keys: tuple[str, ...] = ()
    watcher_enabled: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    allow_private_callbacks: bool = False
    sandbox_block_seconds: float = 3.0
    sandbox_solidify_blocks: int = 2
    metrics_token: str | None = None  # Bearer token GET /metrics needs when set
    watcher_metrics_port: int | None = None  # where a standalone `python watcher.py` serves /metrics; None: off
    public_base_url: str = "http://127.0.0.1:5000"  # default: http://HOST:PORT
    merchant_name: str | None = None
    checkout_frame_ancestors: tuple[str, ...] = ()  # CSP frame-ancestors sources of the checkout page; () = none
    merchant_webhook_url: str | None = None
    underpayment_tolerance_usdt: Decimal = Decimal(0)
    unique_amount_max_steps: int = 100  # how many steps of 0.0001 USDT unique_amount may add before a 409
    # Prices in fiat (rates/): the sources (name, base URL), the fixed rates (code, units per 1 USDT), ...
    rate_sources: tuple[tuple[str, str], ...] = tuple(RATE_SOURCE_URLS.items())
    fixed_rates: tuple[tuple[str, Decimal], ...] = ()
    rate_refresh_seconds: float = 60.0
    rate_max_age_seconds: float = 300.0
    rate_max_deviation_percent: Decimal = Decimal(2)
    rate_markup_percent: Decimal = Decimal(0)
    price_rounding_usdt: Decimal = Decimal("0.01")
    # DEPOSIT_XPUB, read: the account key deposit addresses are derived from (its repr never shows the key); None: off
    deposit_key: DepositKey | None = None
    # Operator notifications (notify/): NOTIFY_URLS read (each target's repr is its scheme only), NOTIFY_EVENTS,
    # NOTIFY_LANGUAGE
    notify_targets: tuple[NotifyTarget, ...] = ()
    notify_events: frozenset[str] = frozenset(DEFAULT_NOTIFY_EVENTS)
    notify_language: str = DEFAULT_LANGUAGE
    # Internal knobs (not part of the public contract), handy for tests.
    webhook_workers: int = 4
    api_key_cache_seconds: float = 2.0  # how long an accepted API key is remembered per process
    # How long a listing record, receipt or block may stay unreadable before it is set aside (contract §4): TronGrid's
    # nodes answer a solidified block within seconds; two minutes is forty blocks, far past any lag of its pool, and
    # short enough that a payment waiting on it expires at most that late.
    unreadable_wait_seconds: float = 120.0
    rate_timeout_seconds: float = 10.0  # total deadline of one call to a rate source
    notify_retry_schedule: tuple[int, ...] = DEFAULT_NOTIFY_SCHEDULE
    notify_timeout_seconds: float = 30.0  # total deadline of one notification attempt (its child process included)
    notify_workers: int = 2  # notifications sent at once per process, at most one per target

    @property
    def upstream_urls(self) -> tuple[str, ...]:
        """The upstreams of TRONGRID_API_URL, in order of preference (comma-separated)."""
        return tuple(part.strip().rstrip("/") for part in self.trongrid_api_url.split(",") if part.strip())

    @property
    def is_sandbox(self) -> bool:
        return self.tron_network == SANDBOX

    @property
    def chain_key(self) -> str:
        """What cursors are recorded with: a change of network or token contract never reuses them."""
        return f"{self.tron_network}:{self.usdt_contract}"

    def with_overrides(self, **changes: object) -> Config:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
        return replace(self, **changes)  # type: ignore[arg-type]


def _get(env: dict[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _number(env: dict[str, str], name: str, default: float, *, minimum: float, integer: bool) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _port(env: dict[str, str], name: str = "PORT", default: int = 5000) -> int:
    port = int(_number(env, name, default, minimum=1, integer=True))
    if port > 65535:
        raise ConfigError(f"{name} must be from 1 to 65535, got {port}")
    return port


def _optional_port(env: dict[str, str], name: str) -> int | None:
    return None if _get(env, name) is None else _port(env, name)


def _ttl(env: dict[str, str]) -> int:
    ttl = int(_number(env, "PAYMENT_TTL_SECONDS", 3600, minimum=60, integer=True))
    if ttl > 2_592_000:  # the longest expires_in_seconds a request may ask for
        raise ConfigError(f"PAYMENT_TTL_SECONDS must be from 60 to 2592000, got {ttl}")
    return ttl


def _daily_quota(env: dict[str, str]) -> int | None:
    """TRONGRID_DAILY_QUOTA: requests a day per upstream (unset: 100,000 on TronGrid's hosts, none elsewhere)."""
    raw = _get(env, "TRONGRID_DAILY_QUOTA")
    return None if raw is None else int(_number(env, "TRONGRID_DAILY_QUOTA", 0, minimum=1000, integer=True))


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw)
    try:
        host = parsed.hostname
        parsed.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        host = None
    if parsed.scheme not in schemes or not host:
        raise ConfigError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, got {raw!r}")
    return raw.rstrip("/")


def _urls(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    """One URL or several comma-separated ones, each checked like `_url`; no duplicates."""
    urls = [_url(name, part.strip(), schemes) for part in raw.split(",") if part.strip()]
    if not urls:
        raise ConfigError(f"{name} must hold at least one URL, got {raw!r}")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{name} lists the same URL twice: {raw!r}")
    return ",".join(urls)


def _upstreams(env: dict[str, str], network: str) -> str:
    """TRONGRID_API_URL, or the network's TronGrid; none on the sandbox, whose chain each process serves itself on a
    loopback port it learns only when it starts (sandbox/node.py)."""
    raw = _get(env, "TRONGRID_API_URL")
    if network == SANDBOX:
        if raw is not None:
            raise ConfigError("TRONGRID_API_URL must be unset with TRON_NETWORK=sandbox: the sandbox serves its own "
                              "chain")
        return ""
    return _urls("TRONGRID_API_URL", raw or NETWORKS[network][0], ("http", "https"))


def _tolerance(env: dict[str, str]) -> Decimal:
    """UNDERPAYMENT_TOLERANCE_USDT: an amount as a request writes one, or 0."""
    raw = _get(env, "UNDERPAYMENT_TOLERANCE_USDT")
    if raw is None:
        return Decimal(0)
    try:
        return parse_amount(raw, zero_allowed=True)
    except AmountError as exc:
        raise ConfigError(f"UNDERPAYMENT_TOLERANCE_USDT {exc}, got {raw!r}") from None


def _max_steps(env: dict[str, str]) -> int:
    """UNIQUE_AMOUNT_MAX_STEPS: 1 to 10,000 (the amounts a create reads under the wallet's lock grow with it)."""
    steps = int(_number(env, "UNIQUE_AMOUNT_MAX_STEPS", 100, minimum=1, integer=True))
    if steps > 10_000:
        raise ConfigError(f"UNIQUE_AMOUNT_MAX_STEPS must be at most 10000, got {steps}")
    return steps


def _merchant_webhook_url(env: dict[str, str]) -> str | None:
    """Read as a callback URL is (same parser as the sender); where it points is checked at each delivery."""
    raw = _get(env, "MERCHANT_WEBHOOK_URL")
    if raw is None:
        return None
    try:
        split_callback_url(raw)
    except CallbackUrlError as exc:
        raise ConfigError(f"MERCHANT_WEBHOOK_URL {exc}, got {raw!r}") from None
    return raw


def _schedule(env: dict[str, str]) -> tuple[int, ...]:
    raw = _get(env, "WEBHOOK_RETRY_SCHEDULE")
    if raw is None:
        return DEFAULT_RETRY_SCHEDULE
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"WEBHOOK_RETRY_SCHEDULE must be comma-separated whole seconds, got {raw!r}") from None
    if any(v < 0 for v in values):
        raise ConfigError(f"WEBHOOK_RETRY_SCHEDULE must not contain negative delays, got {raw!r}")
    return values


def _frame_ancestors(env: dict[str, str]) -> tuple[str, ...]:
    """CHECKOUT_FRAME_ANCESTORS: space- or comma-separated CSP sources ('self', https://shop.example, ...)."""
    raw = _get(env, "CHECKOUT_FRAME_ANCESTORS")
    if raw is None:
        return ()
    sources = tuple(part for part in raw.replace(",", " ").split() if part)
    for source in sources:
        if source != "'self'" and not FRAME_SOURCE.match(source):
            raise ConfigError(f"CHECKOUT_FRAME_ANCESTORS must list 'self' or http(s) origins such as "
                              f"https://shop.example, got {source!r}")
    return sources


def _merchant_name(env: dict[str, str]) -> str | None:
    name = _get(env, "MERCHANT_NAME")
    if name is not None and (len(name) > 100 or not name.isprintable()):
        raise ConfigError(f"MERCHANT_NAME must be at most 100 printable characters, got {name[:40]!r}")
    return name


def _decimal(env: dict[str, str], name: str, default: Decimal, *, above: Decimal | None = None,
             at_least: Decimal | None = None, at_most: Decimal | None = None) -> Decimal:
    """A plain decimal setting (a sign allowed, no exponent), read exactly."""
    raw = _get(env, name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]+(?:\.[0-9]+)?", raw) or len(raw) > 30:
        raise ConfigError(f"{name} must be a plain decimal number such as 2 or 0.5, got {raw!r}")
    value = Decimal(raw)
    bounds = [f"greater than {above}" if above is not None else "", f"at least {at_least}" if at_least is not None
              else "", f"at most {at_most}" if at_most is not None else ""]
    if ((above is not None and value <= above) or (at_least is not None and value < at_least)
            or (at_most is not None and value > at_most)):
        raise ConfigError(f"{name} must be {' and '.join(b for b in bounds if b)}, got {raw!r}")
    return value


def _rate_sources(env: dict[str, str], network: str) -> tuple[tuple[str, str], ...]:
    """RATE_SOURCES: `name` or `name=base_url`, comma-separated; `none` turns live rates off. Unset on the sandbox:
    none (no call leaves the sandbox unless asked for; its fixed rates stand in)."""
    raw = _get(env, "RATE_SOURCES")
    if raw is None:
        return () if network == SANDBOX else tuple(RATE_SOURCE_URLS.items())
    if raw.lower() == "none":
        return ()
    sources: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        name, _, url = part.partition("=")
        name = name.strip().lower()
        if name not in RATE_SOURCE_URLS:
            raise ConfigError(f"RATE_SOURCES names unknown source {name!r}: use {', '.join(RATE_SOURCE_URLS)} "
                              f"(each optionally =base_url) or none")
        if name in sources:
            raise ConfigError(f"RATE_SOURCES names {name!r} twice")
        sources[name] = _url("RATE_SOURCES", url.strip(), ("http", "https")) if url.strip() else RATE_SOURCE_URLS[name]
    return tuple(sources.items())


def _fixed_rates(env: dict[str, str], network: str) -> tuple[tuple[str, Decimal], ...]:
    """FIXED_RATES: `CNY=7.10,EUR=0.92`, units of the currency per 1 USDT. Unset on the sandbox with no
    RATE_SOURCES either: USD 1, EUR 0.92, CNY 7.2."""
    raw = _get(env, "FIXED_RATES")
    if raw is None:
        return SANDBOX_FIXED_RATES if network == SANDBOX and _get(env, "RATE_SOURCES") is None else ()
    rates: dict[str, Decimal] = {}
    for part in (p.strip() for p in raw.split(",")):
        code, _, value = (x.strip() for x in part.partition("="))
        if not is_iso_4217(code):
            raise ConfigError(f"FIXED_RATES must be CODE=rate pairs with ISO 4217 codes (CNY=7.10,EUR=0.92), "
                              f"got {part!r}")
        if code.upper() in rates:
            raise ConfigError(f"FIXED_RATES names {code.upper()} twice")
        if not re.fullmatch(r"[0-9]{1,12}(?:\.[0-9]{1,12})?", value) or Decimal(value) == 0:
            raise ConfigError(f"FIXED_RATES rate of {code.upper()} must be a positive plain decimal (at most 12 "
                              f"digits either side of the point), got {value!r}")
        rates[code.upper()] = Decimal(value)
    if len(rates) > MAX_RATE_CURRENCIES:
        raise ConfigError(f"FIXED_RATES may name at most {MAX_RATE_CURRENCIES} currencies")
    return tuple(rates.items())


def _rounding(env: dict[str, str]) -> Decimal:
    """PRICE_ROUNDING_USDT: 0.000001 to 1, a whole number of micro-USDT."""
    value = _decimal(env, "PRICE_ROUNDING_USDT", Decimal("0.01"), at_least=Decimal("0.000001"), at_most=Decimal(1))
    if value * MICRO != (value * MICRO).to_integral_value():
        raise ConfigError(f"PRICE_ROUNDING_USDT must have at most 6 decimals, got {value}")
    return value


def _deposit_key(env: dict[str, str]) -> DepositKey | None:
    """DEPOSIT_XPUB: an account-level xpub, or unset. The message says what is wrong, never the key itself."""
    raw = _get(env, "DEPOSIT_XPUB")
    if raw is None:
        return None
    try:
        return DepositKey(raw)
    except XpubError as exc:
        raise ConfigError(f"DEPOSIT_XPUB {exc}") from None


def _notify_targets(env: dict[str, str]) -> tuple[NotifyTarget, ...]:
    """NOTIFY_URLS: Apprise URLs. A bad entry is named by its number and scheme, never its text (it holds a token)."""
    raw = _get(env, "NOTIFY_URLS")
    if raw is None:
        return ()
    try:
        return parse_notify_urls(raw)
    except NotifySettingError as exc:
        raise ConfigError(f"NOTIFY_URLS {exc}") from None


def _notify_events(env: dict[str, str]) -> frozenset[str]:
    raw = _get(env, "NOTIFY_EVENTS")
    if raw is None:
        return frozenset(DEFAULT_NOTIFY_EVENTS)
    try:
        return parse_notify_events(raw)
    except NotifySettingError as exc:
        raise ConfigError(f"NOTIFY_EVENTS {exc}") from None


def _notify_language(env: dict[str, str]) -> str:
    language = (_get(env, "NOTIFY_LANGUAGE") or DEFAULT_LANGUAGE).lower()
    if language not in CATALOGUES:
        raise ConfigError(f"NOTIFY_LANGUAGE must be one of {', '.join(CATALOGUES)}, got {language!r}")
    return language


def load_config(env: dict[str, str] | None = None, **overrides: str) -> Config:
    """Build the configuration from `env` (default: the process environment after `.env`), with `overrides` (a
    command line's, as `db_manager.py --database-url`) read and checked the same way."""
    if env is None:
        load_dotenv()
        env = dict(os.environ)
    env = {**env, **overrides}

    network = (_get(env, "TRON_NETWORK") or "mainnet").lower()
    if network not in (*NETWORKS, SANDBOX):
        raise ConfigError(f"TRON_NETWORK must be one of {', '.join((*NETWORKS, SANDBOX))}, got {network!r}")
    sandbox_block_seconds = _number(env, "SANDBOX_BLOCK_SECONDS", 3.0, minimum=0.01, integer=False)

    strategy = (_get(env, "WATCHER_STRATEGY") or "auto").lower()
    if strategy not in STRATEGIES:
        raise ConfigError(f"WATCHER_STRATEGY must be one of {', '.join(STRATEGIES)}, got {strategy!r}")

    log_level = (_get(env, "LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")

    log_format = (_get(env, "LOG_FORMAT") or "text").lower()
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")

    database_url = _get(env, "DATABASE_URL")
    if database_url is not None and not database_url.startswith(
        ("postgresql://", "postgresql+psycopg2://", "postgres://")
    ):
        raise ConfigError(f"DATABASE_URL must start with postgresql://, got {database_url.split('@')[-1]!r}")

    contract = _get(env, "USDT_CONTRACT") or (SANDBOX_USDT if network == SANDBOX else NETWORKS[network][1])
    if not is_valid_address(contract):
        raise ConfigError(f"USDT_CONTRACT must be a base58check TRON address, got {contract!r}")

    secret = _get(env, "WEBHOOK_SECRET")
    if secret is not None:
        try:
            parse_secret(secret)
        except SecretError as exc:
            raise ConfigError(f"WEBHOOK_SECRET {exc}") from None

    api_keys = tuple(k.strip() for k in (_get(env, "API_KEYS") or "").split(",") if k.strip())
    host, port = _get(env, "HOST") or "127.0.0.1", _port(env)
    public_base_url = _url("PUBLIC_BASE_URL", _get(env, "PUBLIC_BASE_URL") or f"http://{url_host(host)}:{port}",
                           ("http", "https"))

    return Config(
        host=host,
        port=port,
        database_url=database_url,
        tron_network=network,
        trongrid_api_url=_upstreams(env, network),
        usdt_contract=contract,
        trongrid_api_key=_get(env, "TRONGRID_API_KEY"),
        trongrid_max_rps=_number(env, "TRONGRID_MAX_RPS", 10.0, minimum=0.1, integer=False),
        trongrid_timeout_seconds=_number(env, "TRONGRID_TIMEOUT_SECONDS", 15.0, minimum=0.1, integer=False),
        tron_block_seconds=_number(env, "TRON_BLOCK_SECONDS", sandbox_block_seconds if network == SANDBOX else 3.0,
                                   minimum=0.0001, integer=False),
        upstream_clock_skew_seconds=_number(env, "UPSTREAM_CLOCK_SKEW_SECONDS", 30.0, minimum=0, integer=False),
        reconcile_interval_seconds=_number(env, "RECONCILE_INTERVAL_SECONDS", 300.0, minimum=1, integer=False),
        watcher_strategy=strategy,
        polling_interval_seconds=_number(env, "POLLING_INTERVAL_SECONDS", 3.0, minimum=0.05, integer=False),
        detect_unconfirmed=_bool(env, "DETECT_UNCONFIRMED", True),
        trongrid_daily_quota=_daily_quota(env),
        payment_ttl_seconds=_ttl(env),
        late_payment_window_seconds=int(_number(env, "LATE_PAYMENT_WINDOW_SECONDS", 86400, minimum=0, integer=True)),
        webhook_secret=secret,
        webhook_retry_schedule=_schedule(env),
        webhook_timeout_seconds=_number(env, "WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1, integer=False),
        api_keys=api_keys,
        watcher_enabled=_bool(env, "WATCHER_ENABLED", True),
        log_level=log_level,
        log_format=log_format,
        allow_private_callbacks=_bool(env, "ALLOW_PRIVATE_CALLBACKS", False),
        sandbox_block_seconds=sandbox_block_seconds,
        sandbox_solidify_blocks=int(_number(env, "SANDBOX_SOLIDIFY_BLOCKS", 2, minimum=0, integer=True)),
        metrics_token=_get(env, "METRICS_TOKEN"),
        watcher_metrics_port=_optional_port(env, "WATCHER_METRICS_PORT"),
        public_base_url=public_base_url,
        merchant_name=_merchant_name(env),
        checkout_frame_ancestors=_frame_ancestors(env),
        merchant_webhook_url=_merchant_webhook_url(env),
        underpayment_tolerance_usdt=_tolerance(env),
        unique_amount_max_steps=_max_steps(env),
        rate_sources=_rate_sources(env, network),
        fixed_rates=_fixed_rates(env, network),
        rate_refresh_seconds=_number(env, "RATE_REFRESH_SECONDS", 60.0, minimum=0.05, integer=False),
        rate_max_age_seconds=_number(env, "RATE_MAX_AGE_SECONDS", 300.0, minimum=1, integer=False),
        rate_max_deviation_percent=_decimal(env, "RATE_MAX_DEVIATION_PERCENT", Decimal(2), at_least=Decimal(0),
                                            at_most=Decimal(100)),
        rate_markup_percent=_decimal(env, "RATE_MARKUP_PERCENT", Decimal(0), above=Decimal(-50),
                                     at_most=Decimal(1000)),
        price_rounding_usdt=_rounding(env),
        deposit_key=_deposit_key(env),
        notify_targets=_notify_targets(env),
        notify_events=_notify_events(env),
        notify_language=_notify_language(env),
    )


def url_host(host: str) -> str:
    """`host` as it is written in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_local_url(url: str) -> bool:
    """Whether a payer's browser could not reach `url`: its host is loopback, unspecified (0.0.0.0) or localhost."""
    host = (urlparse(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def startup_config() -> Config:
    """The configuration for a process entry point: a bad value exits with one line (status 2)."""
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(config.log_level, config.log_format)
    if config.allow_private_callbacks:
        logger.warning("ALLOW_PRIVATE_CALLBACKS=true: callback address checks are off (development only)")
    return config


def warn_if_payers_cannot_reach(config: Config) -> None:
    """On mainnet, a PUBLIC_BASE_URL on loopback or 0.0.0.0 makes checkout links no payer can open: said at start."""
    if config.tron_network == "mainnet" and is_local_url(config.public_base_url):
        logger.warning("PUBLIC_BASE_URL is %s: payers' browsers cannot open the checkout_url links it makes; "
                       "set it to the service's public address", config.public_base_url)


def first_line(exc: BaseException) -> str:
    """A driver error's first line: what a person needs, without the background text."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

