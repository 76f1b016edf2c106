"""`chatbridge ask --file` as a person runs it: real processes, real files, the loopback
model."""

from __future__ import annotations

from pathlib import Path

from tests import media_files
from tests.bots.test_cli import one_clean_line, run
from tests.fakes.model_server import FakeModelServer, Reply


def test_ask_with_documents(tmp_path: Path, fake_model: FakeModelServer) -> None:
    (tmp_path / "deck.pptx").write_bytes(media_files.pptx("Revenue up 8%"))
    (tmp_path / "stock.xlsx").write_bytes(media_files.xlsx([["item", "qty"], ["pens", 40]]))
    (tmp_path / "page.html").write_text("<p>Office closed <b>Monday</b></p>")
    fake_model.enqueue(Reply(text="Revenue up, 40 pens, closed Monday."))
    result = run(tmp_path, fake_model, "ask", "--file", "deck.pptx", "--file", "stock.xlsx",
                 "--file", "page.html", "sum up")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Revenue up, 40 pens, closed Monday."
    sent = fake_model.requests[-1].json["messages"][-1]["content"]
    assert "[slide 1]\nRevenue up 8%" in sent and "pens | 40" in sent
    assert "Office closed\nMonday" in sent or "Office closed Monday" in sent


def test_ask_with_an_unreadable_file_only_is_exit_2(tmp_path: Path,
                                                    fake_model: FakeModelServer) -> None:
    (tmp_path / "locked.pdf").write_bytes(media_files.encrypted_pdf("secret plan"))
    result = run(tmp_path, fake_model, "ask", "--file", "locked.pdf", " ")
    assert result.returncode == 2
    assert "protected with a password" in one_clean_line(result.stderr)
    missing = run(tmp_path, fake_model, "ask", "--file", "nope.pdf", "hi")
    assert missing.returncode == 2 and "cannot read file nope.pdf" in missing.stderr
    assert fake_model.requests == []


def test_ask_with_a_video(tmp_path: Path, fake_model: FakeModelServer) -> None:
    (tmp_path / "clip.mp4").write_bytes(media_files.video_clip(2.0))
    fake_model.enqueue(Reply(text="Red, then green, then blue."))
    result = run(tmp_path, fake_model, "ask", "--file", "clip.mp4", "what colours?",
                 CHATBRIDGE_MODEL="qwen3-vl-plus")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Red, then green, then blue."
    video, text = fake_model.requests[-1].json["messages"][-1]["content"]
    assert video["type"] == "video" and len(video["video"]) == 4 and video["fps"] == 2.0
    assert text == {"type": "text", "text": "what colours?"}
    (tmp_path / "cut.mp4").write_bytes(media_files.video_clip(2.0)[:700])
    broken = run(tmp_path, fake_model, "ask", "--file", "cut.mp4", " ",
                 CHATBRIDGE_MODEL="qwen3-vl-plus")
    assert broken.returncode == 2
    assert "cut.mp4: that video seems to be damaged" in one_clean_line(broken.stderr)
    assert len(fake_model.requests) == 1


def test_chat_file_command_attaches_to_the_next_message(
        tmp_path: Path, fake_model: FakeModelServer) -> None:
    (tmp_path / "clip.mp4").write_bytes(media_files.video_clip(2.0))
    (tmp_path / "memo.docx").write_bytes(media_files.docx("Lunch at noon."))
    fake_model.enqueue(Reply(text="Colours."), Reply(text="Noon."), Reply(text="Plain."))
    result = run(tmp_path, fake_model, "chat", CHATBRIDGE_MODEL="qwen3.5-plus",
                 stdin="/file clip.mp4\nwhat colours?\n/file\n/file nope.pdf\n"
                       "/file memo.docx\nwhen is lunch?\nand now?\n")
    assert result.returncode == 0, result.stderr
    assert "/file needs a file" in result.stdout
    assert "cannot read file nope.pdf" in result.stderr and "(not attached)" in result.stderr
    first, second, third = (r.json["messages"][-1]["content"] for r in fake_model.requests)
    assert first[0]["type"] == "video" and first[-1]["text"] == "what colours?"
    assert second.startswith("when is lunch?\n\n[Document: memo.docx") and "noon" in second
    assert third == "and now?"  # attached to one message only
