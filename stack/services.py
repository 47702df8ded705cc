"""The four processes of a running system, started as daemons on 127.0.0.1 and found again by pid file.

``labelstudio`` (Label Studio 1.23.2 from ``.lsvenv``, SQLite), ``ml`` (the ML backend under gunicorn),
``coordinator`` (the coordinator's web app under gunicorn) and ``worker`` (``python -m backend worker``).
Each runs in its own session (process group) so that stopping it stops its children too; its pid, port
and command line are kept in ``<storage>/run/<name>.json`` and its output in ``<storage>/logs/<name>.log``.
A later command (``stop``, ``status``, a second ``start``) finds it there; a pid is only trusted while
that process still runs the recorded command, so a reused pid is never signalled. What each service is (its
command line, environment and port) comes from :mod:`stack.config`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from stack.config import HEALTH, REPO, SERVICES, StackConfig, StackError, command
from stack.labelstudio import answers, connect
from stack.process import port_is_free

log = logging.getLogger(__name__)


# -- pid records ---------------------------------------------------------------------------------
def _record_path(config: StackConfig, name: str) -> Path:
    return config.run_dir / f"{name}.json"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def running_pid(config: StackConfig, name: str) -> int | None:
    """The pid of the service when its recorded process is still alive and runs the recorded command."""
    try:
        record = json.loads(_record_path(config, name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid, argv = int(record["pid"]), record["argv"]
    line = _cmdline(pid)
    if not line:
        return None
    # a script started through its interpreter shows as [python, script, args...]
    if not set(argv[1:]) <= set(line) or not any(Path(a).name == Path(argv[0]).name for a in line):
        return None
    return pid


def _write_record(config: StackConfig, name: str, pid: int, argv: list[str]) -> None:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "argv": argv, "port": config.ports.get(name), "started": time.time()}
    _record_path(config, name).write_text(json.dumps(record))


def _spawn(config: StackConfig, name: str) -> subprocess.Popen:
    argv = command(config, name)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    with open(config.log_dir / f"{name}.log", "ab") as out:
        process = subprocess.Popen(argv, cwd=REPO, env=config.environment(name), stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    _write_record(config, name, process.pid, argv)
    return process


def wait_http(url: str, process: subprocess.Popen | None, timeout: float, what: str, log_file: Path) -> None:
    """Wait until ``url`` answers 200; fail early when the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise StackError(f"{what} exited with code {process.returncode}; see {log_file}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise StackError(f"{what} did not answer on {url} within {timeout:.0f} s; see {log_file}")


def check_port(config: StackConfig, name: str, wait: float = 10.0) -> None:
    """Fail with a message naming the setting when the port stays busy for ``wait`` seconds."""
    port = config.ports[name]
    deadline = time.monotonic() + wait
    while not port_is_free(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not port_is_free(port):
        variable = {"labelstudio": "VL4POSE_LS_PORT", "ml": "VL4POSE_ML_PORT",
                    "coordinator": "VL4POSE_COORDINATOR_PORT"}[name]
        raise StackError(f"port {port} on {config.host} is busy (needed by {name}); stop what uses it, or choose "
                         f"another port with {variable}=<port> bash scripts/start.sh")


def start_service(config: StackConfig, name: str, timeout: float = 240.0) -> int:
    """Start one service unless it already runs; returns its pid."""
    pid = running_pid(config, name)
    if pid is not None:
        return pid
    if name in config.ports:
        check_port(config, name)
    if name == "labelstudio":
        server = config.labelstudio()
        config.log_dir.mkdir(parents=True, exist_ok=True)
        server.start(timeout=timeout, log_file=config.log_dir / "labelstudio.log")
        _write_record(config, name, server.process.pid, _cmdline(server.process.pid))
        return server.process.pid
    process = _spawn(config, name)
    log_file = config.log_dir / f"{name}.log"
    if name in HEALTH:
        wait_http(config.url(name) + HEALTH[name], process, timeout, name, log_file)
    else:
        time.sleep(2.0)
        if process.poll() is not None:
            raise StackError(f"{name} exited with code {process.returncode}; see {log_file}")
    return process.pid


def stop_service(config: StackConfig, name: str, timeout: float = 20.0, kill: bool = False) -> bool:
    """Stop a service and its process group (SIGTERM, then SIGKILL; ``kill`` = SIGKILL at once, as a crash)."""
    pid = running_pid(config, name)
    if pid is None:
        _record_path(config, name).unlink(missing_ok=True)
        return False
    try:
        os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _group_alive(pid):
        time.sleep(0.2)
    if _group_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while _group_alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.2)
    _record_path(config, name).unlink(missing_ok=True)
    return True


def _group_alive(pgid: int) -> bool:
    """Some process of the group still runs (zombies do not count)."""
    _reap(pgid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    """Collect a child that has exited (when this process started it)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(config: StackConfig) -> dict[str, dict]:
    """Per service: pid (or None), port and whether it answers."""
    out = {}
    for name in SERVICES:
        pid = running_pid(config, name)
        answering = None
        if pid is not None and name == "labelstudio":
            client = connect(config.url(name), config.secrets.ls_token, timeout=3.0)
            answering = answers(client)
            client.close()
        elif pid is not None and name in config.ports:
            try:
                answering = requests.get(config.url(name) + HEALTH[name], timeout=3).status_code == 200
            except requests.RequestException:
                answering = False
        out[name] = {"pid": pid, "port": config.ports.get(name), "answering": answering}
    return out


def start_all(config: StackConfig, names: tuple[str, ...] = SERVICES) -> dict[str, int]:
    return {name: start_service(config, name) for name in names}


def stop_all(config: StackConfig) -> list[str]:
    """Stop every service (worker first, Label Studio last); returns those that were running."""
    return [name for name in reversed(SERVICES) if stop_service(config, name)]
