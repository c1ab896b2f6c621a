"""Configuration: a bad value stops every entry point (app.py, watcher.py, db_manager.py, gunicorn) with one clear
line naming the variable; so does an unreachable database or a misused admin command."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEAD_DB = "postgresql://u@127.0.0.1:1/x"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def run(args: list[str], env_extra: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (
        "TRON_NETWORK", "TRONGRID_API_URL", "POLLING_INTERVAL_SECONDS", "WEBHOOK_SECRET", "PORT", "HOST",
        "USDT_CONTRACT", "WATCHER_STRATEGY", "LOG_LEVEL", "LOG_FORMAT", "API_KEYS", "MERCHANT_WEBHOOK_URL",
        "UNDERPAYMENT_TOLERANCE_USDT")}
    env.update({"DATABASE_URL": DEAD_DB, "TRONGRID_API_URL": "http://127.0.0.1:1", "WATCHER_ENABLED": "false"})
    env.update(env_extra)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_clear_line(proc: subprocess.CompletedProcess, variable: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert variable in lines[0], lines


BAD_VALUES = [
    ("TRON_NETWORK", "foo"),
    ("POLLING_INTERVAL_SECONDS", "abc"),
    ("POLLING_INTERVAL_SECONDS", "nan"),
    ("POLLING_INTERVAL_SECONDS", "-1"),
    ("TRONGRID_API_URL", "notaurl"),
    ("TRONGRID_API_URL", "ftp://api.trongrid.io"),
    ("WEBHOOK_SECRET", "bad"),
    ("WEBHOOK_SECRET", "whsec_!!!notbase64"),
    ("PORT", "abc"),
    ("TRONGRID_MAX_RPS", "0"),
    ("WEBHOOK_RETRY_SCHEDULE", "5,,300"),
    ("WEBHOOK_RETRY_SCHEDULE", "-5"),
    ("WEBHOOK_TIMEOUT_SECONDS", "x"),
    ("PAYMENT_TTL_SECONDS", "10"),
    ("LATE_PAYMENT_WINDOW_SECONDS", "-1"),
    ("WATCHER_STRATEGY", "fast"),
    ("WATCHER_ENABLED", "maybe"),
    ("ALLOW_PRIVATE_CALLBACKS", "perhaps"),
    ("LOG_LEVEL", "verbose"),
    ("LOG_FORMAT", "xml"),
    ("USDT_CONTRACT", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u"),
    ("DATABASE_URL", "mysql://u@h/db"),
    ("SANDBOX_BLOCK_SECONDS", "0"),
    ("SANDBOX_SOLIDIFY_BLOCKS", "two"),
    ("WATCHER_METRICS_PORT", "metrics"),
    ("WATCHER_METRICS_PORT", "70000"),
    ("MERCHANT_WEBHOOK_URL", "ftp://127.0.0.1/hook"),
    ("MERCHANT_WEBHOOK_URL", "http://user@127.0.0.1/hook"),
    ("UNDERPAYMENT_TOLERANCE_USDT", "-1"),
    ("UNDERPAYMENT_TOLERANCE_USDT", "0.0000001"),
]


def test_bad_value_is_one_line_naming_the_variable_in_every_entry_point():
    """Every bad value against app.py, watcher.py and db_manager.py (run in parallel to stay fast)."""
    from concurrent.futures import ThreadPoolExecutor

    entries = [["app.py"], ["watcher.py"], ["db_manager.py", "stats"]]
    cases = [(entry, variable, value) for i, (variable, value) in enumerate(BAD_VALUES)
             for entry in (entries if i % 4 == 0 else [entries[i % 3]])]
    with ThreadPoolExecutor(max_workers=12) as pool:
        procs = list(pool.map(lambda c: run(c[0], {c[1]: c[2]}), cases))
    problems = []
    for (entry, variable, value), proc in zip(cases, procs, strict=True):
        try:
            assert_one_clear_line(proc, variable)
        except AssertionError as exc:
            problems.append(f"{entry[0]} {variable}={value!r}: {str(exc)[:300]}")
    assert not problems, "\n".join(problems)


def test_merchant_webhook_url_and_tolerance_are_read_as_given():
    from decimal import Decimal

    from infra.config import load_config

    config = load_config({"MERCHANT_WEBHOOK_URL": "https://merchant.example/hooks/",
                          "UNDERPAYMENT_TOLERANCE_USDT": "0.5"})
    assert (config.merchant_webhook_url, config.underpayment_tolerance_usdt) == ("https://merchant.example/hooks/",
                                                                                 Decimal("0.5"))
    assert load_config({"UNDERPAYMENT_TOLERANCE_USDT": "0"}).underpayment_tolerance_usdt == 0
    assert (load_config({}).merchant_webhook_url, load_config({}).underpayment_tolerance_usdt) == (None, 0)


def test_url_without_host_is_refused():
    assert_one_clear_line(run(["db_manager.py", "stats"], {"TRONGRID_API_URL": "http://:80"}), "TRONGRID_API_URL")


def test_out_of_range_port_is_a_configuration_error(database_url):
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "PORT")}
    env.update({"PORT": "70000", "DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET, "API_KEYS": "tum_config_key",
                "WATCHER_ENABLED": "false", "TRONGRID_API_URL": "http://127.0.0.1:1"})
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        _, stderr = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # it went on serving (werkzeug wraps 70000 to port 4464)
        proc.kill()
        proc.communicate()
        raise AssertionError("PORT=70000 was accepted and the app kept running") from None
    completed = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert_one_clear_line(completed, "PORT")


def test_gunicorn_bad_value_is_one_clear_line():
    proc = run(["-m", "gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"],
               {"TRON_NETWORK": "foo", "GUNICORN_WORKERS": "1"}, timeout=60)
    assert proc.returncode != 0
    assert "TRON_NETWORK" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-1500:]


def test_watcher_unreachable_database_is_one_line():
    proc = run(["watcher.py"], {})
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines


def test_app_unreachable_database_is_one_line():
    proc = run(["app.py"], {})
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "database" in lines[0], lines


DB_MANAGER_MISUSE = [
    ["revoke-api-key", "tum_nosuchprefix"],
    ["assign-transfer", "nothex:0", "00000000-0000-0000-0000-000000000000"],
    ["assign-transfer", "ab" * 32 + ":x", "00000000-0000-0000-0000-000000000000"],
    ["assign-transfer", "ab" * 32 + ":0", "not-a-uuid"],
    ["cleanup-logs", "--days", "-3"],
    ["cleanup-logs", "--days", "abc"],
    ["export"],
    ["no-such-command"],
]


def test_db_manager_bad_use_is_nonzero_without_traceback(database_url):
    from concurrent.futures import ThreadPoolExecutor

    env = {"DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET}
    with ThreadPoolExecutor(max_workers=8) as pool:
        procs = list(pool.map(lambda args: run(["db_manager.py", *args], env), DB_MANAGER_MISUSE))
    for args, proc in zip(DB_MANAGER_MISUSE, procs, strict=True):
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr, (args, proc.stderr[-1500:])
        assert [line for line in proc.stderr.splitlines() if line.strip()], args


def test_db_manager_assign_unknown_transfer_is_one_line(database_url, db):
    proc = run(["db_manager.py", "assign-transfer", "ab" * 32 + ":0", "00000000-0000-0000-0000-000000000001"],
               {"DATABASE_URL": database_url, "WEBHOOK_SECRET": SECRET})
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr


def test_the_sandbox_network_serves_its_own_chain_and_production_defaults_to_mainnet():
    from infra.config import SANDBOX_USDT, ConfigError, load_config

    assert load_config({}).tron_network == "mainnet"
    sandbox = load_config({"TRON_NETWORK": "sandbox", "SANDBOX_BLOCK_SECONDS": "0.5"})
    assert sandbox.is_sandbox and sandbox.upstream_urls == () and sandbox.usdt_contract == SANDBOX_USDT
    assert (sandbox.sandbox_block_seconds, sandbox.tron_block_seconds, sandbox.sandbox_solidify_blocks) == (0.5, 0.5, 2)
    assert load_config({"TRON_NETWORK": "sandbox", "TRON_BLOCK_SECONDS": "1"}).tron_block_seconds == 1.0
    try:
        load_config({"TRON_NETWORK": "sandbox", "TRONGRID_API_URL": "https://api.trongrid.io"})
    except ConfigError as exc:
        assert "TRONGRID_API_URL" in str(exc)
    else:
        raise AssertionError("a sandbox with an upstream was accepted")


def test_metrics_settings_are_read() -> None:
    from infra.config import load_config

    assert (load_config({}).metrics_token, load_config({}).watcher_metrics_port) == (None, None)
    configured = load_config({"METRICS_TOKEN": " s3cret ", "WATCHER_METRICS_PORT": "9464"})
    assert (configured.metrics_token, configured.watcher_metrics_port) == ("s3cret", 9464)


def test_reading_the_settings_loads_neither_the_app_nor_sqlalchemy():
    """gunicorn's master reads the settings (its logger, on_starting) and must stay small: with every setting that
    is checked given, WEBHOOK_SECRET included, load_config imports no SQLAlchemy, driver, Flask or app module."""
    code = ("import sys; from infra import config; config.load_config(); "
            "print(sorted(m for m in ('sqlalchemy', 'psycopg2', 'flask', 'app', 'delivery.signing', 'database') "
            "if m in sys.modules))")
    proc = run(["-c", code], {"WEBHOOK_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "API_KEYS": "k" * 24,
                              "MERCHANT_WEBHOOK_URL": "https://merchant.example/hook", "LOG_LEVEL": "WARNING",
                              "UNDERPAYMENT_TOLERANCE_USDT": "0.5", "PUBLIC_BASE_URL": "https://pay.example"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_embedded_database_warning_is_said_once_per_process(caplog) -> None:
    """The bootstrap and the app both resolve DATABASE_URL at a start: one warning, not two."""
    import logging

    from database import warn_embedded

    warn_embedded.cache_clear()
    with caplog.at_level(logging.WARNING, logger="database"):
        warn_embedded()
        warn_embedded()
    assert [r.getMessage() for r in caplog.records if "DATABASE_URL is not set" in r.getMessage()] == [
        f"DATABASE_URL is not set: using the embedded PostgreSQL in {__import__('database').EMBEDDED_PGDATA}, "
        "meant for development only"]
