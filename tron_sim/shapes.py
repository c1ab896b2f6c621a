"""JSON shapes the simulator answers with, copied from real TronGrid / java-tron answers.

Sources (see /work/shared/trongrid-captures/README.md):

* TRC20 record: ``trc20_page.json`` (LedgerHQ/ledger-live fixture ``fetchTronAccountTxsTrc20.fixture.json``);
  next-page ``meta``: TRON-US/trongrid README.
* Transaction info: ``txinfo_usdt_success.json`` and ``txinfo_trx_transfer.json`` (ledger-live fixture
  ``getTransactionInfoById.fixture.json``); failed call (``REVERT``, ``result: FAILED``, ``resMessage``, no ``log``):
  tronprotocol/wallet-cli docs. ``internal_transactions`` follows java-tron's ``InternalTransaction`` protobuf
  (hash, caller_address, transferTo_address, callValueInfo, note, rejected) rendered as java-tron renders bytes
  (hex); it is a minimal rendering, not copied from a capture.
* Block: documentation-en ``getnowblock.md``. Transactions inside a block are minimal (``ret``, ``txID`` and
  ``raw_data`` with its contract); ``signature`` and ``raw_data_hex`` are left out.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import addresses
from tron_sim.chain import Block, Record, Tx

TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
SWAP_TOPIC = "c42079f94a6350d7e6235f29174924f928cc2ac818eb64fed8004e115fbcca67"  # the DEX's own event
REVERT_MESSAGE_HEX = b"REVERT opcode executed".hex()
TRANSFER_SELECTOR = "a9059cbb"
MULTISEND_SELECTOR = "1e83409a"
ZERO_WORD = "0" * 64


@lru_cache(maxsize=1 << 18)
def to_hex20(address: str) -> str:
    return addresses.to_hex20(address)


def to_hex41(address: str) -> str:
    return "41" + to_hex20(address)


def to_topic(address: str) -> str:
    return "0" * 24 + to_hex20(address)


def word(value: int) -> str:
    return f"{value:064x}"


def trc20_record(record: Record) -> dict[str, Any]:
    """One element of ``data`` in ``GET /v1/accounts/{address}/transactions/trc20`` (trc20_page.json)."""
    token = record.token
    return {
        "transaction_id": record.tx_id,
        "token_info": {"symbol": token.symbol, "address": token.address, "decimals": token.decimals,
                       "name": token.name},
        "block_timestamp": record.key[0],
        "from": record.from_address,
        "to": record.to_address,
        "type": "Transfer",
        "value": str(record.amount),
    }


def transfer_log(contract: str, from_address: str, to_address: str, amount: int) -> dict[str, Any]:
    """A Transfer event log entry as in txinfo_usdt_success.json."""
    return {
        "address": to_hex20(contract),
        "topics": [TRANSFER_TOPIC, to_topic(from_address), to_topic(to_address)],
        "data": word(amount),
    }


def tx_info(tx: Tx) -> dict[str, Any]:
    """``gettransactioninfobyid`` answer for a mined transaction."""
    if tx.kind == "trx":
        return _trx_info(tx)
    info: dict[str, Any] = {
        "id": tx.tx_id,
        "fee": 26420100 if not tx.reverted else 27255900,
        "blockNumber": tx.block_number,
        "blockTimeStamp": tx.block_timestamp,
        "contractResult": [ZERO_WORD if not tx.reverted else ""],  # as in the capture
        "contract_address": to_hex41(_top_contract(tx)),
    }
    if tx.reverted:
        # wallet-cli docs: failed call receipt, top-level result FAILED, resMessage, and no log.
        info["receipt"] = {"energy_usage_total": 130285, "net_usage": 345, "result": "REVERT"}
        info["result"] = "FAILED"
        info["resMessage"] = REVERT_MESSAGE_HEX
    else:
        info["receipt"] = {"energy_usage": 4475, "energy_fee": 26420100, "energy_usage_total": 130285,
                           "net_usage": 345, "result": "SUCCESS", "energy_penalty_total": 100635}
        info["log"] = _logs(tx)
    if tx.internal:
        info["internal_transactions"] = _internal_transactions(tx)
    return info


def _trx_info(tx: Tx) -> dict[str, Any]:
    """txinfo_trx_transfer.json: no ``log``, no ``receipt.result``."""
    return {
        "id": tx.tx_id,
        "fee": 1100000,
        "blockNumber": tx.block_number,
        "blockTimeStamp": tx.block_timestamp,
        "contractResult": [""],
        "receipt": {"net_fee": 100000},
    }


def _top_contract(tx: Tx) -> str:
    return tx.caller_contract if tx.internal else tx.transfers[0].contract


def _logs(tx: Tx) -> list[dict[str, Any]]:
    logs = [transfer_log(s.contract, s.from_address, s.to_address, s.amount) for s in tx.transfers]
    if tx.internal:
        swap = {"address": to_hex20(tx.caller_contract), "topics": [SWAP_TOPIC, to_topic(tx.owner)],
                "data": word(1) + word(0)}
        logs.insert(0, swap)
    return logs


def _internal_transactions(tx: Tx) -> list[dict[str, Any]]:
    return [
        {
            "hash": f"{index:02x}" + tx.tx_id[2:],
            "caller_address": to_hex41(tx.caller_contract),
            "transferTo_address": to_hex41(spec.contract),
            "callValueInfo": [{}],
            "note": b"call".hex(),
            **({"rejected": True} if tx.reverted else {}),
        }
        for index, spec in enumerate(tx.transfers)
    ]


def block_json(block: Block, witness: str) -> dict[str, Any]:
    """``getnowblock`` / ``getblockbynum`` answer (documentation-en getnowblock.md)."""
    answer: dict[str, Any] = {
        "blockID": block.block_id,
        "block_header": {
            "raw_data": {
                "number": block.number,
                "txTrieRoot": ZERO_WORD if not block.txs else block.block_id[::-1],
                "witness_address": to_hex41(witness),
                "parentHash": block.parent_hash,
                "version": 31,
                "timestamp": block.timestamp,
            },
            "witness_signature": block.block_id * 2 + "00",
        },
    }
    if block.txs:  # java-tron's JSON printer leaves out empty repeated fields
        answer["transactions"] = [_block_tx(tx) for tx in block.txs]
    return answer


def _block_tx(tx: Tx) -> dict[str, Any]:
    if tx.kind == "trx":
        contract = {"type": "TransferContract", "parameter": {
            "value": {"amount": tx.trx_amount, "owner_address": to_hex41(tx.owner), "to_address": to_hex41(tx.trx_to)},
            "type_url": "type.googleapis.com/protocol.TransferContract"}}
        result = "SUCCESS"
    else:
        contract = {"type": "TriggerSmartContract", "parameter": {
            "value": {"data": _call_data(tx), "owner_address": to_hex41(tx.owner),
                      "contract_address": to_hex41(_top_contract(tx))},
            "type_url": "type.googleapis.com/protocol.TriggerSmartContract"}}
        result = "REVERT" if tx.reverted else "SUCCESS"
    return {"ret": [{"contractRet": result}], "txID": tx.tx_id,
            "raw_data": {"contract": [contract], "timestamp": tx.block_timestamp}}


def _call_data(tx: Tx) -> str:
    if len(tx.transfers) == 1 and not tx.internal:
        spec = tx.transfers[0]
        return TRANSFER_SELECTOR + to_topic(spec.to_address) + word(spec.amount)
    return MULTISEND_SELECTOR + "".join(to_topic(s.to_address) + word(s.amount) for s in tx.transfers)
