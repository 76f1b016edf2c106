"""`scripts/quickstart` checks what the machine needs before installing, and says what to
apt-get install when something is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "env", "dirname", "awk", "tr", "id", "grep")


def quickstart(tmp_path: Path, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_"))}
    full.update({"PATH": path, "PYTHON": sys.executable,
                 "CHATBRIDGE_VENV": str(tmp_path / "venv"), **env})
    return subprocess.run(["bash", str(ROOT / "scripts" / "quickstart"), "--check"],
                          env=full, capture_output=True, text=True, timeout=60, check=False)


def test_missing_compilers_and_cmake_are_named_with_the_packages(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, tool
        (bare / tool).symlink_to(found)
    result = quickstart(tmp_path, str(bare))
    assert result.returncode == 1, result.stderr
    assert "missing: no C compiler" in result.stderr and "missing: no cmake" in result.stderr
    assert "apt-get install -y build-essential cmake" in result.stderr
    assert not (tmp_path / "venv").exists()  # nothing was installed


def test_with_a_key_no_compiler_is_needed(tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in TOOLS:
        (bare / tool).symlink_to(shutil.which(tool) or tool)
    result = quickstart(tmp_path, str(bare), DASHSCOPE_API_KEY="sk-test")
    assert result.returncode == 0, result.stderr
    assert "everything needed is there" in result.stderr


def test_python_without_venv_is_named(tmp_path: Path) -> None:
    fake = tmp_path / "py"
    fake.write_text("#!/bin/sh\n"  # a python3 whose venv/ensurepip modules are missing
                    "case \"$*\" in *ensurepip*) exit 1;; esac\n"
                    f"exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    result = quickstart(tmp_path, os.environ["PATH"], PYTHON=str(fake),
                        DASHSCOPE_API_KEY="sk-test")
    assert result.returncode == 1
    assert "apt-get install -y python3-venv" in result.stderr
