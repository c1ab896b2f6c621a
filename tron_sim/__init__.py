"""A TronGrid-compatible TRON simulator: an in-memory chain served over HTTP, with fault injection.

    from tron_sim import Simulator
    sim = Simulator(block_interval=0.0, solidify_depth=2)
    url = sim.start()          # "http://127.0.0.1:<port>"
    tx_id = sim.transfer(wallet, 10_500_000)   # 10.5 USDT, in micro-USDT
    sim.solidify()
    sim.stop()

Run standalone with ``python -m tron_sim --port 9000``.
"""
from __future__ import annotations

from tron_sim.chain import SLOT_MS, USDT_MAINNET, random_address
from tron_sim.faults import FAULT_KINDS
from tron_sim.shapes import TRANSFER_TOPIC
from tron_sim.simulator import RequestRecord, Simulator

__all__ = ["FAULT_KINDS", "SLOT_MS", "TRANSFER_TOPIC", "USDT_MAINNET", "RequestRecord", "Simulator", "random_address"]
