#!/usr/bin/env python3
"""One-command developer tasks; needs only Python 3.11+. Each creates .venv from requirements.txt when needed.

usage: python3 dev.py <task> [arguments for the task's command]
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import venv
from collections.abc import Callable
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


# What the tests drive besides Python: a real browser for the checkout page, zbarimg to read its QR code back,
# and Prometheus (promtool for the alert rules, the server to scrape /metrics). Command -> Debian package.
SYSTEM_TOOLS = {"chromium": "chromium", "chromedriver": "chromium-driver", "zbarimg": "zbar-tools",
                "promtool": "prometheus", "prometheus": "prometheus"}


def ensure_system_tools() -> None:
    """Install the tests' system tools from Debian's packages when missing (as root, as on CI); elsewhere say
    which are missing: the tests that need them are then skipped with that reason."""
    missing = sorted({package for command, package in SYSTEM_TOOLS.items() if shutil.which(command) is None})
    if not missing:
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"not installed: {', '.join(missing)} (apt-get install them as root); the tests needing them skip",
              file=sys.stderr, flush=True)
        return
    print(f"installing {', '.join(missing)} with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def run(args: list[str], env: dict[str, str] | None = None) -> int:
    """Become the task's command. On POSIX the process is replaced (exec): it keeps this pid, so `kill <pid>`
    and Ctrl-C reach the command itself, which stops cleanly, and no wrapper is left to orphan it."""
    os.chdir(ROOT)
    if os.name == "posix":
        os.execve(args[0], args, env if env is not None else os.environ)
    child = subprocess.Popen(args, env=env)  # elsewhere: a child that gets the console's Ctrl-C itself
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            continue  # the child got it too; wait for it to finish stopping


def serve(extra: list[str]) -> int:
    """the service on http://127.0.0.1:5000 (embedded PostgreSQL unless DATABASE_URL is set)"""
    env = dict(os.environ)
    dotenv = ROOT / ".env"
    configured = dotenv.exists() and any(line.strip().removeprefix("export ").startswith("ALLOW_PRIVATE_CALLBACKS=")
                                         for line in dotenv.read_text().splitlines())
    if not configured:  # development: local callback receivers allowed unless configured otherwise
        env.setdefault("ALLOW_PRIVATE_CALLBACKS", "true")
    return run([str(PYTHON), "app.py", *extra], env)


def test(extra: list[str]) -> int:
    """the whole test suite (pytest arguments pass through); installs the system tools it drives when missing"""
    try:
        ensure_system_tools()
    except subprocess.CalledProcessError as exc:
        print(f"installing the tests' system tools failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    return run([str(PYTHON), "-m", "pytest", *extra])


def simulator(extra: list[str]) -> int:
    """the TronGrid simulator on 127.0.0.1:9000 (--help for its options)"""
    return run([str(PYTHON), "-m", "tron_sim", "--port", "9000", *extra])


def watcher(extra: list[str]) -> int:
    """the watcher and a webhook dispatcher as their own process (--help)"""
    return run([str(PYTHON), "watcher.py", *extra])


def lint(extra: list[str]) -> int:
    """ruff"""
    return run([str(BIN / "ruff"), "check", ".", *extra])


TASKS: dict[str, Callable[[list[str]], int]] = {
    "serve": serve, "test": test, "simulator": simulator, "watcher": watcher, "lint": lint,
}


def usage() -> str:
    lines = [__doc__.strip(), "", "tasks:"]
    lines += [f"  {name:<10} {task.__doc__}" for name, task in TASKS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if not argv or argv[0] not in TASKS:
        print(usage(), file=sys.stderr)
        return 2
    # SIGTERM while the virtualenv is being made ends like Ctrl-C: pip is stopped with this process.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        ensure_venv()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"installing requirements.txt failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return TASKS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
