"""Schemathesis against the app's own /openapi.json, every check (`--checks all`), about a minute.

The app runs on a real HTTP server on 127.0.0.1 (werkzeug, threaded) with the test database;
tests/schemathesis_hooks.py supplies what the document describes in words (valid TRON addresses,
unique order ids, loopback callbacks: private callbacks are allowed here). Any server error,
schema violation or valid request refused fails the test with schemathesis' report.
SCHEMATHESIS_SEED picks another seed (the run prints the one it used)."""
from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_TIME_SECONDS = 45
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261126")
TEST_API_KEY = "tum_test_key_for_the_test_suite_only"


@pytest.fixture
def config(config):  # type: ignore[no-untyped-def]
    """The shared test configuration with a fixed rate, so a price in CNY is a valid request (the hooks send it)."""
    return config.with_overrides(rate_sources=(), fixed_rates=(("CNY", Decimal("7.2")),))


@pytest.mark.timeout(180)
def test_the_api_keeps_to_its_openapi_document(live_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "SCHEMATHESIS_CALLBACK_URL": "http://127.0.0.1:9/hook", "NO_COLOR": "1", "COLUMNS": "160"}
    command = [
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "run", f"{live_url}/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {TEST_API_KEY}",
        "--max-time", str(MAX_TIME_SECONDS),
        "--seed", SEED,
        "--workers", "2",
        "--request-timeout", "15",
        "--report", "junit", "--report-dir", str(tmp_path),
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=170)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-12_000:]
    assert "No issues found" in report or "passed" in report.lower(), report[-4_000:]
