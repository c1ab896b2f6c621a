"""JSON shapes the simulator answers with, copied from real TronGrid / java-tron answers.

Sources (each real answer is vendored in ``tests/data`` and named in ``tests/data/README.md``):

* TRC20 record: ``trc20_page.json`` (LedgerHQ/ledger-live fixture ``fetchTronAccountTxsTrc20.fixture.json``);
  next-page ``meta``: TRON-US/trongrid README; a record with ``"token_info": {}``:
  ``trc20_record_token_info_empty.json`` (tronprotocol/java-tron issue 3741, also TRON-US/trongrid-js issue 41);
  ``"type": "Approval"`` rows: the list shows every TRC20 event of the address, not only transfers.
* Contract event record: ``trongrid_events_page.json`` (a TronGrid answer of ``/v1/contracts/<USDT>/events``
  captured in coollazy/UCollection ``internal/tronclient/events_test.go``); unconfirmed ones carry
  ``"_unconfirmed": true`` (tronweb ``IEventResponse``).
* Transaction info: ``txinfo_usdt_success.json`` and ``txinfo_trx_transfer.json`` (ledger-live fixture
  ``getTransactionInfoById.fixture.json``); failed call (``REVERT``, ``result: FAILED``, ``resMessage``, no ``log``):
  tronprotocol/wallet-cli docs. ``internal_transactions`` follows java-tron's ``InternalTransaction`` protobuf and
  the documentation-en ``gettransactioninfobyid.md`` example.
* Block and transaction: documentation-en ``getnowblock.md``, ``getblockbynum.md``, ``gettransactionbyid.md``
  (``javatron_*.json``) and the ledger-live TRC20 ``detail`` objects (``trongrid_trc20_detail.json``):
  ``raw_data_hex`` is the protobuf encoding of ``raw_data`` and the ``txID`` its SHA-256 (:mod:`tron_sim.txraw`).
* Account, node info, chain parameters: documentation-en ``getaccount.md``, ``getnodeinfo.md``,
  ``getchainparameters.md``; a contract's account: java-tron ``RepositoryImpl.createAccount``.
* Resources and peers: documentation-en ``getaccountresource.md``, ``getaccountnet.md``, ``listnodes.md``;
  receipts and fees: :mod:`tron_sim.accounts` (mainnet receipts named there).
* Constant calls: documentation-en ``triggerconstantcontract.md`` and TronGrid's answers for USDT's ``decimals()``
  and ``symbol()`` (``result``, ``energy_used``, ``constant_result``, ``energy_penalty``, ``transaction`` with
  ``ret``, ``visible``, ``txID``, ``raw_data``, ``raw_data_hex``); the contract record: :mod:`tron_sim.contract`.

``visible``: java-tron's ``JsonFormat`` prints the fields listed in ``HttpSelfFormatFieldName`` (witness, owner,
to and contract addresses, ``TransactionInfo.contract_address``, log ``address``, internal-transaction
addresses, permission key addresses, a contract's origin and contract addresses) in base58check when
``visible=true``, and ``resMessage``, ``Return.message``, ``Account.account_name`` and a peer's ``Address.host`` as
text; everything else stays hex. The transaction info servlets prefix a log's 20-byte address with ``41`` before that.
"""
from __future__ import annotations

from typing import Any

from infra.addresses import TRANSFER_TOPIC, to_hex20, to_hex41, to_topic
from tron_sim.accounts import (
    FREE_NET_LIMIT,
    TOTAL_ENERGY_LIMIT,
    TOTAL_ENERGY_WEIGHT,
    TOTAL_NET_LIMIT,
    TOTAL_NET_WEIGHT,
    Account,
    Receipt,
)
from tron_sim.chain import Block, LogSpec, Record, Tx
from tron_sim.contract import REVERT_MESSAGE as CALL_REVERT_MESSAGE
from tron_sim.contract import CallResult
from tron_sim.txraw import RawData, signature_for, word

APPROVAL_TOPIC = "8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
SWAP_TOPIC = "c42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"  # the DEX's own event
REVERT_MESSAGE = b"REVERT opcode executed"
ZERO_WORD = "0" * 64
EVENT_TOPICS = {"Transfer": TRANSFER_TOPIC, "Approval": APPROVAL_TOPIC}
EVENT_SIGNATURES = {
    "Transfer": "Transfer(address indexed from, address indexed to, uint256 value)",
    "Approval": "Approval(address indexed owner, address indexed spender, uint256 value)",
}
EVENT_ARGUMENTS = {"Transfer": ("from", "to"), "Approval": ("owner", "spender")}
# documentation-en getaccount.md: the default active permission's operations bitmap
ACTIVE_OPERATIONS = "7fff1fc0033efb0f000000000000000000000000000000000000000000000000"
WINDOW_MS = 28_800_000


def address_field(address: str, visible: bool) -> str:
    """An address field of a java-tron answer: hex with the ``41`` prefix, or base58check when visible."""
    return address if visible else to_hex41(address)


# -- TronGrid /v1 ----------------------------------------------------------------------------------
def trc20_record(record: Record, blank_token_info: bool = False) -> dict[str, Any]:
    """One element of ``data`` in ``GET /v1/accounts/{address}/transactions/trc20`` (trc20_page.json)."""
    token = record.token
    token_info: dict[str, Any] = {}
    if record.token_info and not blank_token_info:
        token_info = {"symbol": token.symbol, "address": token.address, "decimals": token.decimals,
                      "name": token.name}
    return {
        "transaction_id": record.tx_id,
        "token_info": token_info,
        "block_timestamp": record.key[0],
        "from": record.from_address,
        "to": record.to_address,
        "type": record.event,
        "value": str(record.amount),
    }


def event_record(record: Record, unconfirmed: bool) -> dict[str, Any]:
    """One element of ``data`` in ``GET /v1/contracts/{contract}/events`` (trongrid_events_page.json)."""
    first, second = EVENT_ARGUMENTS[record.event]
    a, b, value = "0x" + to_hex20(record.from_address), "0x" + to_hex20(record.to_address), str(record.amount)
    answer: dict[str, Any] = {
        "block_number": record.key[1],
        "block_timestamp": record.key[0],
        "caller_contract_address": record.token.address,
        "contract_address": record.token.address,
        "event_index": record.key[3],
        "event_name": record.event,
        "result": {"0": a, "1": b, "2": value, first: a, second: b, "value": value},
        "result_type": {first: "address", second: "address", "value": "uint256"},
        "event": EVENT_SIGNATURES[record.event],
        "transaction_id": record.tx_id,
    }
    if unconfirmed:
        answer["_unconfirmed"] = True
    return answer


# -- transaction info ------------------------------------------------------------------------------
def token_log(spec: LogSpec, visible: bool) -> dict[str, Any]:
    """A Transfer / Approval event log entry as in txinfo_usdt_success.json, broken as ``spec.malformed`` says."""
    topics = [EVENT_TOPICS[spec.event], to_topic(spec.from_address), to_topic(spec.to_address)]
    data = word(spec.amount)
    if spec.malformed == "data":
        data = "zz" + data[2:]  # not hex
    elif spec.malformed == "short":
        data = data[:40]  # truncated to 20 bytes
    elif spec.malformed == "topics":
        topics = topics[:2]  # the recipient's topic is missing
    address = spec.contract if visible else to_hex20(spec.contract)
    return {"address": address, "topics": topics, "data": data}


def receipt_json(receipt: Receipt, result: str | None = None) -> dict[str, Any]:
    """``ResourceReceipt`` as java-tron prints it: field order, zeros left out; ``result`` only for contract calls."""
    fields: list[tuple[str, Any]] = [
        ("energy_usage", receipt.energy_usage), ("energy_fee", receipt.energy_fee),
        ("energy_usage_total", receipt.energy_usage_total), ("net_usage", receipt.net_usage),
        ("net_fee", receipt.net_fee), ("result", result), ("energy_penalty_total", receipt.energy_penalty_total),
    ]
    return {name: value for name, value in fields if value}


def tx_info(tx: Tx, visible: bool = False) -> dict[str, Any]:
    """``gettransactioninfobyid`` answer for a mined transaction: what it cost is its receipt's
    (:mod:`tron_sim.accounts`); ``fee`` is left out when nothing was burned, as java-tron leaves out a 0."""
    assert tx.receipt is not None
    info: dict[str, Any] = {"id": tx.tx_id}
    if tx.receipt.fee:
        info["fee"] = tx.receipt.fee
    info.update({"blockNumber": tx.block_number, "blockTimeStamp": tx.block_timestamp})
    if tx.kind == "trx":  # txinfo_trx_transfer.json: no log, no receipt.result
        info.update({"contractResult": [""], "receipt": receipt_json(tx.receipt)})
        return info
    info["contractResult"] = [ZERO_WORD if not tx.reverted else ""]  # as in the capture
    info["contract_address"] = address_field(_top_contract(tx), visible)
    if tx.reverted:
        # wallet-cli docs: failed call receipt, top-level result FAILED, resMessage, and no log.
        info["receipt"] = receipt_json(tx.receipt, "REVERT")
        info["result"] = "FAILED"
        info["resMessage"] = REVERT_MESSAGE.decode() if visible else REVERT_MESSAGE.hex()
    else:
        info["receipt"] = receipt_json(tx.receipt, "SUCCESS")
        info["log"] = _logs(tx, visible)
    if tx.internal:
        info["internal_transactions"] = _internal_transactions(tx, visible)
    return info


def _top_contract(tx: Tx) -> str:
    return tx.caller_contract if tx.internal else tx.logs[0].contract


def _logs(tx: Tx, visible: bool) -> list[dict[str, Any]]:
    logs = [token_log(spec, visible) for spec in tx.logs]
    if tx.internal:
        swap = {"address": tx.caller_contract if visible else to_hex20(tx.caller_contract),
                "topics": [SWAP_TOPIC, to_topic(tx.owner)], "data": word(1) + word(0)}
        logs.insert(0, swap)
    return logs


def _internal_transactions(tx: Tx, visible: bool) -> list[dict[str, Any]]:
    """The DEX calling the token contract once per log (java-tron's InternalTransaction, rendered as bytes)."""
    return [
        {
            "hash": word(index + 1)[:56] + tx.tx_id[:8],
            "caller_address": address_field(tx.caller_contract, visible),
            "transferTo_address": address_field(spec.contract, visible),
            "callValueInfo": [{}],
            "note": b"call".hex(),
            **({"rejected": True} if tx.reverted else {}),
        }
        for index, spec in enumerate(tx.logs)
    ]


# -- blocks and transactions -----------------------------------------------------------------------
def block_json(block: Block, witness: str, visible: bool = False) -> dict[str, Any]:
    """``getnowblock`` / ``getblockbynum`` / ``getblockbyid`` answer (documentation-en getnowblock.md)."""
    answer: dict[str, Any] = {
        "blockID": block.block_id,
        "block_header": {
            "raw_data": {
                "number": block.number,
                "txTrieRoot": ZERO_WORD if not block.txs else block.block_id[::-1],
                "witness_address": address_field(witness, visible),
                "parentHash": block.parent_hash,
                "version": 31,
                "timestamp": block.timestamp,
            },
            "witness_signature": block.block_id * 2 + "00",
        },
    }
    if block.txs:  # java-tron's JSON printer leaves out empty repeated fields
        answer["transactions"] = [transaction_json(tx, visible) for tx in block.txs]
    return answer


def transaction_json(tx: Tx, visible: bool = False) -> dict[str, Any]:
    """``gettransactionbyid`` answer, and an element of a block's ``transactions`` (gettransactionbyid.md)."""
    result = "REVERT" if tx.reverted else "SUCCESS"
    return {"ret": [{"contractRet": result}], "signature": [signature_for(tx.tx_id)], "txID": tx.tx_id,
            "raw_data": raw_data_json(tx.raw, visible), "raw_data_hex": tx.raw.hex()}


def raw_data_json(raw: RawData, visible: bool = False) -> dict[str, Any]:
    """A transaction's ``raw_data`` as java-tron prints it."""
    contract = raw.contract
    if contract.kind == "TransferContract":
        value: dict[str, Any] = {"amount": contract.amount, "owner_address": address_field(contract.owner, visible),
                                 "to_address": address_field(contract.target, visible)}
    else:
        value = {"data": contract.data, "owner_address": address_field(contract.owner, visible),
                 "contract_address": address_field(contract.target, visible)}
    raw_data: dict[str, Any] = {
        "contract": [{"parameter": {"value": value, "type_url": contract.type_url}, "type": contract.kind}],
        "ref_block_bytes": raw.ref_block_bytes,
        "ref_block_hash": raw.ref_block_hash,
        "expiration": raw.expiration,
    }
    if raw.fee_limit:
        raw_data["fee_limit"] = raw.fee_limit
    raw_data["timestamp"] = raw.timestamp
    return raw_data


# -- accounts and the node -------------------------------------------------------------------------
def account_json(address: str, account: Account, visible: bool = False, now_ms: int = 0) -> dict[str, Any]:
    """``getaccount`` answer (documentation-en getaccount.md); proto3 JSON leaves a zero balance out. ``now_ms``: the
    node's head time, to which java-tron recovers the free bandwidth used before printing it."""
    resources = {"net_window_size": WINDOW_MS, "net_window_optimized": True,
                 "account_resource": {"energy_window_size": WINDOW_MS, "energy_window_optimized": True}}
    frozen = [{}, {"type": "ENERGY"}, {"type": "TRON_POWER"}]
    if account.contract_name:
        # A contract's account, as java-tron creates it with the contract (RepositoryImpl.createAccount): its name,
        # type Contract, the address; no create time and no permissions.
        name = account.contract_name
        answer: dict[str, Any] = {"account_name": name if visible else name.encode().hex(), "type": "Contract",
                                  "address": address_field(address, visible)}
        if account.balance:
            answer["balance"] = account.balance
        return answer | resources | {"frozenV2": frozen}
    key = [{"address": address_field(address, visible), "weight": 1}]
    answer = {"address": address_field(address, visible)}
    if account.balance:
        answer["balance"] = account.balance
    answer.update({
        "create_time": account.create_time,
        "latest_opration_time": account.latest_operation_time,  # sic: java-tron's field name
    })
    if account.latest_consume_free_time:
        free_net_usage = account.free_net_used(now_ms)
        if free_net_usage:
            answer["free_net_usage"] = free_net_usage
        answer["latest_consume_free_time"] = account.latest_consume_free_time
    answer.update(resources)
    answer.update({
        "owner_permission": {"permission_name": "owner", "threshold": 1, "keys": key},
        "active_permission": [{"type": "Active", "id": 2, "permission_name": "active", "threshold": 1,
                               "operations": ACTIVE_OPERATIONS, "keys": key}],
        "frozenV2": frozen,
    })
    return answer


def account_net_json(account: Account, now_ms: int) -> dict[str, Any]:
    """``getaccountnet`` answer (``AccountNetMessage``, documentation-en getaccountnet.md): no stake, so no
    ``NetUsed``/``NetLimit``; zeros left out."""
    answer: dict[str, Any] = {}
    free_net_used = account.free_net_used(now_ms)
    if free_net_used:
        answer["freeNetUsed"] = free_net_used
    answer.update({"freeNetLimit": FREE_NET_LIMIT, "TotalNetLimit": TOTAL_NET_LIMIT,
                   "TotalNetWeight": TOTAL_NET_WEIGHT})
    return answer


def account_resource_json(account: Account, now_ms: int) -> dict[str, Any]:
    """``getaccountresource`` answer (``AccountResourceMessage``, documentation-en getaccountresource.md): the
    bandwidth of ``getaccountnet`` plus the network's energy totals; no stake, so no energy or tron power of its
    own."""
    return account_net_json(account, now_ms) | {"TotalEnergyLimit": TOTAL_ENERGY_LIMIT,
                                                "TotalEnergyWeight": TOTAL_ENERGY_WEIGHT}


# The peers a node lists (/wallet/listnodes): loopback addresses only, on java-tron's p2p port.
PEERS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
P2P_PORT = 18888


def node_list(visible: bool = False) -> dict[str, Any]:
    """``listnodes`` answer (``NodeList``, documentation-en listnodes.md): a host is the hex of its text, or the
    text itself with ``visible`` (``Address.host`` is one of java-tron's text fields)."""
    return {"nodes": [{"address": {"host": host if visible else host.encode().hex(), "port": P2P_PORT}}
                      for host in PEERS]}


def constant_call_json(result: CallResult, raw: RawData, visible: bool = False) -> dict[str, Any]:
    """``triggerconstantcontract`` answer (``TransactionExtention``, documentation-en triggerconstantcontract.md and
    TronGrid's answers for USDT): ``result.result`` true; a revert adds ``result.message`` (text with ``visible``,
    else hex) and marks the transaction's ``ret`` FAILED. The transaction is the unsigned call, for context."""
    status: dict[str, Any] = {"result": True}
    if result.reverted:
        status["message"] = CALL_REVERT_MESSAGE if visible else CALL_REVERT_MESSAGE.encode().hex()
    answer: dict[str, Any] = {"result": status, "energy_used": result.energy.total,
                              "constant_result": [result.output]}
    if result.energy.penalty:
        answer["energy_penalty"] = result.energy.penalty
    answer["transaction"] = {"ret": [{"ret": "FAILED"} if result.reverted else {}], "visible": visible,
                             "txID": raw.tx_id(), "raw_data": raw_data_json(raw, visible), "raw_data_hex": raw.hex()}
    return answer


def call_error_json(code: str, message: str, visible: bool = False) -> dict[str, Any]:
    """``triggerconstantcontract`` when the servlet caught an exception: only ``result``, ``result.result`` false
    (left out) and the message."""
    return {"result": {"code": code, "message": message if visible else message.encode().hex()}}


def node_info(head: Block, solid: Block, first_number: int) -> dict[str, Any]:
    """``getnodeinfo`` answer: documentation-en getnodeinfo.md's example with this node's blocks."""
    return {
        "activeConnectCount": 3,
        "beginSyncNum": first_number,
        "block": f"Num:{head.number},ID:{head.block_id}",
        "solidityBlock": f"Num:{solid.number},ID:{solid.block_id}",
        "currentConnectCount": 60,
        "passiveConnectCount": 57,
        "totalFlow": 0,
        "configNodeInfo": {"codeVersion": "4.8.1", "versionNum": "18636", "p2pVersion": "201910292",
                           "listenPort": 18888, "discoverEnable": True, "maxConnectCount": 60,
                           "supportConstant": True, "dbVersion": 2},
        "machineInfo": {"cpuCount": 16, "cpuRate": 0.06666666666666667, "totalMemory": 32726257664,
                        "freeMemory": 232448000, "jvmTotalMemory": 18683133952, "jvmFreeMemory": 7802853696,
                        "javaVersion": "1.8.0_291", "osName": "Linux 3.10.0-1160.49.1.el7.x86_64",
                        "threadCount": 361, "deadLockThreadCount": 0},
    }


# documentation-en getchainparameters.md: the first entries of Nile's list (the page shows 8 of 75)
CHAIN_PARAMETERS = (
    ("getMaintenanceTimeInterval", 1800000),
    ("getAccountUpgradeCost", 9999000000),
    ("getCreateAccountFee", 100000),
    ("getTransactionFee", 1000),
    ("getAssetIssueFee", 1024000000),
    ("getWitnessPayPerBlock", 8000000),
    ("getWitnessStandbyAllowance", 100000000),
    ("getCreateNewAccountFeeInSystemContract", 1000000),
)


def chain_parameters() -> dict[str, Any]:
    return {"chainParameter": [{"key": key, "value": value} for key, value in CHAIN_PARAMETERS]}
