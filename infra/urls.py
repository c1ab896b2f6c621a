"""URL syntax, without any network: what follows "scheme://" (the receiver a webhook goes to, in Python and in
PostgreSQL), whether a callback URL is acceptable as written (`split_callback_url`), read as the sender will read
it, and whether a host is an IP address as written (`parse_ip`). Where the host points is infra/ssrf.py's
question."""
from __future__ import annotations

import functools
import ipaddress
import re

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ALLOWED_SCHEMES = ("http", "https")
# What follows "scheme://" up to the path, query or fragment (user information, host, port). The
# same text serves Python and PostgreSQL (POSIX) regular expressions.
AUTHORITY_PATTERN = "^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)"
_AUTHORITY = re.compile(AUTHORITY_PATTERN)


class CallbackUrlError(ValueError):
    """The callback address is not allowed; the message says why."""


def authority(url: str) -> str:
    match = _AUTHORITY.match(url)
    return match.group(1) if match else ""


def split_callback_url(url: str) -> tuple[str, int]:
    """(host, port) of a syntactically acceptable callback URL; raises CallbackUrlError.

    The URL is read by urllib3's parser, exactly as the sender will read it, so the host checked
    here is the host connected to later. Forms that parsers disagree on are refused outright.
    A pure function of the text: the answers for the URLs seen last are remembered (a merchant sends the same
    few callback URLs again and again, and a create reads its URL twice: syntax, then address)."""
    if not isinstance(url, str):
        raise CallbackUrlError("must be a URL without spaces or control characters")
    return _split_callback_url(url)


@functools.lru_cache(maxsize=1024)
def _split_callback_url(url: str) -> tuple[str, int]:
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise CallbackUrlError("must be a URL without spaces or control characters")
    if "\\" in url:
        raise CallbackUrlError("must not contain backslashes")
    if "@" in authority(url):
        raise CallbackUrlError("must not contain user information (user@host)")
    try:
        parts = parse_url(url)
        requests.PreparedRequest().prepare_url(url, None)  # what the sender does with it
    except (LocationParseError, requests.RequestException, ValueError):
        raise CallbackUrlError("is not a valid URL") from None
    if (parts.scheme or "").lower() not in ALLOWED_SCHEMES:
        raise CallbackUrlError("must start with http:// or https://")
    if parts.auth is not None:
        raise CallbackUrlError("must not contain user information (user@host)")
    host = (parts.host or "").strip("[]")
    if not host:
        raise CallbackUrlError("must name a host")
    if parts.port == 0:
        raise CallbackUrlError("has an invalid port (0)")
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def parse_ip(text: str) -> IPAddress | None:
    """`text` as an IP address (IPv6 zone ids dropped), or None."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
