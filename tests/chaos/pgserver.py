"""A private PostgreSQL server that a test may crash; the shared one is never touched.

``initdb`` in a folder of its own, on a free port, trusting local connections. ``crash`` is
``pg_ctl stop -m immediate``: the postmaster and its backends quit at once, without a
checkpoint and without writing what is still in the WAL buffers (shared memory), so commits
whose WAL flush was not waited for (``synchronous_commit = off``) can be lost, and the next
start runs crash recovery, as after a server crash. PostgreSQL writes such commits out within
``wal_writer_delay`` (200 ms by default) or a page of further WAL; a longer delay widens that
window for a test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "postgres_binaries"]

START_TIMEOUT_S = 60
SERVER_USER = "postgres"
"""initdb and postgres refuse to run as root; as root, the server runs as this user."""


def postgres_binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (Debian keeps them out of PATH), or None."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        folder = Path(out.stdout.strip())
        if (folder / "initdb").exists():
            return folder
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / "initdb").exists():
            return folder
    return None


class PostgresServer:
    """One throwaway cluster: ``start``, ``crash``, ``start`` again, ``remove``."""

    def __init__(self, bindir: Path, **settings: str) -> None:
        self._bin = bindir
        self._settings = "".join(f" -c {name}={value}" for name, value in settings.items())
        self.port = _free_port()
        # Not under pytest's tmp_path: its parent is private to root, and the server may run
        # as another user.
        self.folder = Path(tempfile.mkdtemp(prefix="batchyard-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as = [] if os.geteuid() != 0 else ["runuser", "-u", SERVER_USER, "--"]
        if self._as:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start the server (after a crash: recovery first) and wait until it answers."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} "
                   f"-c fsync=on -c synchronous_commit=on{self._settings}")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"),
                  "-o", options, "-w", "-t", str(START_TIMEOUT_S), "start")

    def crash(self) -> None:
        """Stop at once, as a crash would: no checkpoint, unflushed WAL lost."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        subprocess.run([*self._as, str(self._bin / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self._bin / tool), *args], capture_output=True,
                              text=True, check=False, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()}\n"
                               f"{self.log()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
