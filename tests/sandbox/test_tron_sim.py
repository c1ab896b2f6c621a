"""The TronGrid simulator over real HTTP: the real answers' shapes (tests/data) and the real pool's behaviours."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from tronpy.exceptions import AddressNotFound, TransactionNotFound

from infra.addresses import from_hex, is_valid_address, to_hex20, to_hex41, to_topic
from tron_sim import APPROVAL_TOPIC, TRANSFER_TOPIC, USDT_MAINNET, Simulator, random_address
from tron_sim.txraw import RawContract, RawData

DATA = Path(__file__).resolve().parents[1] / "data"
FAKE_TOKEN = "TXL6rJbvmjD46zeN1JssfgxvSo99qC8MRT"
PAYER = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"


def _capture(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(block_interval=0.0, solidify_depth=2, start_time_ms=1_738_601_505_000) as simulator:
        yield simulator


def trc20(sim: Simulator, wallet: str, **params: Any) -> requests.Response:
    return requests.get(f"{sim.url}/v1/accounts/{wallet}/transactions/trc20", params=params, timeout=5)


def post(sim: Simulator, path: str, body: Any = None) -> requests.Response:
    return requests.post(f"{sim.url}{path}", json=body if body is not None else {}, timeout=5)


def _same_shape(actual: Any, expected: Any, where: str = "$", subset: bool = False) -> None:
    """Same keys (recursively) and same JSON types as the capture; ``subset``: the capture may have keys more
    (java-tron leaves out fields an object never used)."""
    assert type(actual) is type(expected), f"{where}: {type(actual).__name__} != {type(expected).__name__}"
    if isinstance(expected, dict):
        keys_match = set(actual) <= set(expected) if subset else set(actual) == set(expected)
        assert keys_match, f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in actual:
            _same_shape(actual[key], expected[key], f"{where}.{key}", subset)
    elif isinstance(expected, list) and expected and actual:
        _same_shape(actual[0], expected[0], f"{where}[0]", subset)


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
    sim.trx_transfer(sender, 100_000_000)  # the captured sender burned TRX for the energy
    sim.mine()
    tx_id = sim.transfer(wallet, 41_677_389, from_=sender)
    sim.solidify()
    info = post(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}).json()
    capture = _capture("txinfo_usdt_success.json")
    _same_shape(info, capture, subset=True)
    assert set(info) == set(capture)
    assert set(capture["receipt"]) - set(info["receipt"]) == {"energy_usage"}  # no energy staked: all burned
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
    assert [i["id"] for i in infos[:2]] == [first, second]
    [noise] = infos[2:]  # the block's own USDT traffic comes after the caller's transactions
    assert noise["log"][0]["address"] == to_hex20(USDT_MAINNET) and noise["log"][0]["topics"][2] != to_topic(wallet)
    assert post(sim, "/walletsolidity/gettransactioninfobyblocknum", {"num": block - 1}).json() == []  # empty block
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
    assert after["head_timestamp"] == before["head_timestamp"] + 105_000  # 103 s, up to the next 3 s boundary
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
    ("429", 429, "suspended for 7 s"),
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
                               stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split()[3]
        assert requests.post(f"{url}/walletsolidity/getnowblock", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=5)


# -- real shapes: java-tron's documentation, TronGrid's events, raw transactions ------------------------
def node(sim: Simulator, path: str, body: Any = None, **query: Any) -> Any:
    response = requests.post(f"{sim.url}{path}", params=query, json=body if body is not None else {}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def test_raw_data_hex_and_txid_reproduce_real_transactions() -> None:
    for detail in _capture("trongrid_trc20_detail.json"):
        raw = detail["raw_data"]
        value = raw["contract"][0]["parameter"]["value"]
        contract = RawContract("TriggerSmartContract", from_hex(value["owner_address"]),
                               from_hex(value["contract_address"]), data=value["data"])
        data = RawData(contract, raw["ref_block_bytes"], raw["ref_block_hash"], raw["expiration"], raw["timestamp"],
                       raw["fee_limit"])
        assert data.hex() == detail["raw_data_hex"]
        assert data.tx_id() == detail["txID"]


def test_transaction_by_id_shape_and_id(sim: Simulator) -> None:
    sender, wallet = random_address(), random_address()
    tx_id = sim.transfer(wallet, 41_677_389, from_=sender)
    sim.solidify()
    tx = node(sim, "/walletsolidity/gettransactionbyid", {"value": tx_id})
    _same_shape(tx, _capture("javatron_gettransactionbyid.json"))
    assert tx["txID"] == tx_id == hashlib.sha256(bytes.fromhex(tx["raw_data_hex"])).hexdigest()
    value = tx["raw_data"]["contract"][0]["parameter"]["value"]
    assert value["owner_address"] == to_hex41(sender) and value["contract_address"] == to_hex41(USDT_MAINNET)
    assert value["data"] == "a9059cbb" + to_topic(wallet) + f"{41_677_389:064x}"
    block = node(sim, "/wallet/getblockbynum", {"num": sim.tx_block(tx_id)})
    assert block["transactions"][0] == tx  # a block carries the same transaction objects
    trx = sim.trx_transfer(wallet, 7)
    sim.solidify()
    trx_value = node(sim, "/wallet/gettransactionbyid", {"value": trx})["raw_data"]["contract"][0]["parameter"]
    assert trx_value["value"] == {"amount": 7, "owner_address": trx_value["value"]["owner_address"],
                                  "to_address": to_hex41(wallet)}
    assert trx_value["type_url"] == "type.googleapis.com/protocol.TransferContract"


def test_equal_transfers_get_distinct_ids(sim: Simulator) -> None:
    wallet, sender = random_address(), random_address()
    ids = {sim.transfer(wallet, 5, from_=sender) for _ in range(50)}
    assert len(ids) == 50


def test_block_shapes_match_java_tron_docs() -> None:
    sim = Simulator(block_interval=0.0, solidify_depth=2, usdt_noise_per_block=0)  # the documented blocks are empty
    sim.start()
    try:
        check_block_shapes(sim)
    finally:
        sim.stop()


def check_block_shapes(sim: Simulator) -> None:
    empty_block = node(sim, "/wallet/getblockbynum", {"num": sim.state()["solid_head"] - 1})
    _same_shape(empty_block, _capture("javatron_getblockbynum.json"))
    _same_shape(node(sim, "/walletsolidity/getnowblock"), _capture("javatron_getnowblock.json"))
    by_id = node(sim, "/wallet/getblockbyid", {"value": empty_block["blockID"]})
    assert by_id == empty_block
    assert node(sim, "/wallet/getblockbyid", {"value": "00" * 32}) == {}
    head = sim.mine()
    head_id = node(sim, "/wallet/getblockbynum", {"num": head})["blockID"]
    assert node(sim, "/walletsolidity/getblockbyid", {"value": head_id}) == {}  # not solidified yet
    assert "Error" in node(sim, "/wallet/getblockbyid", {"value": "xyz"})


def test_transaction_info_shapes_match_java_tron_docs(sim: Simulator) -> None:
    internal = sim.transfer(random_address(), 4, internal=True)
    trx = sim.trx_transfer(random_address())
    block = sim.mine()
    sim.solidify()
    info = node(sim, "/walletsolidity/gettransactioninfobyid", {"value": internal})
    documented = _capture("javatron_gettransactioninfobyid_internal.json")
    _same_shape(info["internal_transactions"], documented["internal_transactions"])
    _same_shape(info["log"], documented["log"])
    infos = node(sim, "/walletsolidity/gettransactioninfobyblocknum", {"num": block})
    trx_info = next(i for i in infos if i["id"] == trx)
    _same_shape([trx_info], _capture("javatron_gettransactioninfobyblocknum.json"))
    assert node(sim, "/wallet/gettransactioninfobyblocknum", {"num": 0}) == {}  # java-tron: num <= 0


def test_node_info_account_and_chain_parameters(sim: Simulator) -> None:
    wallet = random_address()
    sim.trx_transfer(wallet, 2_500_000)
    sim.transfer(wallet, 1)  # TRC20 money alone does not create an account
    sim.solidify()
    state = sim.state()
    for prefix in ("/wallet", "/walletsolidity"):
        info = node(sim, f"{prefix}/getnodeinfo")
        _same_shape(info, _capture("javatron_getnodeinfo.json"))
        head = node(sim, "/wallet/getblockbynum", {"num": state["head"]})["blockID"]
        assert info["block"] == f"Num:{state['head']},ID:{head}"
        assert info["solidityBlock"].startswith(f"Num:{state['solid_head']},ID:")
    account = node(sim, "/wallet/getaccount", {"address": to_hex41(wallet)})
    documented = _capture("javatron_getaccount.json")
    _same_shape(account, documented, subset=True)
    assert set(documented) - set(account) == {"free_net_usage", "latest_consume_free_time", "assetV2",
                                              "free_asset_net_usageV2", "asset_optimized"}  # never used here
    assert account["balance"] == 2_500_000 and account["address"] == to_hex41(wallet)
    assert node(sim, "/walletsolidity/getaccount", {"address": to_hex41(random_address())}) == {}
    assert "Error" in node(sim, "/wallet/getaccount", {"address": wallet})  # base58 needs visible=true
    _same_shape(node(sim, "/wallet/getchainparameters"), _capture("javatron_getchainparameters.json"))
    assert requests.post(f"{sim.url}/walletsolidity/getchainparameters", timeout=5).status_code == 404


def test_visible_true_answers_base58_where_java_tron_does(sim: Simulator) -> None:
    sender, wallet = random_address(), random_address()
    tx_id = sim.transfer(wallet, 9, from_=sender)
    reverted = sim.transfer(wallet, 1, reverted=True)
    sim.trx_transfer(wallet, 1_000_000)
    sim.solidify()
    block = sim.tx_block(tx_id)
    # getnowblock reads visible from the URL only (the servlet ignores a POST body)
    assert is_valid_address(node(sim, "/wallet/getnowblock", visible="true")["block_header"]["raw_data"][
        "witness_address"])
    assert node(sim, "/wallet/getnowblock", {"visible": True})["block_header"]["raw_data"][
        "witness_address"].startswith("41")
    # POST endpoints read it from the JSON body, not from the URL
    shown = node(sim, "/wallet/getblockbynum", {"num": block, "visible": True})
    value = shown["transactions"][0]["raw_data"]["contract"][0]["parameter"]["value"]
    assert (value["owner_address"], value["contract_address"]) == (sender, USDT_MAINNET)
    hidden = node(sim, "/wallet/getblockbynum", {"num": block}, visible="true")
    assert hidden["transactions"][0]["raw_data"]["contract"][0]["parameter"]["value"]["owner_address"].startswith("41")
    info = node(sim, "/wallet/gettransactioninfobyid", {"value": tx_id, "visible": True})
    assert info["contract_address"] == USDT_MAINNET and info["log"][0]["address"] == USDT_MAINNET
    assert info["log"][0]["topics"][2] == to_topic(wallet)  # topics stay hex
    by_get = requests.get(f"{sim.url}/wallet/gettransactioninfobyid", params={"value": tx_id, "visible": "true"},
                          timeout=5).json()
    assert by_get == info
    failed = node(sim, "/wallet/gettransactioninfobyid", {"value": reverted, "visible": "true"})
    assert failed["resMessage"] == "REVERT opcode executed"
    tx = node(sim, "/wallet/gettransactionbyid", {"value": tx_id, "visible": True})
    assert tx["raw_data"]["contract"][0]["parameter"]["value"]["owner_address"] == sender
    account = node(sim, "/wallet/getaccount", {"address": wallet, "visible": True})
    assert account["address"] == wallet and account["owner_permission"]["keys"][0]["address"] == wallet
    assert node(sim, "/wallet/getnodeinfo", visible="true")["block"].startswith("Num:")


def tronpy_client(sim: Simulator) -> Any:
    from tronpy import Tron
    from tronpy.providers import HTTPProvider

    return Tron(HTTPProvider(sim.url, timeout=5))


def test_tronpy_reads_the_simulator(sim: Simulator) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 12_345_678, from_=PAYER)
    funded = sim.trx_transfer(wallet, 3_000_000)
    sim.solidify()
    state = sim.state()
    client = tronpy_client(sim)
    latest = client.get_latest_block()
    assert latest["block_header"]["raw_data"]["number"] == state["head"]
    assert client.get_latest_block_number() == state["head"]
    assert client.get_latest_solid_block_number() == state["solid_head"]
    block_number = sim.tx_block(tx_id)
    assert block_number is not None
    block = client.get_block(block_number)
    assert block["block_header"]["raw_data"]["number"] == block_number
    assert [t["txID"] for t in block["transactions"]][:2] == [tx_id, funded]
    assert client.get_block(block["blockID"]) == block
    tx = client.get_transaction(tx_id)
    assert tx["txID"] == tx_id and tx["raw_data"]["contract"][0]["parameter"]["value"]["owner_address"] == PAYER
    info = client.get_transaction_info(tx_id)
    assert info["receipt"]["result"] == "SUCCESS" and int(info["log"][0]["data"], 16) == 12_345_678
    assert client.get_solid_transaction_info(tx_id)["blockNumber"] == block_number
    assert client.get_account(wallet)["balance"] == 3_000_000
    assert client.get_account_balance(wallet) == Decimal(3)
    assert client.get_chain_parameters()[0]["key"] == "getMaintenanceTimeInterval"
    with pytest.raises(AddressNotFound):
        client.get_account(random_address())
    with pytest.raises(TransactionNotFound):
        client.get_transaction("ab" * 32)
    # 1. the USDT contract and balanceOf (triggerconstantcontract) on the chain's state
    usdt = client.get_contract(USDT_MAINNET)
    assert (usdt.name, usdt.contract_address, usdt.user_resource_percent) == ("TetherToken", USDT_MAINNET, 100)
    assert is_valid_address(usdt.origin_address) and len(usdt.code_hash) == 64 and usdt.bytecode
    assert usdt.functions.balanceOf(wallet) == 12_345_678
    assert usdt.functions.balanceOf(random_address()) == 0
    assert (usdt.functions.symbol(), usdt.functions.decimals(), usdt.functions.name()) == ("USDT", 6, "Tether USD")
    # 2. resources: 600 free bandwidth points, PAYER's transfer took 345 of them; no account, no answer
    resource = client.get_account_resource(wallet)
    assert resource == {"freeNetLimit": 600, "TotalNetLimit": 43_200_000_000, "TotalNetWeight": 68_305_209_098,
                        "TotalEnergyLimit": 180_000_000_000, "TotalEnergyWeight": 2_411_528_185}
    assert client.get_bandwidth(wallet) == 600
    assert client.get_bandwidth(PAYER) == 600 - 345
    assert client.get_account_resource(PAYER)["freeNetUsed"] == 345
    assert client.get_energy(PAYER) == 0
    stranger = random_address()
    with pytest.raises(AddressNotFound):
        client.get_account_resource(stranger)
    with pytest.raises(AddressNotFound):
        client.get_bandwidth(stranger)
    # 3. peers: loopback only
    nodes = client.list_nodes()
    assert nodes and all(n["address"]["host"].startswith("127.0.0.") and n["address"]["port"] == 18888
                         for n in nodes)
    # 4. the contract's own account
    contract_account = client.get_account(USDT_MAINNET)
    assert contract_account["type"] == "Contract" and contract_account["address"] == USDT_MAINNET
    assert contract_account["account_name"] == "TetherToken"
    # 5. a sender without TRX is charged nothing: its receipt shows delegated energy and free bandwidth
    assert client.get_account_balance(PAYER) == 0
    assert "fee" not in info and "energy_fee" not in info["receipt"]
    assert info["receipt"]["energy_usage"] == info["receipt"]["energy_usage_total"] == 130_285


def test_usdt_balance_of_reads_head_or_solid_state_through_tronpy(sim: Simulator) -> None:
    from tronpy.exceptions import TvmError, ValidationError

    wallet, other = random_address(), random_address()
    sim.transfer(wallet, 5_000_000)
    sim.transfer(wallet, 9_000_000, reverted=True)  # a reverted call moves nothing
    sim.approve(wallet, other, 1_000_000)
    sim.solidify()
    sim.transfer(other, 1_500_000, from_=wallet)
    sim.transfer(wallet, 250_000, malformed="data")  # its receipt's log is broken, the transfer happened
    sim.transfer(wallet, 7, contract=FAKE_TOKEN)  # another token
    sim.mine()
    client = tronpy_client(sim)
    usdt = client.get_contract(USDT_MAINNET)
    # /wallet reads the head's state, /walletsolidity the solid head's
    assert usdt.functions.balanceOf(wallet) == 5_000_000 - 1_500_000 + 250_000
    assert usdt.functions.balanceOf(other) == 1_500_000
    assert usdt.functions.allowance(wallet, other) == 1_000_000
    parameter = to_topic(wallet)
    call = {"owner_address": to_hex41(other), "contract_address": to_hex41(USDT_MAINNET),
            "function_selector": "balanceOf(address)", "parameter": parameter}
    solid = node(sim, "/walletsolidity/triggerconstantcontract", call)
    assert int(solid["constant_result"][0], 16) == 5_000_000
    head = node(sim, "/wallet/triggerconstantcontract", call)
    assert int(head["constant_result"][0], 16) == 3_750_000
    # java-tron's answer: TronGrid's shape for USDT; the transaction is the unsigned call at the head
    assert set(head) == {"result", "energy_used", "constant_result", "energy_penalty", "transaction"}
    assert head["result"] == {"result": True} and head["energy_used"] > head["energy_penalty"] > 0
    transaction = head["transaction"]
    assert set(transaction) == {"ret", "visible", "txID", "raw_data", "raw_data_hex"}
    assert transaction["ret"] == [{}] and transaction["visible"] is False
    assert hashlib.sha256(bytes.fromhex(transaction["raw_data_hex"])).hexdigest() == transaction["txID"]
    value = transaction["raw_data"]["contract"][0]["parameter"]["value"]
    assert value == {"data": "70a08231" + parameter, "owner_address": to_hex41(other),
                     "contract_address": to_hex41(USDT_MAINNET)}
    assert node(sim, "/wallet/triggerconstantcontract", call | {"data": "70a08231" + parameter,
                                                                 "function_selector": ""}) == head
    # an unknown selector reverts; another address is no contract
    with pytest.raises(TvmError, match="REVERT opcode executed"):
        client.trigger_constant_contract(wallet, USDT_MAINNET, "mint(uint256)", "00" * 32)
    reverted = node(sim, "/wallet/triggerconstantcontract", call | {"function_selector": "transfer(address,uint256)"})
    assert reverted["result"] == {"result": True, "message": b"REVERT opcode executed".hex()}
    assert reverted["constant_result"] == [""] and reverted["transaction"]["ret"] == [{"ret": "FAILED"}]
    with pytest.raises(ValidationError, match="Smart contract is not exist"):
        client.trigger_constant_contract(wallet, FAKE_TOKEN, "balanceOf(address)", parameter)
    not_a_contract = node(sim, "/wallet/triggerconstantcontract", call | {"contract_address": to_hex41(FAKE_TOKEN)})
    assert not_a_contract == {"result": {"code": "CONTRACT_VALIDATE_ERROR",
                                         "message": b"Smart contract is not exist.".hex()}}
    assert node(sim, "/wallet/getcontract", {"value": to_hex41(FAKE_TOKEN)}) == {}
    bad = node(sim, "/wallet/triggerconstantcontract", call | {"parameter": "zz"})
    assert bad["result"]["code"] == "OTHER_ERROR"


def test_contract_record_account_resources_and_peers_as_java_tron_prints_them(sim: Simulator) -> None:
    documented = node(sim, "/wallet/getcontract", {"value": to_hex41(USDT_MAINNET)})
    assert list(documented) == ["origin_address", "contract_address", "abi", "bytecode",
                                "consume_user_resource_percent", "name", "origin_energy_limit", "code_hash"]
    assert documented["contract_address"] == to_hex41(USDT_MAINNET) and documented["origin_address"].startswith("41")
    entries = {entry["name"]: entry for entry in documented["abi"]["entrys"]}
    assert entries["balanceOf"] == {"constant": True, "name": "balanceOf",
                                    "inputs": [{"name": "who", "type": "address"}], "outputs": [{"type": "uint256"}],
                                    "type": "Function", "stateMutability": "View"}
    assert entries["Transfer"]["type"] == "Event" and entries["Transfer"]["inputs"][0] == {
        "indexed": True, "name": "from", "type": "address"}
    shown = node(sim, "/wallet/getcontract", {"value": USDT_MAINNET, "visible": True})
    assert shown["contract_address"] == USDT_MAINNET and shown["name"] == "TetherToken"
    account = node(sim, "/walletsolidity/getaccount", {"address": to_hex41(USDT_MAINNET)})
    assert account["account_name"] == b"TetherToken".hex() and account["type"] == "Contract"
    assert "owner_permission" not in account and "create_time" not in account
    # resources: /wallet only; {} for no account; an account of its own has no stake
    assert node(sim, "/wallet/getaccountnet", {"address": to_hex41(USDT_MAINNET)}) == {
        "freeNetLimit": 600, "TotalNetLimit": 43_200_000_000, "TotalNetWeight": 68_305_209_098}
    assert node(sim, "/wallet/getaccountresource", {"address": to_hex41(random_address())}) == {}
    assert node(sim, "/wallet/getaccountnet", {"address": random_address(), "visible": True}) == {}
    assert "Error" in node(sim, "/wallet/getaccountresource", {"address": "zz"})
    for name in ("getaccountresource", "getaccountnet", "getcontract", "listnodes"):
        assert requests.post(f"{sim.url}/walletsolidity/{name}", timeout=5).status_code == 404
    # listnodes: hosts in hex; as text only with visible=true in the URL (the servlet ignores the body's)
    hexed = node(sim, "/wallet/listnodes", {"visible": True})["nodes"]
    hosts = [bytes.fromhex(peer["address"]["host"]).decode() for peer in hexed]
    assert hosts and all(host.startswith("127.0.0.") for host in hosts)
    assert [peer["address"]["host"] for peer in node(sim, "/wallet/listnodes", visible="true")["nodes"]] == hosts


def test_fees_are_charged_only_to_accounts_that_have_the_trx(sim: Simulator) -> None:
    poor, some, rich, wallet, fresh, sender = (random_address() for _ in range(6))
    sim.trx_transfer(some, 1_000_000)
    sim.trx_transfer(rich, 100_000_000)
    sim.trx_transfer(sender, 10_000_000)
    sim.mine()
    first = sim.transfer(wallet, 1_000_000, from_=poor)  # the wallet's first USDT
    second = sim.transfer(wallet, 1_000_000, from_=poor)  # the same day: free bandwidth used up
    a_little = sim.transfer(wallet, 1_000_000, from_=some)
    more = sim.transfer(wallet, 1_000_000, from_=some)
    paid = sim.transfer(wallet, 1_000_000, from_=rich)
    sim.solidify()

    def info(tx_id: str) -> dict[str, Any]:
        return node(sim, "/wallet/gettransactioninfobyid", {"value": tx_id})

    # no TRX: energy (and bandwidth past the free 600 points) delegated, nothing burned
    assert "fee" not in info(first) and info(first)["receipt"] == {
        "energy_usage": 130_285, "energy_usage_total": 130_285, "net_usage": 345, "result": "SUCCESS",
        "energy_penalty_total": 100_635}
    assert "fee" not in info(second) and info(second)["receipt"] == {
        "energy_usage": 64_285, "energy_usage_total": 64_285, "net_usage": 345, "result": "SUCCESS",
        "energy_penalty_total": 49_635}
    # 1 TRX: bandwidth burned once the free points are used (mainnet b69c51db…), never the 13.5 TRX of energy
    assert "fee" not in info(a_little)
    assert info(more)["fee"] == 345_000 and info(more)["receipt"] == {
        "energy_usage": 64_285, "energy_usage_total": 64_285, "net_fee": 345_000, "result": "SUCCESS",
        "energy_penalty_total": 49_635}
    # enough TRX: the energy is burned (the captured receipt's energy_fee)
    assert info(paid)["fee"] == 64_285 * 210 and info(paid)["receipt"] == {
        "energy_fee": 64_285 * 210, "energy_usage_total": 64_285, "net_usage": 345, "result": "SUCCESS",
        "energy_penalty_total": 49_635}
    client = tronpy_client(sim)
    assert client.get_account_balance(poor) == 0 and "balance" not in client.get_account(poor)
    assert client.get_account(some)["balance"] == 1_000_000 - 345_000
    assert client.get_account(rich)["balance"] == 100_000_000 - 64_285 * 210
    assert client.get_account(poor)["free_net_usage"] == 345 and client.get_bandwidth(some) == 600 - 345
    # TRX transfers: bandwidth from the free points, else burned; to a new account 1.1 TRX (txinfo_trx_transfer.json)
    to_known = sim.trx_transfer(some, 500_000, from_=sender)
    burned = sim.trx_transfer(some, 500_000, from_=rich)  # rich used 345 of its 600 points already
    to_new = sim.trx_transfer(fresh, 2_000_000, from_=rich)
    broke = sim.trx_transfer(wallet, 3_000_000, from_=poor)  # TRX it sends counts as funded at genesis
    sim.solidify()
    points = sim.chain.txs[to_known].raw.bandwidth()
    assert 265 <= points <= 268 and sim.chain.txs[burned].raw.bandwidth() == points
    assert "fee" not in info(to_known) and info(to_known)["receipt"] == {"net_usage": points}
    assert info(burned)["fee"] == points * 1000 and info(burned)["receipt"] == {"net_fee": points * 1000}
    assert info(to_new)["fee"] == 1_100_000 and info(to_new)["receipt"] == {"net_fee": 100_000}
    assert info(broke)["fee"] == 1_100_000
    assert client.get_account(rich)["balance"] == (100_000_000 - 64_285 * 210 - 500_000 - points * 1000
                                                   - 2_000_000 - 1_100_000)
    assert client.get_account(sender)["balance"] == 10_000_000 - 500_000
    assert "balance" not in client.get_account(poor)
    # free bandwidth recovers within 24 hours
    sim.advance(24 * 3600)
    sim.mine()
    assert client.get_bandwidth(poor) == 600 and "free_net_usage" not in client.get_account(poor)


# -- chain time and noise ----------------------------------------------------------------------------
def test_block_timestamps_on_3_second_boundaries() -> None:
    simulator = Simulator(start_time_ms=1_738_601_505_001)
    assert simulator.state()["head_timestamp"] == 1_738_601_508_000  # rounded up
    simulator.advance(1.2)
    simulator.mine()
    assert simulator.state()["head_timestamp"] == 1_738_601_508_000 + 6000
    clocked = Simulator(follow_clock=True, start_time_ms=int(time.time() * 1000) - 600_000)
    before = time.time() * 1000
    clocked.mine()
    head = clocked.state()["head_timestamp"]
    assert head % 3000 == 0 and before <= head < before + 3000 + 1000


def test_every_block_carries_usdt_noise(sim: Simulator) -> None:
    wallet = random_address()
    sim.transfer(wallet, 1)
    first = sim.mine()
    sim.mine(4)
    for number in range(first, first + 5):
        infos = node(sim, "/wallet/gettransactioninfobyblocknum", {"num": number})
        noise = infos[1:] if number == first else infos
        assert len(noise) == 1 and noise[0]["log"][0]["address"] == to_hex20(USDT_MAINNET)
        assert to_topic(wallet) not in noise[0]["log"][0]["topics"]
    head = sim.solidify()
    assert sim.solidify() == head  # noise never needs solidifying
    quiet = Simulator(usdt_noise_per_block=0)
    quiet.start()
    try:
        assert node(quiet, "/wallet/gettransactioninfobyblocknum", {"num": quiet.mine()}) == []
    finally:
        quiet.stop()


def test_noise_is_reproducible_with_a_seed() -> None:
    def noise(seed: int) -> list[tuple[str, str, int]]:
        simulator = Simulator(seed=seed, usdt_noise_per_block=3)
        simulator.mine(2)
        return [(tx.logs[0].from_address, tx.logs[0].to_address, tx.logs[0].amount)
                for tx in simulator.chain.txs.values()]

    assert noise(7) == noise(7) != noise(8)
    assert len(noise(7)) == 9  # the starting solid head carries a block's noise too, then 2 mined blocks


# -- a pool of nodes, some behind --------------------------------------------------------------------
def test_node_behind_answers_empty_for_blocks_it_lacks(sim: Simulator) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 5)
    sim.solidify()
    state = sim.state()
    block_id = node(sim, "/wallet/getblockbynum", {"num": state["head"]})["blockID"]
    sim.set_node_lag(1.0, 5)
    assert node(sim, "/wallet/getnowblock")["block_header"]["raw_data"]["number"] == state["head"] - 5
    assert node(sim, "/walletsolidity/getnowblock")["block_header"]["raw_data"]["number"] == state["solid_head"] - 5
    tx_block = sim.tx_block(tx_id)
    assert tx_block is not None and tx_block > state["solid_head"] - 5
    assert node(sim, "/walletsolidity/gettransactioninfobyblocknum", {"num": tx_block}) == []
    assert node(sim, "/wallet/getblockbynum", {"num": state["head"]}) == {}
    assert node(sim, "/wallet/getblockbyid", {"value": block_id}) == {}
    assert node(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id}) == {}
    assert node(sim, "/wallet/gettransactionbyid", {"value": tx_id}) == {}
    assert node(sim, "/wallet/getnodeinfo")["block"].startswith(f"Num:{state['head'] - 5},")
    assert [r["transaction_id"] for r in trc20(sim, wallet).json()["data"]] == [tx_id]  # /v1 is not a node
    sim.set_node_lag(0, 5)
    assert node(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id})["id"] == tx_id


def test_node_lag_fraction_is_seeded(sim: Simulator) -> None:
    def lagging_answers(seed: int) -> list[bool]:
        sim.set_node_lag(0.3, 20, seed=seed)
        head = sim.state()["head"]
        return [node(sim, "/wallet/getnowblock")["block_header"]["raw_data"]["number"] == head - 20
                for _ in range(100)]

    first = lagging_answers(11)
    assert first == lagging_answers(11)
    assert 15 <= sum(first) <= 45
    assert first != lagging_answers(12)
    with pytest.raises(ValueError):
        sim.set_node_lag(1.5, 3)


# -- the index, behind in chain time --------------------------------------------------------------------
def events(sim: Simulator, contract: str = USDT_MAINNET, **params: Any) -> requests.Response:
    return requests.get(f"{sim.url}/v1/contracts/{contract}/events", params=params, timeout=5)


def test_index_lag_in_chain_time(sim: Simulator) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 5)
    sim.solidify()
    sim.set_index_lag(90)
    assert trc20(sim, wallet).json()["data"] == []
    assert tx_id not in {e["transaction_id"] for e in events(sim, limit=200).json()["data"]}
    sim.advance(84)
    sim.mine(3)  # the solid head is now 90 s past the transfer's block
    assert [r["transaction_id"] for r in trc20(sim, wallet, only_confirmed="true").json()["data"]] == [tx_id]
    listed = events(sim, only_confirmed="true", limit=200).json()["data"]
    assert tx_id in {e["transaction_id"] for e in listed}
    solid_ts = sim.state()["solid_timestamp"]
    assert max(e["block_timestamp"] for e in listed) <= solid_ts - 90_000  # nothing newer than the lag
    sim.set_index_lag(0)
    assert max(e["block_timestamp"] for e in events(sim, only_confirmed="true").json()["data"]) == solid_ts


def test_one_transaction_indexed_late(sim: Simulator) -> None:
    wallet = random_address()
    late = sim.transfer(wallet, 1)
    on_time = sim.transfer(wallet, 2)
    sim.solidify()
    sim.delay_in_index(late, 60)
    assert [r["transaction_id"] for r in trc20(sim, wallet).json()["data"]] == [on_time]
    assert late not in {e["transaction_id"] for e in events(sim, limit=200).json()["data"]}
    block_ts = node(sim, "/wallet/gettransactioninfobyid", {"value": late})["blockTimeStamp"]
    sim.advance(60)
    sim.mine()
    assert sim.state()["solid_timestamp"] < block_ts + 60_000
    assert len(trc20(sim, wallet).json()["data"]) == 1
    sim.mine(2)
    assert {r["transaction_id"] for r in trc20(sim, wallet).json()["data"]} == {late, on_time}


# -- GET /v1/contracts/{contract}/events ----------------------------------------------------------------
def test_events_shape_and_filters(sim: Simulator) -> None:
    owner, spender, wallet = random_address(), random_address(), random_address()
    transfer = sim.transfer(wallet, 1_399_000_000, from_=owner)
    approval = sim.approve(owner, spender, 7)
    sim.solidify()
    pending = sim.transfer(wallet, 3)
    sim.mine()
    body = events(sim, event_name="Transfer", only_confirmed="true", limit=2).json()
    _same_shape(body, _capture("trongrid_events_page.json"))
    assert all(e["event_name"] == "Transfer" for e in body["data"])
    page = events(sim, limit=200).json()["data"]
    by_tx = {e["transaction_id"]: e for e in page}
    record = by_tx[transfer]
    assert record["result"]["from"] == "0x" + to_hex20(owner) and record["result"]["to"] == "0x" + to_hex20(wallet)
    assert record["result"]["value"] == record["result"]["2"] == "1399000000"
    assert record["block_number"] == sim.tx_block(transfer) and record["contract_address"] == USDT_MAINNET
    assert "_unconfirmed" not in record and by_tx[pending]["_unconfirmed"] is True
    approved = by_tx[approval]
    assert approved["event_name"] == "Approval" and approved["result"]["spender"] == "0x" + to_hex20(spender)
    assert approved["result_type"] == {"owner": "address", "spender": "address", "value": "uint256"}
    assert [e["transaction_id"] for e in events(sim, event_name="Approval").json()["data"]] == [approval]
    assert pending not in {e["transaction_id"] for e in events(sim, only_confirmed="true", limit=200).json()["data"]}
    assert {e["transaction_id"] for e in events(sim, only_unconfirmed="true", limit=200).json()["data"]} >= {pending}
    block = sim.tx_block(transfer)
    assert {e["block_number"] for e in events(sim, block_number=block).json()["data"]} == {block}
    timestamps = [e["block_timestamp"] for e in events(sim, order_by="block_timestamp,asc", limit=200).json()["data"]]
    assert timestamps == sorted(timestamps)
    ts = record["block_timestamp"]
    window = events(sim, min_block_timestamp=ts, max_block_timestamp=ts, limit=200).json()["data"]
    assert {e["block_timestamp"] for e in window} == {ts}
    assert events(sim, only_confirmed="true", only_unconfirmed="true").status_code == 400
    assert events(sim, "TNotAnAddress").status_code == 400
    assert events(sim, FAKE_TOKEN).json()["data"] == []


def test_events_paging_with_fingerprint(sim: Simulator) -> None:
    sim.mine(45)  # 45 noise transfers
    params: dict[str, Any] = {"only_confirmed": "true", "limit": 20, "order_by": "block_timestamp,asc"}
    body = events(sim, **params).json()
    seen = [e["transaction_id"] for e in body["data"]]
    while "fingerprint" in body["meta"]:
        body = requests.get(body["meta"]["links"]["next"], timeout=5).json()
        seen += [e["transaction_id"] for e in body["data"]]
    assert len(seen) == len(set(seen)) == 44  # the starting solid head's and the solid part of 45 mined blocks


def test_limit_over_200_is_400_with_empty_body(sim: Simulator) -> None:
    for response in (trc20(sim, random_address(), limit=201), events(sim, limit=500)):
        assert response.status_code == 400 and response.content == b""
    assert trc20(sim, random_address(), limit=200).status_code == 200
    assert events(sim, limit=200).status_code == 200


# -- listing oddities ------------------------------------------------------------------------------------
def test_records_without_token_info(sim: Simulator) -> None:
    wallet = random_address()
    blank, normal = sim.transfer(wallet, 2_000_000, index_token_info=False), sim.transfer(wallet, 1)
    sim.solidify()
    records = {r["transaction_id"]: r for r in trc20(sim, wallet).json()["data"]}
    assert records[blank]["token_info"] == {} and records[normal]["token_info"]["address"] == USDT_MAINNET
    _same_shape(records[blank], _capture("trc20_record_token_info_empty.json"))
    sim.set_fault("blank_token_info", 1, path_prefix="/v1/accounts/")
    assert all(r["token_info"] == {} for r in trc20(sim, wallet).json()["data"])
    assert trc20(sim, wallet).json()["data"][0]["token_info"]["symbol"] == "USDT"


def test_approvals_in_the_trc20_list(sim: Simulator) -> None:
    owner, spender = random_address(), random_address()
    tx_id = sim.approve(owner, spender, 10**30)
    sim.solidify()
    [row] = trc20(sim, spender, only_to="true").json()["data"]
    assert (row["type"], row["from"], row["to"], row["value"]) == ("Approval", owner, spender, str(10**30))
    assert trc20(sim, owner, only_from="true").json()["data"][0]["transaction_id"] == tx_id
    info = node(sim, "/wallet/gettransactioninfobyid", {"value": tx_id})
    assert info["log"][0]["topics"] == [APPROVAL_TOPIC, to_topic(owner), to_topic(spender)]
    call = node(sim, "/wallet/gettransactionbyid", {"value": tx_id})["raw_data"]["contract"][0]["parameter"]
    assert call["value"]["data"].startswith("095ea7b3")


# -- amounts a real token log can carry, and broken logs ----------------------------------------------
def test_any_uint256_amount(sim: Simulator) -> None:
    wallet = random_address()
    zero = sim.transfer(wallet, 0)
    huge = sim.transfer(wallet, 2**256 - 1)
    sim.solidify()
    values = {r["transaction_id"]: r["value"] for r in trc20(sim, wallet).json()["data"]}
    assert values == {zero: "0", huge: str(2**256 - 1)}
    assert node(sim, "/wallet/gettransactioninfobyid", {"value": huge})["log"][0]["data"] == "f" * 64
    for bad in (2**256, -1, 1.5, True):
        with pytest.raises(ValueError):
            sim.transfer(wallet, bad)  # type: ignore[arg-type]
    assert post(sim, "/_sim/transfer", {"to": wallet, "amount": 10**40}).status_code == 200
    assert post(sim, "/_sim/transfer", {"to": wallet, "amount": -5}).status_code == 400


@pytest.mark.parametrize("kind", ["data", "short", "topics"])
def test_malformed_transfer_logs(sim: Simulator, kind: str) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 25, malformed=kind)
    sim.solidify()
    [log] = node(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id})["log"]
    if kind == "data":
        assert not all(c in "0123456789abcdef" for c in log["data"]) and len(log["data"]) == 64
    elif kind == "short":
        assert len(log["data"]) == 40 and len(log["topics"]) == 3
    else:
        assert log["topics"] == [TRANSFER_TOPIC, log["topics"][1]] and int(log["data"], 16) == 25
    assert trc20(sim, wallet).json()["data"][0]["value"] == "25"  # the index lists it as sent
    with pytest.raises(ValueError):
        sim.transfer(wallet, 1, malformed="nonsense")


# -- rate limits and errors as TronGrid and java-tron answer them --------------------------------------
@pytest.mark.parametrize(("kind", "path", "status", "text"), [
    ("429", "/v1/", 429, '{"Success": false, "Error": "The key exceeds the frequency limit(15), and the query '
                         'server is suspended for 27 s", "StatusCode": 429}'),
    ("429", "/wallet/", 429, '{"Error": "The key exceeds the frequency limit(15), and the query server is '
                             'suspended for 27 s"}'),
    ("429_allowed_rps", "/wallet/", 429, '{"Error": "request rate exceeded the allowed_rps(3), and the query '
                                         'server is suspended for 27 s"}'),
    ("403_suspended", "/wallet/", 403, '{"Error": "The key exceeds the frequency limit(15), and the query server '
                                       'is suspended for 27s"}'),
    ("403_daily", "/wallet/", 403, '{"Error": "Exceed the user daily usage (100000), the maximum query frequency '
                                   'is 1 time per second"}'),
    ("lack_of_resources", "/wallet/", 200, '{"Error": "class java.lang.IllegalAccessException : lack of computing '
                                           'resources"}'),
])
def test_rate_limit_texts(sim: Simulator, kind: str, path: str, status: int, text: str) -> None:
    sim.set_fault(kind, 1, seconds=27)
    url = f"{sim.url}/v1/accounts/{random_address()}/transactions/trc20" if path == "/v1/" else \
        f"{sim.url}/wallet/getnowblock"
    response = requests.get(url, timeout=5)
    assert (response.status_code, response.text) == (status, text)
    assert "Retry-After" not in response.headers
    assert requests.get(url, timeout=5).status_code == 200  # count=1


def test_503_with_and_without_retry_after(sim: Simulator) -> None:
    sim.set_fault("503", 1)
    sim.set_fault("503", 1, retry_after=12)
    bare = requests.post(f"{sim.url}/wallet/gettransactioninfobyid", json={"value": "ab" * 32}, timeout=5)
    timed = requests.post(f"{sim.url}/wallet/gettransactioninfobyid", json={"value": "ab" * 32}, timeout=5)
    for response in (bare, timed):
        assert response.status_code == 503 and response.headers["Content-Type"].startswith("text/html")
        assert "503 Service Temporarily Unavailable" in response.text and response.headers["Server"] == "openresty"
    assert "Retry-After" not in bare.headers and timed.headers["Retry-After"] == "12"


# -- hostile answers -------------------------------------------------------------------------------------
def test_drip_writes_the_real_answer_byte_by_byte(sim: Simulator) -> None:
    expected = node(sim, "/walletsolidity/getnowblock")
    sim.set_fault("drip", 1, seconds=0.002, path_prefix="/walletsolidity/getnowblock")
    started = time.monotonic()
    response = requests.post(f"{sim.url}/walletsolidity/getnowblock", timeout=(2, 0.5))  # per-read timeout holds
    elapsed = time.monotonic() - started
    assert response.json() == expected
    assert elapsed >= len(response.content) * 0.002


def test_endless_answer_never_finishes(sim: Simulator) -> None:
    sim.set_fault("endless", 1, seconds=0.01)
    response = requests.get(f"{sim.url}/v1/accounts/{random_address()}/transactions/trc20", stream=True,
                            timeout=(2, 0.5))
    assert response.headers["Transfer-Encoding"] == "chunked"
    received, deadline = 0, time.monotonic() + 0.5
    for piece in response.iter_content(4096):
        received += len(piece)
        if time.monotonic() > deadline:
            break
    response.close()
    assert received > 10_000  # still coming after half a second
    assert trc20(sim, random_address()).status_code == 200  # the server is fine, the fault was one-shot


def test_huge_answer_is_valid_json_of_the_size_asked_streamed_in_flat_memory(sim: Simulator) -> None:
    size = 50 * 1024 * 1024
    sim.set_fault("huge", 1, path_prefix="/walletsolidity/getnowblock")
    process = psutil.Process()
    before = process.memory_info().rss
    response = requests.post(f"{sim.url}/walletsolidity/getnowblock", stream=True, timeout=10)
    total = sum(len(piece) for piece in response.iter_content(1 << 20))
    grown = process.memory_info().rss - before
    assert total == size == int(response.headers["Content-Length"])
    assert grown < 20 * 1024 * 1024, f"the 50 MB answer grew this process by {grown} bytes"
    sim.set_fault("huge", 1, size=4096, path_prefix="/walletsolidity/getnowblock")
    small = requests.post(f"{sim.url}/walletsolidity/getnowblock", timeout=5)
    assert len(small.content) == 4096 and small.json()["block_header"]["raw_data"]["number"] > 0
    sim.set_fault("huge", 1, size=4096, path_prefix="/walletsolidity/gettransactioninfobyblocknum")
    listed = requests.post(f"{sim.url}/walletsolidity/gettransactioninfobyblocknum", json={"num": 1}, timeout=5)
    assert len(listed.content) == 4096 and isinstance(listed.json(), list)
    with pytest.raises(ValueError):
        sim.set_fault("huge", 1, size=10)


def test_head_lies_are_one_shot(sim: Simulator) -> None:
    sim.mine(5)
    state = sim.state()
    path = "/walletsolidity/getnowblock"

    def head() -> dict[str, Any]:
        return node(sim, path)

    true_head = head()
    sim.set_fault("head_future", 1)
    future = head()["block_header"]["raw_data"]
    assert future["timestamp"] == state["solid_timestamp"] + 10 * 365 * 86400 * 1000
    assert head() == true_head
    sim.set_fault("head_ahead", 1, blocks=300)
    ahead = head()
    raw = ahead["block_header"]["raw_data"]
    assert raw["number"] == state["solid_head"] + 300
    assert raw["timestamp"] == state["solid_timestamp"] + 300 * 3000
    assert int(ahead["blockID"][:16], 16) == raw["number"]
    sim.set_fault("head_behind", 1, blocks=300)
    behind = head()
    assert behind == node(sim, "/wallet/getblockbynum", {"num": state["solid_head"] - 300})
    sim.set_fault("head_future", 1, seconds=60, path_prefix="/wallet/")
    assert node(sim, "/wallet/getblockbynum", {"num": state["head"]})["block_header"]["raw_data"]["timestamp"] == \
        state["head_timestamp"]  # only getnowblock lies
    assert head() == true_head  # other prefixes do not consume it
    assert node(sim, "/wallet/getnowblock")["block_header"]["raw_data"]["timestamp"] == state["head_timestamp"] + 60_000


# -- replicas: several upstreams, one chain ----------------------------------------------------------
def test_replica_serves_the_same_chain_with_its_own_behaviour(sim: Simulator) -> None:
    other = sim.replica(v1_api=False)
    assert other.url != sim.url
    wallet = random_address()
    tx_id = sim.transfer(wallet, 5)
    other.solidify()  # mining through the replica is seen by both
    assert node(other, "/walletsolidity/gettransactioninfobyid", {"value": tx_id})["id"] == tx_id
    assert node(sim, "/walletsolidity/gettransactioninfobyid", {"value": tx_id})["id"] == tx_id
    assert trc20(other, wallet).status_code == 404 and trc20(sim, wallet).status_code == 200
    other.set_fault("503", None)
    other.set_node_lag(1.0, 2)
    assert requests.post(f"{other.url}/wallet/getnowblock", timeout=5).status_code == 503
    assert node(sim, "/wallet/getnowblock")["block_header"]["raw_data"]["number"] == sim.state()["head"]
    other.clear_faults()
    assert node(other, "/wallet/getnowblock")["block_header"]["raw_data"]["number"] == sim.state()["head"] - 2
    requests.post(f"{other.url}/wallet/getnowblock", headers={"TRON-PRO-API-KEY": "k"}, timeout=5)
    assert other.request_log[-1].api_key == "k" and all(r.api_key is None for r in sim.request_log)
    assert other.count("/wallet/") == 3 and sim.count("/wallet/") == 1
    sim.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(f"{other.url}/wallet/getnowblock", timeout=1)


# -- HTTP controls and the command line for the new behaviours ----------------------------------------
def test_http_controls_for_pool_behaviours(sim: Simulator) -> None:
    owner, spender, wallet = random_address(), random_address(), random_address()
    approval = post(sim, "/_sim/approve", {"owner": owner, "spender": spender, "amount": 3}).json()["tx_id"]
    late = post(sim, "/_sim/transfer", {"to": wallet, "amount": 0, "index_token_info": False}).json()["tx_id"]
    post(sim, "/_sim/solidify")
    assert post(sim, "/_sim/delay_in_index", {"tx_id": late, "seconds": 30}).status_code == 200
    assert trc20(sim, wallet).json()["data"] == []
    assert trc20(sim, spender).json()["data"][0]["transaction_id"] == approval
    state = post(sim, "/_sim/node_lag", {"fraction": 1, "blocks": 4, "seed": 1}).json()
    assert state["node_lag"] == {"fraction": 1.0, "blocks": 4}
    assert node(sim, "/wallet/getnowblock")["block_header"]["raw_data"]["number"] == state["head"] - 4
    assert post(sim, "/_sim/index_lag", {"seconds": 600}).json()["index"]["lag_seconds"] == 600
    assert trc20(sim, spender).json()["data"] == []
    faults = post(sim, "/_sim/fault", {"kind": "head_ahead", "blocks": 7, "retry_after": 1}).json()["faults"]
    assert faults[0]["blocks"] == 7
    for bad in ({"kind": "head_ahead", "blocks": 0}, {"kind": "huge", "size": 1}, {"kind": "drip", "seconds": -1},
                {"kind": "nope"}):
        assert post(sim, "/_sim/fault", bad).status_code == 400
    for path, body in (("/_sim/node_lag", {"fraction": 2, "blocks": 1}), ("/_sim/node_lag", {"fraction": "x"}),
                       ("/_sim/index_lag", {"seconds": -1}), ("/_sim/delay_in_index", {"tx_id": "x", "seconds": 1}),
                       ("/_sim/approve", {"owner": "x", "spender": spender, "amount": 1}),
                       ("/_sim/transfer", {"to": wallet, "amount": 1, "malformed": "x"}),
                       ("/_sim/transfer", {"to": wallet, "amount": 1, "reverted": "yes"})):
        assert post(sim, path, body).status_code == 400, (path, body)


def test_command_line_pool_options() -> None:
    args = ["--port", "0", "--block-interval", "0", "--node-lag-fraction", "1", "--node-lag-blocks", "3",
            "--usdt-noise-per-block", "2", "--index-lag", "30"]
    process = subprocess.Popen([sys.executable, "-m", "tron_sim", *args], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parents[2])
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[3]
        state = requests.get(f"{url}/_sim/state", timeout=5).json()
        assert state["node_lag"] == {"fraction": 1.0, "blocks": 3} and state["index"]["lag_seconds"] == 30
        assert state["usdt_noise_per_block"] == 2
        head = requests.post(f"{url}/wallet/getnowblock", timeout=5).json()["block_header"]["raw_data"]["number"]
        assert head == state["head"] - 3
    finally:
        process.terminate()
        process.wait(timeout=5)
    bad = subprocess.run([sys.executable, "-m", "tron_sim", "--port", "0", "--node-lag-fraction", "2"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=30)
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "fraction" in bad.stderr
