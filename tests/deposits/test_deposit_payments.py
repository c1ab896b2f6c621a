"""Payments on derived deposit addresses: indexes taken once, in order, across processes, restarts and crashes; one
payment per address, credited by the unchanged rules; the list of taken addresses; the key never shown."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select, text

import db_manager
from deposits.indexes import take_statement
from infra.config import Config
from infra.xpub import DepositKey
from models import DepositAddress
from tests.conftest import TEST_API_KEY, USDT, WALLET, assert_error, create, get, pay, payment_body, wait_for
from tests.deposits.test_derivation import ACCOUNT_XPRV, ACCOUNT_XPUB, PUBLISHED, TESTNET_TPUB

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def key() -> DepositKey:
    return DepositKey(ACCOUNT_XPUB)


def derived_app(config: Config, db, key: DepositKey):  # type: ignore[no-untyped-def]
    from app import create_app

    return create_app(config.with_overrides(deposit_key=key), database=db)


@pytest.fixture
def dclient(config, db, key):  # type: ignore[no-untyped-def]
    return derived_app(config, db, key).test_client()


def derived(client, auth, amount: str = "10", order_id: str | None = None, **extra) -> dict:  # type: ignore[no-untyped-def]
    body = payment_body(wallet_address=None, expected_amount_usdt=amount, order_id=order_id or uuid.uuid4().hex,
                        **extra)
    r = client.post("/payments", json=body, headers=auth)
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def deposit_rows(db) -> list[tuple[int, str, uuid.UUID | None]]:  # type: ignore[no-untyped-def]
    with db.Session() as s:
        return [(r.address_index, r.address, r.payment_id)
                for r in s.scalars(select(DepositAddress).order_by(DepositAddress.address_index))]


def test_a_payment_without_wallet_address_gets_the_next_derived_address(dclient, auth, db, key) -> None:
    first = derived(dclient, auth, order_id="A-1")
    assert (first["wallet_address"], first["address_index"]) == (PUBLISHED[0], 0)
    second = derived(dclient, auth, order_id="A-2")
    assert (second["wallet_address"], second["address_index"]) == (PUBLISHED[1], 1)
    # a replay answers the same payment and address, and takes no index
    again = dclient.post("/payments", json=payment_body(wallet_address=None, expected_amount_usdt="10",
                                                         order_id="A-1"), headers=auth)
    assert again.status_code == 200 and again.get_json()["id"] == first["id"]
    assert again.get_json()["address_index"] == 0
    assert deposit_rows(db) == [(0, PUBLISHED[0], uuid.UUID(first["id"])), (1, PUBLISHED[1], uuid.UUID(second["id"]))]
    # a given address works as before, beside them, with a null index; the same amount is no conflict across them
    given = create(dclient, auth, "10", wallet=WALLET)
    assert (given["wallet_address"], given["address_index"]) == (WALLET, None)
    # a derived address serves its payment alone: given as a wallet_address, it is refused and nothing stored
    refused = dclient.post("/payments", json=payment_body(wallet_address=PUBLISHED[1], order_id="A-3"),
                           headers=auth)
    assert assert_error(refused, 409, "wallet_address")["error"] == "address_reserved"
    assert dclient.get("/payments?order_id=A-3", headers=auth).get_json()["payments"] == []
    third = derived(dclient, auth, "10", unique_amount=True)  # accepted, ignored: the address is its own
    assert (third["expected_amount_usdt"], third["address_index"]) == ("10", 2)
    logs = dclient.get(f"/payments/{third['id']}/logs", headers=auth).get_json()["logs"]
    assert "deposit address 2" in logs[0]["message"] and logs[0]["metadata"]["address_index"] == 2


def test_without_deposit_xpub_wallet_address_is_still_required(client, auth) -> None:
    r = client.post("/payments", json=payment_body(wallet_address=None), headers=auth)
    assert_error(r, 400, "wallet_address")


def test_twenty_concurrent_creates_take_twenty_consecutive_indexes(config, db, key, auth) -> None:
    apps = [derived_app(config, db, DepositKey(ACCOUNT_XPUB)) for _ in range(2)]  # two processes' worth

    def one(i: int) -> dict:
        return derived(apps[i % 2].test_client(), auth, order_id=f"C-{i}")

    with ThreadPoolExecutor(max_workers=20) as pool:
        made = list(pool.map(one, range(20)))
    assert sorted(p["address_index"] for p in made) == list(range(20))
    assert all(p["wallet_address"] == key.address(p["address_index"]) for p in made)
    assert len({p["wallet_address"] for p in made}) == 20
    assert [row[0] for row in deposit_rows(db)] == list(range(20))


def test_a_process_that_expects_another_index_still_takes_the_right_one(config, db, key, auth) -> None:
    """A create sends the addresses of the indexes its process expects next; when the count has moved further
    (other processes) or is behind (a reset database), the statement gives its index back and is sent again."""
    busy = derived_app(config, db, key).test_client()
    for i in range(40):
        derived(busy, auth, order_id=f"B-{i}")
    behind = DepositKey(ACCOUNT_XPUB)  # expects index 0, the count is at 40
    assert derived(derived_app(config, db, behind).test_client(), auth)["address_index"] == 40
    ahead = DepositKey(ACCOUNT_XPUB)
    ahead.expected_index = 1000
    made = derived(derived_app(config, db, ahead).test_client(), auth)
    assert (made["address_index"], made["wallet_address"]) == (41, key.address(41))
    assert [row[0] for row in deposit_rows(db)] == list(range(42))


def test_a_restart_continues_and_a_crash_after_taking_an_index_gives_it_to_no_one_twice(config, db, key,
                                                                                          auth) -> None:
    derived(derived_app(config, db, key).test_client(), auth, order_id="R-1")
    # a new process (a fresh key object, empty cache) continues from the database
    restarted = derived_app(config, db, DepositKey(ACCOUNT_XPUB)).test_client()
    assert derived(restarted, auth, order_id="R-2")["address_index"] == 1
    # a process takes index 2 in its create's transaction, then dies before the COMMIT; meanwhile another create
    # waits for the account's count
    with db.engine.connect() as connection:
        connection.begin()
        assert connection.execute(take_statement(), {"d_account": key.account}).scalar() == 2
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(derived, restarted, auth, "10", "R-3")
            assert not wait_for(waiting.done, timeout=0.5)  # it waits for the count, and no index is given twice
            with db.engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            after = waiting.result(timeout=10)
        with pytest.raises(Exception):  # noqa: B017, PT011 - the connection is gone, whatever the driver says
            connection.exec_driver_sql("SELECT 1")
    # the dead transaction's index was never shown to anyone: the next create takes it, and nothing is doubled
    assert after["address_index"] == 2
    rows = deposit_rows(db)
    assert [r[0] for r in rows] == [0, 1, 2] and len({r[1] for r in rows}) == 3
    assert all(r[2] is not None for r in rows)


def test_an_address_already_given_as_wallet_address_is_passed_over_and_counted(dclient, auth, db, key,
                                                                             capsys, monkeypatch, database_url):
    create(dclient, auth, "5", wallet=PUBLISHED[0])  # the merchant's wallet is its account's first address
    payment = derived(dclient, auth)
    assert payment["address_index"] == 1
    assert deposit_rows(db)[0] == (0, PUBLISHED[0], None)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DEPOSIT_XPUB", ACCOUNT_XPUB)
    assert db_manager.main(["stats"]) == 0
    out = capsys.readouterr().out
    assert "next index 2" in out and "taken by payments: 1" in out and "passed over" in out and ": 1" in out
    assert ACCOUNT_XPUB not in out


def test_addresses_list_pages_and_filters_what_was_received(config, db, key, auth, sim, new_watcher) -> None:
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=2000.0)
    client = derived_app(cfg, db, key).test_client()
    made = [derived(client, auth, "10", order_id=f"L-{i}") for i in range(3)]
    pay(sim, made[1]["wallet_address"], 4_000_000)
    new_watcher(cfg).run_once()
    page = client.get("/addresses?limit=2", headers=auth).get_json()
    assert [a["index"] for a in page["addresses"]] == [0, 1] and page["next_cursor"]
    rest = client.get(f"/addresses?limit=2&cursor={page['next_cursor']}", headers=auth).get_json()
    assert [a["index"] for a in rest["addresses"]] == [2] and rest["next_cursor"] is None
    received = client.get("/addresses?received=true", headers=auth).get_json()["addresses"]
    assert received == [{"index": 1, "address": made[1]["wallet_address"], "payment_id": made[1]["id"],
                         "received_usdt": "4"}]
    assert_error(client.get("/addresses?received=maybe", headers=auth), 400, "received")
    assert client.get("/addresses").status_code == 401


@pytest.mark.parametrize("strategy", ["account", "blocks"])
def test_underpayment_then_top_up_completes_the_derived_payment(config, db, key, auth, sim, new_watcher,
                                                                strategy) -> None:
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy=strategy, trongrid_max_rps=2000.0)
    client = derived_app(cfg, db, key).test_client()
    watcher = new_watcher(cfg)
    payment = derived(client, auth, "10")
    beside = create(client, auth, "10", wallet=WALLET)  # a given address beside it, same amount
    pay(sim, payment["wallet_address"], 4_000_000)
    watcher.run_once()
    assert (get(client, auth, payment)["status"], get(client, auth, payment)["received_amount_usdt"]) == ("pending",
                                                                                                          "4")
    pay(sim, payment["wallet_address"], 6_500_000)  # a top-up, a little over
    pay(sim, WALLET, 10_000_000)
    watcher.run_once()
    done = get(client, auth, payment)
    assert (done["status"], done["received_amount_usdt"], len(done["transfers"])) == ("completed", "10.5", 2)
    assert get(client, auth, beside)["status"] == "completed"


def test_the_checkout_page_shows_the_derived_address(dclient, auth) -> None:
    payment = derived(dclient, auth, "12.5")
    token_path = "/" + payment["checkout_url"].split("/", 3)[3]
    html = dclient.get(token_path).get_data(as_text=True)
    assert payment["wallet_address"] in html and "12.5" in html


def test_derive_addresses_prints_without_taking(capsys, monkeypatch, db, database_url) -> None:
    monkeypatch.setenv("DEPOSIT_XPUB", ACCOUNT_XPUB)
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert db_manager.main(["derive-addresses", "--count", "3", "--from", "2"]) == 0
    out = capsys.readouterr().out
    assert out.split() == ["2", "0/2", PUBLISHED[2], "3", "0/3", PUBLISHED[3], "4", "0/4", PUBLISHED[4]]
    assert deposit_rows(db) == []
    monkeypatch.delenv("DEPOSIT_XPUB")
    assert db_manager.main(["derive-addresses", "--count", "3"]) == 1
    assert "DEPOSIT_XPUB is not set" in capsys.readouterr().err


def test_the_report_shows_what_each_taken_address_holds_on_chain(config, db, key, auth, sim, new_watcher, capsys,
                                                                 monkeypatch, database_url) -> None:
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=2000.0)
    client = derived_app(cfg, db, key).test_client()
    first, second = derived(client, auth, "10"), derived(client, auth, "3")
    pay(sim, first["wallet_address"], 10_000_000)
    new_watcher(cfg).run_once()
    pay(sim, second["wallet_address"], 1_250_000)  # not yet seen by the watcher: only the chain knows
    for name, value in {"DATABASE_URL": database_url, "DEPOSIT_XPUB": ACCOUNT_XPUB, "TRONGRID_API_URL": sim.url,
                        "TRON_NETWORK": "mainnet", "USDT_CONTRACT": USDT}.items():
        monkeypatch.setenv(name, value)
    assert db_manager.main(["addresses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split("\t") == ["0", first["wallet_address"], first["order_id"], "completed", "10", "10"]
    assert lines[2].split("\t") == ["1", second["wallet_address"], second["order_id"], "pending", "0", "1.25"]
    assert lines[-1] == "total balance: 11.25 USDT on 2 addresses"
    assert db_manager.main(["addresses", "--received", "--no-balance"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("\t10\t-")
    # an upstream that cannot answer for the balances: every address still listed, said, and a failing exit
    sim.set_fault("error_200", None, path_prefix="/wallet/triggerconstantcontract")
    assert db_manager.main(["addresses"]) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[-1].startswith("unavailable") for line in captured.out.splitlines()[1:3]] == [True, True]
    assert captured.err.strip().splitlines()[-1] == (
        "error: the balance of 2 address(es) could not be read from the upstream; run it again")
    assert "Traceback" not in captured.err  # the upstream's own warning line comes before it


def test_the_key_is_in_no_answer_no_event_and_no_log_line(config, db, key, auth, sim, new_watcher, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = config.with_overrides(trongrid_api_url=sim.url, watcher_strategy="blocks", trongrid_max_rps=2000.0)
    client = derived_app(cfg, db, key).test_client()
    payment = derived(client, auth, "10")
    pay(sim, payment["wallet_address"], 10_000_000)
    new_watcher(cfg).run_once()
    answers = [client.get(path, headers=auth).get_data(as_text=True) for path in (
        f"/payments/{payment['id']}", "/payments", "/addresses", "/transfers", "/events", "/health", "/stats",
        "/metrics", "/openapi.json", f"/payments/{payment['id']}/logs")]
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT body FROM webhook_events")).scalars().all()
        states = conn.execute(text("SELECT value::text FROM service_state")).scalars().all()
    assert stored, "the completion's webhook is in the outbox"
    secret_forms = (ACCOUNT_XPUB, ACCOUNT_XPUB[4:40])
    for text_seen in (*answers, *stored, *states, *(r.getMessage() for r in caplog.records), caplog.text):
        assert not any(form in text_seen for form in secret_forms)


BAD_KEYS = [ACCOUNT_XPRV, ACCOUNT_XPUB[:-2] + "zz", TESTNET_TPUB, "xpub123"]


def test_malformed_keys_stop_the_start_with_one_line_naming_the_setting() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TRON_NETWORK", "TRONGRID_API_URL")}
    env.update({"DATABASE_URL": "postgresql://u@127.0.0.1:1/x", "WATCHER_ENABLED": "false",
                "TRONGRID_API_URL": "http://127.0.0.1:1", "API_KEYS": TEST_API_KEY})

    def run(case: tuple[list[str], str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *case[0]], cwd=ROOT, env={**env, "DEPOSIT_XPUB": case[1]},
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    entries = (["app.py"], ["db_manager.py", "stats"])  # each entry point reads the configuration the same way
    cases = [(entries[i % 2], bad) for i, bad in enumerate(BAD_KEYS)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = list(pool.map(run, cases))
    for (entry, bad), proc in zip(cases, procs, strict=True):
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode != 0 and len(lines) == 1 and "DEPOSIT_XPUB" in lines[0], (entry, proc.stderr[-500:])
        assert bad not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_the_document_says_wallet_address_may_be_left_out_only_with_deposit_xpub(client, dclient) -> None:
    without = client.get("/openapi.json").get_json()["components"]["schemas"]
    derived_doc = dclient.get("/openapi.json").get_json()
    assert "wallet_address" in without["CreatePayment"]["required"]
    assert "wallet_address" not in derived_doc["components"]["schemas"]["CreatePayment"]["required"]
    assert "address_index" in without["Payment"]["required"]
    assert derived_doc["paths"]["/addresses"]["get"]["operationId"] == "listAddresses"
    assert {p["name"] for p in derived_doc["paths"]["/addresses"]["get"]["parameters"]} == {"limit", "cursor",
                                                                                           "received"}
