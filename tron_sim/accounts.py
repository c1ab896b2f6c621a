"""Accounts of the simulated chain: TRX balances, free bandwidth, and what each mined transaction cost and who paid.

The prices and allowances are mainnet's: 600 free bandwidth points a day for every account (``getFreeNetLimit``),
recovering linearly over 24 hours (java-tron's ``ResourceProcessor.increase``, a window of 28800 slots); 1000 sun a
bandwidth point (``getTransactionFee``); 210 sun a unit of energy (``getEnergyFee``: the captured USDT transfer
``txinfo_usdt_success.json`` burned 26420100 sun for 125810 energy); a TRX transfer to an address without an account
costs 1 TRX (``getCreateNewAccountFeeInSystemContract``) plus 0.1 TRX of bandwidth (``getCreateAccountFee``) and uses
no free bandwidth (``txinfo_trx_transfer.json``: fee 1100000, ``net_fee`` 100000).

Who pays, in java-tron's order (bandwidth, then energy; an account's resources before its TRX):

* **A TRX transfer**: bandwidth from the sender's free bandwidth while enough is left (mainnet transaction
  ``2389719608…``: ``{"net_usage": 265}`` and no fee), otherwise burned. The sender holds the TRX it spends: by the
  simulator's rule, TRX an account sends beyond what it received counts as funded at genesis, and the fee is TRX it
  spends like the amount; its balance never goes below 0.
* **A contract call (a USDT transfer)**: bandwidth from free bandwidth while enough is left. Energy, and bandwidth
  beyond the free allowance, are burned from the sender's TRX only when its balance covers the whole fee (the
  captured ``0130dfde…``: ``energy_fee``, top-level ``fee``). An account with less, 0 TRX in particular, burns
  nothing: on mainnet such an account either fails with ``OUT_OF_ENERGY`` after burning what it has (transaction
  ``e63a324a…``: ``energy_fee`` 16500120 sun, all its TRX, and no transfer) or, as most addresses without TRX that
  send USDT do, runs on energy (and bandwidth) delegated to it by a stake or a rental: the receipt then shows
  ``energy_usage`` equal to ``energy_usage_total`` and no ``energy_fee`` (transaction ``b69c51db…``). A transfer the
  simulator is asked for does happen, so it is the second: the energy is delegated, no fee is charged that the
  account does not have, and no TRX is conjured for the fee. (The delegation itself is not shown by
  ``getaccountresource``: it is the rental's, not the account's.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tron_sim.chain import Tx

FREE_NET_LIMIT = 600
NET_WINDOW_MS = 24 * 3600 * 1000
SUN_PER_BANDWIDTH = 1000
SUN_PER_ENERGY = 210
CREATE_ACCOUNT_FEE = 1_000_000
CREATE_ACCOUNT_NET_FEE = 100_000

# Network-wide totals getaccountresource / getaccountnet report (documentation-en getaccountresource.md's example).
TOTAL_NET_LIMIT = 43_200_000_000
TOTAL_NET_WEIGHT = 68_305_209_098
TOTAL_ENERGY_LIMIT = 180_000_000_000
TOTAL_ENERGY_WEIGHT = 2_411_528_185


@dataclass(frozen=True)
class Energy:
    """The energy a call used, ``penalty`` (the dynamic energy model's extra for busy contracts) included."""

    total: int
    penalty: int = 0


# A USDT transfer on mainnet: to an address that holds no USDT yet (the captured 0130dfde…: 130285, 100635 of it
# penalty) or to one that holds some (transaction b69c51db…: 64285, 49635 of it penalty). A reverted call: the
# energy of wallet-cli's documented failed call.
TRANSFER_TO_NEW_HOLDER = Energy(130_285, 100_635)
TRANSFER_TO_HOLDER = Energy(64_285, 49_635)
REVERTED_CALL = Energy(130_285)


@dataclass(frozen=True)
class Receipt:
    """What a mined transaction cost (java-tron's ``ResourceReceipt`` and ``TransactionInfo.fee``): resources used
    (``net_usage`` bandwidth points, ``energy_usage`` staked or delegated energy) and sun burned."""

    net_usage: int = 0
    net_fee: int = 0
    energy_usage: int = 0
    energy_fee: int = 0
    energy_usage_total: int = 0
    energy_penalty_total: int = 0
    contract_fee: int = 0  # what the contract itself charged: creating the recipient's account

    @property
    def fee(self) -> int:
        """Everything burned: ``TransactionInfo.fee``."""
        return self.net_fee + self.energy_fee + self.contract_fee


@dataclass
class Account:
    """What ``getaccount`` reports. ``contract_name``: the account of a deployed contract (type ``Contract``)."""

    create_time: int
    balance: int = 0
    latest_operation_time: int = 0
    free_net_usage: int = 0  # as it stood at latest_consume_free_time
    latest_consume_free_time: int = 0
    contract_name: str = ""

    def free_net_used(self, now_ms: int) -> int:
        """Free bandwidth used as of ``now_ms``: usage recovers linearly over 24 hours."""
        elapsed = now_ms - self.latest_consume_free_time
        if self.free_net_usage == 0 or elapsed >= NET_WINDOW_MS:
            return 0
        return round(self.free_net_usage * (NET_WINDOW_MS - max(0, elapsed)) / NET_WINDOW_MS)

    def use_free_net(self, points: int, now_ms: int) -> bool:
        used = self.free_net_used(now_ms)
        if points > FREE_NET_LIMIT - used:
            return False
        self.free_net_usage, self.latest_consume_free_time = used + points, now_ms
        return True

    def burn(self, sun: int) -> bool:
        """Burn ``sun`` if the balance covers it all; never a part of it."""
        if sun > self.balance:
            return False
        self.balance -= sun
        return True


class Accounts(dict[str, Account]):
    """What getaccount answers of each address that sent or received TRX, or sent anything, and of the contract."""

    def settle(self, tx: Tx, timestamp: int, energy: Energy) -> Receipt:
        """Apply a mined transaction to its accounts; what it cost. ``energy``: what a contract call used."""
        creates_account = tx.kind == "trx" and tx.trx_to not in self
        owner = self.opened(tx.owner, timestamp)
        owner.latest_operation_time = timestamp
        points = tx.raw.bandwidth()
        if tx.kind == "trx":
            if creates_account:
                receipt = Receipt(net_fee=CREATE_ACCOUNT_NET_FEE, contract_fee=CREATE_ACCOUNT_FEE)
            elif owner.use_free_net(points, timestamp):
                receipt = Receipt(net_usage=points)
            else:
                receipt = Receipt(net_fee=points * SUN_PER_BANDWIDTH)
            owner.balance = max(0, owner.balance - tx.trx_amount - receipt.fee)  # funded at genesis beyond that
            self.opened(tx.trx_to, timestamp).balance += tx.trx_amount
            return receipt
        if owner.use_free_net(points, timestamp):
            net_usage, net_fee = points, 0
        elif owner.burn(points * SUN_PER_BANDWIDTH):
            net_usage, net_fee = 0, points * SUN_PER_BANDWIDTH
        else:
            net_usage, net_fee = points, 0  # delegated bandwidth
        if owner.burn(energy.total * SUN_PER_ENERGY):
            energy_usage, energy_fee = 0, energy.total * SUN_PER_ENERGY
        else:
            energy_usage, energy_fee = energy.total, 0  # delegated energy
        return Receipt(net_usage, net_fee, energy_usage, energy_fee, energy.total, energy.penalty)

    def opened(self, address: str, timestamp: int) -> Account:
        """The address's account, created at ``timestamp`` if it has none yet."""
        account = self.get(address)
        if account is None:
            account = self[address] = Account(create_time=timestamp)
        return account
