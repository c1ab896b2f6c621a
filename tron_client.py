"""The service's TronGrid / java-tron HTTP client, over one or several upstreams.

`TronClient` makes the calls the watcher needs over a list of upstreams (chain/upstream.py), in order of preference:
an upstream that fails (after its retries) or pauses for a rate limit hands the call to the next one. Views of the
same upstreams in another order (`TronClient.rotated`) let a second reader prefer another upstream. What the
answers say is read by chain/answers.py.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import requests

from chain.answers import (
    TX_ID,
    AnswerReader,
    BlockHeader,
    BlockRef,
    Trc20Transfer,
    TronBadResponse,
    TronError,
    TronRateLimited,
    TxInfo,
    block_header,
    block_time,
    next_fingerprint,
)
from chain.upstream import Upstream, upstream_names
from infra.addresses import is_valid_address, to_topic
from infra.config import Config

logger = logging.getLogger(__name__)

PAGE_LIMIT = 200


# -- the client over its upstreams -----------------------------------------------------------------
class TronClient:
    """TronGrid (``/v1``) and java-tron (``/wallet``, ``/walletsolidity``) calls the watcher needs, with failover
    over its upstreams in order of preference."""

    def __init__(self, api_url: str | Sequence[str], usdt_contract: str, api_key: str | None = None,
                 max_rps: float = 10.0, timeout: float = 15.0, max_retries: int = 3,
                 session: requests.Session | None = None, *, upstreams: Sequence[Upstream] | None = None,
                 **upstream_options: Any) -> None:
        """``api_url``: one URL, several comma-separated, or a sequence. Each becomes an :class:`Upstream` with
        ``max_rps``, ``timeout``, ``max_retries`` and ``upstream_options`` (see :class:`Upstream`)."""
        if not is_valid_address(usdt_contract):
            raise ValueError(f"usdt_contract is not a TRON address: {usdt_contract!r}")
        self.usdt_contract = usdt_contract
        self.read = AnswerReader(usdt_contract)
        if upstreams is None:
            urls = [u.strip() for u in api_url.split(",")] if isinstance(api_url, str) else list(api_url)
            urls = [u for u in urls if u]
            if not urls:
                raise ValueError("at least one upstream URL is needed")
            upstreams = [Upstream(url, api_key=api_key, max_rps=max_rps, timeout=timeout, max_retries=max_retries,
                                  session=session if len(urls) == 1 else None, name=name, **upstream_options)
                         for url, name in zip(urls, upstream_names(urls), strict=True)]
        self.upstreams: list[Upstream] = list(upstreams)
        self.request_count = 0  # requests sent through this view (and the views `only` made of it)
        self._count_lock = threading.Lock()
        self.parent: TronClient | None = None

    # -- views ------------------------------------------------------------------------------------
    def rotated(self, by: int = 1) -> TronClient:
        """The same upstreams (shared limits and pauses), another one first: for a second, independent look. It
        counts its own requests."""
        shift = by % len(self.upstreams)
        return TronClient("", self.usdt_contract, upstreams=self.upstreams[shift:] + self.upstreams[:shift])

    def only(self, upstream: Upstream) -> TronClient:
        """A view that asks this one upstream only; its requests count for this view too (one budget)."""
        view = TronClient("", self.usdt_contract, upstreams=[upstream])
        view.parent = self
        return view

    @property
    def paused_until(self) -> float | None:
        """While every upstream is paused: when the first comes back. None otherwise."""
        pauses = [u.paused_until for u in self.upstreams]
        return None if any(p is None for p in pauses) else min(p for p in pauses if p is not None)

    def states(self) -> list[dict[str, Any]]:
        return [u.state() for u in self.upstreams]

    # -- public calls ---------------------------------------------------------------------------
    def list_trc20_transfers(self, wallet: str, min_timestamp: int, max_pages: int | None = None
                             ) -> list[Trc20Transfer]:
        """Solidified USDT transfers *to* ``wallet`` with block_timestamp >= ``min_timestamp``, oldest first.

        Follows ``meta.fingerprint`` until it is absent (or ``max_pages`` pages were read: the result is then
        the oldest part, and the caller continues from its last timestamp, deduplicating by tx id). All pages come
        from one upstream. Records without token information are kept (``complete`` False): their receipt
        decides them.
        """
        if not is_valid_address(wallet):
            raise ValueError(f"not a TRON address: {wallet!r}")
        params: dict[str, Any] = {
            "only_confirmed": "true", "only_to": "true", "contract_address": self.usdt_contract,
            "min_timestamp": int(min_timestamp), "order_by": "block_timestamp,asc", "limit": PAGE_LIMIT,
        }
        path = f"/v1/accounts/{wallet}/transactions/trc20"

        def read(upstream: Upstream) -> list[Trc20Transfer]:
            transfers: list[Trc20Transfer] = []
            seen: set[str] = set()
            page_params, pages = params, 0
            while max_pages is None or pages < max_pages:
                body = self._send(upstream, "GET", path, params=page_params)
                pages += 1
                transfers.extend(self.read.trc20_page(body, wallet))
                fingerprint = next_fingerprint(body)
                if fingerprint is None or not body.get("data"):
                    break
                if fingerprint in seen:
                    raise TronBadResponse(f"{upstream.name}: TRC20 listing repeated the fingerprint {fingerprint!r}",
                                          public=f"{upstream.name}: TRC20 listing repeated a page's fingerprint")
                seen.add(fingerprint)
                page_params = {**params, "fingerprint": fingerprint}
            return transfers

        return self._failover(read, need_v1=True)

    def index_watermark(self) -> int | None:
        """The block time (ms) of the newest confirmed USDT Transfer the ``/v1`` event index lists: how far the
        index has demonstrably reached (USDT moves in every mainnet block). None when it lists none."""
        body = self._call("GET", f"/v1/contracts/{self.usdt_contract}/events", need_v1=True, params={
            "event_name": "Transfer", "only_confirmed": "true", "order_by": "block_timestamp,desc", "limit": 1})
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise TronBadResponse("event index answer has no data list")
        if not body["data"]:
            return None
        try:
            return block_time(body["data"][0]["block_timestamp"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TronBadResponse(f"event index record has no block_timestamp: {exc!r}",
                                  public="event index record has no block_timestamp") from None

    def get_transaction_info(self, tx_id: str) -> TxInfo | None:
        """The solidified transaction's info, or None when the node answers ``{}`` (unknown to it, or not
        solidified there yet: a node behind the others answers so too)."""
        if not TX_ID.match(tx_id):
            raise ValueError(f"not a transaction id: {tx_id!r}")
        body = self._call("POST", "/walletsolidity/gettransactioninfobyid", json_body={"value": tx_id})
        if not isinstance(body, dict):
            raise TronBadResponse("gettransactioninfobyid did not answer an object")
        return self.read.tx_info(body) if body else None

    def get_solid_head(self) -> BlockRef:
        header = self.get_now_block(solid=True)
        return BlockRef(header.number, header.timestamp)

    def get_now_block(self, solid: bool = True) -> BlockHeader:
        """The solid head (``/walletsolidity``), or with ``solid=False`` the head of the full node's chain
        (``/wallet``): blocks above the solid head may still be replaced."""
        body = self._call("POST", f"{_node_api(solid)}/getnowblock", json_body={})
        header = block_header(body)
        if header is None:
            raise TronBadResponse("getnowblock answer has no block header")
        return header

    def get_block(self, num: int, solid: bool = True) -> BlockHeader | None:
        """Block ``num``'s header and transaction ids (solidified, or with ``solid=False`` as the full node has it
        now), or None when the node answers ``{}`` (it has not reached that block)."""
        body = self._call("POST", f"{_node_api(solid)}/getblockbynum", json_body={"num": int(num)})
        if body == {}:
            return None
        header = block_header(body)
        if header is None or header.number != num:
            raise TronBadResponse(f"getblockbynum {num} answered another or no block")
        return header

    def get_block_infos(self, num: int, solid: bool = True) -> list[TxInfo]:
        """Infos of every transaction of block ``num`` (solidified, or with ``solid=False`` as the full node has it
        now). ``[]`` means an empty block OR a node that has not reached it: only :meth:`get_block` can tell which."""
        body = self._call("POST", f"{_node_api(solid)}/gettransactioninfobyblocknum", json_body={"num": int(num)})
        if body == {}:
            return []
        if not isinstance(body, list):
            raise TronBadResponse("gettransactioninfobyblocknum did not answer a list")
        infos = [self.read.tx_info(item) for item in body]
        if any(info.block_number != num for info in infos):
            raise TronBadResponse(f"gettransactioninfobyblocknum {num} answered transactions of another block")
        return infos

    def usdt_balance(self, address: str) -> int:
        """`address`'s USDT balance at the head, in micro-USDT: the token's ``balanceOf(address)``, a constant call
        (``/wallet/triggerconstantcontract``, which TronGrid and java-tron nodes serve alike)."""
        body = self._call("POST", "/wallet/triggerconstantcontract", json_body={
            "owner_address": address, "contract_address": self.usdt_contract,
            "function_selector": "balanceOf(address)", "parameter": to_topic(address), "visible": True})
        return balance_of(body)

    def has_v1_api(self) -> bool:
        """Whether any upstream serves TronGrid's ``/v1`` API (a 404 means a bare java-tron node). Learnt once per
        upstream; an upstream that cannot be asked now counts as without, until it can."""
        return any(self._probe_v1(u) is True for u in self.upstreams)

    # -- failover ---------------------------------------------------------------------------------
    def _probe_v1(self, upstream: Upstream) -> bool | None:
        """Whether this upstream serves /v1; None while it cannot be asked (it is failing or paused: it is not asked
        again before its cool-down ends)."""
        if upstream.has_v1 is None and upstream.usable():
            try:
                body = self._send(upstream, "GET", f"/v1/contracts/{self.usdt_contract}/events",
                                  params={"limit": 1, "only_confirmed": "true"}, allow_404=True)
            except TronError:
                return None
            upstream.has_v1 = body is not None
        return upstream.has_v1

    def ordered_upstreams(self, need_v1: bool = False) -> list[Upstream]:
        """Usable upstreams first, in order of preference; paused or cooling-down ones after them. With
        `need_v1`, those known to lack /v1 are left out (one that could not be asked yet is tried: its call
        then fails as the probe did)."""
        probe = need_v1 and len(self.upstreams) > 1  # a single upstream is simply asked
        candidates = [u for u in self.upstreams if not probe or self._probe_v1(u) is not False]
        return sorted(candidates, key=lambda u: not u.usable())

    def _failover(self, read: Callable[[Upstream], Any], *, need_v1: bool = False) -> Any:
        errors: list[TronError] = []
        for upstream in self.ordered_upstreams(need_v1):
            try:
                return read(upstream)
            except TronError as exc:
                errors.append(exc)
        if not errors:
            raise TronBadResponse("no upstream serves TronGrid's /v1 API")
        if all(isinstance(e, TronRateLimited) for e in errors):
            raise min(errors, key=lambda e: e.retry_after)  # type: ignore[attr-defined]
        raise next(e for e in errors if not isinstance(e, TronRateLimited))

    def _call(self, method: str, path: str, *, params: dict[str, Any] | None = None, json_body: Any = None,
              need_v1: bool = False) -> Any:
        return self._failover(lambda u: self._send(u, method, path, params=params, json_body=json_body),
                              need_v1=need_v1)

    def _send(self, upstream: Upstream, method: str, path: str, **kwargs: Any) -> Any:
        return upstream.request(method, path, on_sent=self._count, **kwargs)

    def _count(self) -> None:
        with self._count_lock:
            self.request_count += 1
        if self.parent is not None:
            self.parent._count()


def _node_api(solid: bool) -> str:
    """java-tron's API of solidified blocks, or of the full node's whole chain."""
    return "/walletsolidity" if solid else "/wallet"
def balance_of(body: Any) -> int:
    """The uint256 a ``balanceOf`` constant call answered; TronBadResponse for a failed or reverted call, or an
    answer of another shape."""
    status = body.get("result") if isinstance(body, dict) else None
    results = body.get("constant_result") if isinstance(body, dict) else None
    if not isinstance(status, dict) or status.get("result") is not True or "message" in status:
        raise TronBadResponse("balanceOf was refused or reverted", public="balanceOf was refused or reverted")
    if (not isinstance(results, list) or len(results) != 1 or not isinstance(results[0], str)
            or len(results[0]) != 64):
        raise TronBadResponse("balanceOf answered no 32-byte result", public="balanceOf answered no 32-byte result")
    try:
        return int(results[0], 16)
    except ValueError:
        raise TronBadResponse("balanceOf answered no number", public="balanceOf answered no number") from None


def make_client(config: Config) -> TronClient:
    """The client of the configured upstreams (TRONGRID_URL, TRON_NODE_URLS), key, rate and timeout."""
    return TronClient(config.upstream_urls, config.usdt_contract, api_key=config.trongrid_api_key,
                      max_rps=config.trongrid_max_rps, timeout=config.trongrid_timeout_seconds,
                      daily_quota=config.trongrid_daily_quota)
