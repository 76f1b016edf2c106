"""A killed test run's throwaway PostgreSQL cluster is stopped by the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pg import bin_dir, reap_orphans

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(bin_dir() is None, reason="no PostgreSQL server binaries")]

CHILD = """
import sys, time
from tests.pg import Cluster
cluster = Cluster()
print(cluster.dir, flush=True)
time.sleep(600)
"""


def test_cluster_of_a_killed_run_is_stopped_and_removed() -> None:
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=root, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    where = Path(child.stdout.readline().strip())
    postmaster = int((where / "data" / "postmaster.pid").read_text().split()[0])
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert where.exists()  # a killed run leaves its cluster behind

    assert where in reap_orphans()
    assert not where.exists()
    assert not _running(postmaster)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, never reaped in some containers, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status
