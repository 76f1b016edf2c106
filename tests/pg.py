"""A throwaway PostgreSQL cluster from the installed server binaries.

Used when ``CHATBRIDGE_TEST_POSTGRES_URL`` is not set. As root, the server runs as
the ``postgres`` user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL server binaries, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans() -> list[Path]:
    """Stop and remove the clusters of test runs that were killed (their ``owner.pid``
    names a process that is gone): a killed run never reaches ``Cluster.stop``."""
    reaped = []
    pattern = os.path.join(tempfile.gettempdir(), "chatbridge-pg-*", "owner.pid")
    for owner in glob.glob(pattern):
        where = Path(owner).parent
        try:
            pid = int(Path(owner).read_text().strip())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            continue
        binaries = bin_dir()
        if binaries is not None and (where / "data" / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([str(binaries / "pg_ctl"), "-D", str(where / "data"),
                                 "-m", "immediate", "stop"]),
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        shutil.rmtree(where, ignore_errors=True)
        reaped.append(where)
    return reaped


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    """A running cluster; ``url`` is an asyncpg SQLAlchemy URL to its ``postgres`` db.

    ``crash_safe``: keep ``synchronous_commit`` on, so a commit the server confirmed
    survives ``stop_server`` (an immediate shutdown loses the WAL not yet written when it
    is off; fsync stays off either way: the machine does not crash).
    """

    def __init__(self, *, crash_safe: bool = False) -> None:
        self.crash_safe = crash_safe
        binaries = bin_dir()
        if binaries is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.bin = binaries
        reap_orphans()
        self.dir = Path(tempfile.mkdtemp(prefix="chatbridge-pg-"))
        (self.dir / "owner.pid").write_text(f"{os.getpid()}\n")
        self.data = self.dir / "data"
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o755)
        subprocess.run(
            _as_server_user([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                             "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True, stdout=subprocess.DEVNULL,
        )
        self.start_server()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start_server(self) -> None:
        """Start the server (again, after ``stop_server``) on the same port and data."""
        subprocess.run(
            _as_server_user([
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                "-o", f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off "
                      f"-c synchronous_commit={'on' if self.crash_safe else 'off'} "
                      "-c full_page_writes=off",
                "-w", "start",
            ]),
            check=True, stdout=subprocess.DEVNULL,
        )

    def stop_server(self) -> None:
        """Stop the server as a crash would (``-m immediate``: connections cut, nothing
        waited for), keeping its data; ``start_server`` brings it back."""
        subprocess.run(
            _as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                             "-w", "stop"]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def restart(self) -> None:
        """Restart the server (fast shutdown: every connection is closed), same port."""
        subprocess.run(
            _as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                             str(self.dir / "log"), "-m", "fast", "-w", "restart"]),
            check=True, stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        """Stop the server and remove its files."""
        subprocess.run(
            _as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                             "stop"]),
            check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
