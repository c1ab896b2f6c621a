"""A merchant's account-level extended public key (BIP-32 ``xpub``) and the TRON addresses it derives, watch-only.

Address *i* is the key's child ``0/i`` (the receiving chain's *i*-th address, ``m/44'/195'/0'/0/i`` when the key is
the wallet's account ``m/44'/195'/0'``): BIP-32 public derivation on secp256k1 by the ``bip32`` library (on
``coincurve``, libsecp256k1's binding), then the TRON address of the child key: ``0x41`` + the last 20 bytes of
Keccak-256 (``pycryptodome``) of the uncompressed public key without its ``04`` byte, in base58check.

Read here, below the configuration, so that a key that is not an account's ``xpub`` (a private key, a testnet key,
a wrong checksum, another kind or depth) stops the start with one line. The key itself is never put in a message:
errors say what is wrong with it, never what it is.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import base58
import coincurve
from bip32 import BIP32, BIP32DerivationError
from Crypto.Hash import keccak

from infra.addresses import from_hex

# BIP-32's version bytes: what a serialized key says it is.
XPUB = bytes.fromhex("0488b21e")
VERSIONS = {
    bytes.fromhex("0488ade4"): "a private key (xprv): give the account's public key (xpub), never a private one",
    bytes.fromhex("043587cf"): "a testnet key (tpub): give a mainnet account key (xpub)",
    bytes.fromhex("04358394"): "a testnet private key (tprv): give the account's public key (xpub), never a "
                               "private one",
    bytes.fromhex("049d7cb2"): "a BIP-49 key (ypub): give the account's BIP-44 key (xpub)",
    bytes.fromhex("04b24746"): "a BIP-84 key (zpub): give the account's BIP-44 key (xpub)",
    bytes.fromhex("049d7878"): "a private key (yprv): give the account's public key (xpub), never a private one",
    bytes.fromhex("04b2430c"): "a private key (zprv): give the account's public key (xpub), never a private one",
}
ACCOUNT_DEPTH = 3  # m / purpose' / coin_type' / account'
RECEIVING_CHAIN = 0  # BIP-44's external chain: the addresses a wallet shows for receiving
MAX_INDEX = 2**31 - 1  # the last non-hardened child
CACHE_SIZE = 1 << 16  # derived addresses kept per key: a busy service's open and recent payments


class XpubError(ValueError):
    """The text is not an account-level extended public key; the message never contains the key."""


def tron_address(public_key: bytes) -> str:
    """The TRON address (base58check) of a secp256k1 public key, compressed or not."""
    uncompressed = coincurve.PublicKey(public_key).format(compressed=False)
    digest = keccak.new(data=uncompressed[1:], digest_bits=256).digest()
    return from_hex("41" + digest[-20:].hex())


class DepositKey:
    """An account's extended public key: the addresses of its receiving chain, derived once each and remembered.

    ``account`` names the key without revealing it (SHA-256 of its chain code and public key): what the database
    records indexes under, so another key starts its own count. Thread-safe; one per process."""

    def __init__(self, text: str) -> None:
        node = parse_xpub(text)
        self.account = hashlib.sha256(node.chaincode + node.pubkey).hexdigest()
        # The receiving chain's node, derived once: each address is then one public derivation from it.
        chaincode, pubkey = node.get_extended_pubkey_from_path([RECEIVING_CHAIN])
        self._chain = BIP32(chaincode, None, pubkey, depth=ACCOUNT_DEPTH + 1, index=RECEIVING_CHAIN,
                            fingerprint=node.get_fingerprint())
        self._cache: OrderedDict[int, str] = OrderedDict()
        self._lock = threading.Lock()
        # The index this process expects the account's next create to take (a hint, never trusted: the database
        # decides, see ledger.payments.create_derived_payment); it moves on with each create.
        self.expected_index = 0

    def __repr__(self) -> str:  # never the key: a repr ends up in logs and tracebacks
        return f"DepositKey(account={self.account[:12]}...)"

    def address(self, index: int) -> str:
        """The address of child ``0/index``."""
        if not 0 <= index <= MAX_INDEX:
            raise ValueError(f"a deposit address index is from 0 to {MAX_INDEX}, got {index}")
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                return cached
        try:
            address = tron_address(self._chain.get_pubkey_from_path([index]))
        except BIP32DerivationError:  # probability below 2^-127: BIP-32 says to skip to the next index
            raise ValueError(f"index {index} has no valid child key; skip it") from None
        with self._lock:
            self._cache[index] = address
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return address

    def addresses(self, start: int, count: int) -> list[tuple[int, str]]:
        """``count`` consecutive (index, address) pairs from ``start``."""
        return [(index, self.address(index)) for index in range(start, min(start + count, MAX_INDEX + 1))]


def parse_xpub(text: str) -> BIP32:
    """The account key of ``text``, or XpubError saying what is wrong with it (never quoting it)."""
    if not isinstance(text, str) or not text.strip():
        raise XpubError("must be an extended public key (xpub...)")
    try:
        raw = base58.b58decode_check(text.strip())
    except ValueError:
        raise XpubError("is not a valid extended key: its base58 checksum does not match (a typo or a cut copy?)"
                        ) from None
    if len(raw) != 78:
        raise XpubError(f"is not an extended key: it decodes to {len(raw)} bytes, not 78")
    version = raw[:4]
    if version != XPUB:
        raise XpubError("is " + VERSIONS.get(version, "not an xpub (unknown version bytes)"))
    depth = raw[4]
    if depth != ACCOUNT_DEPTH:
        raise XpubError(f"must be an account-level key (depth 3, as m/44'/195'/0'), this one is at depth {depth}: "
                        "export the account's xpub")
    try:
        return BIP32.from_xpub(text.strip())
    except ValueError:  # the library's ParsingError and InvalidInputError
        raise XpubError("is not a valid extended public key: its public key is not a point of secp256k1") from None
