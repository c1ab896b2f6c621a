"""The TronGrid / java-tron endpoints the simulator serves (pure functions over a :class:`Chain`)."""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from addresses import is_valid_address
from tron_sim.chain import Chain, ListQuery, RecordKey, query_records
from tron_sim.shapes import block_json, trc20_record, tx_info

logger = logging.getLogger(__name__)

TRC20_PATH = re.compile(r"^/v1/accounts/([^/]+)/transactions/trc20/?$")
TX_ID = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_LIMIT = 200
DEFAULT_LIMIT = 20


@dataclass(frozen=True)
class Answer:
    status: int
    payload: Any

    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()


class BadParam(ValueError):
    """A TronGrid query parameter is invalid (answered with 400)."""


def trongrid_error(message: str, status: int = 400) -> Answer:
    """TronGrid's error body for a bad request."""
    return Answer(status, {"success": False, "error": message, "statusCode": status})


# -- GET /v1/accounts/{address}/transactions/trc20 ------------------------------------------------
def encode_fingerprint(key: RecordKey) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def decode_fingerprint(text: str) -> RecordKey:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError):
        raise BadParam("invalid fingerprint") from None
    if not (isinstance(values, list) and len(values) == 4 and all(type(v) is int for v in values)):
        raise BadParam("invalid fingerprint")
    return (values[0], values[1], values[2], values[3])


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "false").strip().lower() == "true"


def _int_param(params: dict[str, str], name: str, default: int | None) -> int | None:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise BadParam(f"{name} must be an integer") from None


def _order(params: dict[str, str]) -> bool:
    order = params.get("order_by", "block_timestamp,desc").replace(" ", "")
    if order not in ("block_timestamp,desc", "block_timestamp,asc"):
        raise BadParam("order_by must be block_timestamp,asc or block_timestamp,desc")
    return order.endswith("desc")


def parse_list_query(address: str, params: dict[str, str], behaviours: set[str]) -> ListQuery:
    if not is_valid_address(address):
        raise BadParam(f"invalid address {address}")
    contract = params.get("contract_address") or None
    if contract is not None and not is_valid_address(contract):
        raise BadParam(f"invalid contract_address {contract}")
    if "ignore_contract_filter" in behaviours:
        contract = None
    limit = _int_param(params, "limit", DEFAULT_LIMIT) or DEFAULT_LIMIT
    fingerprint = params.get("fingerprint")
    hide_flag = "hide_unconfirmed_flag" in behaviours
    return ListQuery(
        address=address,
        only_confirmed=_flag(params, "only_confirmed") and not hide_flag,
        only_unconfirmed=_flag(params, "only_unconfirmed"),
        only_to=_flag(params, "only_to"),
        only_from=_flag(params, "only_from"),
        contract=contract,
        min_timestamp=_int_param(params, "min_timestamp", 0) or 0,
        max_timestamp=_int_param(params, "max_timestamp", None),
        descending=_order(params),
        limit=max(1, min(MAX_LIMIT, limit)),
        after=decode_fingerprint(fingerprint) if fingerprint else None,
    )


def trc20_list(chain: Chain, address: str, params: dict[str, str], base_url: str, behaviours: set[str]) -> Answer:
    try:
        query = parse_list_query(address, params, behaviours)
    except BadParam as exc:
        return trongrid_error(str(exc))
    with chain.lock:
        page, more = query_records(chain, query)
        data = [trc20_record(record) for record in page]
    meta: dict[str, Any] = {"at": int(time.time() * 1000), "page_size": len(data)}
    if more:
        fingerprint = encode_fingerprint(page[-1].key)
        next_params = {k: v for k, v in params.items() if k != "fingerprint"} | {"fingerprint": fingerprint}
        meta["fingerprint"] = fingerprint
        meta["links"] = {"next": f"{base_url}?{urlencode(next_params)}"}
    return Answer(200, {"data": data, "success": True, "meta": meta})


# -- /wallet and /walletsolidity -------------------------------------------------------------------
def now_block(chain: Chain, solid: bool, witness: str) -> Answer:
    with chain.lock:
        block = chain.solid_block if solid else chain.head
        return Answer(200, block_json(block, witness))


def block_by_num(chain: Chain, solid: bool, args: dict[str, Any], witness: str) -> Answer:
    number = _num_arg(args)
    if number is None:
        return Answer(200, {"Error": "class java.lang.NumberFormatException : num is required"})
    with chain.lock:
        block = chain.block(number)
        if block is None or (solid and number > chain.solid_number):
            return Answer(200, {})  # java-tron: unknown block → {}
        return Answer(200, block_json(block, witness))


def transaction_info(chain: Chain, solid: bool, args: dict[str, Any]) -> Answer:
    """java-tron answers ``{}`` for an unknown tx, and on /walletsolidity for one not solidified yet."""
    tx_id = str(args.get("value", ""))
    if not TX_ID.match(tx_id):
        return Answer(200, {"Error": "class java.lang.IllegalArgumentException : invalid transaction id"})
    with chain.lock:
        tx = chain.txs.get(tx_id.lower())
        if tx is None or tx.block_number is None or (solid and not chain.is_solid(tx)):
            return Answer(200, {})
        return Answer(200, tx_info(tx))


def transaction_infos_by_block(chain: Chain, solid: bool, args: dict[str, Any]) -> Answer:
    """A list of txinfo objects, one per tx of the block; ``[]`` for an empty, unknown or (on /walletsolidity)
    not yet solidified block."""
    number = _num_arg(args)
    if number is None:
        return Answer(200, {"Error": "class java.lang.NumberFormatException : num is required"})
    with chain.lock:
        block = chain.block(number)
        if block is None or (solid and number > chain.solid_number):
            return Answer(200, [])
        return Answer(200, [tx_info(tx) for tx in block.txs])


def _num_arg(args: dict[str, Any]) -> int | None:
    value = args.get("num")
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
