"""NOTIFY_URLS and NOTIFY_EVENTS, read: where operator notifications go (Apprise URLs) and which events become one.

An Apprise URL holds its service's secret (a bot token, a mail password, a webhook key), so a target is shown only
by its scheme and named in the database by a fingerprint (SHA-256 of the URL), never the URL: `NotifyTarget`'s repr
and every message about a target keep to those two. Apprise itself is loaded only when NOTIFY_URLS is set.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

# What NOTIFY_EVENTS may name: the webhook types of models.py (tests/notify check the lists agree) and the operator
# events, which have no webhook.
PAYMENT_EVENTS = ("payment.completed", "payment.expired", "payment.partial", "payment.paid_late",
                  "payment.cancelled", "payment.detected")
ACCOUNT_EVENTS = ("transfer.unmatched", "transfer.assigned")
WEBHOOK_FAILED = "webhook.failed"  # an event exhausted its retries
UPSTREAM_DEGRADED = "upstream.degraded"
UPSTREAM_RECOVERED = "upstream.recovered"
RATE_UNAVAILABLE = "rate.unavailable"
OPERATOR_EVENTS = (WEBHOOK_FAILED, UPSTREAM_DEGRADED, UPSTREAM_RECOVERED, RATE_UNAVAILABLE)
NOTIFIABLE_EVENTS = PAYMENT_EVENTS + ACCOUNT_EVENTS + OPERATOR_EVENTS
DEFAULT_NOTIFY_EVENTS = ("payment.completed", "payment.paid_late", "transfer.unmatched", WEBHOOK_FAILED,
                         UPSTREAM_DEGRADED, RATE_UNAVAILABLE)
MAX_TARGETS = 20


class NotifySettingError(ValueError):
    """An entry of NOTIFY_URLS is not an Apprise URL; the message names the entry by number and scheme only."""


@dataclass(frozen=True)
class NotifyTarget:
    """One Apprise URL. Its repr, and everything shown of it, is the scheme and the fingerprint."""

    url: str = field(repr=False)
    scheme: str
    fingerprint: str  # SHA-256 of the URL, hex: how the outbox names the target

    @classmethod
    def of(cls, url: str) -> NotifyTarget:
        return cls(url, scheme_of(url), hashlib.sha256(url.encode()).hexdigest())

    @property
    def label(self) -> str:
        """How a person is shown this target: its scheme and the start of its fingerprint."""
        return f"{self.scheme}:{self.fingerprint[:8]}"


def scheme_of(url: str) -> str:
    """The scheme of an Apprise URL (`tgram`), or `?` when it has none; never anything after `://`."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep and scheme.isascii() and scheme.replace("+", "").isalnum() else "?"


def parse_notify_urls(raw: str) -> tuple[NotifyTarget, ...]:
    """The targets of NOTIFY_URLS: split by Apprise's own parser (spaces or commas; a `mailto:` URL's commas stay
    in it), each one a URL an installed Apprise plugin accepts. Raises NotifySettingError naming the first bad entry."""
    import apprise  # loaded only when notifications are configured (the gunicorn master reads settings too)
    from apprise.utils.parse import parse_urls

    silence_apprise()
    entries = [entry for entry in parse_urls(raw) if entry.strip()]
    if not entries:
        raise NotifySettingError("holds no URL")
    if len(entries) > MAX_TARGETS:
        raise NotifySettingError(f"holds {len(entries)} URLs; at most {MAX_TARGETS}")
    targets: list[NotifyTarget] = []
    for number, entry in enumerate(entries, start=1):
        target = NotifyTarget.of(entry.strip())
        if apprise.Apprise.instantiate(target.url) is None:
            raise NotifySettingError(f"entry {number} ({target.scheme}://…) is not a URL Apprise can send to: check "
                                 "its scheme and the fields its service needs")
        if any(t.fingerprint == target.fingerprint for t in targets):
            raise NotifySettingError(f"entry {number} ({target.scheme}://…) repeats an earlier entry")
        targets.append(target)
    return tuple(targets)


def silence_apprise() -> None:
    """Apprise's own log lines may quote a URL whole ("Unparseable URL tgram://<token>/..."): they never reach this
    service's log. What went wrong is said by this project's messages, with the scheme only."""
    apprise_logger = logging.getLogger("apprise")
    apprise_logger.disabled = True
    apprise_logger.propagate = False


def parse_notify_events(raw: str) -> frozenset[str]:
    """NOTIFY_EVENTS: comma- or space-separated event types from NOTIFIABLE_EVENTS (`none` for none)."""
    names = [name.strip().lower() for name in raw.replace(",", " ").split() if name.strip()]
    if names == ["none"]:
        return frozenset()
    unknown = [name for name in names if name not in NOTIFIABLE_EVENTS]
    if unknown:
        raise NotifySettingError(f"names unknown event {unknown[0]!r}: use {', '.join(NOTIFIABLE_EVENTS)} or none")
    return frozenset(names)
