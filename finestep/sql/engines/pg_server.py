"""A throwaway PostgreSQL server for tests, benchmarks and demos: ``initdb`` in a temporary folder, a Unix socket
only (no TCP), a free port number, stopped and removed at the end.

``initdb`` and the server refuse to run as root; as root (CI) the server runs as an unprivileged user
(``finestep-pg``, created with ``useradd`` when missing) through ``runuser``. The binaries come from ``PATH``
or ``/usr/lib/postgresql/*/bin``.
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

__all__ = ["PostgresServer", "find_pg_bin"]

SERVER_USER = "finestep-pg"
SUPERUSER = "finestep"


def find_pg_bin() -> Path | None:
    """The folder holding ``pg_ctl`` and ``initdb``, or ``None`` when PostgreSQL is not installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.isfile(os.path.join(folder, "pg_ctl")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """Start with :meth:`start` (or ``with``), stop with :meth:`stop`; :meth:`url` names a database on it as the
    superuser ``finestep`` (``postgresql://finestep@/DB?host=SOCKET_DIR&port=PORT``)."""

    def __init__(self, base: str | os.PathLike[str] | None = None) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL's server binaries (pg_ctl, initdb) are not installed; "
                                    "install the Debian package postgresql (.ci/run does)")  # fmt: skip
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="finestep-pg-", dir=base))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.port = _free_port()
        self.started = False

    def _as_server_user(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
                           check=True, capture_output=True)  # fmt: skip
        return ["runuser", "-u", SERVER_USER, "--", *command]

    def start(self) -> PostgresServer:
        """initdb, then start the server and wait until it accepts connections."""
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            self._as_server_user(["true"])  # creates the user
            entry = pwd.getpwnam(SERVER_USER)
            os.chmod(self.root, 0o755)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(self._as_server_user([str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                                             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]), check=True, capture_output=True, text=True)  # fmt: skip
        options = (f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50")  # fmt: skip
        log = self.root / "server.log"
        subprocess.run(self._as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-o",
                                             options, "-w", "-t", "60", "start"]), check=True, capture_output=True, text=True)  # fmt: skip
        self.started = True
        deadline = time.monotonic() + 30
        while not (self.socket_dir / f".s.PGSQL.{self.port}").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; its log: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        return self

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        """The libpq URI of ``database`` on this server as ``user``."""
        return f"postgresql://{user}@/{database}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        if self.started:
            subprocess.run(self._as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                                 "-w", "stop"]), capture_output=True, check=False)  # fmt: skip
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
