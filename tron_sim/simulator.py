"""The simulator facade: the Python API, the background miner and the HTTP server."""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from addresses import decode_address
from tron_sim import api
from tron_sim.chain import (
    USDT_MAINNET,
    Chain,
    Token,
    TransferSpec,
    Tx,
    new_tx_id,
    random_address,
)
from tron_sim.control import control
from tron_sim.faults import FaultBook

logger = logging.getLogger(__name__)

REQUEST_LOG_SIZE = 100_000
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    api_key: str | None  # the TRON-PRO-API-KEY header, None when not sent
    at: float


def _check_amount(amount: object) -> int:
    if type(amount) is not int or amount <= 0:
        raise ValueError("amount must be a positive integer of micro-USDT (10^-6)")
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


class Simulator:
    """A TronGrid-compatible in-memory chain served over HTTP."""

    def __init__(self, block_interval: float = 0.0, solidify_depth: int = 2, usdt_contract: str = USDT_MAINNET,
                 v1_api: bool = True, start_time_ms: int | None = None, follow_clock: bool = False) -> None:
        self.block_interval = block_interval
        self.v1_api = v1_api
        self.chain = Chain(usdt_contract, solidify_depth, start_time_ms, follow_clock=follow_clock)
        self.usdt_contract = usdt_contract
        self.faults = FaultBook()
        self.witness = random_address()
        self.url: str | None = None
        self._log_lock = threading.Lock()
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self._counts: collections.Counter[str] = collections.Counter()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._server is not None:
            raise RuntimeError("the simulator is already running")
        self._stopping.clear()
        self._server = ThreadingHTTPServer((host, port), _handler_class(self))
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
        while not self._stopping.wait(self.block_interval):
            self.chain.mine(1)

    # -- chain --------------------------------------------------------------------------------
    def transfer(self, to: str, amount: int, *, from_: str | None = None, contract: str | None = None,
                 reverted: bool = False, internal: bool = False, list_reverted: bool = True) -> str:
        """Queue a tx with one Transfer log of ``contract`` (default USDT); ``amount`` in micro-USDT."""
        return self.transaction([{"to": to, "amount": amount, "from": from_, "contract": contract}],
                                reverted=reverted, internal=internal, list_reverted=list_reverted)

    def transaction(self, transfers: list[dict[str, Any]], reverted: bool = False, internal: bool = False,
                    list_reverted: bool = True) -> str:
        """Queue one tx with several Transfer logs (log index = position in the tx's ``log``)."""
        if not transfers:
            raise ValueError("a transaction needs at least one transfer")
        specs = tuple(self._spec(item) for item in transfers)
        owner = specs[0].from_address
        tx = Tx(new_tx_id(owner, len(self.chain.txs)), "trc20", specs, reverted=reverted, internal=internal,
                list_reverted=list_reverted, owner=owner, caller_contract=random_address() if internal else "")
        return self.chain.submit(tx)

    def _spec(self, item: dict[str, Any]) -> TransferSpec:
        to = _check_address(item["to"], "to")
        sender = _check_address(item["from"], "from") if item.get("from") else random_address()
        contract = item.get("contract") or self.usdt_contract
        return TransferSpec(_check_address(contract, "contract"), sender, to, _check_amount(item["amount"]))

    def trx_transfer(self, to: str | None = None, amount: int = 1_000_000, *, from_: str | None = None) -> str:
        """Queue a plain TRX transfer (``amount`` in sun); noise that is never in the TRC20 list."""
        owner = _check_address(from_ or random_address(), "from")
        target = _check_address(to or random_address(), "to")
        tx = Tx(new_tx_id(owner, target), "trx", owner=owner, trx_to=target, trx_amount=_check_amount(amount))
        return self.chain.submit(tx)

    def register_token(self, address: str, symbol: str, name: str, decimals: int = 6) -> None:
        """Give a non-USDT contract its own token_info (unregistered contracts call themselves USDT)."""
        self.chain.register_token(Token(_check_address(address, "address"), symbol, name, decimals))

    def mine(self, n: int = 1) -> int:
        return self.chain.mine(n)

    def solidify(self) -> int:
        """Mine until every queued or mined transaction is solidified; the new head."""
        return self.chain.mine(self.chain.blocks_to_solidify())

    def advance(self, seconds: float) -> None:
        """The next block's timestamp jumps forward by ``seconds`` (on top of the 3 s slot)."""
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

    # -- faults -------------------------------------------------------------------------------
    def set_fault(self, kind: str, count: int | None = 1, *, seconds: float | None = None,
                  path_prefix: str | None = None) -> None:
        self.faults.add(kind, count, seconds=seconds, path_prefix=path_prefix)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- request log --------------------------------------------------------------------------
    @property
    def request_log(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._log)

    def request_counts(self) -> dict[str, int]:
        """Requests per path (without query) plus ``total``; /_sim controls are not counted."""
        with self._log_lock:
            counts = dict(self._counts)
        counts["total"] = sum(counts.values())
        return counts

    def count(self, path_prefix: str = "/") -> int:
        """Requests whose path starts with ``path_prefix``."""
        with self._log_lock:
            return sum(n for path, n in self._counts.items() if path.startswith(path_prefix))

    def reset_counts(self) -> None:
        with self._log_lock:
            self._log.clear()
            self._counts.clear()

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._log.append(record)
            self._counts[record.path] += 1

    # -- HTTP dispatch ------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict[str, str], body: Any, base_url: str,
               api_key: str | None) -> tuple[int, bytes, str]:
        """Answer one request: (status, body, content type)."""
        if path.startswith("/_sim/"):
            return self._control(method, path, body)
        self._record(RequestRecord(method, path, urlsplit(base_url).query, api_key, time.time()))
        delay = self.faults.take_delay(path)
        if delay:
            time.sleep(delay)
        canned = self.faults.take_response(path)
        if canned is not None:
            return canned.status, canned.body, canned.content_type
        answer = self._route(path, params, body, base_url)
        return answer.status, answer.body(), "application/json"

    def _route(self, path: str, params: dict[str, str], body: Any, base_url: str) -> api.Answer:
        match = api.TRC20_PATH.match(path)
        if path.startswith("/v1/"):
            if not self.v1_api or match is None:
                return api.Answer(404, {"success": False, "error": "Not Found", "statusCode": 404})
            behaviours = self.faults.take_behaviours(path)
            return api.trc20_list(self.chain, match.group(1), params, base_url.split("?")[0], behaviours)
        args = body if isinstance(body, dict) else {}
        args = {**params, **args}
        for prefix, solid in (("/walletsolidity/", True), ("/wallet/", False)):
            if path.startswith(prefix):
                return self._node_call(path[len(prefix):].rstrip("/").lower(), solid, args)
        return api.Answer(404, {"Error": f"no such endpoint {path}"})

    def _node_call(self, name: str, solid: bool, args: dict[str, Any]) -> api.Answer:
        if name == "getnowblock":
            return api.now_block(self.chain, solid, self.witness)
        if name == "getblockbynum":
            return api.block_by_num(self.chain, solid, args, self.witness)
        if name == "gettransactioninfobyid":
            return api.transaction_info(self.chain, solid, args)
        if name == "gettransactioninfobyblocknum":
            return api.transaction_infos_by_block(self.chain, solid, args)
        return api.Answer(404, {"Error": f"no such endpoint {name}"})

    def _control(self, method: str, path: str, body: Any) -> tuple[int, bytes, str]:
        status, payload = control(self, method, path, body if isinstance(body, dict) else {})
        return status, json.dumps(payload).encode(), "application/json"

    def control_state(self) -> dict[str, Any]:
        return {**self.state(), "requests": self.request_counts(), "faults": self.faults.active(),
                "usdt_contract": self.usdt_contract, "v1_api": self.v1_api}


def _handler_class(sim: Simulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tron-sim/1.0"
        disable_nagle_algorithm = True  # headers and body go in separate writes: avoid 40 ms delayed-ACK stalls

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            params = dict(parse_qsl(parts.query, keep_blank_values=True))
            body = self._read_body()
            base_url = f"http://{self.headers.get('Host', '127.0.0.1')}{self.path}"
            try:
                status, payload, content_type = sim.handle(method, parts.path, params, body, base_url,
                                                           self.headers.get("TRON-PRO-API-KEY"))
            except Exception:  # a simulator bug must not kill the connection silently
                logger.exception("simulator error on %s %s", method, self.path)
                status, payload, content_type = 500, b'{"Error": "simulator error"}', "application/json"
            self._write(status, payload, content_type)

        def _read_body(self) -> Any:
            length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
            raw = self.rfile.read(length) if length else b""
            if not raw.strip():
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return None

        def _write(self, status: int, payload: bytes, content_type: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", f"{content_type}; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                logger.debug("client went away before the answer to %s", self.path)

    return Handler
