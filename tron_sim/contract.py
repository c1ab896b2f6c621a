"""The token contracts' state and the USDT contract as a node shows it: the balances the mined transfers leave
(:class:`TokenLedger`), the ``SmartContract`` record ``/wallet/getcontract`` answers, and the answers of a constant
call (``/wallet/triggerconstantcontract``).

Only the chain's USDT contract is deployed: for any other address ``getcontract`` answers ``{}`` and a constant call
``Smart contract is not exist.``, as java-tron does. The simulator runs no TVM: a constant call answers the TRC20
views (``name``, ``symbol``, ``decimals``, ``totalSupply``, ``balanceOf``, ``allowance``) from the ledger; any other
function, ``transfer`` and ``approve`` included (not simulated), reverts as TetherToken does for a selector it lacks.
The ABI is TetherToken's TRC20 part; its bytecode, code hash and deployer are stand-ins, not mainnet's.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import base58
from Crypto.Hash import keccak

from infra.addresses import from_hex, to_hex41
from tron_sim.accounts import Energy
from tron_sim.txraw import remember_address, word

if TYPE_CHECKING:
    from tron_sim.chain import Token, Tx

CONTRACT_NAME = "TetherToken"
BYTECODE = "6080604052600080fd"  # a stand-in (PUSH1 0x80 PUSH1 0x40 MSTORE PUSH1 0 DUP1 REVERT): no TVM here
CONSUME_USER_RESOURCE_PERCENT = 100  # the caller pays all the energy: USDT receipts show no origin_energy_usage
ORIGIN_ENERGY_LIMIT = 10_000_000
REVERT_MESSAGE = "REVERT opcode executed"
NOT_A_CONTRACT = "Smart contract is not exist."


def keccak256(data: bytes) -> bytes:
    return keccak.new(data=data, digest_bits=256).digest()


def selector(signature: str) -> str:
    """The 4-byte function selector of a signature such as ``balanceOf(address)``, in hex (java-tron's
    ``Util.parseMethod``)."""
    return keccak256(signature.encode()).hex()[:8]


def _derived_address(seed: bytes) -> str:
    raw = b"\x41" + keccak256(seed)[12:]
    address = base58.b58encode_check(raw).decode()
    remember_address(address, raw)
    return address


CODE_HASH = keccak256(bytes.fromhex(BYTECODE)).hex()
ORIGIN_ADDRESS = _derived_address(b"tron_sim TetherToken deployer")


# -- state -----------------------------------------------------------------------------------------
class TokenLedger:
    """Balances, allowances and total supply of every token contract, each value with its history by block, so
    that a node reads the state at its own head (``/wallet``) or solid head (``/walletsolidity``).

    A sender that sends more than it holds held the rest since genesis (the simulator's senders are funded, as for
    TRX): the shortfall is added to the total supply, and no balance goes below 0."""

    def __init__(self) -> None:
        self._history: dict[tuple[str, ...], tuple[list[int], list[int]]] = {}

    def balance(self, contract: str, holder: str, block: int | None = None) -> int:
        return self._value(("balance", contract, holder), block)

    def allowance(self, contract: str, owner: str, spender: str, block: int | None = None) -> int:
        return self._value(("allowance", contract, owner, spender), block)

    def supply(self, contract: str, block: int | None = None) -> int:
        return self._value(("supply", contract), block)

    def apply(self, tx: Tx, block: int) -> None:
        """The state after a mined transaction (a reverted one changes nothing)."""
        if tx.kind != "trc20" or tx.reverted:
            return
        for spec in tx.logs:
            if spec.event == "Approval":
                self._set(("allowance", spec.contract, spec.from_address, spec.to_address), block, spec.amount)
                continue
            held = self.balance(spec.contract, spec.from_address)
            shortfall = max(0, spec.amount - held)
            if shortfall:
                self._set(("supply", spec.contract), block, self.supply(spec.contract) + shortfall)
            self._set(("balance", spec.contract, spec.from_address), block, held + shortfall - spec.amount)
            received = self.balance(spec.contract, spec.to_address)
            self._set(("balance", spec.contract, spec.to_address), block, received + spec.amount)

    def _value(self, key: tuple[str, ...], block: int | None) -> int:
        entry = self._history.get(key)
        if entry is None:
            return 0
        blocks, values = entry
        if block is None or block >= blocks[-1]:
            return values[-1]
        position = bisect.bisect_right(blocks, block)
        return values[position - 1] if position else 0

    def _set(self, key: tuple[str, ...], block: int, value: int) -> None:
        entry = self._history.get(key)
        if entry is None:
            self._history[key] = ([block], [value])
        elif entry[0][-1] == block:
            entry[1][-1] = value
        else:
            entry[0].append(block)
            entry[1].append(value)


# -- the SmartContract record ----------------------------------------------------------------------
def _params(params: tuple[tuple[str, str], ...], indexed: bool = False) -> list[dict[str, Any]]:
    """ABI params as java-tron prints them: proto3 leaves out ``indexed: false`` and an empty name."""
    return [{**({"indexed": True} if indexed else {}), **({"name": name} if name else {}), "type": kind}
            for name, kind in params]


def _function(name: str, inputs: tuple[tuple[str, str], ...], outputs: tuple[tuple[str, str], ...],
              mutability: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"constant": True} if mutability == "View" else {}
    entry["name"] = name
    if inputs:
        entry["inputs"] = _params(inputs)
    entry["outputs"] = _params(outputs)
    entry.update({"type": "Function", "stateMutability": mutability})
    return entry


def _event(name: str, first: str, second: str) -> dict[str, Any]:
    inputs = _params(((first, "address"), (second, "address")), indexed=True) + _params((("value", "uint256"),))
    return {"name": name, "inputs": inputs, "type": "Event"}


ABI: list[dict[str, Any]] = [
    _function("name", (), (("", "string"),), "View"),
    _function("approve", (("_spender", "address"), ("_value", "uint256")), (("", "bool"),), "Nonpayable"),
    _function("totalSupply", (), (("", "uint256"),), "View"),
    _function("transferFrom", (("_from", "address"), ("_to", "address"), ("_value", "uint256")), (("", "bool"),),
              "Nonpayable"),
    _function("decimals", (), (("", "uint8"),), "View"),
    _function("balanceOf", (("who", "address"),), (("", "uint256"),), "View"),
    _function("symbol", (), (("", "string"),), "View"),
    _function("transfer", (("_to", "address"), ("_value", "uint256")), (("", "bool"),), "Nonpayable"),
    _function("allowance", (("_owner", "address"), ("_spender", "address")), (("remaining", "uint256"),), "View"),
    _event("Transfer", "from", "to"),
    _event("Approval", "owner", "spender"),
]


def smart_contract_json(token: Token, visible: bool = False) -> dict[str, Any]:
    """``/wallet/getcontract``'s answer for the USDT contract: the ``SmartContract`` proto in field order, defaults
    left out (documentation-en getcontract.md)."""
    return {
        "origin_address": ORIGIN_ADDRESS if visible else to_hex41(ORIGIN_ADDRESS),
        "contract_address": token.address if visible else to_hex41(token.address),
        "abi": {"entrys": ABI},
        "bytecode": BYTECODE,
        "consume_user_resource_percent": CONSUME_USER_RESOURCE_PERCENT,
        "name": CONTRACT_NAME,
        "origin_energy_limit": ORIGIN_ENERGY_LIMIT,
        "code_hash": CODE_HASH,
    }


# -- constant calls --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallResult:
    """What a constant call returned: ``output`` (hex, ABI-encoded) and the energy it used."""

    output: str
    energy: Energy
    reverted: bool = False


def _string(text: str) -> str:
    data = text.encode()
    return word(32) + word(len(data)) + data.hex().ljust(-(-len(data) // 32) * 64, "0")


@dataclass(frozen=True)
class View:
    signature: str
    arguments: int  # address arguments
    energy: Energy


# energy_used / energy_penalty on mainnet: decimals() and symbol() as TronGrid answered them for USDT (captured in
# vultisig/airdrop-registry's tests: 2207 / 1699 and 5922 / 4558); balanceOf: its base energy on Nile's TetherToken
# (935, documentation-en triggerconstantcontract.md) with the same penalty factor; name as symbol, totalSupply as
# decimals, allowance as balanceOf; a selector the dispatcher does not know: an estimate.
VIEWS = {selector(view.signature): view for view in (
    View("name()", 0, Energy(5922, 4558)),
    View("symbol()", 0, Energy(5922, 4558)),
    View("decimals()", 0, Energy(2207, 1699)),
    View("totalSupply()", 0, Energy(2207, 1699)),
    View("balanceOf(address)", 1, Energy(4062, 3127)),
    View("allowance(address,address)", 2, Energy(4062, 3127)),
)}
UNKNOWN_SELECTOR = Energy(695, 535)


def constant_call(ledger: TokenLedger, token: Token, data: str, block: int) -> CallResult:
    """Run ``data`` (selector and ABI-encoded arguments, hex) against the token's state at ``block``. Short call data
    reads as zeros, as the EVM's CALLDATALOAD pads it."""
    view = VIEWS.get(data[:8].ljust(8, "0"))
    if view is None:
        return CallResult("", UNKNOWN_SELECTOR, reverted=True)
    arguments = [from_hex(data[8 + 64 * i:8 + 64 * (i + 1)].ljust(64, "0")) for i in range(view.arguments)]
    name = view.signature.split("(")[0]
    if name == "name":
        output = _string(token.name)
    elif name == "symbol":
        output = _string(token.symbol)
    elif name == "decimals":
        output = word(token.decimals)
    elif name == "totalSupply":
        output = word(ledger.supply(token.address, block))
    elif name == "balanceOf":
        output = word(ledger.balance(token.address, arguments[0], block))
    else:
        output = word(ledger.allowance(token.address, arguments[0], arguments[1], block))
    return CallResult(output, view.energy)
