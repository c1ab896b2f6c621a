#!/usr/bin/env python3
"""One-command developer tasks; needs only Python 3.11+.

    python3 dev.py serve      # create .venv from requirements.txt, start the service (embedded PostgreSQL)
    python3 dev.py test       # create .venv from requirements.txt, run the whole test suite
    python3 dev.py simulator  # start the TronGrid simulator on 127.0.0.1:9000
    python3 dev.py lint       # ruff
Extra arguments after the task go to the underlying command (pytest, simulator).
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".requirements.sha256"


def ensure_venv() -> None:
    """Create the virtualenv and install requirements.txt when it changed since the last install."""
    wanted = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    if not PYTHON.exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    print("installing requirements.txt", flush=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "-r", str(ROOT / "requirements.txt")], check=True)
    STAMP.write_text(wanted)


def run(args: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.call(args, cwd=ROOT, env=env)


def serve(extra: list[str]) -> int:
    """The service for development: local callback receivers allowed unless configured otherwise."""
    env = dict(os.environ)
    dotenv = ROOT / ".env"
    configured = dotenv.exists() and "ALLOW_PRIVATE_CALLBACKS=" in dotenv.read_text()
    if not configured:
        env.setdefault("ALLOW_PRIVATE_CALLBACKS", "true")
    return run([str(PYTHON), "app.py", *extra], env)


def main(argv: list[str]) -> int:
    tasks = {
        "serve": serve,
        "test": lambda extra: run([str(PYTHON), "-m", "pytest", *extra]),
        "simulator": lambda extra: run([str(PYTHON), "-m", "tron_sim", "--port", "9000", *extra]),
        "watcher": lambda extra: run([str(PYTHON), "watcher.py", *extra]),
        "lint": lambda extra: run([str(BIN / "ruff"), "check", ".", *extra]),
    }
    if not argv or argv[0] not in tasks:
        print(__doc__.strip())
        return 2
    ensure_venv()
    return tasks[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
