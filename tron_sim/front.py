"""What one simulated upstream answers over HTTP: its request log, its faults, its lagging nodes and index, and
the routing of a request to TronGrid's ``/v1`` index or to java-tron's node endpoints. Several fronts may serve
one chain (``Simulator.replica``)."""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tron_sim import api
from tron_sim.chain import SLOT_MS, Chain, block_id_for, random_address
from tron_sim.faults import Fault, FaultBook
from tron_sim.server import Reply
from tron_sim.shapes import block_json
from tron_sim.views import IndexLag, NodeLag, NodeView

REQUEST_LOG_SIZE = 100_000


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    api_key: str | None  # the TRON-PRO-API-KEY header, None when not sent
    at: float


class RequestLog:
    """Every request an upstream answered (the last REQUEST_LOG_SIZE of them) and the count per path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: collections.deque[RequestRecord] = collections.deque(maxlen=REQUEST_LOG_SIZE)
        self._counts: collections.Counter[str] = collections.Counter()

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log)

    def counts(self) -> dict[str, int]:
        """Requests per path (without query) plus ``total``; /_sim controls are not counted."""
        with self._lock:
            counts = dict(self._counts)
        counts["total"] = sum(counts.values())
        return counts

    def count(self, path_prefix: str = "/") -> int:
        """Requests whose path starts with ``path_prefix``."""
        with self._lock:
            return sum(n for path, n in self._counts.items() if path.startswith(path_prefix))

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._counts.clear()

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)
            self._counts[record.path] += 1


class Front:
    """One upstream's answers: the chain as its nodes and its index show it, through its faults."""

    def __init__(self, chain: Chain, v1_api: bool, stopping: threading.Event) -> None:
        """``stopping``: set when the server stops, so a fault's delay ends at once."""
        self.chain = chain
        self.v1_api = v1_api
        self.stopping = stopping
        self.faults = FaultBook()
        self.node_lag = NodeLag()
        self.index_lag = IndexLag()
        self.witness = random_address()
        self.log = RequestLog()

    def answer(self, method: str, path: str, params: dict[str, str], body: Any, base_url: str,
               api_key: str | None) -> Reply:
        """Answer one request to the index or a node, as the faults allow; recorded in the request log."""
        self.log.record(RequestRecord(method, path, urlsplit(base_url).query, api_key, time.time()))
        delay = self.faults.take_delay(path)
        if delay:
            self.stopping.wait(delay)
        canned = self.faults.take_response(path)
        if canned is not None:
            return Reply(canned.status, canned.body, canned.content_type, canned.headers)
        answer = self._route(method, path, params, body, base_url)
        stream = self.faults.take_stream(path)
        if stream is None:
            return Reply(answer.status, answer.body())
        return Reply(answer.status, answer.body(), mode=stream.kind, seconds=stream.duration(),
                     size=stream.huge_size())

    def _route(self, method: str, path: str, params: dict[str, str], body: Any, base_url: str) -> api.Answer:
        if path.startswith("/v1/"):
            return self._index_call(path, params, base_url.split("?")[0])
        for prefix, solid in (("/walletsolidity/", True), ("/wallet/", False)):
            if path.startswith(prefix):
                return self._node_call(path, path[len(prefix):].rstrip("/").lower(), solid, method, params, body)
        return api.Answer(404, {"Error": f"no such endpoint {path}"})

    def _index_call(self, path: str, params: dict[str, str], base_url: str) -> api.Answer:
        if not self.v1_api:
            return api.not_found()
        match = api.TRC20_PATH.match(path)
        if match is not None:
            behaviours = self.faults.take_behaviours(path)
            return api.trc20_list(self.chain, match.group(1), params, base_url, behaviours, self.index_lag)
        match = api.EVENTS_PATH.match(path)
        if match is not None:
            return api.contract_events(self.chain, match.group(1), params, base_url, self.index_lag)
        return api.not_found()

    def _node_call(self, path: str, name: str, solid: bool, method: str, params: dict[str, str],
                   body: Any) -> api.Answer:
        endpoint = api.NODE_ENDPOINTS.get(name)
        if endpoint is None or (solid and not endpoint[1]):
            return api.Answer(404, {"Error": f"no such endpoint {path}"})
        handler, _, visible_source = endpoint
        args = {**params, **(body if isinstance(body, dict) else {})}
        visible = api.visible_flag(visible_source, method, params, body)
        call = api.NodeCall(NodeView(self.chain, self.node_lag.draw()), solid, args, visible, self.witness)
        answer = handler(call)
        if name == "getnowblock":
            lie = self.faults.take_head(path)
            if lie is not None:
                return self._head_lie(answer, lie, call)
        return answer

    def _head_lie(self, answer: api.Answer, lie: Fault, call: api.NodeCall) -> api.Answer:
        """The one-shot wrong head of a ``head_*`` fault, built from the true answer."""
        raw = answer.payload["block_header"]["raw_data"]
        if lie.kind == "head_future":
            raw["timestamp"] += round(lie.duration() * 1000)
            return answer
        number = raw["number"] + (lie.head_blocks() if lie.kind == "head_ahead" else -lie.head_blocks())
        with self.chain.lock:
            block = self.chain.block(max(number, self.chain.first_number))
            if lie.kind == "head_behind" and block is not None:
                return api.Answer(200, block_json(block, call.witness, call.visible))
        timestamp = raw["timestamp"] + SLOT_MS * lie.head_blocks()
        payload = answer.payload | {"blockID": block_id_for(number, timestamp)}
        payload["block_header"]["raw_data"] |= {"number": number, "timestamp": timestamp,
                                                "parentHash": block_id_for(number - 1, timestamp - SLOT_MS)}
        payload.pop("transactions", None)
        return api.Answer(200, payload)
