"""TronClient against the simulator over real HTTP: paging, receipts, rate limits, retries, faults."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from chain.answers import BlockRef, Trc20Transfer, TronBadResponse, TronRateLimited, TronUnavailable
from chain.upstream import TokenBucket, backoff_delay, parse_suspension, seconds_until_utc_midnight
from infra.outbound import SocketOpener, deadline_session
from tron_client import TronClient
from tron_sim import USDT_MAINNET, Simulator, random_address

FAKE_TOKEN = "TXL6rJbvmjD46zeN1JssfgxvSo99qC8MRT"
ClientFactory = Callable[..., TronClient]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(block_interval=0.0, solidify_depth=2) as simulator:
        yield simulator


@pytest.fixture
def make_client(sim: Simulator) -> ClientFactory:
    def factory(**overrides: object) -> TronClient:
        options: dict[str, object] = {"max_rps": 1000.0, "timeout": 0.5, "max_retries": 2, "backoff_base": 0.01,
                                      "backoff_cap": 0.02}
        options.update(overrides)
        return TronClient(sim.url or "", USDT_MAINNET, **options)  # type: ignore[arg-type]

    return factory


@pytest.fixture
def client(make_client: ClientFactory) -> TronClient:
    return make_client()


def trc20_requests(sim: Simulator) -> int:
    return sim.count("/v1/accounts/")


# -- TRC20 list ------------------------------------------------------------------------------------
def test_reads_all_transfers_across_pages(sim: Simulator, client: TronClient) -> None:
    wallet = random_address()
    sent = [sim.transfer(wallet, 1_000_000 + i) for i in range(460)]
    sim.mine()
    sim.transfer(random_address(), 5)  # someone else's money
    sim.solidify()
    transfers = client.list_trc20_transfers(wallet, 0)
    assert [t.transaction_id for t in transfers] == sent
    assert [t.amount for t in transfers] == [1_000_000 + i for i in range(460)]
    assert all(isinstance(t, Trc20Transfer) and t.to_address == wallet for t in transfers)
    assert all(t.token_address == USDT_MAINNET and t.block_timestamp > 0 for t in transfers)
    assert trc20_requests(sim) == 3
    assert client.list_trc20_transfers(wallet, 0, max_pages=1) == transfers[:200]


def test_min_timestamp_and_params(sim: Simulator, client: TronClient) -> None:
    wallet = random_address()
    sim.transfer(wallet, 1)
    sim.solidify()
    sim.advance(60)
    late = sim.transfer(wallet, 2)
    sim.solidify()
    everything = client.list_trc20_transfers(wallet, 0)
    assert [t.transaction_id for t in client.list_trc20_transfers(wallet, everything[-1].block_timestamp)] == [late]
    query = sim.request_log[-1].query
    for param in ("only_confirmed=true", "only_to=true", f"contract_address={USDT_MAINNET}",
                  "order_by=block_timestamp%2Casc", "limit=200"):
        assert param in query


def test_fake_token_dropped_even_when_filter_ignored(sim: Simulator, client: TronClient) -> None:
    wallet = random_address()
    real = sim.transfer(wallet, 10)
    sim.transfer(wallet, 10, contract=FAKE_TOKEN)
    sim.solidify()
    sim.set_fault("ignore_contract_filter", None)
    assert [t.transaction_id for t in client.list_trc20_transfers(wallet, 0)] == [real]


def test_records_for_other_wallets_or_approvals_dropped(client: TronClient) -> None:
    wallet, other = random_address(), random_address()
    record = {"transaction_id": "ab" * 32, "block_timestamp": 1, "from": other, "to": wallet, "type": "Transfer",
              "value": "5", "token_info": {"symbol": "USDT", "address": USDT_MAINNET, "decimals": 6, "name": "T"}}
    body = {"data": [record, {**record, "to": other}, {**record, "type": "Approval"}], "success": True, "meta": {}}
    assert [t.amount for t in client.read.trc20_page(body, wallet)] == [5]
    # A value that is not an exact integer is never read as money: the record's receipt decides it.
    [odd] = client.read.trc20_page({"data": [{**record, "value": 5.0}]}, wallet)
    assert odd.amount is None and not odd.complete
    with pytest.raises(TronBadResponse):
        client.read.trc20_page({"data": "nothing"}, wallet)


def test_unconfirmed_hidden_until_solidified(sim: Simulator, client: TronClient) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 7)
    sim.mine()
    assert client.list_trc20_transfers(wallet, 0) == []
    sim.set_fault("hide_unconfirmed_flag", 1)
    assert len(client.list_trc20_transfers(wallet, 0)) == 1  # a misbehaving list...
    assert client.get_transaction_info(tx_id) is None  # ...is caught by the solidified receipt check
    sim.solidify()
    assert [t.transaction_id for t in client.list_trc20_transfers(wallet, 0)] == [tx_id]


# -- receipts --------------------------------------------------------------------------------------
def test_receipt_success_failed_and_unknown(sim: Simulator, client: TronClient) -> None:
    sender, wallet = random_address(), random_address()
    ok = sim.transfer(wallet, 41_677_389, from_=sender)
    failed = sim.transfer(wallet, 5, reverted=True)
    sim.solidify()
    info = client.get_transaction_info(ok)
    assert info is not None and info.success and info.transaction_hash == ok
    assert info.block_number == sim.tx_block(ok)
    [log] = info.transfers
    assert (log.from_address, log.to_address, log.amount, log.log_index) == (sender, wallet, 41_677_389, 0)
    assert log.block_number == info.block_number and log.block_timestamp == info.block_timestamp
    failed_info = client.get_transaction_info(failed)
    assert failed_info is not None and not failed_info.success and failed_info.transfers == ()
    assert client.get_transaction_info("cd" * 32) is None
    with pytest.raises(ValueError):
        client.get_transaction_info("nope")


def test_batch_tx_has_two_logs_with_distinct_index(sim: Simulator, client: TronClient) -> None:
    a, b = random_address(), random_address()
    tx_id = sim.transaction([{"to": a, "amount": 1}, {"to": b, "amount": 2}, {"to": a, "amount": 3}])
    sim.solidify()
    info = client.get_transaction_info(tx_id)
    assert info is not None
    assert [(t.log_index, t.to_address, t.amount) for t in info.transfers] == [(0, a, 1), (1, b, 2), (2, a, 3)]
    assert [t.amount for t in client.list_trc20_transfers(a, 0)] == [1, 3]


def test_internal_call_tx_decoded(sim: Simulator, client: TronClient) -> None:
    wallet = random_address()
    tx_id = sim.transfer(wallet, 99, internal=True)
    sim.solidify()
    info = client.get_transaction_info(tx_id)
    assert info is not None and info.success
    [log] = info.transfers  # the DEX's own event is skipped, its index still counts
    assert (log.log_index, log.to_address, log.amount) == (1, wallet, 99)


def test_fake_token_logs_not_decoded(sim: Simulator, client: TronClient) -> None:
    tx_id = sim.transfer(random_address(), 5, contract=FAKE_TOKEN)
    sim.solidify()
    info = client.get_transaction_info(tx_id)
    assert info is not None and info.success and info.transfers == ()


def test_solid_head_and_block_infos(sim: Simulator, client: TronClient) -> None:
    wallet = random_address()
    usdt = sim.transfer(wallet, 3)
    failed = sim.transfer(wallet, 4, reverted=True)
    trx = sim.trx_transfer(wallet)
    block = sim.mine()
    assert client.get_block_infos(block) == []  # not solidified yet
    sim.solidify()
    state = sim.state()
    assert client.get_solid_head() == BlockRef(state["solid_head"], state["solid_timestamp"])
    infos = client.get_block_infos(block)
    [noise] = infos[3:]  # the block's own USDT traffic follows the transactions sent here
    assert [i.transaction_hash for i in infos[:3]] == [usdt, failed, trx]
    assert [i.success for i in infos[:3]] == [True, False, False]  # a TRX transfer has no receipt.result
    assert [len(i.transfers) for i in infos[:3]] == [1, 0, 0]
    assert noise.success and noise.transfers[0].to_address != wallet
    assert client.get_block_infos(block - 1) == []  # a block without transactions


def test_has_v1_api_probe_cached(sim: Simulator, client: TronClient) -> None:
    assert client.has_v1_api() is True
    assert client.has_v1_api() is True
    assert client.request_count == 1
    bare = Simulator(v1_api=False)
    url = bare.start()
    try:
        assert TronClient(url, USDT_MAINNET, timeout=1).has_v1_api() is False
    finally:
        bare.stop()


def test_api_key_goes_to_trongrid_hosts_only(sim: Simulator) -> None:
    """TRONGRID_API_KEY is TronGrid's: an operator's own node (any other host) never receives it. No DNS runs
    here, so the client's resolver makes api.trongrid.io the simulator on 127.0.0.1 for this test."""
    port = int((sim.url or "").rsplit(":", 1)[1])

    def resolve(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        return socket.getaddrinfo("127.0.0.1" if host == "api.trongrid.io" else host, *args, **kwargs)

    urls = [f"http://api.trongrid.io:{port}", f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    for url in urls:
        session = deadline_session(SocketOpener(resolve))
        TronClient(url, USDT_MAINNET, api_key="secret-key", timeout=2, session=session).get_solid_head()
    assert [r.api_key for r in sim.request_log] == ["secret-key", None, None]
    both = TronClient(",".join(urls[1:2] + urls[:1]), USDT_MAINNET, api_key="secret-key", timeout=2)
    assert [u.sends_api_key for u in both.upstreams] == [False, True]


# -- rate limits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["429", "403_suspended"])
def test_rate_limit_pauses_all_calls(sim: Simulator, client: TronClient, kind: str) -> None:
    sim.set_fault(kind, 1, seconds=0.4)
    with pytest.raises(TronRateLimited) as caught:
        client.get_solid_head()
    assert caught.value.retry_after == pytest.approx(0.4)
    paused = client.paused_until
    assert paused is not None and 0 < paused - time.time() <= 0.4
    sent = sim.request_counts()["total"]
    for call in (client.get_solid_head, lambda: client.list_trc20_transfers(random_address(), 0)):
        with pytest.raises(TronRateLimited):
            call()
    assert sim.request_counts()["total"] == sent == 1
    time.sleep(0.45)
    assert client.paused_until is None
    assert client.get_solid_head().number == sim.state()["solid_head"]


def assert_paused_once(sim: Simulator, client: TronClient, seconds: float) -> None:
    """The call meets a rate limit that pauses the upstream for `seconds`; the next call fails at once, unsent."""
    with pytest.raises(TronRateLimited) as caught:
        client.get_solid_head()
    assert caught.value.retry_after == pytest.approx(seconds)
    with pytest.raises(TronRateLimited):
        client.get_solid_head()
    assert sim.request_counts()["total"] == 1


def test_daily_quota_pauses_long(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client(daily_limit_pause_cap=0.3)
    sim.set_fault("403_daily", 1)
    assert_paused_once(sim, client, 0.3)
    assert make_client().get_solid_head()  # the pause belongs to the client that met the limit


def test_4xx_is_bad_response_not_retried(sim: Simulator, client: TronClient) -> None:
    bad = client.upstreams[0].request  # 400 on an invalid address: a 4xx, never retried
    with pytest.raises(TronBadResponse) as caught:
        bad("GET", "/v1/accounts/TNotAnAddress/transactions/trc20")
    assert caught.value.status_code == 400
    assert client.upstreams[0].request_count == 1 and client.paused_until is None


# -- retries and bad answers -----------------------------------------------------------------------
def test_5xx_retried_then_succeeds(sim: Simulator, client: TronClient) -> None:
    sim.set_fault("500", 2)
    assert client.get_solid_head().number == sim.state()["solid_head"]
    assert client.request_count == 3 == sim.request_counts()["total"]


def test_503_is_a_rate_limit_that_pauses_the_upstream(sim: Simulator, make_client: ClientFactory) -> None:
    """TronGrid answers 503 when a key or an IP sends too much: a pause, not an outage retried at once."""
    client = make_client(rate_limit_pause=0.3)
    sim.set_fault("503", 1)
    assert_paused_once(sim, client, 0.3)
    time.sleep(0.35)
    assert client.get_solid_head().number == sim.state()["solid_head"]


def test_5xx_persistent_is_unavailable(sim: Simulator, client: TronClient) -> None:
    sim.set_fault("500", None)
    with pytest.raises(TronUnavailable):
        client.get_transaction_info("ab" * 32)
    assert client.request_count == 3  # 1 + max_retries


@pytest.mark.parametrize("kind", ["error_200", "not_json"])
def test_bad_answers_raise_after_one_retry(sim: Simulator, client: TronClient, kind: str) -> None:
    sim.set_fault(kind, None)
    with pytest.raises(TronBadResponse):
        client.get_solid_head()
    assert client.request_count == 2
    sim.clear_faults()
    sim.set_fault(kind, 1)
    assert client.get_solid_head().number == sim.state()["solid_head"]


def test_a_slow_answer_costs_one_deadline_not_one_per_retry(sim: Simulator, make_client: ClientFactory) -> None:
    """An answer that takes the whole deadline is not asked again of the same upstream within the call (the next
    upstream is, or the next cycle): retries are for failures that cost little (refused connections, 5xx)."""
    client = make_client(timeout=0.2, max_retries=2)
    sim.set_fault("slow", 1, seconds=0.5)
    started = time.monotonic()
    with pytest.raises(TronUnavailable):
        client.get_solid_head()
    assert client.request_count == 1 and time.monotonic() - started < 0.2 + 0.15
    assert client.get_solid_head().number == sim.state()["solid_head"]  # the next call is answered


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = TronClient(f"http://127.0.0.1:{port}", USDT_MAINNET, timeout=0.5, max_retries=1, backoff_base=0.01)
    with pytest.raises(TronUnavailable):
        client.get_solid_head()
    assert client.request_count == 2


# -- client-side rate limiter ----------------------------------------------------------------------
def test_rate_limiter_spaces_requests(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client(max_rps=20.0, burst=2)
    started = time.monotonic()
    for _ in range(12):
        client.get_solid_head()
    assert time.monotonic() - started >= (12 - 2) / 20.0


def test_rate_limiter_is_shared_by_threads(sim: Simulator, make_client: ClientFactory) -> None:
    client = make_client(max_rps=25.0)
    started = time.monotonic()
    threads = [threading.Thread(target=client.get_solid_head) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= (10 - 1) / 25.0
    stamps = sorted(r.at for r in sim.request_log)
    assert len(stamps) == 10 and client.request_count == 10
    assert stamps[-1] - stamps[0] >= 8 / 25.0


def test_token_bucket_reservations() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=10.0, capacity=3, clock=lambda: now[0], sleep=lambda s: None)
    assert [bucket.reserve() for _ in range(5)] == pytest.approx([0.0, 0.0, 0.0, 0.1, 0.2])
    now[0] += 1.0
    assert bucket.reserve() == pytest.approx(0.0)


# -- pure helpers ----------------------------------------------------------------------------------
def test_backoff_delay_full_jitter() -> None:
    assert backoff_delay(0, 0.5, 8.0, rand=lambda: 0.999) == pytest.approx(0.4995)
    assert backoff_delay(3, 0.5, 8.0, rand=lambda: 0.5) == pytest.approx(2.0)
    assert backoff_delay(10, 0.5, 8.0, rand=lambda: 1.0) == pytest.approx(8.0)
    assert backoff_delay(2, 0.5, 8.0, rand=lambda: 0.0) == 0.0


def test_rate_limit_message_parsing() -> None:
    message = "The key exceeds the frequency limit(15), and the query server is suspended for 30s"
    assert parse_suspension(message) == 30.0
    assert parse_suspension("suspended for 0.5s") == 0.5
    assert parse_suspension("Exceed the user daily usage (100000)") is None


def test_seconds_until_utc_midnight() -> None:
    assert seconds_until_utc_midnight(86400 * 20_000 + 3600) == 82800
    assert seconds_until_utc_midnight(86400 * 20_000) == 86400


def test_the_transfer_topic_is_the_keccak_of_the_event_signature() -> None:
    """The client and the simulator share the constant; an independent hash keeps it honest."""
    from eth_hash.auto import keccak

    from infra.addresses import TRANSFER_TOPIC

    assert keccak(b"Transfer(address,address,uint256)").hex() == TRANSFER_TOPIC
