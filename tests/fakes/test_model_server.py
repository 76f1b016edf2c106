"""Self-test of the fake model server, using plain httpx on the wire."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.model_server import FakeModelServer, Reply

OAI = "/chat/completions"
TEXT_GEN = "/services/aigc/text-generation/generation"
MM_GEN = "/services/aigc/multimodal-generation/generation"
SSE_HEADERS = {"X-DashScope-SSE": "enable", "Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeModelServer) -> FakeModelServer:
    server.clear()
    return server


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as c:
        yield c


def raw_lines(r: httpx.Response) -> list[str]:
    """The SSE body split on bare \\n (no \\r allowed), minus the final empty string."""
    assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
    assert r.text.endswith("\n\n") and "\r" not in r.text
    return r.text.split("\n")[:-1]


def oai_stream(client: httpx.Client, fake: FakeModelServer, **extra: Any) -> tuple[str, list[str]]:
    body = {"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}],
            "stream": True, **extra}
    r = client.post(fake.openai_base + OAI, json=body)
    return r.headers["content-type"], raw_lines(r)


def oai_events(lines: list[str]) -> list[Any]:
    """Check `data: x` + blank-line framing; return parsed payloads ('[DONE]' kept as str)."""
    assert len(lines) % 2 == 0
    assert all(line == "" for line in lines[1::2])
    assert all(line.startswith("data: ") for line in lines[::2])
    return [p if p == "[DONE]" else json.loads(p) for p in (x[6:] for x in lines[::2])]


def native_stream(client: httpx.Client, url: str, incremental: bool) -> tuple[str, list[Any]]:
    body = {"model": "qwen-plus", "input": {"messages": [{"role": "user", "content": "hi"}]},
            "parameters": {"result_format": "message", "incremental_output": incremental}}
    r = client.post(url, json=body, headers=SSE_HEADERS)
    lines = raw_lines(r)
    events: list[tuple[str, Any]] = []
    while lines:  # id:N / event:X / :HTTP_STATUS/S / data:{..} / ""
        ident, event, status, data, blank = lines[:5]
        del lines[:5]
        assert ident == f"id:{len(events) + 1}" and blank == ""
        assert (event, status) in (("event:result", ":HTTP_STATUS/200"),
                                   ("event:error", ":HTTP_STATUS/400"))
        assert data.startswith("data:{")
        events.append((event[6:], json.loads(data[5:])))
    return r.headers["content-type"], events


def test_openai_stream_ok(fake: FakeModelServer, client: httpx.Client) -> None:
    fake.enqueue(Reply(text="Hello world, fake!", reasoning="think hard", chunk_size=4,
                       usage=(5, 3)))
    ctype, lines = oai_stream(client, fake, stream_options={"include_usage": True})
    assert ctype == "text/event-stream"
    events = oai_events(lines)
    assert events[-1] == "[DONE]"
    first, *middle, finish, usage_chunk, _ = events
    assert first["choices"][0]["delta"] == {"content": "", "role": "assistant"}
    deltas = [e["choices"][0]["delta"] for e in middle]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == "think hard"
    assert "".join(d["content"] or "" for d in deltas) == "Hello world, fake!"
    assert [len(d["content"] or "") for d in deltas][-5:] == [4, 4, 4, 4, 2]
    assert all(e["choices"][0]["finish_reason"] is None for e in [first, *middle])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 5, "completion_tokens": 3,
                                    "total_tokens": 8}
    assert len({e["id"] for e in events[:-1]}) == 1
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    events = oai_events(oai_stream(client, fake)[1])  # no include_usage: no usage chunk
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(e["choices"] for e in events[:-1])


def test_openai_non_stream(fake: FakeModelServer, client: httpx.Client) -> None:
    fake.enqueue(Reply(text="Answer", reasoning="why", finish_reason="length"))
    r = client.post(fake.openai_base + OAI, json={"model": "qwen-max", "messages": []})
    body = r.json()
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert body["object"] == "chat.completion" and body["model"] == "qwen-max"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Answer",
                                 "reasoning_content": "why"}
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}


@pytest.mark.parametrize("incremental", [True, False])
def test_native_stream(fake: FakeModelServer, client: httpx.Client, incremental: bool) -> None:
    fake.enqueue(Reply(text="abcdefghij", reasoning="xyz", chunk_size=3, usage=(4, 6)))
    ctype, events = native_stream(client, fake.dashscope_base + TEXT_GEN, incremental)
    assert ctype == "text/event-stream;charset=UTF-8"
    choices = [e["output"]["choices"][0] for _, e in events]
    msgs = [c["message"] for c in choices]
    assert [c["finish_reason"] for c in choices] == ["null"] * (len(events) - 1) + ["stop"]
    if incremental:
        assert [m["content"] for m in msgs] == ["", "abc", "def", "ghi", "j"]
        assert "".join(m["reasoning_content"] for m in msgs) == "xyz"
    else:
        assert [m["content"] for m in msgs] == ["", "abc", "abcdef", "abcdefghi", "abcdefghij"]
        assert msgs[-1]["reasoning_content"] == "xyz"
    outs = [e["usage"]["output_tokens"] for _, e in events]
    assert outs == sorted(outs) and outs[-1] == 6
    assert all(e["usage"]["input_tokens"] == 4 for _, e in events)
    assert events[-1][1]["usage"]["total_tokens"] == 10
    assert len({e["request_id"] for _, e in events}) == 1


def test_native_multimodal_and_non_stream(fake: FakeModelServer, client: httpx.Client) -> None:
    _, events = native_stream(client, fake.dashscope_base + MM_GEN, True)
    assert "".join(p["text"] for _, e in events
                   for p in e["output"]["choices"][0]["message"]["content"]) == Reply().text
    body = client.post(fake.dashscope_base + TEXT_GEN, json={"model": "qwen-plus"}).json()
    assert set(body) == {"output", "usage", "request_id"}
    assert body["output"]["choices"][0] == {
        "finish_reason": "stop",
        "message": {"role": "assistant", "content": Reply().text, "reasoning_content": ""}}
    assert body["usage"] == {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
    body = client.post(fake.dashscope_base + MM_GEN, json={}).json()
    assert body["output"]["choices"][0]["message"]["content"] == [{"text": Reply().text}]


@pytest.mark.parametrize(("status", "code", "ncode"), [
    (400, "data_inspection_failed", "DataInspectionFailed"),
    (401, "invalid_api_key", "InvalidApiKey"), (403, "access_denied", "AccessDenied"),
    (429, "limit_requests", "Throttling.RateQuota"), (500, "internal_error", "InternalError"),
    (503, "ModelUnavailable", "ModelUnavailable")])
def test_errors(fake: FakeModelServer, client: httpx.Client, status: int, code: str,
                ncode: str) -> None:
    fake.enqueue(Reply(kind="error", status=status, retry_after="3"),
                 Reply(kind="error", status=status))
    r = client.post(fake.openai_base + OAI, json={"stream": True})
    assert r.status_code == status and r.headers["retry-after"] == "3"
    err = r.json()
    assert set(err) == {"error", "request_id"}
    assert set(err["error"]) == {"message", "type", "param", "code"}
    assert err["error"]["code"] == code and err["error"]["param"] is None
    r = client.post(fake.dashscope_base + TEXT_GEN, json={}, headers=SSE_HEADERS)
    assert r.status_code == status and "retry-after" not in r.headers
    assert set(r.json()) == {"code", "message", "request_id"} and r.json()["code"] == ncode


def test_error_body_override(fake: FakeModelServer, client: httpx.Client) -> None:
    fake.enqueue(Reply(kind="error", status=400, body={"code": "Arrearage", "message": "x"}))
    r = client.post(fake.openai_base + OAI, json={})
    assert r.status_code == 400 and r.json() == {"code": "Arrearage", "message": "x"}


def test_moderation_midstream(fake: FakeModelServer, client: httpx.Client) -> None:
    fake.enqueue(Reply(kind="moderation_midstream", text="12345678", chunk_size=2),
                 Reply(kind="moderation_midstream", text="12345678", chunk_size=2))
    events = oai_events(oai_stream(client, fake, stream_options={"include_usage": True})[1])
    assert "[DONE]" not in events
    assert "".join(e["choices"][0]["delta"]["content"] for e in events[:-1]) == "1234"
    assert events[-1] == {"error": {
        "message": "Output data may contain inappropriate content.",
        "type": "data_inspection_failed", "param": None, "code": "data_inspection_failed"}}
    _, native = native_stream(client, fake.dashscope_base + TEXT_GEN, True)
    assert [kind for kind, _ in native] == ["result", "result", "error"]
    assert native[-1][1]["code"] == "DataInspectionFailed"
    assert all(e["output"]["choices"][0]["finish_reason"] == "null" for _, e in native[:-1])


@pytest.mark.parametrize("native", [False, True])
def test_drop(fake: FakeModelServer, client: httpx.Client, native: bool) -> None:
    fake.enqueue(Reply(kind="drop", text="0123456789", chunk_size=5))
    url = fake.dashscope_base + TEXT_GEN if native else fake.openai_base + OAI
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):  # incomplete chunked body
        with client.stream("POST", url, json={"stream": True}, headers=SSE_HEADERS) as r:
            for line in r.iter_lines():
                lines.append(line)
    assert any("01234" in line for line in lines)
    assert not any("56789" in line or "[DONE]" in line or "stop" in line for line in lines)
    assert client.post(fake.openai_base + OAI, json={}).status_code == 200  # still serving


def test_no_finish(fake: FakeModelServer, client: httpx.Client) -> None:
    fake.enqueue(Reply(kind="no_finish"), Reply(kind="no_finish"))
    events = oai_events(oai_stream(client, fake, stream_options={"include_usage": True})[1])
    assert events[-1] == "[DONE]"
    assert all(e["choices"] and e["choices"][0]["finish_reason"] is None for e in events[:-1])
    assert "".join(e["choices"][0]["delta"]["content"] for e in events[:-1]) == Reply().text
    _, native = native_stream(client, fake.dashscope_base + TEXT_GEN, False)
    assert {e["output"]["choices"][0]["finish_reason"] for _, e in native} == {"null"}
    assert native[-1][1]["output"]["choices"][0]["message"]["content"] == Reply().text


def test_hang_and_delay(fake: FakeModelServer, client: httpx.Client) -> None:
    fake.enqueue(Reply(kind="hang"), Reply(delay=0.2))
    with pytest.raises(httpx.ReadTimeout):
        client.post(fake.openai_base + OAI, json={}, timeout=0.2)
    t0 = time.monotonic()
    assert client.post(fake.openai_base + OAI, json={}).status_code == 200
    assert time.monotonic() - t0 >= 0.2


def test_stop_releases_hang_and_keep_alive() -> None:
    fake = FakeModelServer().start()
    fake.enqueue(Reply(kind="hang"))
    t0 = time.monotonic()
    with httpx.Client(timeout=5, trust_env=False) as c, httpx.Client(trust_env=False) as idle:
        idle.get(fake.url + "/v1/models")  # idle keep-alive connection: stop() must not wait
        threading.Timer(0.2, fake.stop).start()
        with pytest.raises(httpx.TransportError):
            c.post(fake.openai_base + OAI, json={})
    assert time.monotonic() - t0 < 3


def test_recording_queue_and_models(fake: FakeModelServer, client: httpx.Client) -> None:
    fake.default = Reply(text="default")
    fake.enqueue(Reply(text="first"), Reply(text="second"))
    texts = [client.post(fake.openai_base + OAI, json={"n": i},
                         headers={"X-Custom": "V"}).json()["choices"][0]["message"]["content"]
             for i in range(4)]
    assert texts == ["first", "second", "default", "default"]
    models = client.get(fake.url + "/v1/models").json()
    assert models["object"] == "list" and "qwen-plus" in [m["id"] for m in models["data"]]
    assert client.get(fake.openai_base + "/models").status_code == 200
    assert client.post(fake.url + "/nope", json={}).status_code == 404
    rec = fake.requests
    assert [r.method for r in rec] == ["POST"] * 4 + ["GET", "GET", "POST"]
    assert rec[0].path == "/compatible-mode/v1/chat/completions"
    assert rec[1].json == {"n": 1} and rec[1].headers["x-custom"] == "V"
    assert rec[1].headers["content-type"] == "application/json"
    fake.clear()
    assert fake.requests == [] and fake.default == Reply()


def test_keep_alive_reuses_connection(fake: FakeModelServer, client: httpx.Client) -> None:
    ports = set()
    for stream in (False, True, False):
        with client.stream("POST", fake.openai_base + OAI, json={"stream": stream}) as r:
            r.read()
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr")[1])
    assert len(ports) == 1


def test_script_mode() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.model_server", "--port",
                             str(port)], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f":{port}" in proc.stdout.readline()
        r = httpx.post(f"http://127.0.0.1:{port}/compatible-mode/v1{OAI}", json={},
                       trust_env=False)
        assert r.json()["choices"][0]["message"]["content"] == Reply().text
    finally:
        proc.terminate()
        proc.wait(5)


def test_script_mode_delay_and_stats() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.model_server", "--port",
                             str(port), "--delay", "0.5"], cwd=root, stdout=subprocess.PIPE,
                            text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        assert f":{port}" in proc.stdout.readline()
        answers: list[httpx.Response] = []
        asking = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{base}/compatible-mode/v1{OAI}", json={}, trust_env=False, timeout=5)))
        began = time.monotonic()
        asking.start()
        deadline = time.monotonic() + 5
        while httpx.get(f"{base}/_fake/stats", trust_env=False).json()["in_flight"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        asking.join(5)
        assert time.monotonic() - began >= 0.5
        assert answers[0].json()["choices"][0]["message"]["content"] == Reply().text
        stats = httpx.get(f"{base}/_fake/stats", trust_env=False).json()
        assert stats == {"requests": 1, "in_flight": 0}
    finally:
        proc.terminate()
        proc.wait(5)


def test_stats_count_open_requests(fake: FakeModelServer, client: httpx.Client) -> None:
    before = fake.stats()  # (earlier tests' "hang" replies may still be open)
    client.post(fake.openai_base + OAI, json={})
    assert client.get(fake.url + "/_fake/stats").json() == {
        "requests": before["requests"] + 1, "in_flight": before["in_flight"]}


def _cached_body(extra: list[dict[str, Any]] | None = None,
                 mark: dict[str, Any] | None = None) -> dict[str, Any]:
    marker = mark or {"type": "ephemeral"}
    system = {"role": "system", "content": [
        {"type": "text", "text": "rule. " * 1000, "cache_control": marker}]}
    return {"model": "qwen-plus", "stream": False,
            "messages": [system, {"role": "user", "content": "hi"}, *(extra or [])]}


def test_explicit_cache_is_written_then_read(fake: FakeModelServer,
                                             client: httpx.Client) -> None:
    url = fake.openai_base + OAI
    first = client.post(url, json=_cached_body()).json()["usage"]
    details = first["prompt_tokens_details"]
    assert details["cached_tokens"] == 0 and details["cache_creation_input_tokens"] > 1024
    assert details["cache_type"] == "ephemeral"
    assert first["prompt_tokens"] > details["cache_creation_input_tokens"]  # + uncached
    second = client.post(url, json=_cached_body([{"role": "user", "content": "more"}]))
    hit = second.json()["usage"]["prompt_tokens_details"]
    assert hit["cached_tokens"] == details["cache_creation_input_tokens"]
    assert hit["cache_creation_input_tokens"] == 0
    other_model = dict(_cached_body(), model="qwen-max")  # caches are per model
    assert client.post(url, json=other_model).json()["usage"]["prompt_tokens_details"][
        "cached_tokens"] == 0


def test_short_prefix_is_not_cached_and_bad_markers_are_refused(
        fake: FakeModelServer, client: httpx.Client) -> None:
    url = fake.openai_base + OAI
    body = {"model": "qwen-plus", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]}]}
    usage = client.post(url, json=body).json()["usage"]["prompt_tokens_details"]
    assert usage["cache_creation_input_tokens"] == 0
    assert client.post(url, json=_cached_body(mark={"type": "persistent"})).status_code == 400
    on_message = {"model": "qwen-plus", "messages": [
        {"role": "user", "content": "x", "cache_control": {"type": "ephemeral"}}]}
    assert client.post(url, json=on_message).status_code == 400


def test_summary_requests_keep_fact_lines_without_using_the_queue(
        fake: FakeModelServer, client: httpx.Client) -> None:
    fake.enqueue(Reply(text="for the turn"))
    body = {"model": "qwen-flash", "messages": [
        {"role": "system", "content": "You keep the running summary of a chat."},
        {"role": "user", "content": "Summary so far:\nFACT: a\n\n[user]\nFACT: b\nhello"}]}
    reply = client.post(fake.openai_base + OAI, json=body).json()
    assert reply["choices"][0]["message"]["content"] == "FACT: a\nFACT: b"
    turn = client.post(fake.openai_base + OAI, json={"model": "qwen-plus", "messages": [
        {"role": "user", "content": "hi"}]}).json()
    assert turn["choices"][0]["message"]["content"] == "for the turn"
