"""Real TronGrid / java-tron answers (tests/data) replayed over HTTP on 127.0.0.1 and read by TronClient."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from chain.answers import BlockRef, Trc20Transfer, TxInfo
from ledger.records import TransferLog
from tron_client import TronClient
from tron_sim import USDT_MAINNET

DATA = Path(__file__).resolve().parents[1] / "data"
WALLET = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"  # the account of the ledger-live fixtures


class Replay:
    """An HTTP server answering each path with a recorded body; it records what was asked."""

    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.asked: list[tuple[str, str, Any]] = []
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def _answer(self, method: str) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                replay.asked.append((method, path, body if method == "POST" else query))
                answer = replay.answers.get(path)
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Type", "application/json")
                payload = answer if answer is not None else b'{"Error": "not recorded"}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def serve(self, path: str, data_file: str) -> None:
        self.answers[path] = (DATA / data_file).read_bytes()


@pytest.fixture
def replay() -> Iterator[Replay]:
    server = Replay()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def client(replay: Replay) -> TronClient:
    return TronClient(replay.url, USDT_MAINNET, max_rps=1000.0, timeout=2, max_retries=0)


def test_trc20_page_keeps_only_usdt_sent_to_the_wallet(replay: Replay, client: TronClient) -> None:
    replay.serve(f"/v1/accounts/{WALLET}/transactions/trc20", "trc20_page.json")
    transfers = client.list_trc20_transfers(WALLET, 1_600_000_000_000)
    # of the 3 records: an outgoing USDT transfer and a SUNDOG transfer are not money in
    assert transfers == [Trc20Transfer(
        transaction_id="1de1f78e7bf1a629ce19cd52f818962f7463e25ebc36a5129b5d76ce22879ef1",
        from_address="TVKG4gUar24bpAVrDv4GSzyDRtPkjPkogL", to_address=WALLET, amount=1_000_000,
        block_timestamp=1_669_285_026_000, token_address=USDT_MAINNET)]
    [(method, _, query)] = replay.asked
    assert method == "GET" and f"contract_address={USDT_MAINNET}" in query and "only_confirmed=true" in query


def test_usdt_receipt(replay: Replay, client: TronClient) -> None:
    replay.serve("/walletsolidity/gettransactioninfobyid", "txinfo_usdt_success.json")
    tx_id = "0130dfde9281a48378109039ef512229d5359fbee2a8adbb17ad73aebc67ea99"
    info = client.get_transaction_info(tx_id)
    assert info == TxInfo(tx_id, 69_316_562, 1_738_601_505_000, True, (TransferLog(
        transaction_hash=tx_id, log_index=0, from_address=WALLET, to_address="TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx",
        amount=41_677_389, block_number=69_316_562, block_timestamp=1_738_601_505_000),))
    assert replay.asked == [("POST", "/walletsolidity/gettransactioninfobyid", {"value": tx_id})]


def test_trx_transfer_receipt_is_not_a_usdt_success(replay: Replay, client: TronClient) -> None:
    replay.serve("/walletsolidity/gettransactioninfobyid", "txinfo_trx_transfer.json")
    tx_id = "3f8b651bdf4a301a08693a2fa4b0d5fd808927ad658aa279ba030215fecdd6b3"
    assert client.get_transaction_info(tx_id) == TxInfo(tx_id, 69_316_598, 1_738_601_613_000, False, ())


def test_solid_head(replay: Replay, client: TronClient) -> None:
    replay.serve("/walletsolidity/getnowblock", "javatron_getnowblock.json")
    assert client.get_solid_head() == BlockRef(66_987_627, 1_777_445_307_000)


def test_block_infos(replay: Replay, client: TronClient) -> None:
    replay.serve("/walletsolidity/gettransactioninfobyblocknum", "javatron_gettransactioninfobyblocknum.json")
    infos = client.get_block_infos(66_987_565)
    assert [(i.transaction_hash, i.block_number, i.block_timestamp, i.success, i.transfers) for i in infos] == [
        ("ff44a2823a870c12f12a4ca6e7647650356bc2bb5e02c5855312cf2db4c950c1", 66_987_565, 1_777_445_121_000, False, ()),
        ("0419405287081aa44f4d78725e6fabac8d14e71abf9e28825ad4f4e61a5bccb7", 66_987_565, 1_777_445_121_000, False, ()),
    ]


def test_internal_call_receipt_has_no_usdt_transfer(replay: Replay, client: TronClient) -> None:
    replay.serve("/walletsolidity/gettransactioninfobyid", "javatron_gettransactioninfobyid_internal.json")
    info = client.get_transaction_info("01b4cde4197b9d1a1ff09ef5d2b1d939d3ec2401b3f002ebd0802c0f30a6e4ca")
    assert info is not None and info.success and info.transfers == ()  # another contract's event


# -- the watcher over recorded answers -----------------------------------------------------------------------
PAYEE = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"  # the recipient of 0130dfde…, the recorded USDT receipt
RECORDED_TX = "0130dfde9281a48378109039ef512229d5359fbee2a8adbb17ad73aebc67ea99"


def recorded_head(number: int, timestamp: int) -> bytes:
    """A getnowblock answer in the documented shape (javatron_getnowblock.json) for a block of the recorded chain:
    no mainnet getnowblock was captured, so the newest recorded event's block stands for the solid head."""
    block = json.loads((DATA / "javatron_getnowblock.json").read_text())
    block["block_header"]["raw_data"].update(number=number, timestamp=timestamp)
    return json.dumps(block).encode()


def test_the_watcher_credits_a_recorded_mainnet_transfer(replay: Replay, app, auth, db, config) -> None:
    from sqlalchemy import update

    from models import Payment
    from tests.conftest import watcher_client
    from watcher import Watcher

    events = json.loads((DATA / "trongrid_events_page.json").read_text())["data"]
    replay.answers[f"/v1/accounts/{PAYEE}/transactions/trc20"] = (DATA / "trc20_page.json").read_bytes()
    replay.answers[f"/v1/contracts/{USDT_MAINNET}/events"] = (DATA / "trongrid_events_page.json").read_bytes()
    replay.answers["/walletsolidity/gettransactioninfobyid"] = (DATA / "txinfo_usdt_success.json").read_bytes()
    replay.answers["/walletsolidity/getnowblock"] = recorded_head(events[0]["block_number"],
                                                                  events[0]["block_timestamp"])
    cfg = config.with_overrides(trongrid_api_url=replay.url, watcher_strategy="account", trongrid_max_rps=1000.0,
                                upstream_clock_skew_seconds=30.0)
    body = {"wallet_address": PAYEE, "expected_amount_usdt": "41.677389", "order_id": "recorded-1",
            "callback_url": "http://127.0.0.1:9/hook"}
    api = app.test_client()
    created = api.post("/payments", json=body, headers=auth).get_json()
    with db.transaction() as s:  # the payment was opened just before the recorded transfer (2025-02-03)
        s.execute(update(Payment).where(Payment.order_id == "recorded-1").values(
            created_at=ms(1_738_601_400_000), expires_at=ms(1_738_605_000_000)))
    watcher = Watcher(db, cfg, client=watcher_client(cfg))
    try:
        result = watcher.run_once()
    finally:
        watcher.stop()
    assert result is not None and result.credited == 1 and not result.errors
    got = api.get(f"/payments/{created['id']}", headers=auth).get_json()
    assert got["status"] == "completed" and got["transaction_hash"] == RECORDED_TX
    assert got["received_amount_usdt"] == "41.677389" and got["transfers"][0]["from"] == WALLET
    # the SUNDOG record and the transfer to another wallet on the recorded page were never fetched
    assert [p for m, p, _ in replay.asked if m == "POST" and "gettransactioninfobyid" in p] == [
        "/walletsolidity/gettransactioninfobyid"]


def test_the_blocks_strategy_reads_a_recorded_block_and_refuses_a_mislabelled_one(replay: Replay, db,
                                                                                  config) -> None:
    from chain.chain_view import ChainView
    from tests.conftest import watcher_client
    from watcher import Watcher

    replay.answers["/walletsolidity/getnowblock"] = (DATA / "javatron_getnowblock.json").read_bytes()
    replay.answers["/walletsolidity/gettransactioninfobyblocknum"] = (
        DATA / "javatron_gettransactioninfobyblocknum.json").read_bytes()  # block 66987565 of Nile, whatever asked
    cfg = config.with_overrides(tron_network="nile", usdt_contract="TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf",
                                trongrid_api_url=replay.url, watcher_strategy="blocks", trongrid_max_rps=1000.0)
    view = ChainView(cfg)
    with db.transaction() as s:
        view.set_state(s, "block_cursor", {"number": 66_987_564, "timestamp": 1_777_445_118_000})
        view.set_state(s, "watcher_strategy", {"strategy": "blocks", "since": 0})
    watcher = Watcher(db, cfg, client=watcher_client(cfg))
    try:
        result = watcher.run_once()
    finally:
        watcher.stop()
    with db.Session() as s:
        cursor = view.state(s, "block_cursor")
    assert cursor == {"number": 66_987_565, "timestamp": 1_777_445_121_000}  # the recorded block, read
    assert result is not None and result.blocks == 1
    assert "another block" in result.errors[0]  # the same answer for block 66987566 is not believed


def ms(value: int):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(value / 1000, tz=UTC)
