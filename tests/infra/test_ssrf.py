"""The callback address guard: at creation (check_callback_url) and at delivery (guarded_session)."""
from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.ssrf import blocked_reason, check_callback_url, guarded_session  # noqa: E402
from infra.urls import CallbackUrlError  # noqa: E402

PUBLIC_IP = "93.184.216.34"


def fake_resolver(mapping: dict[str, list[str]]) -> Any:
    """A getaddrinfo stand-in answering from `mapping`, unknown names raise like a failed lookup."""

    def resolve(host: str, port: int, family: int = 0, type: int = 0, *args: Any) -> list[tuple[Any, ...]]:
        if host not in mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
            for ip in mapping[host]
        ]

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.5/hook",
        "http://172.31.255.254/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fc00::1]/hook",
        "http://[fd12:3456::1]/hook",
        "http://[fe80::1]/hook",
        "http://0.0.0.0/hook",
        "http://[::]/hook",
        "http://224.0.0.1/hook",
        "http://[ff02::1]/hook",
        "http://100.64.0.1/hook",
        "http://240.0.0.1/hook",
        "http://255.255.255.255/hook",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://0x7f.1/hook",
        "http://017700000001/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://[::ffff:169.254.169.254]/hook",
        "http://%31%32%37.0.0.1/hook",  # the sender decodes the host: 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(CallbackUrlError, match="not a public address"):
        check_callback_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f000001/", "http://0x7f.1/"])
def test_numeric_forms_are_refused_even_if_the_resolver_lies(url: str) -> None:
    lying = fake_resolver({"2130706433": [PUBLIC_IP], "0x7f000001": [PUBLIC_IP], "0x7f.1": [PUBLIC_IP]})
    with pytest.raises(CallbackUrlError, match="loopback"):
        check_callback_url(url, allow_private=False, resolver=lying)


def test_a_name_resolving_to_loopback_is_refused() -> None:
    resolver = fake_resolver({"shop.example": ["127.0.0.1"]})
    with pytest.raises(CallbackUrlError, match=r"shop\.example \(127\.0\.0\.1\).*loopback"):
        check_callback_url("https://shop.example/hook", allow_private=False, resolver=resolver)


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    resolver = fake_resolver({"shop.example": [PUBLIC_IP, "10.0.0.7"]})
    with pytest.raises(CallbackUrlError, match="private"):
        check_callback_url("https://shop.example/hook", allow_private=False, resolver=resolver)


def test_unresolvable_name_is_refused() -> None:
    with pytest.raises(CallbackUrlError, match="does not resolve"):
        check_callback_url("https://nonexistent.invalid/hook", allow_private=False, resolver=fake_resolver({}))


def test_public_addresses_are_allowed() -> None:
    resolver = fake_resolver({"shop.example": [PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946"]})
    check_callback_url("https://shop.example:8443/hook?x=1", allow_private=False, resolver=resolver)
    check_callback_url(f"http://{PUBLIC_IP}/hook", allow_private=False)


@pytest.mark.parametrize(
    "url",
    ["ftp://shop.example/hook", "file:///etc/passwd", "gopher://shop.example/", "shop.example/hook", "http:///hook",
     "https://shop.example:99999/hook", "http://shop.example/ho ok", "",
     "http://127.0.0.1:38050\\@shop.example/", "http://shop.example\\@127.0.0.1/", "http://a@shop.example/",
     "http://a:b@shop.example/", "http://@shop.example/", "http://shop.example:0/hook"],
)
def test_bad_syntax_is_refused_even_when_private_addresses_are_allowed(url: str) -> None:
    with pytest.raises(CallbackUrlError):
        check_callback_url(url, allow_private=True, resolver=fake_resolver({"shop.example": [PUBLIC_IP]}))


def test_the_host_checked_is_the_host_the_sender_connects_to() -> None:
    from infra.urls import split_callback_url

    assert split_callback_url("http://%31%32%37.0.0.1:8080/x") == ("127.0.0.1", 8080)
    assert split_callback_url("HTTP://Shop.Example/x?a=@b#@c") == ("shop.example", 80)
    assert split_callback_url("https://[2606:4700::1111]/x") == ("2606:4700::1111", 443)
    assert split_callback_url("http://bücher.example/x") == ("xn--bcher-kva.example", 80)


def test_allow_private_skips_address_checks() -> None:
    check_callback_url("http://127.0.0.1:5000/hook", allow_private=True)
    check_callback_url("http://nonexistent.invalid/hook", allow_private=True, resolver=fake_resolver({}))


# --- at delivery: the address actually connected to -------------------------------------------

@pytest.fixture
def receiver() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(dict(self.headers))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_delivery_refuses_a_name_that_now_resolves_to_loopback(receiver: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = receiver
    url = f"http://shop.example:{port}/hook"
    check_callback_url(url, allow_private=False, resolver=fake_resolver({"shop.example": [PUBLIC_IP]}))
    rebound = fake_resolver({"shop.example": ["127.0.0.1"]})  # DNS changed after the payment was created
    with pytest.raises(requests.ConnectionError) as caught:
        guarded_session(allow_private=False, resolver=rebound).post(url, data=b"{}", timeout=2)
    assert "loopback" in (blocked_reason(caught.value) or "")
    assert seen == []


def test_delivery_refuses_a_literal_private_address(receiver: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = receiver
    with pytest.raises(requests.ConnectionError) as caught:
        guarded_session(allow_private=False).post(f"http://127.0.0.1:{port}/hook", data=b"{}", timeout=2)
    assert blocked_reason(caught.value)
    assert seen == []


def test_guarded_session_connects_to_the_resolved_address_and_keeps_the_host(
    receiver: tuple[int, list[dict[str, str]]],
) -> None:
    port, seen = receiver
    session = guarded_session(allow_private=True, resolver=fake_resolver({"shop.example": ["127.0.0.1"]}))
    response = session.post(f"http://shop.example:{port}/hook", data=b"{}", timeout=2)
    assert response.status_code == 200
    assert seen[0]["Host"] == f"shop.example:{port}"


def test_guarded_session_ignores_proxy_environment(
    receiver: tuple[int, list[dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, seen = receiver
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    response = guarded_session(allow_private=True).post(f"http://127.0.0.1:{port}/hook", data=b"{}", timeout=2)
    assert response.status_code == 200 and len(seen) == 1
