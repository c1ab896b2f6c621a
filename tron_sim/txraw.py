"""A transaction's ``raw_data`` as java-tron encodes it: protobuf bytes, ``raw_data_hex`` and the txID.

java-tron's ``Util.printTransactionToJSON`` prints ``raw_data_hex`` as the protobuf encoding of
``Transaction.raw`` and the ``txID`` as its SHA-256; the simulator does the same, so a transaction's id is
derived from its content exactly as on the real chain (checked against a real transaction in
``tests/data/trongrid_trc20_detail.json``). Field numbers are those of java-tron's ``Tron.proto`` and
``smart_contract.proto`` / ``balance_contract.proto``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache, cached_property

from infra.addresses import decode_address

TRANSFER_SELECTOR = "a9059cbb"  # transfer(address,uint256)
APPROVE_SELECTOR = "095ea7b3"  # approve(address,uint256)
MULTISEND_SELECTOR = "1e83409a"  # the simulated DEX / batch payout contract's entry point

# Transaction.Contract.ContractType values (Tron.proto)
CONTRACT_TYPES = {"TransferContract": 1, "TriggerSmartContract": 31}
TYPE_URL = "type.googleapis.com/protocol."
SIGNATURE_SIZE = 65
MAX_RESULT_SIZE = 64  # java-tron's Constant.MAX_RESULT_SIZE_IN_TX, counted in every transaction's bandwidth


@dataclass(frozen=True)
class RawContract:
    """The one contract of a transaction: a TRX transfer or a smart-contract call."""

    kind: str  # "TransferContract" or "TriggerSmartContract"
    owner: str  # base58
    target: str  # base58: to_address of a TRX transfer, contract_address of a call
    amount: int = 0  # sun, TransferContract only
    data: str = ""  # hex call data, TriggerSmartContract only

    @property
    def type_url(self) -> str:
        return TYPE_URL + self.kind


@dataclass(frozen=True)
class RawData:
    """``Transaction.raw``: what the sender signs and what the txID is the hash of."""

    contract: RawContract
    ref_block_bytes: str  # hex, 2 bytes: bytes 6..8 of the reference block's number
    ref_block_hash: str  # hex, 8 bytes: bytes 8..16 of the reference block's id
    expiration: int  # ms
    timestamp: int  # ms, when the sender built the transaction
    fee_limit: int = 0  # sun, smart-contract calls only

    def encode(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        out = bytearray()
        out += _bytes_field(1, bytes.fromhex(self.ref_block_bytes))
        out += _bytes_field(4, bytes.fromhex(self.ref_block_hash))
        out += _varint_field(8, self.expiration)
        out += _bytes_field(11, _encode_contract(self.contract))
        out += _varint_field(14, self.timestamp)
        out += _varint_field(18, self.fee_limit)
        return bytes(out)

    def hex(self) -> str:
        return self.encode().hex()

    def tx_id(self) -> str:
        return hashlib.sha256(self.encode()).hexdigest()

    def bandwidth(self) -> int:
        """Bandwidth points the signed transaction takes, counted as java-tron counts them: the protobuf size of the
        ``Transaction`` (this raw data and one 65-byte signature) plus the 64 bytes it reserves for the result
        (``MAX_RESULT_SIZE_IN_TX``). 345 for a USDT transfer and 265 for a TRX transfer, as on mainnet."""
        raw = len(self.encode())
        raw_field = len(_tag(1, 2)) + len(_varint(raw)) + raw
        signature_field = len(_tag(2, 2)) + len(_varint(SIGNATURE_SIZE)) + SIGNATURE_SIZE
        return raw_field + signature_field + MAX_RESULT_SIZE


def ref_block(number: int, block_id: str) -> tuple[str, str]:
    """``ref_block_bytes`` and ``ref_block_hash`` of a transaction referring to this block."""
    return number.to_bytes(8, "big")[6:].hex(), block_id[16:32]


def signature_for(tx_id: str) -> str:
    """65 bytes in the shape of a secp256k1 signature. Not a valid signature: the simulator holds no keys."""
    first = hashlib.sha256(b"r" + bytes.fromhex(tx_id)).digest()
    second = hashlib.sha256(b"s" + bytes.fromhex(tx_id)).digest()
    return (first + second + b"\x1b").hex()


_ADDRESS_BYTES: dict[str, bytes] = {}
ADDRESS_CACHE_SIZE = 1 << 16


def address_bytes(address: str) -> bytes:
    """The 21 bytes of a base58check address (cached: base58 decoding dominates building a transaction)."""
    raw = _ADDRESS_BYTES.get(address)
    if raw is None:
        raw = decode_address(address)
        remember_address(address, raw)
    return raw


def remember_address(address: str, raw: bytes) -> None:
    """Cache the bytes of an address made here, so it is never decoded again; bounded by emptying when full."""
    if len(_ADDRESS_BYTES) >= ADDRESS_CACHE_SIZE:
        _ADDRESS_BYTES.clear()
    _ADDRESS_BYTES[address] = raw


def word(value: int) -> str:
    return f"{value:064x}"


def address_word(address: str) -> str:
    return "0" * 24 + address_bytes(address)[1:].hex()


def call_data(selector: str, pairs: list[tuple[str, int]]) -> str:
    """ABI call data: the selector, then (address, uint256) pairs."""
    return selector + "".join(address_word(address) + word(amount) for address, amount in pairs)


# -- protobuf wire format --------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@cache
def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint_field(number: int, value: int) -> bytes:
    return _tag(number, 0) + _varint(value) if value else b""  # proto3 leaves defaults out


def _bytes_field(number: int, value: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(value)) + value if value else b""


def _encode_contract(contract: RawContract) -> bytes:
    owner, target = address_bytes(contract.owner), address_bytes(contract.target)
    if contract.kind == "TransferContract":
        value = _bytes_field(1, owner) + _bytes_field(2, target) + _varint_field(3, contract.amount)
    else:
        value = _bytes_field(1, owner) + _bytes_field(2, target) + _bytes_field(4, bytes.fromhex(contract.data))
    parameter = _bytes_field(1, contract.type_url.encode()) + _bytes_field(2, value)
    return _varint_field(1, CONTRACT_TYPES[contract.kind]) + _bytes_field(2, parameter)
