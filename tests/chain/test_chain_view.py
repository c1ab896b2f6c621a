"""What the watcher believes about the chain: which solid heads are plausible, and cursors kept per chain."""
from __future__ import annotations

import pytest

from chain.answers import BlockRef
from chain.chain_view import AcceptedHead, ChainView, implausibility
from infra.config import Config

NOW = 1_800_000_000.0  # unix seconds
TEN_YEARS = 10 * 365 * 86400


def check(head: BlockRef, last: AcceptedHead | None, now: float = NOW) -> str | None:
    return implausibility(head, last, now, block_seconds=3.0, skew_seconds=30.0)


def accepted(number: int, seconds_ago: float) -> AcceptedHead:
    return AcceptedHead(number, int((NOW - seconds_ago) * 1000), NOW - seconds_ago)


def test_a_head_following_the_chain_is_believed() -> None:
    assert check(BlockRef(1000, int(NOW * 1000) - 3000), None) is None
    last = accepted(1000, 30)
    assert check(BlockRef(1010, last.timestamp + 30_000), last) is None  # ten blocks in 30 s
    assert check(BlockRef(1000, last.timestamp), last) is None  # no new block yet


def test_a_timestamp_ahead_of_the_clock_is_refused() -> None:
    reason = check(BlockRef(1000, int((NOW + TEN_YEARS) * 1000)), None)
    assert reason is not None and "ahead of this machine's clock" in reason
    assert check(BlockRef(1000, int((NOW + 29) * 1000)), None) is None  # within the tolerance
    assert check(BlockRef(1000, int((NOW + 31) * 1000)), None) is not None


def test_a_head_behind_the_last_accepted_one_is_refused() -> None:
    last = accepted(1000, 10)
    reason = check(BlockRef(980, last.timestamp - 60_000), last)
    assert reason is not None and "went back from block 1000 to 980" in reason


def test_a_head_further_ahead_than_the_time_allows_is_refused() -> None:
    last = accepted(1000, 10)  # accepted 10 s ago, its own time 10 s ago: about 3 blocks since, plus the margin
    reason = check(BlockRef(1300, int(NOW * 1000)), last)  # 300 blocks on, its timestamp no later than now
    assert reason is not None and "jumped 300 blocks" in reason


def test_a_head_from_a_node_far_behind_does_not_lock_out_the_true_heads() -> None:
    # Accepted 10 s ago from a node whose head was 1000 s old: the true head, 330 blocks on and current, is
    # believed (the time since the last head's own timestamp allows it), and so is every one after it.
    last = AcceptedHead(1000, int((NOW - 1000) * 1000), NOW - 10)
    true_head = BlockRef(1330, int((NOW - 6) * 1000))
    assert check(true_head, last) is None
    assert check(BlockRef(1333, true_head.timestamp + 9000), AcceptedHead(1330, true_head.timestamp, NOW)) is None


def test_more_blocks_than_chain_time_holds_are_refused() -> None:
    last = accepted(1000, 120)  # two minutes ago: 40 blocks are possible
    reason = check(BlockRef(1040, last.timestamp + 3000), last)  # 40 blocks in 3 s of chain time
    assert reason is not None and "span only 3s of chain time" in reason


def test_a_long_pause_allows_what_the_chain_produced_meanwhile() -> None:
    last = accepted(1000, 86400)  # the watcher was down for a day
    assert check(BlockRef(1000 + 28_800, last.timestamp + 28_800 * 3000), last) is None


@pytest.mark.parametrize("network", ["mainnet", "nile"])
def test_cursors_belong_to_their_chain(db, network: str) -> None:
    """A change of network or of the USDT contract never reuses the cursors read on another chain."""
    base = Config(tron_network=network)
    other_network = ChainView(base.with_overrides(tron_network="shasta" if network != "shasta" else "nile"))
    other_contract = ChainView(base.with_overrides(usdt_contract="TXL6rJbvmjD46zeN1JssfgxvSo99qC8MRT"))
    view = ChainView(base)
    wallet = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"
    with db.transaction() as s:
        view.save_wallet_cursors(s, [wallet], 1_000)
        view.set_state(s, "block_cursor", {"number": 5, "timestamp": 1_000})
        view.accept_head(s, AcceptedHead(5, 1_000, NOW))
    with db.Session() as s:
        assert view.wallet_cursors(s, [wallet]) == {wallet: 1_000}
        assert view.state(s, "block_cursor") == {"number": 5, "timestamp": 1_000}
        assert view.accepted_head(s) == AcceptedHead(5, 1_000, NOW)
        for elsewhere in (other_network, other_contract):
            assert elsewhere.wallet_cursors(s, [wallet]) == {}
            assert elsewhere.state(s, "block_cursor") is None
            assert elsewhere.accepted_head(s) is None


def test_wallet_cursors_never_move_backwards(db) -> None:
    view = ChainView(Config())
    wallet = "TXVj38D1XR3TPgSHTCZGC8wkLDAGqF1oqx"
    with db.transaction() as s:
        view.save_wallet_cursors(s, [wallet], 2_000)
        view.save_wallet_cursors(s, [wallet], 1_000)
    with db.Session() as s:
        assert view.wallet_cursors(s, [wallet]) == {wallet: 2_000}
    with db.transaction() as s:
        view.save_wallet_cursors(s, [wallet], 1_500, only_lower=True)
    with db.Session() as s:
        assert view.wallet_cursors(s, [wallet]) == {wallet: 1_500}
