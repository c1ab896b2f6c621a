"""Deposit addresses are derived as every wallet derives them: checked against published vectors and against an
independent computation (BIP-32 private derivation, secp256k1 and Keccak-256 written out here in plain Python)."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from infra.config import ConfigError, load_config
from infra.xpub import DepositKey, XpubError, parse_xpub

MNEMONIC = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
# Published vectors of the BIP-39 test mnemonic above, TRON (coin 195), from bip_utils' tests
# (github.com/ebellocchia/bip_utils, tests/bip/bip44/test_bip44.py, Bip44Coins.TRON, at commit 4c8cb68e; its header:
# "Results generated with: https://iancoleman.io/bip39 / TronLink ..."): the account key m/44'/195'/0' and the
# addresses m/44'/195'/0'/0/0 to /4.
ACCOUNT_XPUB = ("xpub6D1AabNHCupeiLM65ZR9UStMhJ1vCpyV4XbZdyhMZBiJXALQtmn9p42VTQckoHVn8WNqS7dqnJokZHAHcHGoaQgmv8D45oNU"
                "Kx6DZMNZBCd")
ACCOUNT_XPRV = ("xprv9z1pB5qPNYGMVrGcyXt97Jwd9GBRoNFdhJfxqbHjzrBKeN1GMETuGFi1c73SQkP8kkKz5MVoMtLRcsDWggUcaPF32AXN4qNs"
                "NWBoJbaHcQ7")
CHAIN_XPUB = ("xpub6EuK4CZWW5urEHdwAVDdDw327danAtccFcrXYvgf1DHrPXRwErt36xStQ2PNhn4hpwzPbzJ8pJVpewgChRnSs59q5Ay61GCfQZ"
              "KUe71gbLq")  # m/44'/195'/0'/0: depth 4, not an account
PUBLISHED = ["TUEZSdKsoDHQMeZwihtdoBiN46zxhGWYdH", "TSeJkUh4Qv67VNFwY8LaAxERygNdy6NQZK",
             "TYJPRrdB5APNeRs4R7fYZSwW3TcrTKw2gx", "TRhVWK5XEDkQBDevcdCWW7RW51aRncty4W",
             "TT2X2yyubp7qpAWYYNE5JQWBtoZ7ikQFsY"]
TESTNET_TPUB = ("tpubDC5FSnBiZDMmhiuCmWAYsLwgLYrrT9rAqvTySfuCCrgsWz8wxMXUS9Tb9iVMvcRbvFcAHGkMD5Kx8koh4GquNGNTfohfk7pg"
                "jhaPCdXpoba")


def test_addresses_match_the_published_vectors() -> None:
    key = DepositKey(ACCOUNT_XPUB)
    assert [address for _, address in key.addresses(0, 5)] == PUBLISHED
    assert key.address(3) == PUBLISHED[3]  # from the cache, the same


# --- an independent computation: BIP-39 seed, BIP-32 private derivation, secp256k1, Keccak-256, base58check -------

P = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
     0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)


def point_add(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P == 0:
        return None
    if a == b:
        slope = 3 * a[0] * a[0] * pow(2 * a[1], -1, P) % P
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, P) % P
    x = (slope * slope - a[0] - b[0]) % P
    return x, (slope * (a[0] - x) - a[1]) % P


def multiply(k: int) -> tuple[int, int]:
    result, addend = None, G
    while k:
        if k & 1:
            result = point_add(result, addend)
        addend = point_add(addend, addend)
        k >>= 1
    assert result is not None
    return result


def compressed(point: tuple[int, int]) -> bytes:
    return bytes([2 + (point[1] & 1)]) + point[0].to_bytes(32, "big")


def private_path(seed: bytes, path: list[int]) -> int:
    digest = hmac.new(b"Bitcoin seed", seed, hashlib.sha512).digest()
    key, chain = int.from_bytes(digest[:32], "big"), digest[32:]
    for index in path:
        data = (b"\0" + key.to_bytes(32, "big") if index >= 2**31 else compressed(multiply(key)))
        digest = hmac.new(chain, data + index.to_bytes(4, "big"), hashlib.sha512).digest()
        key, chain = (int.from_bytes(digest[:32], "big") + key) % N, digest[32:]
    return key


RC = [0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000, 0x000000000000808B,
      0x0000000080000001, 0x8000000080008081, 0x8000000000008009, 0x000000000000008A, 0x0000000000000088,
      0x0000000080008009, 0x000000008000000A, 0x000000008000808B, 0x800000000000008B, 0x8000000000008089,
      0x8000000000008003, 0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
      0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008]
ROTATIONS = [[0, 36, 3, 41, 18], [1, 44, 10, 45, 2], [62, 6, 43, 15, 61], [28, 55, 25, 21, 56], [27, 20, 39, 8, 14]]
MASK = 2**64 - 1


def rol(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & MASK if shift else value


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum and TRON use it (the original padding, not SHA3-256's)."""
    rate = 136
    padded = bytearray(data + b"\x01" + b"\0" * (-(len(data) + 1) % rate))
    padded[-1] |= 0x80
    lanes = [[0] * 5 for _ in range(5)]
    for block in range(0, len(padded), rate):
        for i in range(rate // 8):
            lanes[i % 5][i // 5] ^= int.from_bytes(padded[block + 8 * i:block + 8 * i + 8], "little")
        for rc in RC:
            c = [lanes[x][0] ^ lanes[x][1] ^ lanes[x][2] ^ lanes[x][3] ^ lanes[x][4] for x in range(5)]
            d = [c[(x - 1) % 5] ^ rol(c[(x + 1) % 5], 1) for x in range(5)]
            b = [[0] * 5 for _ in range(5)]
            for x in range(5):
                for y in range(5):
                    b[y][(2 * x + 3 * y) % 5] = rol(lanes[x][y] ^ d[x], ROTATIONS[x][y])
            lanes = [[b[x][y] ^ (~b[(x + 1) % 5][y] & b[(x + 2) % 5][y]) for y in range(5)] for x in range(5)]
            lanes[0][0] ^= rc
    return b"".join(lanes[i % 5][i // 5].to_bytes(8, "little") for i in range(4))


ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58check(payload: bytes) -> str:
    data = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number, text = int.from_bytes(data, "big"), ""
    while number:
        number, digit = divmod(number, 58)
        text = ALPHABET[digit] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def independent_address(seed: bytes, index: int) -> str:
    point = multiply(private_path(seed, [44 + 2**31, 195 + 2**31, 2**31, 0, index]))
    raw = point[0].to_bytes(32, "big") + point[1].to_bytes(32, "big")
    return base58check(b"\x41" + keccak256(raw)[-20:])


def test_addresses_match_an_independent_computation() -> None:
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    seed = hashlib.pbkdf2_hmac("sha512", MNEMONIC.encode(), b"mnemonic", 2048)
    assert seed.hex().startswith("5eb00bbddcf069084889a8ab9155568165f5c453")  # BIP-39's published seed
    key = DepositKey(ACCOUNT_XPUB)
    expected = [independent_address(seed, index) for index in (*range(12), 1000, 2**31 - 1)]
    assert expected[:5] == PUBLISHED
    assert [key.address(index) for index in (*range(12), 1000, 2**31 - 1)] == expected


# --- what is refused, and what is never shown ----------------------------------------------------

@pytest.mark.parametrize(("text", "says"), [
    (ACCOUNT_XPRV, "private key"),
    (ACCOUNT_XPUB[:-1] + ("e" if ACCOUNT_XPUB[-1] != "e" else "f"), "checksum"),
    (TESTNET_TPUB, "testnet"),
    (CHAIN_XPUB, "depth 4"),
    ("xpub-not-a-key", "checksum"),
    (base58check(b"\x04\x88\xb2\x1e" + b"\x03" * 40), "not an extended key"),
])
def test_malformed_keys_are_refused_without_being_quoted(text: str, says: str) -> None:
    with pytest.raises(XpubError) as refused:
        parse_xpub(text)
    assert says in str(refused.value) and text not in str(refused.value)
    with pytest.raises(ConfigError) as stopped:
        load_config({"DEPOSIT_XPUB": text})
    assert str(stopped.value).startswith("DEPOSIT_XPUB ") and text not in str(stopped.value)


def test_the_configuration_never_shows_the_key() -> None:
    config = load_config({"DEPOSIT_XPUB": ACCOUNT_XPUB})
    assert config.deposit_key is not None and config.deposit_key.address(0) == PUBLISHED[0]
    assert ACCOUNT_XPUB not in repr(config) and ACCOUNT_XPUB not in str(config.deposit_key)
    assert load_config({}).deposit_key is None
