"""Benchmark: peak RSS of a real replica reading huge images (decompression bombs).

A real ``chatbridge slack --port N`` process and a real ``chatbridge telegram --webhook
--port N`` process each get a burst of messages whose attachments are small files that
decode to a lot of pixels: 10000x10000 PNGs (RGB and RGBA, a few hundred KB each) and a
10000x10000 JPEG. Slack: ``--slack-dms`` direct messages at once, each with 3 such files
(Slack's files, served by the tests' fake Slack Web API). Telegram: ``--telegram-docs``
documents at once, in as many private chats (served by the tests' fake Bot API, POSTed to
the webhook). The loopback model server answers at once.

For each replica it prints the RSS before the burst, the peak while it answered
(``VmHWM`` from /proc/PID/status, the kernel's high-water mark) and the RSS a few seconds
after the last answer (what stayed resident), and how many answers came.

Run:  .venv/bin/python -m bench.bench_image_memory [--slack-dms 4] [--telegram-docs 9]
      [--side 10000] [--settle 3] [--json results.json]
The images are made once and cached in the system's temp directory (about 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image as PILImage
from PIL import ImageDraw
from slack_sdk.signature import SignatureVerifier

from bots.local_model import free_port
from tests.bots.slack.fake_slack import BOT_USER, TEAM, TOKEN, FakeSlack
from tests.bots.telegram.fake_bot_api import FakeBotApi
from tests.fakes.model_server import FakeModelServer, Reply

ROOT = Path(__file__).resolve().parents[1]
SLACK_SECRET = "bench-signing-secret-0123456789ab"
TG_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawQ"
TG_SECRET = "bench_webhook_secret"
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")


def make_images(side: int) -> dict[str, tuple[bytes, str]]:
    """name → (bytes, mime): RGB and RGBA PNGs and a JPEG of side x side pixels."""
    cache = Path(tempfile.gettempdir()) / f"chatbridge-bench-images-{side}"
    cache.mkdir(exist_ok=True)
    specs = {"rgb.png": ("RGB", "PNG", "image/png"), "rgba.png": ("RGBA", "PNG", "image/png"),
             "photo.jpg": ("RGB", "JPEG", "image/jpeg")}
    out = {}
    for name, (mode, fmt, mime) in specs.items():
        path = cache / name
        if not path.exists():
            img = PILImage.new(mode, (side, side), (40, 120, 200, 255)[: len(mode)])
            draw = ImageDraw.Draw(img)
            for i in range(0, side, max(side // 50, 1)):  # stripes: something to look at
                draw.line([(i, 0), (side - i, side)], fill=(250, 200, 0, 255)[: len(mode)],
                          width=5)
            img.save(path, fmt, **({"quality": 70} if fmt == "JPEG" else {"compress_level": 9}))
            del img, draw
        out[name] = (path.read_bytes(), mime)
    return out


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in KiB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def _env(db: Path, model: FakeModelServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CHATBRIDGE_", "DASHSCOPE_", "SLACK_", "TELEGRAM_"))
           and k not in PROXIES}
    env.update({
        "CHATBRIDGE_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "CHATBRIDGE_MODEL_BASE_URL": model.openai_base, "CHATBRIDGE_MODEL_API_KEY": "",
        "CHATBRIDGE_MODEL": "qwen3.5-plus", "CHATBRIDGE_LOG_LEVEL": "WARNING", **extra,
    })
    return env


@contextlib.contextmanager
def replica(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bots.cli", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_http(url: str, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    ends = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while time.monotonic() < ends:
            if proc.poll() is not None:
                raise RuntimeError(f"replica exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


async def wait_until(check: Any, within: float) -> bool:
    ends = time.monotonic() + within
    while time.monotonic() < ends:
        if check():
            return True
        await asyncio.sleep(0.2)
    return False


async def measure(proc: subprocess.Popen[bytes], send: Any, answered: Any, expected: int,
                  settle: float) -> dict[str, Any]:
    await asyncio.sleep(1.0)  # start-up allocations done
    before = proc_status(proc.pid)["VmRSS"]
    started = time.monotonic()
    await send()
    done = await wait_until(lambda: answered() >= expected, 600)
    seconds = time.monotonic() - started
    await asyncio.sleep(settle)
    status = proc_status(proc.pid)
    return {"answers": answered(), "expected": expected, "complete": done,
            "seconds": round(seconds, 1), "rss_before_mib": round(before / 1024, 1),
            "peak_mib": round(status["VmHWM"] / 1024, 1),
            "rss_after_mib": round(status["VmRSS"] / 1024, 1)}


async def run_slack(images: dict[str, tuple[bytes, str]], dms: int, settle: float,
                    work: Path, model: FakeModelServer) -> dict[str, Any]:
    port = free_port()
    with FakeSlack() as slack:
        files = [slack.add_file(f"F{i}", name, data, mime)
                 for i, (name, (data, mime)) in enumerate(images.items())]
        env = _env(work / "slack.db", model, SLACK_BOT_TOKEN=TOKEN,
                   SLACK_SIGNING_SECRET=SLACK_SECRET, CHATBRIDGE_SLACK_API_URL=slack.api_url)
        with replica(["slack", "--port", str(port)], env, work / "slack.log") as proc:
            await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            signer = SignatureVerifier(SLACK_SECRET)

            async def send() -> None:
                async with httpx.AsyncClient(timeout=30) as client:
                    posts = []
                    for i in range(dms):
                        ts = f"1710000000.{i + 1:06d}"
                        event = {"type": "message", "subtype": "file_share", "user": f"U{i}",
                                 "text": "what is in these?", "ts": ts, "event_ts": ts,
                                 "channel": f"D{i}", "channel_type": "im", "team": TEAM,
                                 "files": files}
                        body = json.dumps({
                            "token": "t", "team_id": TEAM, "api_app_id": "A0", "event": event,
                            "type": "event_callback", "event_id": f"Ev{i:08d}",
                            "event_time": int(time.time()),
                            "authorizations": [{"team_id": TEAM, "user_id": BOT_USER,
                                                "is_bot": True}]})
                        stamp = str(int(time.time()))
                        headers = {"Content-Type": "application/json",
                                   "X-Slack-Request-Timestamp": stamp,
                                   "X-Slack-Signature": signer.generate_signature(
                                       timestamp=stamp, body=body)}
                        posts.append(client.post(f"http://127.0.0.1:{port}/slack/events",
                                                 content=body, headers=headers))
                    for response in await asyncio.gather(*posts):
                        response.raise_for_status()

            def answered() -> int:
                return sum(1 for c in slack.of("chat.update") + slack.of("chat.postMessage")
                           if any(b.get("type") == "context_actions"
                                  for b in c.args.get("blocks") or []))

            result = await measure(proc, send, answered, dms, settle)
            result["warnings"] = sum(1 for m in slack.posted() if ":warning:" in m.text)
            return result


async def run_telegram(images: dict[str, tuple[bytes, str]], docs: int, settle: float,
                       work: Path, model: FakeModelServer) -> dict[str, Any]:
    port = free_port()
    async with FakeBotApi(TG_TOKEN) as api:
        names = list(images)
        for i, name in enumerate(names):
            api.add_file(f"doc{i}", images[name][0])
        env = _env(work / "telegram.db", model, TELEGRAM_BOT_TOKEN=TG_TOKEN,
                   CHATBRIDGE_TELEGRAM_API_URL=api.api_url,
                   CHATBRIDGE_TELEGRAM_FILE_URL=api.file_url,
                   TELEGRAM_WEBHOOK_URL=f"http://127.0.0.1:{port}/telegram/webhook",
                   TELEGRAM_WEBHOOK_SECRET=TG_SECRET)
        with replica(["telegram", "--webhook", "--port", str(port)], env,
                     work / "telegram.log") as proc:
            await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            users = [{"id": 5000 + i, "is_bot": False, "first_name": f"P{i}"} for i in range(docs)]

            async def send() -> None:
                async with httpx.AsyncClient(timeout=30) as client:
                    posts = []
                    for i, user in enumerate(users):
                        index = i % len(names)
                        name, (data, mime) = names[index], images[names[index]]
                        message = {
                            "message_id": 10 + i, "date": int(time.time()), "from": user,
                            "chat": {"id": user["id"], "type": "private",
                                     "first_name": user["first_name"]},
                            "caption": "what is this?",
                            "document": {"file_id": f"doc{index}", "file_unique_id": f"u{i}",
                                         "file_name": name, "mime_type": mime,
                                         "file_size": len(data)}}
                        posts.append(client.post(
                            f"http://127.0.0.1:{port}/telegram/webhook",
                            json={"update_id": 1000 + i, "message": message},
                            headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}))
                    for response in await asyncio.gather(*posts):
                        response.raise_for_status()

            def answered() -> int:
                return sum(1 for u in users if api.texts(int(u["id"])))

            return await measure(proc, send, answered, docs, settle)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    images = make_images(args.side)
    sizes = {name: len(data) for name, (data, _) in images.items()}
    print(f"images ({args.side}x{args.side}): "
          + ", ".join(f"{n} {s / 1024:.0f} KiB" for n, s in sizes.items()), flush=True)
    results: dict[str, Any] = {"side": args.side, "file_bytes": sizes}
    with tempfile.TemporaryDirectory() as tmp, FakeModelServer() as model:
        model.record = False
        model.default = Reply(text="I see a picture.")
        work = Path(tmp)
        if args.slack_dms:
            results["slack"] = await run_slack(images, args.slack_dms, args.settle, work, model)
            print(f"slack    {args.slack_dms} DMs x {len(images)} files: {results['slack']}",
                  flush=True)
        if args.telegram_docs:
            results["telegram"] = await run_telegram(images, args.telegram_docs, args.settle,
                                                     work, model)
            print(f"telegram {args.telegram_docs} documents: {results['telegram']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slack-dms", type=int, default=4)
    parser.add_argument("--telegram-docs", type=int, default=9)
    parser.add_argument("--side", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds after the last answer before RSS is read again")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for name in PROXIES:
        os.environ.pop(name, None)
    results = asyncio.run(main_async(args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
