#!/usr/bin/env python3
"""One-command developer tasks; needs only Python 3.11+. Each creates .venv from requirements.txt when needed.

usage: python3 dev.py <task> [arguments for the task's command]
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
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
# Prometheus (promtool for the alert rules, the server to scrape /metrics) and nginx (the production front).
# Command -> Debian package.
SYSTEM_TOOLS = {"chromium": "chromium", "chromedriver": "chromium-driver", "zbarimg": "zbar-tools",
                "promtool": "prometheus", "prometheus": "prometheus", "nginx": "nginx"}
# Where Debian puts daemons: not on a non-root user's PATH.
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def find_tool(command: str) -> str | None:
    return shutil.which(command, path=SYSTEM_PATH)


def apt_install(packages: list[str], why: str) -> bool:
    """Install Debian packages when this process may (root, apt-get present); False, with a line saying what to
    install, otherwise."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"not installed: {', '.join(packages)} (apt-get install them as root); {why}", file=sys.stderr,
              flush=True)
        return False
    print(f"installing {', '.join(packages)} with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)
    return True


def ensure_system_tools() -> None:
    """Install the tests' system tools from Debian's packages when missing (as root, as on CI); elsewhere say
    which are missing: the tests that need them are then skipped with that reason."""
    missing = sorted({package for command, package in SYSTEM_TOOLS.items() if find_tool(command) is None})
    if missing:
        apt_install(missing, "the tests needing them skip")


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


def dotenv_values() -> dict[str, str]:
    """The KEY=VALUE lines of .env (read here without python-dotenv, which lives in the virtualenv)."""
    path = ROOT / ".env"
    values: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        name, equals, value = line.strip().removeprefix("export ").partition("=")
        if equals and not name.startswith("#"):
            values[name.strip()] = value.strip().strip("'\"")
    return values


def choose_network(env: dict[str, str], dotenv: dict[str, str]) -> None:
    """The sandbox unless TRON_NETWORK or TRONGRID_API_URL has a value (environment or .env); says which."""
    chosen = {name: (env.get(name) or dotenv.get(name) or "").strip() for name in ("TRON_NETWORK", "TRONGRID_API_URL")}
    if any(chosen.values()):
        shown = ", ".join(f"{name}={value}" for name, value in chosen.items() if value)
        print(f"dev.py serve: watching the chain of {shown}", flush=True)
        return
    env["TRON_NETWORK"] = "sandbox"
    if "POLLING_INTERVAL_SECONDS" not in env and "POLLING_INTERVAL_SECONDS" not in dotenv:
        env["POLLING_INTERVAL_SECONDS"] = "1"  # a sandbox payment completes seconds after its block solidifies
    print("dev.py serve: TRON_NETWORK=sandbox, a simulated chain inside the service (no real money); set "
          "TRON_NETWORK or TRONGRID_API_URL to watch a real chain", flush=True)


def serve(extra: list[str]) -> int:
    """the service on http://127.0.0.1:5000 (the sandbox unless TRON_NETWORK or TRONGRID_API_URL is set)"""
    env = dict(os.environ)
    dotenv = dotenv_values()
    if "ALLOW_PRIVATE_CALLBACKS" not in dotenv:  # development: local callback receivers allowed unless configured
        env.setdefault("ALLOW_PRIVATE_CALLBACKS", "true")
    choose_network(env, dotenv)
    return run([str(PYTHON), "app.py", *extra], env)


def test(extra: list[str]) -> int:
    """lint-imports, then the whole suite (pytest arguments pass through); installs the system tools it drives"""
    try:
        ensure_system_tools()
    except subprocess.CalledProcessError as exc:
        print(f"installing the tests' system tools failed (exit {exc.returncode})", file=sys.stderr)
        return 1
    # The layers first (.importlinter, docs/architecture.md): an upward import fails in seconds, not after the suite.
    os.chdir(ROOT)
    if subprocess.run([str(BIN / "lint-imports"), "--no-cache"]).returncode != 0:
        print("lint-imports: an import breaks the layers (see above)", file=sys.stderr)
        return 1
    print("dev.py test: the whole suite takes about 11 minutes on 2 cores; pytest shows its progress in percent",
          flush=True)
    return run([str(PYTHON), "-m", "pytest", *extra])


# --- production: nginx in front of gunicorn -------------------------------------------------------------

NGINX_SITE = ROOT / "deploy" / "nginx" / "tron-usdt-monitor.conf"
NGINX_SNIPPET = ROOT / "deploy" / "nginx" / "snippets" / "tron-usdt-monitor.conf"
SITE_SOCKET = "unix:/run/tron-usdt-monitor/gunicorn.sock"
STOP_SECONDS = 12.0  # a stop asks politely this long, then kills what is left: everything is gone within 15 s
START_SECONDS = 120.0  # migrations on a large database, or the embedded PostgreSQL's first start, take a while
NGINX_MAIN = """\
# Written by `python3 dev.py production`: nginx in the foreground for this checkout, the site of deploy/nginx.
daemon off;
worker_processes auto;
worker_rlimit_nofile 16384;
pid {run}/nginx.pid;
error_log stderr warn;
{user}
events {{
    worker_connections 8192;
}}
http {{
    access_log off;  # gunicorn writes an access line for every request that reaches it
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    include {run}/site.conf;
}}
"""


def nginx_site(host: str, port: int, socket_path: Path) -> str:
    """The repository's site, listening on HOST:PORT and reaching gunicorn on this checkout's socket."""
    site = NGINX_SITE.read_text()
    for old, new in (("listen 80;", f"listen {url_host(host)}:{port};"), ("listen [::]:80;", ""),
                     (SITE_SOCKET, f"unix:{socket_path}"),
                     ("include snippets/tron-usdt-monitor.conf;", f"include {NGINX_SNIPPET};")):
        if old not in site:
            raise SystemExit(f"{NGINX_SITE} no longer has {old!r}: update dev.py's production task")
        site = site.replace(old, new)
    return site


def ensure_nginx() -> str | None:
    nginx = find_tool("nginx")
    if nginx is None and apt_install(["nginx"], "dev.py production needs it"):
        nginx = find_tool("nginx")
    return nginx


def production_env(env: dict[str, str], dotenv: dict[str, str]) -> tuple[str, int]:
    """HOST and PORT the front listens on (PORT: 8080 unless set); PORT is also what gunicorn's settings name
    their files by."""
    host = env.get("HOST") or dotenv.get("HOST") or "127.0.0.1"
    port = int(env.get("PORT") or dotenv.get("PORT") or "8080")
    env["HOST"], env["PORT"] = host, str(port)
    return host, port


def wait_until(ready: Callable[[], bool], children: list[subprocess.Popen[bytes]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return True
        if any(child.poll() is not None for child in children):
            return False
        time.sleep(0.1)
    return False


def answers(socket_path: Path) -> bool:
    """Whether gunicorn answers on its Unix socket (a worker has booted)."""
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(socket_path))
            conn.sendall(b"GET /stats HTTP/1.0\r\nHost: localhost\r\n\r\n")
            return conn.recv(12).startswith(b"HTTP/1")
    except OSError:
        return False


def listens(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on HOST:PORT (another `dev.py production` included): checked before
    anything is started or any file of that port's run is touched."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError:
            return True
    return False


def die_with_parent() -> None:
    """In a child, before it runs: the kernel sends it SIGTERM when this process dies, however it dies (SIGKILL, a
    crash), so a stack started here never outlives it (gunicorn's workers leave with their master). Linux only."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def group_alive(child: subprocess.Popen[bytes]) -> bool:
    """Whether any process of the child's process group (its own session) is still there, orphans included."""
    try:
        os.killpg(child.pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_all(children: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    """Stop each child with its signal, wait up to STOP_SECONDS for every process of their groups, then kill what
    is left (a worker that did not stop by itself, an orphaned one)."""
    for child, sig in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(sig)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and any(group_alive(c) for c, _ in children):
        for child, _ in children:
            child.poll()
        time.sleep(0.1)
    for child, _ in children:
        if group_alive(child):
            print(f"dev.py production: processes of {child.args[0]}'s group did not stop in {STOP_SECONDS:g}s; "
                  "killed", file=sys.stderr, flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=2)


def production(extra: list[str]) -> int:
    """nginx before gunicorn on http://127.0.0.1:8080 (HOST, PORT), DATABASE_URL from the environment or .env"""
    if os.name != "posix":
        print("dev.py production runs nginx and gunicorn: Linux or macOS only", file=sys.stderr)
        return 2
    nginx = ensure_nginx()
    if nginx is None:
        return 1
    env, dotenv = dict(os.environ), dotenv_values()
    host, port = production_env(env, dotenv)
    if port_taken(host, port):
        print(f"dev.py production: {host}:{port} is in use (another dev.py production?); set PORT to another port",
              file=sys.stderr, flush=True)
        return 1
    run_dir = ROOT / ".data" / f"production-{port}"
    run_dir.mkdir(parents=True, exist_ok=True)
    socket_path = run_dir / "gunicorn.sock"
    socket_path.unlink(missing_ok=True)
    (run_dir / "site.conf").write_text(nginx_site(host, port, socket_path))
    import pwd

    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""  # workers as this user
    (run_dir / "nginx.conf").write_text(NGINX_MAIN.format(run=run_dir, user=user))
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal went away
        signal.signal(stop_signal, on_signal)
    spawn = {"start_new_session": True, "preexec_fn": die_with_parent if sys.platform == "linux" else None}
    os.chdir(ROOT)
    # Each in a session of its own: a Ctrl-C reaches them through this process only, in the order below, and a
    # process group outlives its leader, so a worker left behind is still found and stopped.
    env["GUNICORN_BIND"] = f"unix:{socket_path}"
    # umask 077: the socket is this user's alone (nginx's workers run as this user), so no other local user can
    # reach gunicorn past nginx and send an X-Forwarded-For of their choosing.
    gunicorn = subprocess.Popen([str(PYTHON), "-m", "gunicorn", "-c", "gunicorn.conf.py", "--umask", "0o077", *extra,
                                 "app:create_app()"], env=env, **spawn)
    children = [gunicorn]
    status = 0
    try:
        if not wait_until(lambda: stopping != [] or answers(socket_path), children, START_SECONDS):
            print("dev.py production: gunicorn did not start (its log says why)", file=sys.stderr, flush=True)
            return 1
        if stopping:
            return 0
        front = subprocess.Popen([nginx, "-p", str(run_dir), "-e", "stderr", "-c", str(run_dir / "nginx.conf")],
                                 env=env, **spawn)
        children.append(front)
        if not wait_until(lambda: stopping != [] or listens(host, port), children, 30):
            print(f"dev.py production: nginx did not listen on {host}:{port} (its lines above say why)",
                  file=sys.stderr, flush=True)
            return 1
        if stopping:
            return 0
        print(f"dev.py production: http://{url_host(host)}:{port} (nginx) -> unix:{socket_path} (gunicorn); "
              "Ctrl-C stops both", flush=True)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.2)
        if not stopping:
            dead = next(child for child in children if child.poll() is not None)
            print(f"dev.py production: {Path(str(dead.args[0])).name} exited ({dead.returncode}); stopping the rest",
                  file=sys.stderr, flush=True)
            status = 1
        return status
    finally:
        for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(stop_signal, signal.SIG_IGN)
        # nginx first (SIGTERM: its fast stop, open connections closed), then gunicorn (SIGINT: its quick stop,
        # every worker's background threads stopped by worker_exit).
        stop_all([(child, signal.SIGTERM if child is not gunicorn else signal.SIGINT) for child in reversed(children)])
        socket_path.unlink(missing_ok=True)


def url_host(host: str) -> str:
    """infra.config.url_host's twin: dev.py reads nothing of the project (it runs before the virtualenv exists)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


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
    "serve": serve, "production": production, "test": test, "simulator": simulator, "watcher": watcher, "lint": lint,
}


def usage() -> str:
    lines = [__doc__.strip(), "", "tasks:"]
    lines += [f"  {name:<10} {task.__doc__}" for name, task in TASKS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return 0
    if argv[0] not in TASKS:
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
