"""Process lifecycle, as a new user meets it: every entry point of a fresh copy of the project, run as a real
process on its own embedded PostgreSQL, stopped with SIGTERM and with SIGINT, leaves nothing running and prints
no traceback; a process that finds the server running leaves it alone; dev.py lists its tasks."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
NOT_COPIED = (".venv", ".data", ".git", ".env", "__pycache__", ".pytest_cache", ".ruff_cache", "results")
WAITING_TEST = '''
import os, time
from pathlib import Path

def test_waits(db):
    Path(os.environ["MARKER"]).write_text("running")
    time.sleep(float(os.environ["SLEEP"]))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_of(clone: Path) -> list[psutil.Process]:
    """The PostgreSQL servers running on a data directory of `clone`."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(clone / ".data") in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running after a short grace (a zombie waiting for its parent to reap it counts as gone)."""
    _, still = psutil.wait_procs(processes, timeout=10)
    return [p for p in still if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def wait_until(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def answers(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/stats", timeout=1).status_code == 200
        except requests.RequestException:
            return False
    return check


@pytest.fixture(scope="module")
def clone() -> Iterator[Path]:
    """The project as a fresh clone has it (no .data, no .env), sharing this checkout's .venv.

    Not under pytest's own temporary root: under root the package runs PostgreSQL as another user, which must
    traverse every directory above the data directory, and any pytest run starting on the machine makes that
    root private again (0700)."""
    holder = Path(tempfile.mkdtemp(prefix="tum-lifecycle-"))
    holder.chmod(0o755)
    target = holder / "project"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(*NOT_COPIED))
    (target / ".venv").symlink_to(ROOT / ".venv")
    yield target
    for leftover in postgres_of(target):  # only after a failed test: never leave a server of this run behind
        leftover.send_signal(signal.SIGINT)
    alive(postgres_of(target))
    shutil.rmtree(holder, ignore_errors=True)


@pytest.fixture
def env() -> dict[str, str]:
    """No database configured (the embedded one is used), no runtime directory (as in containers and CI), and an
    upstream on a closed loopback port: nothing leaves this machine."""
    dropped = ("DATABASE_URL", "TEST_DATABASE_URL", "TEST_RUN_DATABASE_URL", "XDG_RUNTIME_DIR", "LOG_FORMAT",
               "LOG_LEVEL", "GUNICORN_WORKERS")
    base = {k: v for k, v in os.environ.items() if k not in dropped}
    return {**base, "PORT": str(free_port()), "TRONGRID_API_URL": f"http://127.0.0.1:{free_port()}",
            "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "2"}


class Run:
    """One entry point as a real process, its output in a file."""

    def __init__(self, args: list[str], clone: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen(args, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

    @property
    def output(self) -> str:
        return self.log.read_text()

    def family(self) -> list[psutil.Process]:
        me = psutil.Process(self.proc.pid)
        return [me, *me.children(recursive=True)]

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def assert_clean_output(output: str) -> None:
    assert "Traceback" not in output, output[-3000:]
    assert "XDG_RUNTIME_DIR" not in output and "RuntimeDirWarning" not in output, output[-3000:]


def stop_and_check(run: Run, clone: Path, sig: int, expected: tuple[int, ...] = (0,)) -> None:
    """Stop `run` like `kill -<sig> <pid>` or Ctrl-C would, then: it exited, nothing of it is left running."""
    servers = postgres_of(clone)
    assert servers, "the embedded PostgreSQL was not running"
    family = run.family()
    code = run.stop(sig)
    assert code in expected, (code, run.output[-3000:])
    assert not alive(family + servers), run.output[-3000:]
    assert not postgres_of(clone)
    assert_clean_output(run.output)


STOP_SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_dev_py_serve_stops_with_its_database(clone, env, tmp_path, sig):
    run = Run([sys.executable, "dev.py", "serve"], clone, env, tmp_path / "serve.log")
    try:
        assert wait_until(answers(int(env["PORT"]))), run.output
        stop_and_check(run, clone, sig)
    finally:
        run.kill()
    assert "stopped the embedded PostgreSQL" in run.output


@pytest.mark.parametrize(("sig", "command"), [
    pytest.param(signal.SIGTERM, ["dev.py", "watcher"], id="dev.py-SIGTERM"),
    pytest.param(signal.SIGINT, ["dev.py", "watcher"], id="dev.py-SIGINT"),
    pytest.param(signal.SIGTERM, ["watcher.py"], id="watcher.py-SIGTERM")])
def test_standalone_watcher_stops_with_its_database(clone, env, tmp_path, sig, command):
    run = Run([sys.executable, *command], clone, env, tmp_path / "watcher.log")
    try:
        assert wait_until(lambda: "watcher took the leader lock" in run.output), run.output
        stop_and_check(run, clone, sig)
    finally:
        run.kill()
    assert "INFO watcher: watcher stopped" in run.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_gunicorn_stops_with_its_database_and_its_control_socket(clone, env, tmp_path, sig):
    app = "app:create_app()"  # the production command
    gunicorn = str(clone / ".venv" / "bin" / "gunicorn")
    run = Run([gunicorn, "-c", "gunicorn.conf.py", app], clone, env, tmp_path / "gunicorn.log")
    control_socket = clone / ".data" / f"gunicorn-{env['PORT']}.ctl"
    try:
        assert wait_until(answers(int(env["PORT"]))), run.output
        assert wait_until(control_socket.is_socket, timeout=10), run.output
        workers = run.family()[1:]
        assert len([w for w in workers if "gunicorn" in " ".join(w.cmdline())]) >= 2
        stop_and_check(run, clone, sig)
    finally:
        run.kill()
    assert not control_socket.exists()
    # The master started the server; the bootstrap and the workers only joined it.
    assert run.output.count("started the embedded PostgreSQL") == 1, run.output


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_dev_py_simulator_stops(clone, env, tmp_path, sig):
    port = free_port()
    run = Run([sys.executable, "dev.py", "simulator", "--port", str(port), "--block-interval", "0"], clone, env,
              tmp_path / "sim.log")
    try:
        assert wait_until(lambda: "tron_sim listening" in run.output), run.output
        family = run.family()
        assert run.stop(sig) == 0, run.output
        assert not alive(family)
    finally:
        run.kill()
    assert_clean_output(run.output)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/wallet/getnowblock", timeout=2)


def write_waiting_test(clone: Path) -> None:
    (clone / "tests" / "test_waiting_here.py").write_text(WAITING_TEST)


@pytest.mark.parametrize("sig", [None, *STOP_SIGNALS])
def test_dev_py_test_stops_the_database_it_started(clone, env, tmp_path, sig):
    write_waiting_test(clone)
    marker = tmp_path / "marker"
    env = {**env, "MARKER": str(marker), "SLEEP": "0" if sig is None else "120"}
    run = Run([sys.executable, "dev.py", "test", "tests/test_waiting_here.py", "-q"], clone, env,
              tmp_path / "pytest.log")
    try:
        assert wait_until(lambda: marker.exists() or run.proc.poll() is not None), run.output
        if sig is None:
            assert run.proc.wait(60) == 0, run.output
            assert not postgres_of(clone), run.output
            assert_clean_output(run.output)
        else:
            stop_and_check(run, clone, sig, expected=(2,))  # pytest's status for an interrupted run
    finally:
        run.kill()


def test_db_manager_beside_a_running_service_leaves_its_database_alone(clone, env, tmp_path):
    serve = Run([sys.executable, "dev.py", "serve"], clone, env, tmp_path / "serve.log")
    try:
        assert wait_until(answers(int(env["PORT"]))), serve.output
        server = postgres_of(clone)
        done = subprocess.run([sys.executable, "db_manager.py", "-v", "stats"], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 0 and "payments: 0" in done.stdout, done.stderr
        assert "it is left running" in done.stderr and "stopped" not in done.stderr, done.stderr
        assert_clean_output(done.stderr)
        assert postgres_of(clone) == server and answers(int(env["PORT"]))()
        stop_and_check(serve, clone, signal.SIGTERM)
    finally:
        serve.kill()


def test_db_manager_alone_stops_the_database_it_started(clone, env):
    done = subprocess.run([sys.executable, "db_manager.py", "-v", "test"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "started the embedded PostgreSQL" in done.stderr and "stopped the embedded PostgreSQL" in done.stderr
    assert not postgres_of(clone)
    assert_clean_output(done.stderr)


def test_a_server_left_by_a_crash_is_used_then_stopped_as_the_readme_says(clone, env, tmp_path):
    run = Run([sys.executable, "watcher.py"], clone, env, tmp_path / "watcher.log")
    try:
        assert wait_until(lambda: "watcher took the leader lock" in run.output), run.output
    finally:
        run.kill()  # SIGKILL: no clean-up at all
    leftover = postgres_of(clone)
    assert leftover
    done = subprocess.run([sys.executable, "db_manager.py", "stats"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and postgres_of(clone) == leftover, done.stderr
    pgdata = clone / ".data" / "postgres"
    os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), signal.SIGINT)  # README, "Development"
    assert not alive(leftover)


# --- dev.py and --help ---------------------------------------------------------------------------

def test_dev_py_serve_uses_the_sandbox_unless_a_network_or_upstream_is_configured(capsys):
    sys.path.insert(0, str(ROOT))
    import dev

    for env, dotenv, network in (({}, {}, "sandbox"), ({"TRON_NETWORK": " "}, {"TRONGRID_API_URL": ""}, "sandbox"),
                                 ({"TRON_NETWORK": "nile"}, {}, "nile"),
                                 ({}, {"TRONGRID_API_URL": "http://127.0.0.1:9000"}, None)):
        dev.choose_network(env, dotenv)
        assert env.get("TRON_NETWORK", "").strip() == (network or ""), (env, dotenv)
        said = capsys.readouterr().out
        assert ("TRON_NETWORK=sandbox" in said) == (network == "sandbox"), said


def test_dev_py_without_a_task_lists_every_task(clone):
    """Asking what there is is no error: the list, exit 0. An unknown task is one (2)."""
    done = subprocess.run([sys.executable, "dev.py"], cwd=clone, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.split("tasks:", 1)[1].splitlines() if line.strip()]
    assert listed == ["serve", "production", "test", "simulator", "watcher", "lint"], done.stdout
    unknown = subprocess.run([sys.executable, "dev.py", "frobnicate"], cwd=clone, capture_output=True, text=True,
                             timeout=30)
    assert unknown.returncode == 2 and "tasks:" in unknown.stderr
    helped = subprocess.run([sys.executable, "dev.py", "--help"], cwd=clone, capture_output=True, text=True,
                            timeout=30)
    assert helped.returncode == 0 and "watcher" in helped.stdout


@pytest.mark.parametrize("args", [["dev.py", "watcher", "--help"], ["watcher.py", "--help"], ["watcher.py", "-h"]])
def test_watcher_help_shows_help_and_starts_nothing(clone, env, args):
    done = subprocess.run([sys.executable, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: watcher.py") and "SIGTERM" in done.stdout
    assert done.stderr == "" and not postgres_of(clone)


def test_watcher_refuses_unknown_arguments(clone, env):
    done = subprocess.run([sys.executable, "watcher.py", "--frobnicate"], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "unrecognized arguments: --frobnicate" in done.stderr
    assert not postgres_of(clone)


def test_a_workers_background_parts_stop_within_one_deadline_together(app) -> None:  # type: ignore[no-untyped-def]
    """Each part may use what is left of the one deadline, not a deadline of its own: five slow parts stop within it,
    and every part is told to stop, the last ones with no time left."""
    from app import stop_background
    from web.services import services_of

    class Slow:
        def __init__(self) -> None:
            self.given: float | None = None

        def stop(self, timeout: float) -> None:
            self.given = timeout
            time.sleep(min(timeout, 0.4))  # a part that takes what it is given, up to 0.4 s

    parts = [Slow() for _ in range(5)]
    services_of(app).background.extend(parts)
    started = time.monotonic()
    stop_background(app, timeout=1.0)
    assert time.monotonic() - started < 1.3
    assert all(part.given is not None for part in parts) and services_of(app).background == []
    assert parts[-1].given == pytest.approx(1.0, abs=0.05) and parts[0].given == 0.0
