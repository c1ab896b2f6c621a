"""The TronGrid / java-tron endpoints the simulator serves (functions over a :class:`Chain` and its views).

``/v1/...`` is TronGrid's index (``IndexLag``); ``/wallet/...`` and ``/walletsolidity/...`` are answered by one
node of the pool (``NodeView``). Parameters follow TRON-US/trongrid's README and java-tron's servlets.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from infra.addresses import AddressError, decode_address, from_hex, is_valid_address
from tron_sim.chain import TX_LIFETIME_MS, AddressIndex, Chain, Record, RecordKey, Window, query_index
from tron_sim.contract import NOT_A_CONTRACT, constant_call, selector, smart_contract_json
from tron_sim.shapes import (
    account_json,
    account_net_json,
    account_resource_json,
    block_json,
    call_error_json,
    chain_parameters,
    constant_call_json,
    event_record,
    node_info,
    node_list,
    transaction_json,
    trc20_record,
    tx_info,
)
from tron_sim.txraw import RawContract, RawData, ref_block
from tron_sim.views import IndexLag, NodeView

logger = logging.getLogger(__name__)

TRC20_PATH = re.compile(r"^/v1/accounts/([^/]+)/transactions/trc20/?$")
EVENTS_PATH = re.compile(r"^/v1/contracts/([^/]+)/events/?$")
TX_ID = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_LIMIT = 200
DEFAULT_LIMIT = 20
NUMBER_ERROR = "class java.lang.NumberFormatException : num is required"
HEX_ERROR = "class org.tron.core.services.http.JsonFormat$ParseException : 1:10: INVALID hex String"
PARSE_ERROR = "class org.tron.core.services.http.JsonFormat$ParseException"
HEX_DECODE_ERROR = ("class org.bouncycastle.util.encoders.DecoderException : exception decoding Hex string: "
                    "invalid characters encountered in Hex string")
HEX = re.compile(r"^(?:[0-9a-fA-F]{2})*$")


@dataclass(frozen=True)
class Answer:
    status: int
    payload: Any  # None: an empty body

    def body(self) -> bytes:
        return b"" if self.payload is None else json.dumps(self.payload, separators=(",", ":")).encode()


class BadParam(ValueError):
    """A TronGrid query parameter is invalid (answered with 400)."""


class LimitTooLarge(BadParam):
    """``limit`` over 200: TronGrid answers HTTP 400 with an empty body, it does not clamp."""


def trongrid_error(message: str, status: int = 400) -> Answer:
    """TronGrid's error body for a bad request."""
    return Answer(status, {"success": False, "error": message, "statusCode": status})


def not_found() -> Answer:
    return Answer(404, {"success": False, "error": "Not Found", "statusCode": 404})


# -- /v1 parameters --------------------------------------------------------------------------------
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


def _int_param(params: dict[str, str], names: tuple[str, ...], default: int | None) -> int | None:
    for name in names:
        text = params.get(name)
        if text is None or text == "":
            continue
        try:
            return int(text)
        except ValueError:
            raise BadParam(f"{name} must be an integer") from None
    return default


def _descending(params: dict[str, str]) -> bool:
    order = params.get("order_by", "block_timestamp,desc").replace(" ", "").removeprefix("block_")
    if order not in ("timestamp,desc", "timestamp,asc"):
        raise BadParam("order_by must be block_timestamp,asc or block_timestamp,desc")
    return order.endswith("desc")


def _limit(params: dict[str, str]) -> int:
    limit = _int_param(params, ("limit",), DEFAULT_LIMIT) or DEFAULT_LIMIT
    if limit > MAX_LIMIT:
        raise LimitTooLarge(f"limit must be at most {MAX_LIMIT}")
    return max(1, limit)


@dataclass(frozen=True)
class Confirmation:
    only_confirmed: bool
    only_unconfirmed: bool


def _window(chain: Chain, params: dict[str, str], confirmation: Confirmation, index_lag: IndexLag,
            time_names: tuple[tuple[str, ...], tuple[str, ...]]) -> Window:
    """Timestamps a page may cover: the query's range, the confirmation filter and the index's lag."""
    low = _int_param(params, time_names[0], 0) or 0
    high = _int_param(params, time_names[1], None)
    solid_ts = chain.solid_block.timestamp
    if confirmation.only_confirmed:
        high = solid_ts if high is None else min(high, solid_ts)
    elif confirmation.only_unconfirmed:
        low = max(low, solid_ts + 1)
    cutoff = index_lag.cutoff(solid_ts)
    if cutoff is not None:
        high = cutoff if high is None else min(high, cutoff)
    fingerprint = params.get("fingerprint")
    return Window(low, high, _descending(params), _limit(params),
                  decode_fingerprint(fingerprint) if fingerprint else None)


def _page_answer(records: list[Record], more: bool, render: Callable[[Record], dict[str, Any]],
                 params: dict[str, str], base_url: str) -> Answer:
    meta: dict[str, Any] = {"at": int(time.time() * 1000), "page_size": len(records)}
    if more:
        fingerprint = encode_fingerprint(records[-1].key)
        next_params = {k: v for k, v in params.items() if k != "fingerprint"} | {"fingerprint": fingerprint}
        meta["fingerprint"] = fingerprint
        meta["links"] = {"next": f"{base_url}?{urlencode(next_params)}"}
    return Answer(200, {"data": [render(record) for record in records], "success": True, "meta": meta})


def _bad_param_answer(exc: BadParam) -> Answer:
    return Answer(400, None) if isinstance(exc, LimitTooLarge) else trongrid_error(str(exc))


# -- GET /v1/accounts/{address}/transactions/trc20 ------------------------------------------------
def trc20_list(chain: Chain, address: str, params: dict[str, str], base_url: str, behaviours: set[str],
               index_lag: IndexLag) -> Answer:
    """Every TRC20 event row of ``address`` (transfers and approvals), as the index lists them."""
    try:
        if not is_valid_address(address):
            raise BadParam(f"invalid address {address}")
        contract = params.get("contract_address") or None
        if contract is not None and not is_valid_address(contract):
            raise BadParam(f"invalid contract_address {contract}")
        if "ignore_contract_filter" in behaviours:
            contract = None
        only_to, only_from = _flag(params, "only_to"), _flag(params, "only_from")
        confirmation = Confirmation(_flag(params, "only_confirmed") and "hide_unconfirmed_flag" not in behaviours,
                                    _flag(params, "only_unconfirmed"))
        with chain.lock:
            window = _window(chain, params, confirmation, index_lag, (("min_timestamp",), ("max_timestamp",)))
            index = _pick_index(chain, address, only_to, only_from)
            solid_ts = chain.solid_block.timestamp
            records, more = query_index(index, window, lambda r: (contract is None or r.token.address == contract)
                                        and index_lag.lists(r, solid_ts))
    except BadParam as exc:
        return _bad_param_answer(exc)
    blank = "blank_token_info" in behaviours
    return _page_answer(records, more, lambda r: trc20_record(r, blank), params, base_url)


def _pick_index(chain: Chain, address: str, only_to: bool, only_from: bool) -> AddressIndex | None:
    if only_to and not only_from:
        return chain.index.by_to.get(address)
    if only_from and not only_to:
        return chain.index.by_from.get(address)
    return chain.index.by_any.get(address)


# -- GET /v1/contracts/{contract}/events ----------------------------------------------------------
def contract_events(chain: Chain, contract: str, params: dict[str, str], base_url: str,
                    index_lag: IndexLag) -> Answer:
    """The contract's Transfer and Approval events (TRON-US/trongrid README, "Get Events By Contract Address")."""
    try:
        if not is_valid_address(contract):
            raise BadParam(f"invalid contract address {contract}")
        confirmation = Confirmation(_flag(params, "only_confirmed"), _flag(params, "only_unconfirmed"))
        if confirmation.only_confirmed and confirmation.only_unconfirmed:
            raise BadParam("only_confirmed and only_unconfirmed cannot be used together")
        event_name = params.get("event_name") or None
        block_number = _int_param(params, ("block_number",), None)
        with chain.lock:
            window = _window(chain, params, confirmation, index_lag,
                             (("min_block_timestamp", "min_timestamp"), ("max_block_timestamp", "max_timestamp")))
            solid_ts = chain.solid_block.timestamp
            records, more = query_index(
                chain.index.by_contract.get(contract), window,
                lambda r: (event_name is None or r.event == event_name)
                and (block_number is None or r.key[1] == block_number) and index_lag.lists(r, solid_ts))
    except BadParam as exc:
        return _bad_param_answer(exc)
    return _page_answer(records, more, lambda r: event_record(r, r.key[0] > solid_ts), params, base_url)


# -- /wallet and /walletsolidity -------------------------------------------------------------------
@dataclass(frozen=True)
class NodeCall:
    """One call to a node: its view of the chain, the request's arguments and how to print addresses."""

    view: NodeView
    solid: bool
    args: dict[str, Any]
    visible: bool
    witness: str

    @property
    def chain(self) -> Chain:
        return self.view.chain


def now_block(call: NodeCall) -> Answer:
    with call.chain.lock:
        return Answer(200, block_json(call.view.now_block(call.solid), call.witness, call.visible))


def block_by_num(call: NodeCall) -> Answer:
    number = _num_arg(call.args)
    if number is None:
        return Answer(200, {"Error": NUMBER_ERROR})
    with call.chain.lock:
        block = call.view.block(number, call.solid)
        if block is None:
            return Answer(200, {})  # java-tron: a block it does not have → {}
        return Answer(200, block_json(block, call.witness, call.visible))


def _by_id(call: NodeCall, find: Callable[[str], Any], render: Callable[[Any], Any], error: str = HEX_ERROR) -> Answer:
    """Look up what the 64-hex ``value`` names; ``{}`` when this node does not have it (as java-tron answers)."""
    value = str(call.args.get("value", ""))
    if not TX_ID.match(value):
        return Answer(200, {"Error": error})
    with call.chain.lock:
        found = find(value)
        return Answer(200, {} if found is None else render(found))


def block_by_id(call: NodeCall) -> Answer:
    return _by_id(call, lambda block_id: call.view.block_by_id(block_id, call.solid),
                  lambda block: block_json(block, call.witness, call.visible))


def transaction_by_id(call: NodeCall) -> Answer:
    """The transaction, or ``{}`` when this node has no block holding it (pending ones included)."""
    return _by_id(call, lambda tx_id: call.view.tx(tx_id, call.solid), lambda tx: transaction_json(tx, call.visible))


def transaction_info(call: NodeCall) -> Answer:
    """java-tron answers ``{}`` for an unknown tx, and on /walletsolidity for one not solidified yet."""
    return _by_id(call, lambda tx_id: None if tx_id.lower() in call.chain.withheld else call.view.tx(tx_id, call.solid),
                  lambda tx: tx_info(tx, call.visible),
                  "class java.lang.IllegalArgumentException : invalid transaction id")


def transaction_infos_by_block(call: NodeCall) -> Answer:
    """A list of txinfo objects, one per tx of the block; ``[]`` for an empty block and for one this node (its
    solid part, on /walletsolidity) has not reached; ``{}`` for ``num <= 0`` (GetTransactionInfoByBlockNumServlet)."""
    number = _num_arg(call.args)
    if number is None:
        return Answer(200, {"Error": NUMBER_ERROR})
    if number <= 0:
        return Answer(200, {})
    with call.chain.lock:
        block = call.view.block(number, call.solid)
        if block is None or any(tx.tx_id in call.chain.withheld for tx in block.txs):
            return Answer(200, [])
        return Answer(200, [tx_info(tx, call.visible) for tx in block.txs])


def _address(text: str, visible: bool) -> str:
    """An address argument as java-tron reads it: base58check with ``visible``, else hex with the ``41`` prefix."""
    address = text if visible else from_hex(text) if len(text) == 42 else ""
    decode_address(address)
    return address


def _address_error(visible: bool) -> Answer:
    kind = "base58" if visible else "hex"
    return Answer(200, {"Error": f"{PARSE_ERROR} : 1:12: INVALID {kind} String"})


def _account_answer(call: NodeCall, name: str, render: Callable[[str, Any], dict[str, Any]]) -> Answer:
    """Render the account the argument ``name`` names; ``{}`` for an address without an account."""
    try:
        address = _address(str(call.args.get(name, "")), call.visible)
    except AddressError:
        return _address_error(call.visible)
    with call.chain.lock:
        found = call.chain.accounts.get(address)
        return Answer(200, {} if found is None else render(address, found))


def account(call: NodeCall) -> Answer:
    """``{}`` for an address that never signed or received TRX (a TRC20 transfer does not create an account); the
    USDT contract's account is there from the start (type ``Contract``)."""
    return _account_answer(call, "address", lambda address, found: account_json(address, found, call.visible,
                                                                              call.chain.head.timestamp))


def account_net(call: NodeCall) -> Answer:
    """``/wallet/getaccountnet``: the account's bandwidth; ``{}`` for an address without an account."""
    return _account_answer(call, "address", lambda _, found: account_net_json(found, call.chain.head.timestamp))


def account_resource(call: NodeCall) -> Answer:
    """``/wallet/getaccountresource``: bandwidth and the network's energy; ``{}`` for an address without one."""
    return _account_answer(call, "address",
                           lambda _, found: account_resource_json(found, call.chain.head.timestamp))


def contract(call: NodeCall) -> Answer:
    """``/wallet/getcontract``: the ``SmartContract`` of the USDT contract; ``{}`` for any other address (java-tron's
    GetContractServlet when the contract store has none)."""
    try:
        address = _address(str(call.args.get("value", "")), call.visible)
    except AddressError:
        return _address_error(call.visible)
    usdt = call.chain.usdt
    return Answer(200, smart_contract_json(usdt, call.visible) if address == usdt.address else {})


def _call_data(args: dict[str, Any]) -> str:
    """The call's data: ``function_selector`` hashed (java-tron's ``Util.parseMethod``) and ``parameter``, or
    ``data``."""
    signature, parameter = args.get("function_selector"), args.get("parameter")
    if isinstance(signature, str) and signature:
        data = selector(signature) + (str(parameter) if parameter else "")
    else:
        data = str(args.get("data") or "")
    if not HEX.match(data):
        raise ValueError(data)
    return data.lower()


def constant_contract(call: NodeCall) -> Answer:
    """``triggerconstantcontract`` on the token's state at this node's head (``/wallet``) or solid head
    (``/walletsolidity``). Errors are answered inside ``result``, never as ``{"Error": ...}``."""
    visible = call.visible
    try:
        owner = _address(str(call.args.get("owner_address", "")), visible)
        target = _address(str(call.args.get("contract_address", "")), visible)
    except AddressError:
        return Answer(200, call_error_json("OTHER_ERROR", f"{PARSE_ERROR} : INVALID "
                                           f"{'base58' if visible else 'hex'} String", visible))
    try:
        data = _call_data(call.args)
    except ValueError:
        return Answer(200, call_error_json("OTHER_ERROR", HEX_DECODE_ERROR, visible))
    with call.chain.lock:
        chain = call.chain
        if target != chain.usdt.address:
            return Answer(200, call_error_json("CONTRACT_VALIDATE_ERROR", NOT_A_CONTRACT, visible))
        head = call.view.now_block(call.solid)
        result = constant_call(chain.ledger, chain.usdt, data, head.number)
    # the unsigned call java-tron builds around it: referring to the head, expiring 60 s after it, built "now"
    # (java-tron's clock; here the chain's, which a test may have set far from the wall clock)
    ref_bytes, ref_hash = ref_block(head.number, head.block_id)
    raw = RawData(RawContract("TriggerSmartContract", owner, target, data=data), ref_bytes, ref_hash,
                  head.timestamp + TX_LIFETIME_MS, head.timestamp)
    return Answer(200, constant_call_json(result, raw, visible))


def nodes(call: NodeCall) -> Answer:
    return Answer(200, node_list(call.visible))


def node_status(call: NodeCall) -> Answer:
    with call.chain.lock:
        view = call.view
        return Answer(200, node_info(view.now_block(False), view.now_block(True), call.chain.first_number))


def parameters(call: NodeCall) -> Answer:
    return Answer(200, chain_parameters())


def _num_arg(args: dict[str, Any]) -> int | None:
    value = args.get("num")
    if isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# name → (handler, served on /walletsolidity too, where ``visible`` is read from)
NODE_ENDPOINTS: dict[str, tuple[Callable[[NodeCall], Answer], bool, str]] = {
    "getnowblock": (now_block, True, "query"),
    "getblockbynum": (block_by_num, True, "request"),
    "getblockbyid": (block_by_id, True, "request"),
    "gettransactionbyid": (transaction_by_id, True, "request"),
    "gettransactioninfobyid": (transaction_info, True, "request"),
    "gettransactioninfobyblocknum": (transaction_infos_by_block, True, "request"),
    "getaccount": (account, True, "request"),
    "getnodeinfo": (node_status, True, "none"),
    "getchainparameters": (parameters, False, "query"),
    "getcontract": (contract, False, "request"),
    "triggerconstantcontract": (constant_contract, True, "request"),
    "getaccountresource": (account_resource, False, "request"),
    "getaccountnet": (account_net, False, "request"),
    "listnodes": (nodes, False, "query"),  # ListNodesServlet reads visible from the URL only, also on POST
}


def visible_flag(source: str, method: str, query: dict[str, str], body: Any) -> bool:
    """java-tron's rule: ``Util.getVisible`` reads the URL query (GET, and servlets that ignore the body);
    ``Util.getVisiblePost`` reads the JSON body of a POST."""
    if source == "none":
        return False
    if source == "query" or method == "GET":
        return query.get("visible", "").strip().lower() == "true"
    value = body.get("visible") if isinstance(body, dict) else None
    return str(value).lower() == "true"
