"""Bounded image decoding: memory per image, a byte budget per process, pixels per turn."""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest

from core.errors import ImageError
from core.image_prep import ImagePreparer, MemoryBudget

ROOT = Path(__file__).resolve().parents[2]


def png_bomb(width: int, height: int, *, alpha: bool = True) -> bytes:
    """A real, decodable PNG of width x height (a few hundred KB), written row by row so
    making it costs no memory."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    bands = 4 if alpha else 3
    header = struct.pack(">IIBBBBB", width, height, 8, 6 if alpha else 2, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\x00" + bytes([30, 140, 220, 255][:bands]) * width
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(
        b"IEND", b"")


CHILD = textwrap.dedent("""
    import asyncio, json, sys
    from core.image_prep import ImagePreparer

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024

    data = open(sys.argv[1], "rb").read()
    before = hwm()
    [image] = asyncio.run(ImagePreparer(max_side=2048).prepare((data,)))
    print(json.dumps({"grew": hwm() - before, "size": [image.width, image.height]}))
""")


def test_a_huge_rgba_png_costs_its_pixels_once(tmp_path: Path) -> None:
    """8000x8000 RGBA decodes to 256 MB. Pillow's reduce premultiplies a whole RGBA image
    (another 256 MB) and a copy before it doubled it again; in bands, little more."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bomb(8000, 8000))
    assert path.stat().st_size < 1_000_000
    done = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["size"] == [2048, 2048]
    decoded = 8000 * 8000 * 4
    assert result["grew"] < decoded * 1.5, result  # before: over 3 times


async def test_decodes_wait_for_the_process_budget() -> None:
    budget = MemoryBudget(100)
    order: list[str] = []
    first_in = asyncio.Event()
    release_first = asyncio.Event()

    async def first() -> None:
        async with budget.reserve(80):
            order.append("first in")
            first_in.set()
            await release_first.wait()
        order.append("first out")

    async def second() -> None:
        await first_in.wait()
        async with budget.reserve(80):
            order.append("second in")

    async def small() -> None:
        await first_in.wait()
        async with budget.reserve(20):  # fits beside the first
            order.append("small in")

    tasks = [asyncio.create_task(c()) for c in (first, second, small)]
    await first_in.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["first in", "small in"]
    release_first.set()
    await asyncio.gather(*tasks)
    assert order == ["first in", "small in", "first out", "second in"]
    assert budget.used == 0


async def test_a_reservation_larger_than_the_budget_runs_alone() -> None:
    budget = MemoryBudget(100)
    async with budget.reserve(10_000):
        assert budget.used == 100


async def test_too_many_pixels_in_one_turn_is_refused_before_decoding() -> None:
    preparer = ImagePreparer(max_side=512, turn_pixels=50_000_000)
    bomb = png_bomb(6000, 6000, alpha=False)  # 36 Mpx each: two are over the turn's 50
    with pytest.raises(ImageError) as info:
        await preparer.prepare((bomb, bomb))
    assert "too many pixels together" in info.value.user_message
    assert preparer.budget.used == 0
