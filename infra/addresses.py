"""TRON addresses: base58check validation and conversion between the three spellings.

* base58check: ``T...`` (34 characters), what people and the TRC20 list use;
* hex with the ``41`` network prefix (21 bytes), what java-tron's wallet API uses;
* 20-byte hex without prefix, what event logs carry (topics left-pad it to 32 bytes).

A TRC20 ``Transfer`` log carries the sender and the recipient as its second and third topics, after
:data:`TRANSFER_TOPIC`.
"""
from __future__ import annotations

from functools import lru_cache

import base58

PREFIX = 0x41
# keccak256("Transfer(address,address,uint256)"): the first topic of every TRC20 (ERC-20) Transfer log
TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


class AddressError(ValueError):
    """The text is not a TRON address."""


def decode_address(address: str) -> bytes:
    """Return the 21 bytes (0x41 + 20) of a base58check address, or raise AddressError."""
    if not isinstance(address, str) or len(address) != 34:
        raise AddressError("a TRON address has 34 characters")
    try:
        raw = base58.b58decode_check(address)
    except ValueError:
        raise AddressError("the address checksum does not match") from None
    if len(raw) != 21 or raw[0] != PREFIX:
        raise AddressError("a TRON address starts with the 0x41 prefix")
    return raw


def is_valid_address(address: object) -> bool:
    try:
        decode_address(address)  # type: ignore[arg-type]
    except AddressError:
        return False
    return True


def to_hex41(address: str) -> str:
    return f"{PREFIX:02x}" + to_hex20(address)


# Cached: the same addresses are written over and over (every answer the simulator renders names them).
@lru_cache(maxsize=1 << 18)
def to_hex20(address: str) -> str:
    return decode_address(address)[1:].hex()


def from_hex(hex_address: str) -> str:
    """Base58check address from ``41``+40 hex, 40 hex, or a 64-hex log topic."""
    text = hex_address.lower().removeprefix("0x")
    if len(text) == 64:
        text = text[24:]
    if len(text) == 40:
        text = "41" + text
    if len(text) != 42 or not text.startswith("41"):
        raise AddressError(f"not a TRON hex address: {hex_address!r}")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise AddressError(f"not a TRON hex address: {hex_address!r}") from None
    return base58.b58encode_check(raw).decode()


def to_topic(address: str) -> str:
    """The 32-byte log topic form of an address (20 bytes left-padded with zeros)."""
    return "0" * 24 + to_hex20(address)
