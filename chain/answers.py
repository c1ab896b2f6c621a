"""What TRON upstreams answer, read: the errors of the client (`TronError` and its kinds), the result types (TRC20
listing records, transaction receipts, block references), and `AnswerReader`, which picks the USDT contract's
``Transfer`` logs out of a receipt by contract address and topic (never by symbol). A malformed USDT ``Transfer``
log is rejected alone (`RejectedLog`), never the whole answer. Amounts are integers of micro-USDT, never floats.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.addresses import TRANSFER_TOPIC, AddressError, from_hex, is_valid_address, to_hex20
from ledger.records import RejectedLog, TransferLog

logger = logging.getLogger(__name__)

TX_ID = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_WORD_HEX = 64  # a log's data word: one uint256


# -- errors ----------------------------------------------------------------------------------------
class TronError(Exception):
    """Base class of every error of this client. Its text may quote what an upstream answered (for the service's
    log); `public` says the same in the service's own words only, for what anyone may read (/health): an upstream
    may echo its URL, and the API key some providers put in the path with it."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


def public_error(exc: BaseException) -> str:
    """An error as /health may show it: in the service's own words, nothing an upstream wrote."""
    return exc.public if isinstance(exc, TronError) else type(exc).__name__


class TronRateLimited(TronError):
    """Upstream rate limit: the upstream is paused for ``retry_after`` more seconds."""

    def __init__(self, message: str, retry_after: float, *, public: str | None = None) -> None:
        super().__init__(message, public=public)
        self.retry_after = retry_after


class TronUnavailable(TronError):
    """Timeouts, connection errors, oversized answers or 5xx, still failing after the retries."""


class TronBadResponse(TronError):
    """An answer that cannot be used: HTTP 200 with ``{"Error": ...}``, not JSON, wrong shape, or a 4xx."""

    def __init__(self, message: str, status_code: int | None = None, *, public: str | None = None) -> None:
        super().__init__(message, public=public)
        self.status_code = status_code


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Trc20Transfer:
    """One record of the TRC20 list (no block number, no log index there).

    ``token_address``, ``amount`` or the addresses are None when the record lacks them (TronGrid sometimes lists
    ``token_info: {}``): such a record is decided by its transaction's receipt."""

    transaction_id: str
    from_address: str | None
    to_address: str | None
    amount: int | None  # micro-USDT
    block_timestamp: int  # ms
    token_address: str | None

    @property
    def complete(self) -> bool:
        return None not in (self.from_address, self.to_address, self.amount, self.token_address)


@dataclass(frozen=True)
class TxInfo:
    transaction_hash: str
    block_number: int
    block_timestamp: int
    success: bool  # receipt.result == "SUCCESS" and no top-level "result": "FAILED"
    transfers: tuple[TransferLog, ...]
    rejected: tuple[RejectedLog, ...] = ()


@dataclass(frozen=True)
class BlockRef:
    number: int
    timestamp: int  # ms


@dataclass(frozen=True)
class BlockHeader:
    number: int
    timestamp: int  # ms
    transaction_count: int
    block_id: str = ""  # 64 hex; "" when the answer carries none
    parent_id: str = ""
    tx_ids: tuple[str, ...] = ()  # its transactions' ids, in block order (lower case)


# -- reading answers -------------------------------------------------------------------------------
class AnswerReader:
    """What the upstreams' answers say, read into the types above: TRC20 listing records, and transaction receipts
    with the USDT contract's ``Transfer`` logs picked out by contract address and topic (never by symbol)."""

    def __init__(self, usdt_contract: str) -> None:
        self.usdt_contract = usdt_contract
        self.usdt_hex20 = to_hex20(usdt_contract)

    def trc20_page(self, body: Any, wallet: str) -> list[Trc20Transfer]:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise TronBadResponse("TRC20 list answer has no data list")
        if body.get("success") is False:
            raise TronBadResponse(f"TRC20 list answered success=false: {body.get('error')}",
                                  public="TRC20 list answered success=false")
        records = [self.trc20_record(item) for item in body["data"]]
        return [r for r in records if r is not None and r.to_address in (wallet, None)]

    def trc20_record(self, item: Any) -> Trc20Transfer | None:
        """The record, or None when it is surely not a USDT ``Transfer`` (other tokens, approvals, no usable tx
        id). Missing or malformed fields are left None for the receipt to decide."""
        if not isinstance(item, dict) or item.get("type", "Transfer") != "Transfer":
            return None
        try:
            tx_id = _tx_hash(item.get("transaction_id"))
            timestamp = block_time(item.get("block_timestamp"))
        except (TypeError, ValueError):
            logger.warning("TRC20 listing record without a usable transaction id or time skipped: %.200r", item)
            return None
        token = item.get("token_info")
        token_address = token.get("address") if isinstance(token, dict) else None
        if token_address is not None and token_address != self.usdt_contract:
            return None
        return Trc20Transfer(transaction_id=tx_id, from_address=_optional(_address, item.get("from")),
                             to_address=_optional(_address, item.get("to")),
                             amount=_optional(_amount, item.get("value")), block_timestamp=timestamp,
                             token_address=token_address)

    def tx_info(self, body: Any) -> TxInfo:
        try:
            tx_hash = _tx_hash(body["id"])
            block_number = _block_number(body["blockNumber"])
            block_timestamp = block_time(body["blockTimeStamp"])
            receipt = body.get("receipt") or {}
            success = receipt.get("result") == "SUCCESS" and body.get("result") != "FAILED"
            logs = body.get("log") or []
            if not isinstance(logs, list):
                raise TypeError("log is not a list")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TronBadResponse(f"malformed transaction info: {exc!r}", public="malformed transaction info") from None
        transfers: list[TransferLog] = []
        rejected: list[RejectedLog] = []
        for index, entry in enumerate(logs):
            if not self.is_usdt_transfer(entry):
                continue
            try:
                transfers.append(self.decode_log(entry, index, tx_hash, block_number, block_timestamp))
            except ValueError as exc:
                rejected.append(RejectedLog(tx_hash, index, f"malformed Transfer log: {exc}",
                                            _log_recipient(entry), _log_amount_text(entry), block_number,
                                            block_timestamp))
        return TxInfo(tx_hash, block_number, block_timestamp, success, tuple(transfers), tuple(rejected))

    def is_usdt_transfer(self, entry: Any) -> bool:
        """A log emitted by the USDT contract whose first topic is Transfer (judged by contract, never symbol)."""
        if not isinstance(entry, dict):
            return False
        address = str(entry.get("address", "")).lower().removeprefix("0x")
        if address.startswith("41") and len(address) == 42:
            address = address[2:]
        topics = entry.get("topics")
        return (address == self.usdt_hex20 and isinstance(topics, list) and bool(topics)
                and str(topics[0]).lower() == TRANSFER_TOPIC)

    @staticmethod
    def decode_log(entry: dict[str, Any], index: int, tx_hash: str, block_number: int,
                    block_timestamp: int) -> TransferLog:
        topics = entry["topics"]
        if len(topics) != 3:
            raise ValueError(f"{len(topics)} topics instead of 3")
        data = str(entry.get("data", ""))
        if len(data) != _WORD_HEX or not _HEX.match(data):
            raise ValueError(f"data is not one 32-byte word: {data[:80]!r}")
        try:
            from_address, to_address = from_hex(str(topics[1])), from_hex(str(topics[2]))
        except AddressError as exc:
            raise ValueError(str(exc)) from None
        return TransferLog(tx_hash, index, from_address, to_address, int(data, 16), block_number, block_timestamp)


def block_header(body: Any) -> BlockHeader | None:
    """A block answer's header: number, time, id, parent id and its transactions' ids; None when it has none."""
    try:
        raw = body["block_header"]["raw_data"]
        transactions = body.get("transactions") or []
        tx_ids = tuple(_tx_hash(tx["txID"]) for tx in transactions)
        block_id = str(body.get("blockID") or "").lower()
        parent_id = str(raw.get("parentHash") or "").lower()
        if (block_id and not TX_ID.match(block_id)) or (parent_id and not TX_ID.match(parent_id)):
            raise ValueError("block or parent id is not 64 hex digits")
        return BlockHeader(_block_number(raw["number"]), block_time(raw["timestamp"]), len(transactions), block_id,
                           parent_id, tx_ids)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _log_recipient(entry: Any) -> str | None:
    try:
        return from_hex(str(entry["topics"][2]))
    except (KeyError, IndexError, TypeError, AddressError):
        return None


def _log_amount_text(entry: Any) -> str | None:
    data = str(entry.get("data", "")) if isinstance(entry, dict) else ""
    return str(int(data, 16)) if data and _HEX.match(data) and len(data) <= 2 * _WORD_HEX else None


def next_fingerprint(body: dict[str, Any]) -> str | None:
    meta = body.get("meta")
    fingerprint = meta.get("fingerprint") if isinstance(meta, dict) else None
    return fingerprint if isinstance(fingerprint, str) and fingerprint else None


MAX_BLOCK_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: beyond it no date can hold the value
MAX_BLOCK_NUMBER = 2**53  # JSON's exact integers


def block_time(value: Any) -> int:
    """A block time in ms: an answer carrying one that no date can hold is malformed (its other lies are the
    watcher's to refuse, against the accepted head)."""
    ms = _int(value)
    if not 0 < ms <= MAX_BLOCK_TIME_MS:
        raise ValueError(f"not a block time: {value!r}")
    return ms


def _block_number(value: Any) -> int:
    number = _int(value)
    if not 0 <= number < MAX_BLOCK_NUMBER:
        raise ValueError(f"not a block number: {value!r}")
    return number


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"not an integer: {value!r}")
    return int(value)


def _amount(value: Any) -> int:
    """A TRC20 ``value``: a decimal string of the smallest unit (an int is accepted; a float never)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    raise ValueError(f"not a token amount: {value!r}")


def _optional(parse: Callable[[Any], Any], value: Any) -> Any:
    try:
        return parse(value)
    except (TypeError, ValueError):
        return None


def _tx_hash(value: Any) -> str:
    if not isinstance(value, str) or not TX_ID.match(value):
        raise ValueError(f"not a transaction id: {value!r}")
    return value.lower()


def _address(value: Any) -> str:
    if not is_valid_address(value):
        raise ValueError(f"not a TRON address: {value!r}")
    return value
