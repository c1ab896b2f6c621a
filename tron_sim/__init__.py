"""A TronGrid-compatible TRON simulator: an in-memory chain served over HTTP, behaving like the real pool.

    from tron_sim import Simulator
    sim = Simulator(block_interval=0.0, solidify_depth=2)
    url = sim.start()          # "http://127.0.0.1:<port>"
    tx_id = sim.transfer(wallet, 10_500_000)   # 10.5 USDT, in micro-USDT
    sim.solidify()
    sim.stop()

Run standalone with ``python -m tron_sim --port 9000`` (``--help`` lists the flags below).

Endpoints: TronGrid's index, ``GET /v1/accounts/{address}/transactions/trc20`` and
``GET /v1/contracts/{contract}/events``; java-tron's ``/wallet/`` and ``/walletsolidity/`` ``getnowblock``,
``getblockbynum``, ``getblockbyid``, ``gettransactionbyid``, ``gettransactioninfobyid``,
``gettransactioninfobyblocknum``, ``getaccount``, ``getnodeinfo``, ``triggerconstantcontract`` and ``/wallet/``
``getchainparameters``, ``getcontract``, ``getaccountresource``, ``getaccountnet``, ``listnodes`` (enough for
``tronpy``, ``get_contract(USDT).functions.balanceOf(address)`` included). ``/_sim/...`` controls everything over
HTTP (:mod:`tron_sim.control`). Shapes and texts are copied from real answers (:mod:`tron_sim.shapes`,
:mod:`tron_sim.faults`, ``tests/data/README.md``).

The chain keeps what a node reads: TRX balances, free bandwidth and each transaction's fee
(:mod:`tron_sim.accounts`: an account is never charged TRX it does not have; a USDT sender without TRX runs on
delegated energy), and the USDT balances the mined transfers leave (:mod:`tron_sim.contract`), which
``balanceOf`` answers at the node's head or solid head. The USDT contract has its own account (type ``Contract``).

How it behaves like the real TronGrid, each an option:

* **Block timestamps on 3-second boundaries** (multiples of 3000 ms), also with ``follow_clock=True`` (rounded
  up); ``advance(seconds)`` moves the next block at least that far, to the next boundary.
* **USDT moves in every block**: ``Simulator(usdt_noise_per_block=1)`` puts that many USDT transfers between
  the chain's own random addresses into every mined block (``--usdt-noise-per-block``; 0 turns it off;
  ``seed`` makes them reproducible). They never touch an address a test uses, and ``solidify()`` ignores them.
* **A pool of nodes, some behind**: ``set_node_lag(fraction, blocks, seed=None)`` (``POST /_sim/node_lag``,
  ``--node-lag-fraction/--node-lag-blocks/--node-lag-seed``): each ``/wallet`` and ``/walletsolidity`` request
  is answered, with probability ``fraction``, by a node ``blocks`` behind: lower heads, ``[]`` from
  ``gettransactioninfobyblocknum`` and ``{}`` from ``getblockbynum``/``getblockbyid`` above its head, ``{}``
  from ``gettransactioninfobyid``/``gettransactionbyid`` for transactions there (TRON-US/trongrid issue 18).
  ``/v1`` is a separate component, not affected. ``getaccount`` answers the current state on every node.
* **Index lag, in chain time**: ``set_index_lag(seconds)`` (``POST /_sim/index_lag``, ``--index-lag``): both
  ``/v1`` lists show only records of blocks whose timestamp is at least ``seconds`` older than the solid head's;
  ``delay_in_index(tx_id, seconds)`` (``POST /_sim/delay_in_index``) lists one transaction only once the solid
  head is ``seconds`` past its block (out-of-order indexing).
* **Rate limits, errors and hostile answers** as TronGrid and java-tron answer them: ``set_fault(kind, count,
  seconds=, path_prefix=, blocks=, size=, retry_after=)`` (``POST /_sim/fault``); kinds and their real texts in
  :mod:`tron_sim.faults`: ``429``, ``429_allowed_rps``, ``403_suspended``, ``403_daily``, ``503`` (with or without
  ``Retry-After``), ``lack_of_resources`` (HTTP 200), ``500``, ``error_200``, ``not_json``, ``slow``, ``drip``,
  ``endless``, ``huge``, the one-shot head lies ``head_future``, ``head_ahead``, ``head_behind``, and the listing
  behaviours ``ignore_contract_filter``, ``hide_unconfirmed_flag``, ``blank_token_info``.
* **Listing oddities**: ``transfer(..., index_token_info=False)`` lists the record with ``token_info: {}``;
  ``approve(owner, spender, amount, contract=None)`` makes an ``Approval`` log that the TRC20 list shows with
  ``"type": "Approval"``.
* **``limit`` over 200** on a ``/v1`` list: HTTP 400 with an empty body (no clamp).
* **``visible=true``** (URL query, or the JSON body of a POST, where java-tron reads it for that endpoint):
  addresses in base58check instead of hex, exactly for the fields java-tron converts.
* **Amounts a token log can carry**: ``transfer`` takes any uint256, 0 included; ``malformed="data"|"short"|
  "topics"`` breaks the receipt's log (non-hex data, truncated data, missing recipient topic).
* **Replicas for several upstreams**: ``replica(v1_api=True)`` starts another simulator on the SAME chain,
  with its own server, faults, request log and counts, node lag and index lag.
* ``RequestRecord.api_key``: the ``TRON-PRO-API-KEY`` header each request carried (``request_log``).
"""
from __future__ import annotations

from infra.addresses import TRANSFER_TOPIC
from tron_sim.chain import SLOT_MS, USDT_MAINNET, random_address
from tron_sim.faults import FAULT_KINDS
from tron_sim.front import RequestRecord
from tron_sim.shapes import APPROVAL_TOPIC
from tron_sim.simulator import Simulator

__all__ = ["APPROVAL_TOPIC", "FAULT_KINDS", "SLOT_MS", "TRANSFER_TOPIC", "USDT_MAINNET", "RequestRecord", "Simulator",
           "random_address"]
