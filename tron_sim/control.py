"""HTTP control endpoints ``/_sim/...``, mirroring the Python API; all bodies are JSON.

Amounts: ``amount`` is a JSON integer of micro-USDT (10^-6), or ``amount_usdt`` a decimal string of USDT
(``"10.5"``); never a float.

Endpoints (body fields; ``?`` optional) and the Python API each mirrors:

* ``POST /_sim/transfer``: ``to``, amount, ``from``?, ``contract``?, ``reverted``?, ``internal``?,
  ``list_reverted``?, ``index_token_info``?, ``malformed``? (``transfer``)
* ``POST /_sim/transaction``: ``transfers`` (a list of the above), ``reverted``?, ``internal``?,
  ``list_reverted``? (``transaction``)
* ``POST /_sim/approve``: ``owner``, ``spender``, amount, ``contract``? (``approve``)
* ``POST /_sim/trx_transfer``: ``to``?, ``amount``? in sun, ``from``? (``trx_transfer``)
* ``POST /_sim/mine`` (``blocks``), ``/_sim/solidify``, ``/_sim/advance`` (``seconds``)
* ``POST /_sim/fault``: ``kind``, ``count``?, ``seconds``?, ``path_prefix``?, ``blocks``?, ``size``?,
  ``retry_after``? (``set_fault``); ``POST /_sim/clear_faults``, ``/_sim/reset_counts``
* ``POST /_sim/node_lag``: ``fraction``, ``blocks``, ``seed``? (``set_node_lag``)
* ``POST /_sim/index_lag``: ``seconds`` (``set_index_lag``); ``POST /_sim/delay_in_index``: ``tx_id``,
  ``seconds`` (``delay_in_index``)
* ``GET /_sim/state`` (``control_state``)
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tron_sim.simulator import Simulator

logger = logging.getLogger(__name__)

Result = tuple[int, Any]


def parse_amount(item: dict[str, Any]) -> int:
    """Micro-USDT from ``amount`` (integer micro-USDT) or ``amount_usdt`` (decimal string of USDT)."""
    if "amount_usdt" in item:
        value = item["amount_usdt"]
        if not isinstance(value, str):
            raise ValueError("amount_usdt must be a decimal string such as \"10.5\"")
        try:
            micro = Decimal(value) * 10**6
        except InvalidOperation:
            raise ValueError(f"amount_usdt is not a decimal: {value!r}") from None
        if not micro.is_finite() or micro != micro.to_integral_value():
            raise ValueError("amount_usdt has more than 6 decimals")
        return int(micro)
    value = item.get("amount")
    if type(value) is not int:
        raise ValueError("amount must be an integer of micro-USDT (or send amount_usdt as a string)")
    return value


def _transfer_item(item: Any) -> dict[str, Any]:
    if not isinstance(item, dict) or "to" not in item:
        raise ValueError("each transfer needs a \"to\" address")
    return {"to": item["to"], "amount": parse_amount(item), "from": item.get("from"),
            "contract": item.get("contract"), "index_token_info": _bool(item, "index_token_info", True),
            "malformed": item.get("malformed")}


def _bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _transfer(sim: Simulator, body: dict[str, Any]) -> Result:
    item = _transfer_item(body)
    tx_id = sim.transfer(item["to"], item["amount"], from_=item["from"], contract=item["contract"],
                         reverted=_bool(body, "reverted"), internal=_bool(body, "internal"),
                         list_reverted=_bool(body, "list_reverted", True), index_token_info=item["index_token_info"],
                         malformed=item["malformed"])
    return 200, {"tx_id": tx_id}


def _approve(sim: Simulator, body: dict[str, Any]) -> Result:
    tx_id = sim.approve(body.get("owner"), body.get("spender"), parse_amount(body),  # type: ignore[arg-type]
                        contract=body.get("contract"))
    return 200, {"tx_id": tx_id}


def _transaction(sim: Simulator, body: dict[str, Any]) -> Result:
    transfers = body.get("transfers")
    if not isinstance(transfers, list) or not transfers:
        raise ValueError("transfers must be a non-empty list")
    tx_id = sim.transaction([_transfer_item(item) for item in transfers], reverted=_bool(body, "reverted"),
                            internal=_bool(body, "internal"), list_reverted=_bool(body, "list_reverted", True))
    return 200, {"tx_id": tx_id}


def _trx_transfer(sim: Simulator, body: dict[str, Any]) -> Result:
    amount = body.get("amount", 1_000_000)
    tx_id = sim.trx_transfer(body.get("to"), amount, from_=body.get("from"))
    return 200, {"tx_id": tx_id}


def _mine(sim: Simulator, body: dict[str, Any]) -> None:
    blocks = body.get("blocks", 1)
    if type(blocks) is not int or blocks < 0:
        raise ValueError("blocks must be a non-negative integer")
    sim.mine(blocks)


def _solidify(sim: Simulator, body: dict[str, Any]) -> None:
    sim.solidify()


def _advance(sim: Simulator, body: dict[str, Any]) -> None:
    seconds = body.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError("seconds must be a non-negative number")
    sim.advance(seconds)


def _fault(sim: Simulator, body: dict[str, Any]) -> Result:
    sim.set_fault(str(body.get("kind")), body.get("count", 1), seconds=body.get("seconds"),
                  path_prefix=body.get("path_prefix"), blocks=body.get("blocks"), size=body.get("size"),
                  retry_after=body.get("retry_after"))
    return 200, {"faults": sim.faults.active()}


def _node_lag(sim: Simulator, body: dict[str, Any]) -> None:
    fraction = body.get("fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ValueError("fraction must be a number between 0 and 1")
    seed = body.get("seed")
    if seed is not None and type(seed) is not int:
        raise ValueError("seed must be an integer or null")
    sim.set_node_lag(fraction, body.get("blocks"), seed)  # type: ignore[arg-type]


def _index_lag(sim: Simulator, body: dict[str, Any]) -> None:
    sim.set_index_lag(body.get("seconds"))  # type: ignore[arg-type]


def _delay_in_index(sim: Simulator, body: dict[str, Any]) -> None:
    tx_id = body.get("tx_id")
    if not isinstance(tx_id, str) or len(tx_id) != 64:
        raise ValueError("tx_id must be a 64-character transaction id")
    sim.delay_in_index(tx_id, body.get("seconds"))  # type: ignore[arg-type]


def _clear_faults(sim: Simulator, body: dict[str, Any]) -> Result:
    sim.clear_faults()
    return 200, {"faults": []}


def _reset_counts(sim: Simulator, body: dict[str, Any]) -> None:
    sim.reset_counts()


def _state(sim: Simulator, body: dict[str, Any]) -> None:
    """Nothing to change: the answer is the state."""


# A route answers what it returns, or (returning None) the simulator's state, as GET /_sim/state does.
ROUTES: dict[tuple[str, str], Callable[[Simulator, dict[str, Any]], Result | None]] = {
    ("POST", "transfer"): _transfer,
    ("POST", "transaction"): _transaction,
    ("POST", "approve"): _approve,
    ("POST", "trx_transfer"): _trx_transfer,
    ("POST", "mine"): _mine,
    ("POST", "solidify"): _solidify,
    ("POST", "advance"): _advance,
    ("POST", "fault"): _fault,
    ("POST", "clear_faults"): _clear_faults,
    ("POST", "reset_counts"): _reset_counts,
    ("POST", "node_lag"): _node_lag,
    ("POST", "index_lag"): _index_lag,
    ("POST", "delay_in_index"): _delay_in_index,
    ("GET", "state"): _state,
}


def control(sim: Simulator, method: str, path: str, body: dict[str, Any]) -> Result:
    name = path.removeprefix("/_sim/").strip("/")
    route = ROUTES.get((method, name))
    if route is None:
        return 404, {"error": "not_found", "message": f"no control endpoint {method} {path}"}
    try:
        answer = route(sim, body)
    except (ValueError, KeyError, TypeError) as exc:
        return 400, {"error": "bad_request", "message": str(exc)}
    return answer if answer is not None else (200, sim.control_state())
