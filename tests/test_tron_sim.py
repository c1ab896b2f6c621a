"""The TronGrid simulator speaks the captured shapes (/work/shared/trongrid-captures) over real HTTP."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from addresses import from_hex, is_valid_address, to_hex20, to_topic
from tron_sim import TRANSFER_TOPIC, USDT_MAINNET, Simulator, random_address

CAPTURES = Path("/work/shared/trongrid-captures")
FAKE_TOKEN = "TXL6rJbvmjD46zeN1JssfgxvSo99qC8MRT"


def _capture(name: str) -> Any:
    return json.loads((CAPTURES / name).read_text())


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(block_interval=0.0, solidify_depth=2, start_time_ms=1_738_601_505_000)
    simulator.start()
    yield simulator
    simulator.stop()


def trc20(sim: Simulator, wallet: str, **params: Any) -> requests.Response:
    return requests.get(f"{sim.url}/v1/accounts/{wallet}/transactions/trc20", params=params, timeout=5)


def post(sim: Simulator, path: str, body: Any = None) -> requests.Response:
    return requests.post(f"{sim.url}{path}", json=body if body is not None else {}, timeout=5)


def _same_shape(actual: Any, expected: Any, where: str = "$") -> None:
    """Same keys (recursively) and same JSON types as the capture."""
    assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            _same_shape(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list) and expected and actual:
        _same_shape(actual[0], expected[0], f"{where}[0]")


# -- shapes ----------------------------------------------------------------------------------------
def test_trc20_record_and_page_shape_match_capture(sim: Simulator) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 41_677_389)
    sim.solidify()
    body = trc20(sim, wallet).json()
    capture = _capture("trc20_page.json")
    _same_shape(body, capture)
    record = body["data"][0]
    assert record["transaction_id"] == tx_id
    assert record["value"] == "41677389"
    assert record["to"] == wallet and is_valid_address(record["from"])
    assert record["token_info"] == capture["data"][0]["token_info"]
    assert record["type"] == "Transfer"
    info = post(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}).json()
    assert record["block_timestamp"] == info["blockTimeStamp"]


def test_txinfo_shape_matches_capture(sim: Simulator) -> None:
    sender, wallet = random_address(), random_address()
    tx_id = sim.transfer(wallet, 41_677_389, from_=sender)
    sim.solidify()
    info = post(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}).json()
    _same_shape(info, _capture("txinfo_usdt_success.json"))
    assert info["id"] == tx_id
    assert info["contract_address"] == "41" + to_hex20(USDT_MAINNET)
    assert info["receipt"]["result"] == "SUCCESS"
    log = info["log"][0]
    assert log["address"] == to_hex20(USDT_MAINNET)
    assert log["topics"] == [TRANSFER_TOPIC, to_topic(sender), to_topic(wallet)]
    assert from_hex(log["topics"][2]) == wallet
    assert int(log["data"], 16) == 41_677_389
    assert info["blockNumber"] == sim.tx_block(tx_id)


def test_trx_transfer_shape_matches_capture(sim: Simulator) -> None:
    tx_id = sim.trx_transfer(random_address(), 5_000_000)
    sim.solidify()
    info = post(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}).json()
    _same_shape(info, _capture("txinfo_trx_transfer.json"))


def test_getnowblock_shape_and_solid_head(sim: Simulator) -> None:
    head = sim.mine(3)
    state = sim.state()
    solid = post(sim, "/walletsolidity/getnowblock").json()
    full = post(sim, "/wallet/getnowblock").json()
    raw = solid["block_header"]["raw_data"]
    assert set(raw) == {"number", "txTrieRoot", "witness_address", "parentHash", "version", "timestamp"}
    assert "witness_signature" in solid["block_header"]
    assert raw["number"] == state["solid_head"] == head - 2
    assert raw["timestamp"] == state["solid_timestamp"]
    assert int(solid["blockID"][:16], 16) == raw["number"]
    assert full["block_header"]["raw_data"]["number"] == head
    assert full["block_header"]["raw_data"]["timestamp"] == raw["timestamp"] + 2 * 3000


def test_reverted_tx_shape(sim: Simulator) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 1_000_000, reverted=True)
    hidden = sim.transfer(wallet, 2_000_000, reverted=True, list_reverted=False)
    sim.solidify()
    info = post(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}).json()
    assert info["receipt"]["result"] == "REVERT"
    assert info["result"] == "FAILED"
    assert bytes.fromhex(info["resMessage"]) == b"REVERT opcode executed"
    assert "log" not in info
    listed = [r["transaction_id"] for r in trc20(sim, wallet).json()["data"]]
    assert listed == [tx_id]
    assert post(sim, "/walletsolidity/gettransactioninfobyid", {"value": hidden}).json()["result"] == "FAILED"


def test_batch_and_internal_transactions(sim: Simulator) -> None:
    a, b = random_address(), random_address()
    batch = sim.transaction([{"to": a, "amount": 1}, {"to": b, "amount": 2}, {"to": a, "amount": 3}])
    internal = sim.transfer(a, 4, internal=True)
    sim.solidify()
    info = post(sim, "/walletsolidity/gettransactioninfobyid", {"value": batch}).json()
    assert [int(log["data"], 16) for log in info["log"]] == [1, 2, 3]
    records = trc20(sim, a, order_by="block_timestamp,asc").json()["data"]
    assert [r["transaction_id"] for r in records] == [batch, batch, internal]
    info = post(sim, "/walletsolidity/gettransactioninfobyid", {"value": internal}).json()
    assert info["contract_address"] != "41" + to_hex20(USDT_MAINNET)
    assert info["log"][0]["address"] != to_hex20(USDT_MAINNET)  # the DEX's own event comes first
    assert info["log"][1]["address"] == to_hex20(USDT_MAINNET)
    assert info["internal_transactions"][0]["transferTo_address"] == "41" + to_hex20(USDT_MAINNET)


# -- TRC20 list ------------------------------------------------------------------------------------
def test_pagination_over_450_transfers(sim: Simulator) -> None:
    wallet = random_address()
    sent = [sim.transfer(wallet, 1_000 + i) for i in range(450)]
    for _ in range(5):  # spread over blocks as well
        sim.mine()
    sim.solidify()
    params: dict[str, Any] = {"only_confirmed": "true", "order_by": "block_timestamp,asc", "limit": 200}
    seen: list[str] = []
    pages = 0
    body = trc20(sim, wallet, **params).json()
    while True:
        pages += 1
        seen += [r["transaction_id"] for r in body["data"]]
        if "fingerprint" not in body["meta"]:
            break
        assert body["meta"]["page_size"] == 200
        assert f"fingerprint={body['meta']['fingerprint']}" in body["meta"]["links"]["next"]
        body = requests.get(body["meta"]["links"]["next"], timeout=5).json()
    assert pages == 3
    assert seen == sent
    desc = trc20(sim, wallet, limit=200).json()["data"]
    assert [r["transaction_id"] for r in desc] == sent[::-1][:200]


def test_only_confirmed_hides_unsolidified(sim: Simulator) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 5)
    sim.mine()
    assert trc20(sim, wallet, only_confirmed="true").json()["data"] == []
    assert [r["transaction_id"] for r in trc20(sim, wallet).json()["data"]] == [tx_id]
    assert len(trc20(sim, wallet, only_unconfirmed="true").json()["data"]) == 1
    assert post(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}).json() == {}
    assert post(sim, "/wallet/gettransactioninfobyid", {"value": tx_id}).json()["id"] == tx_id
    sim.solidify()
    assert len(trc20(sim, wallet, only_confirmed="true").json()["data"]) == 1
    assert post(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}).json()["id"] == tx_id


def test_filters_contract_direction_and_time(sim: Simulator) -> None:
    wallet, other = random_address(), random_address()
    usdt = sim.transfer(wallet, 1)
    fake = sim.transfer(wallet, 2, contract=FAKE_TOKEN)
    outgoing = sim.transfer(other, 3, from_=wallet)
    sim.solidify()
    sim.advance(600)
    late = sim.transfer(wallet, 4)
    sim.solidify()
    ids = lambda **p: {r["transaction_id"] for r in trc20(sim, wallet, **p).json()["data"]}  # noqa: E731
    assert ids() == {usdt, fake, outgoing, late}
    assert ids(contract_address=USDT_MAINNET) == {usdt, outgoing, late}
    assert ids(only_to="true") == {usdt, fake, late}
    assert ids(only_from="true") == {outgoing}
    late_ts = trc20(sim, wallet, limit=1).json()["data"][0]["block_timestamp"]
    assert ids(min_timestamp=late_ts) == {late}
    assert ids(max_timestamp=late_ts - 1) == {usdt, fake, outgoing}
    fake_record = next(r for r in trc20(sim, wallet).json()["data"] if r["transaction_id"] == fake)
    assert fake_record["token_info"]["symbol"] == "USDT"  # a fake token calls itself USDT
    assert fake_record["token_info"]["address"] == FAKE_TOKEN


def test_invalid_address_is_400(sim: Simulator) -> None:
    response = trc20(sim, "TNotAnAddress")
    assert response.status_code == 400
    assert response.json()["success"] is False and response.json()["statusCode"] == 400
    assert trc20(sim, random_address(), fingerprint="!!!").status_code == 400


def test_no_v1_answers_404() -> None:
    simulator = Simulator(v1_api=False)
    simulator.start()
    try:
        assert trc20(simulator, random_address()).status_code == 404
        assert post(simulator, "/walletsolidity/getnowblock").status_code == 200
    finally:
        simulator.stop()


# -- blocks ----------------------------------------------------------------------------------------
def test_transaction_infos_by_block(sim: Simulator) -> None:
    wallet = random_address()
    first = sim.transfer(wallet, 1)
    second = sim.trx_transfer(wallet)
    block = sim.mine()
    assert post(sim, "/walletsolidity/gettransactioninfobyblocknum", {"num": block}).json() == []  # not solid
    sim.solidify()
    infos = post(sim, "/walletsolidity/gettransactioninfobyblocknum", {"num": block}).json()
    assert [i["id"] for i in infos] == [first, second]
    assert post(sim, "/walletsolidity/gettransactioninfobyblocknum", {"num": block + 1}).json() == []
    by_get = requests.get(f"{sim.url}/walletsolidity/gettransactioninfobyblocknum?num={block}", timeout=5).json()
    assert by_get == infos


def test_unknown_tx_is_empty_object(sim: Simulator) -> None:
    assert post(sim, "/walletsolidity/gettransactioninfobyid", {"value": "ab" * 32}).json() == {}
    assert "Error" in post(sim, "/walletsolidity/gettransactioninfobyid", {"value": "xyz"}).json()


def test_chain_time_and_solidify(sim: Simulator) -> None:
    before = sim.state()
    sim.advance(100)
    sim.mine()
    after = sim.state()
    assert after["head_timestamp"] == before["head_timestamp"] + 103_000
    sim.transfer(random_address(), 1)
    head = sim.solidify()
    assert head == after["head"] + 3 and sim.state()["solid_head"] == after["head"] + 1
    assert sim.solidify() == head  # nothing left to solidify


# -- controls, faults, request log -----------------------------------------------------------------
def test_http_controls(sim: Simulator) -> None:
    wallet = random_address()
    tx_id = post(sim, "/_sim/transfer", {"to": wallet, "amount_usdt": "10.5"}).json()["tx_id"]
    batch = post(sim, "/_sim/transaction", {"transfers": [{"to": wallet, "amount": 1}, {"to": wallet, "amount": 2}]})
    assert post(sim, "/_sim/transfer", {"to": wallet, "amount": 1.5}).status_code == 400
    post(sim, "/_sim/advance", {"seconds": 30})
    state = post(sim, "/_sim/mine", {"blocks": 1}).json()
    assert state["head_timestamp"] == state["solid_timestamp"] + 3000 + 33_000
    state = post(sim, "/_sim/solidify").json()
    values = sorted(r["value"] for r in trc20(sim, wallet).json()["data"])
    assert values == ["1", "10500000", "2"]
    assert batch.json()["tx_id"] != tx_id
    post(sim, "/_sim/fault", {"kind": "503", "count": 1})
    assert trc20(sim, wallet).status_code == 503
    state = requests.get(f"{sim.url}/_sim/state", timeout=5).json()
    assert state["requests"]["total"] == 2 and state["head"] >= state["solid_head"]
    post(sim, "/_sim/fault", {"kind": "500", "count": None})
    post(sim, "/_sim/clear_faults")
    assert trc20(sim, wallet).status_code == 200
    assert post(sim, "/_sim/reset_counts").json()["requests"] == {"total": 0}
    assert post(sim, "/_sim/nope").status_code == 404


@pytest.mark.parametrize(("kind", "status", "needle"), [
    ("429", 429, "suspended for 7s"),
    ("403_suspended", 403, "frequency limit"),
    ("403_daily", 403, "Exceed the user daily usage"),
    ("500", 500, ""),
    ("503", 503, ""),
    ("error_200", 200, '"Error"'),
    ("not_json", 200, "<html>"),
])
def test_response_faults(sim: Simulator, kind: str, status: int, needle: str) -> None:
    wallet = random_address()
    sim.set_fault(kind, 2, seconds=7, path_prefix="/v1/")
    assert post(sim, "/walletsolidity/getnowblock").status_code == 200  # other paths unaffected
    for _ in range(2):
        response = trc20(sim, wallet)
        assert response.status_code == status and needle in response.text
    assert trc20(sim, wallet).status_code == 200


def test_slow_fault(sim: Simulator) -> None:
    sim.set_fault("slow", 1, seconds=0.3)
    started = time.monotonic()
    assert post(sim, "/walletsolidity/getnowblock").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_behaviour_faults(sim: Simulator) -> None:
    wallet = random_address()
    fake = sim.transfer(wallet, 1, contract=FAKE_TOKEN)
    sim.solidify()
    pending = sim.transfer(wallet, 2)
    sim.mine()
    sim.set_fault("ignore_contract_filter", None)
    sim.set_fault("hide_unconfirmed_flag", 1)
    data = trc20(sim, wallet, contract_address=USDT_MAINNET, only_confirmed="true").json()["data"]
    assert {r["transaction_id"] for r in data} == {fake, pending}
    data = trc20(sim, wallet, contract_address=USDT_MAINNET, only_confirmed="true").json()["data"]
    assert {r["transaction_id"] for r in data} == {fake}
    sim.clear_faults()
    assert trc20(sim, wallet, contract_address=USDT_MAINNET, only_confirmed="true").json()["data"] == []


def test_request_log_records_api_key(sim: Simulator) -> None:
    requests.post(f"{sim.url}/walletsolidity/getnowblock", headers={"TRON-PRO-API-KEY": "k-123"}, timeout=5)
    requests.post(f"{sim.url}/wallet/getnowblock", timeout=5)
    assert [r.api_key for r in sim.request_log] == ["k-123", None]
    assert sim.request_counts() == {"/walletsolidity/getnowblock": 1, "/wallet/getnowblock": 1, "total": 2}
    assert sim.count("/wallet/") == 1
    sim.reset_counts()
    assert sim.request_counts() == {"total": 0}


def test_many_transfers_stay_fast(sim: Simulator) -> None:
    wallets = [random_address() for _ in range(1000)]
    started = time.monotonic()
    for i in range(20_000):
        sim.transfer(wallets[i % len(wallets)], 1 + i)
        if i % 2000 == 1999:
            sim.mine()
    sim.solidify()
    insert_seconds = time.monotonic() - started
    started = time.monotonic()
    for wallet in wallets[:100]:
        assert len(trc20(sim, wallet, only_confirmed="true", limit=200).json()["data"]) == 20
    assert insert_seconds < 10
    assert time.monotonic() - started < 5


def test_background_miner() -> None:
    simulator = Simulator(block_interval=0.05, solidify_depth=1)
    simulator.start()
    try:
        head = simulator.state()["head"]
        time.sleep(0.4)
        assert simulator.state()["head"] >= head + 3
    finally:
        simulator.stop()


def test_command_line_entry_point() -> None:
    process = subprocess.Popen([sys.executable, "-m", "tron_sim", "--port", "0", "--block-interval", "0"],
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split()[3]
        assert requests.post(f"{url}/walletsolidity/getnowblock", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=5)
