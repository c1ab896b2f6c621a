"""The simulator facade: the Python API over the chain, the background miner and the HTTP server (what the server
answers is :mod:`tron_sim.front`'s)."""
from __future__ import annotations

import json
import logging
import threading
import time
from functools import lru_cache
from http.server import ThreadingHTTPServer
from typing import Any, Self

from infra.addresses import decode_address
from tron_sim.chain import (
    EVENTS,
    MALFORMED_KINDS,
    UINT256_LIMIT,
    USDT_MAINNET,
    Chain,
    LogSpec,
    Token,
    align_to_slot,
    random_address,
)
from tron_sim.control import control
from tron_sim.front import Front, RequestRecord
from tron_sim.server import Reply, handler_class

logger = logging.getLogger(__name__)


def _check_token_amount(amount: object) -> int:
    """Any uint256 a token log can carry: zero (address-poisoning spam) up to 2**256 - 1."""
    if type(amount) is not int or not 0 <= amount < UINT256_LIMIT:
        raise ValueError("amount must be an integer from 0 to 2**256 - 1 (token units, micro-USDT for USDT)")
    return amount


def _check_sun(amount: object) -> int:
    if type(amount) is not int or amount <= 0:
        raise ValueError("amount must be a positive integer of sun (10^-6 TRX)")
    return amount


@lru_cache(maxsize=1 << 16)
def _is_address(address: str) -> bool:
    try:
        decode_address(address)
    except ValueError:
        return False
    return True


def _check_address(address: object, name: str) -> str:
    if not isinstance(address, str) or not _is_address(address):
        raise ValueError(f"{name} is not a TRON address: {address!r}")
    return address


def log_spec(item: dict[str, Any], usdt_contract: str, event: str = "Transfer") -> LogSpec:
    """The token log a caller asked for (``to``, ``amount``, ``from``?, ``contract``?, ``index_token_info``?,
    ``malformed``?), checked; a random sender and the USDT contract unless given."""
    assert event in EVENTS
    to = _check_address(item["to"], "to")
    sender = _check_address(item["from"], "from") if item.get("from") else random_address()
    contract = _check_address(item.get("contract") or usdt_contract, "contract")
    malformed = item.get("malformed")
    if malformed is not None and malformed not in MALFORMED_KINDS:
        raise ValueError(f"malformed must be one of {', '.join(MALFORMED_KINDS)}")
    return LogSpec(contract, sender, to, _check_token_amount(item["amount"]), event,
                   bool(item.get("index_token_info", True)), malformed)


class Simulator:
    """A TronGrid-compatible in-memory chain served over HTTP. See the package docstring for the options."""

    def __init__(self, block_interval: float = 0.0, solidify_depth: int = 2, usdt_contract: str = USDT_MAINNET,
                 v1_api: bool = True, start_time_ms: int | None = None, follow_clock: bool = False,
                 usdt_noise_per_block: int = 1, seed: int | None = None, *, chain: Chain | None = None) -> None:
        """``chain``: serve an existing chain instead of creating one (what :meth:`replica` does); the chain's own
        settings (depth, contract, clock, noise) then come with it and the arguments for them are ignored."""
        self.block_interval = block_interval
        self.v1_api = v1_api
        self.chain = chain or Chain(usdt_contract, solidify_depth, start_time_ms, follow_clock=follow_clock,
                                    usdt_noise_per_block=usdt_noise_per_block, seed=seed)
        self.usdt_contract = self.chain.usdt.address
        self._stopping = threading.Event()
        self.front = Front(self.chain, v1_api, self._stopping)
        self.faults, self.node_lag, self.index_lag = self.front.faults, self.front.node_lag, self.front.index_lag
        self.url: str | None = None
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._replicas: list[Simulator] = []

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        self._server = ThreadingHTTPServer((host, port), handler_class(self.handle, self._stopping))
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.url = f"http://{bound_host}:{bound_port}"
        server = self._server
        self._spawn(lambda: server.serve_forever(poll_interval=0.05), "tron-sim-http")
        if self.block_interval > 0:
            self._spawn(self._mine_forever, "tron-sim-miner")
        logger.info("TRON simulator serving on %s (head %d)", self.url, self.chain.head.number)
        return self.url

    def stop(self) -> None:
        """Stop serving (and every replica made from this simulator); streaming answers end at once."""
        for replica in self._replicas:
            replica.stop()
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _mine_forever(self) -> None:
        """A block every `block_interval` seconds; at the chain's own pace (the interval is its slot and blocks
        follow the clock) each is mined at its slot's time, as TRON's producers do."""
        at_slots = self.chain.follow_clock and round(self.block_interval * 1000) == self.chain.slot_ms
        while True:
            wait = self.block_interval
            if at_slots:  # the next block's time (its parent's plus a slot, or the slot after now) on this clock
                due_ms = max(self.chain.head.timestamp + self.chain.slot_ms,
                             align_to_slot(int(time.time() * 1000), self.chain.slot_ms))
                wait = max(0.0, due_ms / 1000 - time.time())
            if self._stopping.wait(wait):
                return
            self.chain.mine(1)

    def replica(self, v1_api: bool = True) -> Simulator:
        """Another upstream serving the SAME chain, started: its own HTTP server, faults, request log and counts,
        node lag and index lag (e.g. TronGrid plus the operator's own java-tron node, ``v1_api=False``). Mining
        through either is seen by both; only this simulator's miner mines. Stopped with this one."""
        other = Simulator(v1_api=v1_api, chain=self.chain)
        other.start()
        self._replicas.append(other)
        return other

    # -- chain --------------------------------------------------------------------------------
    def transfer(self, to: str, amount: int, *, from_: str | None = None, contract: str | None = None,
                 reverted: bool = False, internal: bool = False, list_reverted: bool = True,
                 index_token_info: bool = True, malformed: str | None = None) -> str:
        """Queue a tx with one Transfer log of ``contract`` (default USDT); ``amount`` in token units
        (micro-USDT), any uint256 including 0. ``index_token_info=False``: the TRC20 list shows the record with
        ``token_info: {}``. ``malformed``: ``data`` (not hex), ``short`` (truncated) or ``topics`` (recipient topic
        missing): the receipt's log is broken that way while the index lists the transfer as sent."""
        return self.transaction([{"to": to, "amount": amount, "from": from_, "contract": contract,
                                  "index_token_info": index_token_info, "malformed": malformed}],
                                reverted=reverted, internal=internal, list_reverted=list_reverted)

    def transaction(self, transfers: list[dict[str, Any]], reverted: bool = False, internal: bool = False,
                    list_reverted: bool = True) -> str:
        """Queue one tx with several Transfer logs (log index = position in the tx's ``log``)."""
        if not transfers:
            raise ValueError("a transaction needs at least one transfer")
        specs = tuple(log_spec(item, self.usdt_contract) for item in transfers)
        caller = random_address() if internal else ""
        return self.chain.submit_trc20(specs, reverted=reverted, internal=internal, list_reverted=list_reverted,
                                       caller_contract=caller)

    def approve(self, owner: str, spender: str, amount: int, contract: str | None = None) -> str:
        """Queue an ``approve`` call: its receipt carries an ``Approval`` log and the TRC20 list shows it with
        ``"type": "Approval"`` (``from`` = owner, ``to`` = spender) for both addresses."""
        spec = log_spec({"from": _check_address(owner, "owner"), "to": spender, "amount": amount,
                         "contract": contract}, self.usdt_contract, event="Approval")
        return self.chain.submit_trc20((spec,))

    def trx_transfer(self, to: str | None = None, amount: int = 1_000_000, *, from_: str | None = None) -> str:
        """Queue a plain TRX transfer (``amount`` in sun); noise that is never in the TRC20 list."""
        owner = _check_address(from_ or random_address(), "from")
        target = _check_address(to or random_address(), "to")
        return self.chain.submit_trx(owner, target, _check_sun(amount))

    def register_token(self, address: str, symbol: str, name: str, decimals: int = 6) -> None:
        """Give a non-USDT contract its own token_info (unregistered contracts call themselves USDT)."""
        self.chain.register_token(Token(_check_address(address, "address"), symbol, name, decimals))

    def mine(self, n: int = 1) -> int:
        return self.chain.mine(n)

    def solidify(self) -> int:
        """Mine until every queued or mined transaction a caller made is solidified; the new head."""
        return self.chain.mine(self.chain.blocks_to_solidify())

    def fork(self, depth: int, drop: tuple[str, ...] = ()) -> None:
        """Replace the newest ``depth`` blocks (above the solid head) by others with other ids; the transactions of
        ``drop`` vanish with them, the others are in the new blocks again."""
        self.chain.reorganize(depth, drop)

    def withhold_receipt(self, tx_id: str, withheld: bool = True) -> None:
        """No node gives this transaction's receipt (``{}`` by id; ``[]`` for its block, whose header still lists
        it) until called again with ``withheld=False``; the index lists it as usual."""
        self.chain.withhold(tx_id, withheld)

    def advance(self, seconds: float) -> None:
        """The next block's timestamp jumps forward by ``seconds`` (on top of the 3 s slot, rounded up to the
        next 3-second boundary)."""
        self.chain.advance(round(seconds * 1000))

    def tx_block(self, tx_id: str) -> int | None:
        with self.chain.lock:
            tx = self.chain.txs.get(tx_id)
            return None if tx is None else tx.block_number

    def state(self) -> dict[str, int]:
        with self.chain.lock:
            head, solid = self.chain.head, self.chain.solid_block
            return {"head": head.number, "solid_head": solid.number, "head_timestamp": head.timestamp,
                    "solid_timestamp": solid.timestamp, "mempool": len(self.chain.mempool)}

    # -- upstream behaviour -------------------------------------------------------------------
    def set_node_lag(self, fraction: float, blocks: int, seed: int | None = None) -> None:
        """Each ``/wallet`` and ``/walletsolidity`` request is answered, with probability ``fraction`` (seeded),
        by a node ``blocks`` behind: its heads are that much lower, and for blocks above its own head it answers
        ``[]`` / ``{}``. ``fraction=0`` turns it off. The ``/v1`` index is not affected."""
        self.node_lag.set(fraction, blocks, seed)

    def set_index_lag(self, seconds: float) -> None:
        """The ``/v1`` lists (TRC20 and events) show only records of blocks at least ``seconds`` older, in chain
        time, than the solid head. 0 turns it off."""
        self.index_lag.set_lag(seconds)

    def delay_in_index(self, tx_id: str, seconds: float) -> None:
        """This transaction is listed by ``/v1`` only once the solid head is ``seconds`` past its block."""
        self.index_lag.delay(tx_id, seconds)

    def set_fault(self, kind: str, count: int | None = 1, *, seconds: float | None = None,
                  path_prefix: str | None = None, blocks: int | None = None, size: int | None = None,
                  retry_after: float | None = None) -> None:
        """Inject a fault (see :mod:`tron_sim.faults` for the kinds and their real texts)."""
        self.faults.add(kind, count, seconds=seconds, path_prefix=path_prefix, blocks=blocks, size=size,
                        retry_after=retry_after)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- request log --------------------------------------------------------------------------
    @property
    def request_log(self) -> list[RequestRecord]:
        return self.front.log.records

    def request_counts(self) -> dict[str, int]:
        """Requests per path (without query) plus ``total``; /_sim controls are not counted."""
        return self.front.log.counts()

    def count(self, path_prefix: str = "/") -> int:
        """Requests whose path starts with ``path_prefix``."""
        return self.front.log.count(path_prefix)

    def reset_counts(self) -> None:
        self.front.log.reset()

    # -- HTTP ---------------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, str], body: Any, base_url: str,
               api_key: str | None) -> Reply:
        """Answer one request: ``/_sim/`` controls here, everything else as the upstream answers it."""
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        return self.front.answer(method, path, params, body, base_url, api_key)

    def _control(self, method: str, path: str, body: Any) -> Reply:
        status, payload = control(self, method, path, body if isinstance(body, dict) else {})
        return Reply(status, json.dumps(payload).encode())

    def control_state(self) -> dict[str, Any]:
        return {**self.state(), "requests": self.request_counts(), "faults": self.faults.active(),
                "usdt_contract": self.usdt_contract, "v1_api": self.v1_api, "node_lag": self.node_lag.state(),
                "index": self.index_lag.state(), "usdt_noise_per_block": self.chain.usdt_noise_per_block}
