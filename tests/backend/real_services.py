"""A real Redis and a real PostgreSQL for the distributed tests: Debian's binaries (``bash scripts/setup.sh
--services`` installs them), started on free ports of 127.0.0.1 in throw-away folders and removed afterwards.

PostgreSQL refuses to run as root: as root, the cluster is made and run as the unprivileged ``postgres`` user
(``runuser``) in a temporary folder it owns; as anyone else, as that user. Authentication is ``trust`` on
127.0.0.1 only. Missing binaries raise :class:`Missing` with the command that installs them (the tests skip).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL = "bash scripts/setup.sh --services   (as root: apt-get install redis-server postgresql)"


class Missing(RuntimeError):
    """A server binary is not installed."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s; its log:\n{tail}")


class RedisServer:
    """``redis-server`` without persistence in a temporary folder."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise Missing(f"redis-server is not installed; run `{INSTALL}`")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vl4pose-redis-"))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        log = self.dir / "redis.log"
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(log), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        _wait_port(self.port, 20, "redis-server", log)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _pg_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise Missing(f"PostgreSQL's initdb is not installed; run `{INSTALL}`")


class PostgresServer:
    """A throw-away PostgreSQL cluster (``initdb`` + ``pg_ctl``) on a free port, trust authentication."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="vl4pose-pg-"))
        self.data = self.base / "data"
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise Missing(f"there is no 'postgres' user to run PostgreSQL as (not as root); run `{INSTALL}`")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")

    def start(self) -> "PostgresServer":
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.base / "postgres.log"), "-w", "-t",
                  "60", "start")
        _wait_port(self.port, 30, "PostgreSQL", self.base / "postgres.log")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except Exception:  # already gone
            pass
        shutil.rmtree(self.base, ignore_errors=True)
