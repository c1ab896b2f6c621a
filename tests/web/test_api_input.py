"""Bad input is a 4xx that changes nothing, never a 500: body framing, encodings, JSON shapes,
query parameters and callback URLs, through the test client and through a real HTTP server."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import requests

from models import PaymentLog
from tests.conftest import assert_error, count_rows, payment_body


def stored(db) -> int:
    return count_rows(db) + count_rows(db, PaymentLog)


def post_raw(client, auth, data: bytes | str, content_type: str | None = "application/json", path: str = "/payments"):
    headers = dict(auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return client.post(path, data=data, headers=headers)


def cursor_of(*parts: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


# --- lone surrogates ----------------------------------------------------------------------------

@pytest.mark.parametrize("raw, field", [
    ('"metadata": {"a": "\\ud800"}', "metadata"),
    ('"metadata": {"\\udfff": 1}', "metadata"),
    ('"metadata": {"a": [{"b": "x\\udc00y"}]}', "metadata"),
])
def test_lone_surrogates_in_metadata_are_400(client, auth, db, raw, field):
    body = json.dumps(payment_body())[:-1] + ", " + raw + "}"
    err = assert_error(post_raw(client, auth, body), 400)
    assert err["error"] == "invalid_json" and err["field"] == field and "surrogate" in err["message"]
    assert stored(db) == 0


def test_a_lone_surrogate_in_the_callback_url_is_400(client, auth, db):
    body = json.dumps(payment_body(callback_url="http://1.1.1.1/X")).replace("/X", "/\\ud800")
    err = assert_error(post_raw(client, auth, body), 400)
    assert err["field"] == "callback_url"
    assert stored(db) == 0


def test_a_paired_surrogate_escape_is_ordinary_text(client, auth, db):
    body = json.dumps(payment_body(metadata={"emoji": "X"})).replace('"X"', '"\\ud83d\\ude00"')
    r = post_raw(client, auth, body)
    assert r.status_code == 201 and r.get_json()["metadata"] == {"emoji": "\U0001F600"}


# --- nesting ------------------------------------------------------------------------------------

def nested(depth: int) -> str:
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def test_metadata_nested_900_deep_is_400(client, auth, db):
    body = json.dumps(payment_body())[:-1] + ', "metadata": ' + nested(900) + "}"
    err = assert_error(post_raw(client, auth, body), 400)
    assert err["error"] == "invalid_json" and "64" in err["message"]
    assert stored(db) == 0


@pytest.mark.parametrize("body", ["[" * 20_000 + "]" * 20_000, '{"a": ' + "[" * 20_000,
                                  '{"":' * 12_000 + "1" + "}" * 12_000])  # as deep as 64 KB of objects allow
def test_a_body_nested_20000_deep_is_400_before_parsing(client, auth, db, body):
    err = assert_error(post_raw(client, auth, body), 400)
    assert err["error"] == "invalid_json"
    assert stored(db) == 0


def test_metadata_nesting_is_bounded_at_32_levels(client, auth, db):
    ok = post_raw(client, auth,
                  json.dumps(payment_body(order_id="deep-ok"))[:-1] + ', "metadata": ' + nested(32) + "}")
    assert ok.status_code == 201, ok.get_json()
    deeper = post_raw(client, auth,
                      json.dumps(payment_body(order_id="deep-no"))[:-1] + ', "metadata": ' + nested(33) + "}")
    err = assert_error(deeper, 400)
    assert err["error"] == "invalid_metadata" and err["field"] == "metadata"


def test_brackets_inside_strings_do_not_count_as_nesting(client, auth):
    r = client.post("/payments", json=payment_body(metadata={"note": "[" * 500 + "{" * 500}), headers=auth)
    assert r.status_code == 201, r.get_json()


# --- duplicate keys -----------------------------------------------------------------------------

def test_a_repeated_key_is_400_naming_it(client, auth, db):
    body = json.dumps(payment_body())[:-1] + ', "expected_amount_usdt": "1000"}'
    err = assert_error(post_raw(client, auth, body), 400)
    assert err["error"] == "invalid_json" and '"expected_amount_usdt"' in err["message"]
    nested_twice = json.dumps(payment_body())[:-1] + ', "metadata": {"a": {"b": 1, "b": 2}}}'
    err = assert_error(post_raw(client, auth, nested_twice), 400)
    assert err["error"] == "invalid_json" and '"b"' in err["message"]
    assert stored(db) == 0


# --- media type and encoding --------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=utf-16", "application/merge-patch+json",
                                          "application/json, text/plain"])
def test_a_body_not_declared_json_is_415(client, auth, db, content_type):
    err = assert_error(post_raw(client, auth, json.dumps(payment_body()), content_type), 415)
    assert err["error"] == "unsupported_media_type"
    assert stored(db) == 0


@pytest.mark.parametrize("content_type", ["application/json; charset=UTF-8", 'application/json;charset="utf-8"',
                                          "Application/JSON", "application/json; foo=bar"])
def test_json_with_harmless_parameters_is_accepted(client, auth, content_type):
    assert post_raw(client, auth, json.dumps(payment_body()), content_type).status_code == 201


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "latin-1"])
def test_a_json_body_not_in_utf8_is_400(client, auth, db, encoding):
    text = json.dumps(payment_body(metadata={"name": "Müller"}), ensure_ascii=False)
    err = assert_error(post_raw(client, auth, text.encode(encoding)), 400)
    assert err["error"] == "invalid_json" and "UTF-8" in err["message"]
    assert stored(db) == 0


def test_the_size_limit_is_checked_before_the_media_type(client, auth, db):
    err = assert_error(post_raw(client, auth, b"x" * 70_000, "text/plain"), 413)
    assert err["error"] == "payload_too_large"
    assert stored(db) == 0


def test_optional_bodies_may_be_empty_or_an_empty_object(client, auth, db):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    assert assert_error(post_raw(client, auth, "hello", "text/plain", f"/payments/{pid}/cancel"), 415)
    assert assert_error(post_raw(client, auth, '{"reason": "x"}', path=f"/payments/{pid}/cancel"), 400, "reason")
    assert assert_error(post_raw(client, auth, "[1]", path=f"/payments/{pid}/cancel"), 400)["error"] == "invalid_json"
    assert client.get(f"/payments/{pid}", headers=auth).get_json()["status"] == "pending"
    assert post_raw(client, auth, "{}", path=f"/payments/{pid}/cancel").status_code == 200
    assert post_raw(client, auth, "", None, f"/payments/{pid}/callback/retry").status_code == 202
    assert post_raw(client, auth, "{}", path=f"/payments/{pid}/callback/retry").status_code == 202


# --- amounts and order ids ----------------------------------------------------------------------

@pytest.mark.parametrize("amount", [" 1", "1 ", "\u00a01", "1\n", "\t1", "00001", "01.5", "00.5", "1\u2009"])
def test_amounts_with_spaces_or_leading_zeros_are_refused(client, auth, db, amount):
    err = assert_error(client.post("/payments", json=payment_body(expected_amount_usdt=amount), headers=auth), 400)
    assert err["error"] == "invalid_amount" and err["field"] == "expected_amount_usdt"
    assert stored(db) == 0


@pytest.mark.parametrize("amount, shown", [("0.5", "0.5"), ("0.000001", "0.000001"), ("10.500000", "10.5")])
def test_plain_amounts_stay_valid(client, auth, amount, shown):
    r = client.post("/payments", json=payment_body(expected_amount_usdt=amount), headers=auth)
    assert r.status_code == 201 and r.get_json()["expected_amount_usdt"] == shown


@pytest.mark.parametrize("order_id", ["   ", " a", "a ", "\u00a0a", "a\u3000", "\u200b"])
def test_blank_or_padded_order_ids_are_refused(client, auth, db, order_id):
    err = assert_error(client.post("/payments", json=payment_body(order_id=order_id), headers=auth), 400)
    assert err["error"] == "invalid_order_id" and err["field"] == "order_id"
    assert stored(db) == 0


@pytest.mark.parametrize("field, raw", [("order_id", "1.5"), ("wallet_address", "1e3"), ("callback_url", "2.0")])
def test_a_number_is_not_a_string(client, auth, db, field, raw):
    body = json.dumps(payment_body(**{field: "X"})).replace('"X"', raw)
    assert assert_error(post_raw(client, auth, body), 400)["field"] == field
    assert stored(db) == 0


# --- callback URLs read as the sender reads them ------------------------------------------------

@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:38050\\@1.1.1.1/", "backslash"),
    ("http://1.1.1.1\\hook", "backslash"),
    ("http://user@1.1.1.1/hook", "user information"),
    ("http://user:secret@1.1.1.1/hook", "user information"),
    ("http://@1.1.1.1/hook", "user information"),
    ("http://1.1.1.1:0/hook", "port"),
    ("https://1.1.1.1:65536/hook", "valid URL"),
])
def test_callback_urls_the_parsers_could_read_differently_are_refused(client, auth, db, url, words):
    err = assert_error(client.post("/payments", json=payment_body(callback_url=url), headers=auth), 400)
    assert err["field"] == "callback_url" and words in err["message"]
    assert stored(db) == 0


# --- query parameters ---------------------------------------------------------------------------

@pytest.mark.parametrize("path, field", [
    ("/payments?limit=%C2%B2", "limit"),
    ("/payments?limit=%D9%A1", "limit"),
    ("/payments?limit=" + "1" * 5000, "limit"),
    ("/transfers?limit=%EF%BC%95", "limit"),
    ("/events?limit=%C2%B2", "limit"),
    ("/payments?cursor=", "cursor"),
    ("/transfers?cursor=", "cursor"),
    ("/events?after=", "after"),
    ("/payments?cursor=" + "A" * 5000, "cursor"),
    ("/payments?cursor=" + cursor_of("²", "²"), "cursor"),
    ("/payments?cursor=" + cursor_of("2026-01-01T00:00:00", "00000000-0000-0000-0000-000000000001"), "cursor"),
    ("/payments?cursor=" + cursor_of("0001-01-01T00:00:00+14:00", "00000000-0000-0000-0000-000000000001"),
     "cursor"),
    ("/transfers?cursor=" + cursor_of("²"), "cursor"),
    ("/transfers?cursor=" + cursor_of("9" * 30), "cursor"),
    ("/events?after=" + cursor_of("²"), "after"),
    ("/events?after=" + cursor_of("٣"), "after"),
    ("/events?after=" + cursor_of("9223372036854775808"), "after"),
    ("/events?payment_id=", "payment_id"),
])
def test_bad_query_parameters_are_400_never_500(client, auth, path, field):
    err = assert_error(client.get(path, headers=auth), 400)
    assert err["field"] == field


def test_a_cursor_at_the_bigint_limit_is_fine(client, auth):
    assert client.get("/events?after=" + cursor_of(str(2**63 - 1)), headers=auth).status_code == 200
    assert client.get("/transfers?cursor=" + cursor_of(str(2**63 - 1)), headers=auth).status_code == 200


# --- 405 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path, allowed", [
    ("delete", "/payments", {"GET", "POST"}),
    ("put", "/payments/00000000-0000-0000-0000-000000000000", {"GET"}),
    ("get", "/payments/00000000-0000-0000-0000-000000000000/cancel", {"POST"}),
    ("post", "/health", {"GET"}),
    ("patch", "/openapi.json", {"GET"}),
])
def test_405_carries_allow(client, auth, method, path, allowed):
    r = getattr(client, method)(path, headers=auth)
    assert assert_error(r, 405)["error"] == "method_not_allowed"
    assert {m.strip() for m in r.headers["Allow"].split(",")} - {"HEAD", "OPTIONS"} == allowed


# --- chunked bodies through a real server -------------------------------------------------------

def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_chunked_body_over_64kb_is_413(live_url, auth, db):
    body = json.dumps(payment_body(metadata={"x": "a" * 80_000})).encode()
    r = requests.post(f"{live_url}/payments", data=chunks(body), timeout=10,
                      headers={**auth, "Content-Type": "application/json"})
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert stored(db) == 0


def test_chunked_bodies_up_to_64kb_are_read_whole(live_url, auth):
    small = json.dumps(payment_body(order_id="chunked")).encode()
    r = requests.post(f"{live_url}/payments", data=chunks(small, 16), timeout=10,
                      headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    exact = json.dumps(payment_body(order_id="exact", expected_amount_usdt="11")).encode()
    exact = exact[:-1] + b" " * (64 * 1024 - len(exact)) + b"}"
    assert len(exact) == 64 * 1024
    r = requests.post(f"{live_url}/payments", data=chunks(exact), timeout=10,
                      headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def test_a_chunked_text_body_is_415_and_a_chunked_huge_text_body_413(live_url, auth):
    r = requests.post(f"{live_url}/payments", data=chunks(b'{"a": 1}'), timeout=10,
                      headers={**auth, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = requests.post(f"{live_url}/payments", data=chunks(b"x" * 100_000), timeout=10,
                      headers={**auth, "Content-Type": "text/plain"})
    assert r.status_code == 413


# --- numbers as JSON Schema reads them --------------------------------------------------------

@pytest.mark.parametrize("raw, accepted", [("600", True), ("600.0", True), ("6e2", True), ("6.0E2", True),
                                           ("600.5", False), ("1e999999999", False), ('"600"', False),
                                           ("59.0", False), ("true", False)])
def test_expires_in_seconds_is_a_whole_number_however_written(client, auth, raw, accepted):
    body = json.dumps(payment_body(expires_in_seconds=0))
    body = body.replace('"expires_in_seconds": 0', f'"expires_in_seconds": {raw}')
    r = post_raw(client, auth, body)
    if accepted:
        assert r.status_code == 201, r.get_json()
        again = post_raw(client, auth, json.dumps(payment_body(expires_in_seconds=600)))
        assert again.status_code == 200 and again.get_json()["id"] == r.get_json()["id"]  # the same request
    else:
        assert assert_error(r, 400)["field"] == "expires_in_seconds"


def test_ids_are_uuids_in_their_written_form(client, auth):
    pid = client.post("/payments", json=payment_body(), headers=auth).get_json()["id"]
    assert client.get(f"/payments/{pid.upper()}", headers=auth).status_code == 200
    for other_form in (pid.replace("-", ""), "{" + pid + "}", "urn:uuid:" + pid):
        assert assert_error(client.get(f"/payments/{other_form}", headers=auth), 404)["error"] == "payment_not_found"
        assert assert_error(client.get(f"/events?payment_id={other_form}", headers=auth), 400)["field"] == "payment_id"


@pytest.mark.parametrize("field", ["metadata", "return_url", "expires_in_seconds", "underpayment_tolerance_usdt",
                                   "unique_amount", "order_id", "callback_url"])
def test_null_is_refused_where_the_document_forbids_it(client, auth, field):
    """The document declares no field of CreatePayment nullable; the service refuses null as it says (leave a field
    out to use its default), so a client generated from it and the service agree."""
    from tests.conftest import count_rows, payment_body

    r = client.post("/payments", json={**payment_body(order_id="null-check"), field: None}, headers=auth)
    assert r.status_code == 400 and r.get_json()["error"] == "null_value" and r.get_json()["field"] == field
    assert count_rows(client.application.extensions["tron"].db) == 0
    schema = client.get("/openapi.json").get_json()["components"]["schemas"]["CreatePayment"]["properties"][field]
    assert "null" not in json.dumps(schema.get("type", "")) and {"type": "null"} not in schema.get("oneOf", [])


def test_the_number_form_of_an_amount_is_deprecated_and_says_why(client) -> None:
    """Generators prefer the string form; the number form states its rule on itself (no float multipleOf, which
    common validators get wrong for 1.1)."""
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    for name in ("expected_amount_usdt", "underpayment_tolerance_usdt"):
        prop = schemas["CreatePayment"]["properties"][name]
        number = next(branch for branch in prop["oneOf"] if branch["type"] == "number")
        assert number["deprecated"] is True and "exponent" in number["description"] and "multipleOf" not in number
