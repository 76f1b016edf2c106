"""``chatbridge kb …`` and ``ask --profile`` as a person runs them (subprocesses)."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bots.test_cli import run
from tests.fakes.model_server import FakeModelServer, Reply


def pdf(text: str) -> bytes:
    """A one-page PDF whose text layer says ``text``."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


def encrypted_pdf(text: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(text))))
    writer.encrypt("secret-password")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def docx_file(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Warranty", level=1)
    document.add_paragraph("Every bicycle has a warranty of two years on the frame.")
    document.add_heading("Repairs", level=2)
    document.add_paragraph("Repairs are done in our workshop in Uppsala within a week.")
    document.save(str(path))


@pytest.fixture
def web_page() -> Iterator[str]:
    """A loopback web server with one HTML page; yields its URL."""
    page = (b"<html><head><title>Opening hours</title><script>track()</script></head>"
            b"<body><nav>Home | Shop</nav><h1>Opening hours</h1><p>The store in Lund is "
            b"open Monday to Friday from 9 to 18.</p></body></html>")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/hours" else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hours"
    finally:
        server.shutdown()
        server.server_close()


def test_kb_add_indexes_pdf_docx_html_and_reports_bad_files(
        tmp_path: Path, fake_model: FakeModelServer, web_page: str) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "prices.pdf").write_bytes(pdf("A tune-up costs 495 kronor."))
    docx_file(docs / "sub" / "warranty.docx")
    (docs / "faq.html").write_text("<html><head><title>FAQ</title></head><body><h2>Gift cards"
                                   "</h2><p>Gift cards never expire.</p></body></html>")
    (docs / "locked.pdf").write_bytes(encrypted_pdf("Secret plans"))
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 8)
    (docs / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    (tmp_path / "empty").mkdir()

    first = run(tmp_path, fake_model, "kb", "add", "--kb", "shop", str(docs),
                str(tmp_path / "empty"), web_page)
    assert first.returncode == 2, first.stderr
    assert "Traceback" not in first.stderr
    assert first.stdout.strip() == ("shop: 4 document(s) indexed (5 chunks), 0 unchanged, "
                                    "4 failed")
    errors = first.stderr.strip().splitlines()
    assert len(errors) == 4, first.stderr
    assert any("locked.pdf: an encrypted PDF (it needs a password); not indexed" in e
               for e in errors)
    assert any("broken.pdf: not a readable PDF" in e for e in errors)
    assert any("image.txt: a binary file, not a text document" in e for e in errors)
    assert any("empty: no documents" in e for e in errors)

    again = run(tmp_path, fake_model, "kb", "add", "--kb", "shop", str(docs / "prices.pdf"),
                str(docs / "sub"), web_page)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == ("shop: 0 document(s) indexed (0 chunks), 3 unchanged, "
                                    "0 failed")

    listed = run(tmp_path, fake_model, "kb", "list")
    assert listed.stdout.startswith("shop: 4 document(s), 5 chunks; language english")
    titles = run(tmp_path, fake_model, "kb", "list", "--kb", "shop").stdout
    assert "Opening hours" in titles and web_page in titles and "warranty.docx" in titles

    for question, expected in [("how much is a tune-up?", "prices.pdf"),
                               ("when is the Lund store open?", web_page),
                               ("where are repairs done", "Warranty — Repairs"),
                               ("do gift cards expire", "FAQ — Gift cards")]:
        found = run(tmp_path, fake_model, "kb", "search", "--kb", "shop", question)
        assert found.returncode == 0, found.stderr
        assert expected in found.stdout.splitlines()[0], (question, found.stdout)
        assert "full-text #1" in found.stdout.splitlines()[0]

    gone = run(tmp_path, fake_model, "kb", "remove", "--kb", "shop", web_page)
    assert gone.stdout.strip() == "shop: 1 document(s) removed"
    assert run(tmp_path, fake_model, "kb", "search", "--kb", "shop",
               "Lund store open").returncode == 1
    assert run(tmp_path, fake_model, "kb", "remove", "--kb", "shop").returncode == 0
    missing = run(tmp_path, fake_model, "kb", "search", "--kb", "shop", "anything")
    assert missing.returncode == 2 and "no knowledge base 'shop'" in missing.stderr


def test_ask_with_a_profile_answers_from_its_knowledge_base(
        tmp_path: Path, fake_model: FakeModelServer) -> None:
    (tmp_path / "faq.md").write_text("# Returns\n\nReturns are free within 30 days.\n\n"
                                     "# Shipping\n\nParcels leave our warehouse daily.\n")
    (tmp_path / "chatbridge.toml").write_text(
        '[profiles.shop]\nknowledge = ["faq"]\nsystem_prompt = "You help customers."\n')
    env = {"CHATBRIDGE_EMBEDDING_MODEL": "text-embedding-v4"}
    added = run(tmp_path, fake_model, "kb", "add", "--kb", "faq", "faq.md", **env)
    assert added.stdout.strip() == ("faq: 1 document(s) indexed (2 chunks, 2 embedded), "
                                    "0 unchanged, 0 failed"), added.stderr
    embeds = [r for r in fake_model.requests if r.path.endswith("/embeddings")]
    assert embeds and embeds[0].json["encoding_format"] == "float"

    fake_model.enqueue(Reply(text="Returns are free for 30 days [1]."))
    asked = run(tmp_path, fake_model, "ask", "--profile", "shop", "--json",
                "are returns free?", **env)
    assert asked.returncode == 0, asked.stderr
    reply = json.loads(asked.stdout)
    assert reply["sources"] == [{"n": 1, "title": "Returns", "heading": "Returns",
                                 "source": str(tmp_path / "faq.md")}]
    system = fake_model.requests[-1].json["messages"][0]["content"]
    assert system.startswith("You help customers.") and "[1] Returns" in system

    plain = run(tmp_path, fake_model, "ask", "--profile", "shop", "tell me a joke", **env)
    assert plain.returncode == 0 and plain.stdout.startswith("I don't know")

    hybrid = run(tmp_path, fake_model, "kb", "search", "--kb", "faq", "returns free", **env)
    assert "full-text #1" in hybrid.stdout and "dense #1" in hybrid.stdout

    wrong = run(tmp_path, fake_model, "ask", "--profile", "nope", "hi")
    assert wrong.returncode == 2 and "no profile 'nope'" in wrong.stderr


async def test_start_up_warns_of_a_profile_whose_base_is_empty(
        tmp_path: Path, sqlite_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from bots.db import create_engine, open_store, upgrade
    from bots.runtime import warn_missing_bases
    from bots.settings import load_settings
    from core.knowledge.index import KnowledgeIndex

    (tmp_path / "chatbridge.toml").write_text(
        '[profiles.shop]\nknowledge = ["shop-faq"]\n[profiles.plain]\n')
    settings = load_settings({"CHATBRIDGE_DATABASE_URL": sqlite_url,
                              "CHATBRIDGE_MODEL_BASE_URL": "http://127.0.0.1:9/v1",
                              "CHATBRIDGE_MODEL_API_KEY": ""}, cwd=tmp_path)
    engine = create_engine(sqlite_url)
    await upgrade(engine)
    store = open_store(engine)
    try:
        assert await warn_missing_bases(settings, KnowledgeIndex(store)) == ["shop-faq"]
        assert "profile 'shop' answers from knowledge base 'shop-faq'" in caplog.text
    finally:
        store.close()
        await engine.dispose()
