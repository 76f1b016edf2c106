"""Documents read into text from real files (PDF, DOCX, PPTX, XLSX, CSV, HTML, text)."""

from __future__ import annotations

import io
import zipfile

import pytest

from core.media.documents import DocumentError, document_kind, extract, render_pages
from tests import media_files


def test_pdf_text_by_page() -> None:
    doc = extract(media_files.pdf(["The launch code is 4242.", "Second page here."]),
                  "plan.pdf")
    assert doc.kind == "pdf" and doc.pages == 2 and not doc.scanned
    assert "[page 1]\nThe launch code is 4242." in doc.text
    assert "[page 2]\nSecond page here." in doc.text


def test_office_documents() -> None:
    assert "Budget is 12 EUR." in extract(media_files.docx("Budget is 12 EUR.", "Bye"),
                                          "memo.docx").text
    deck = extract(media_files.pptx("Quarterly goals", "Hiring plan"), "deck.pptx")
    assert deck.kind == "pptx" and deck.pages == 2
    assert "[slide 2]\nHiring plan" in deck.text
    sheet = extract(media_files.xlsx([["name", "qty"], ["apples", 3]]), "stock.xlsx")
    assert sheet.kind == "xlsx" and "apples | 3" in sheet.text


def test_office_type_from_the_bytes_not_the_name() -> None:
    assert document_kind(media_files.docx("x"), "upload.bin") == "docx"
    assert document_kind(media_files.xlsx([[1]]), "") == "xlsx"


def test_text_formats() -> None:
    html = b"<html><head><style>p{}</style></head><body><h1>Title</h1><p>Hello &amp; bye" \
           b"</p><script>evil()</script></body></html>"
    text = extract(html, "page.html").text
    assert text == "Title\nHello & bye"
    assert extract(b"a,b\n1,2\n", "t.csv").text == "a | b\n1 | 2"
    assert extract("# Notes\nĂ".encode(), "n.md").text == "# Notes\nĂ"
    assert extract(b"plain", "", "text/plain").text == "plain"


def test_scanned_pdf_has_no_text_and_renders_pages() -> None:
    data = media_files.pdf(scanned=3)
    doc = extract(data, "scan.pdf")
    assert doc.scanned and doc.pages == 3
    pngs = render_pages(data, count=2, max_side=400)
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG") for p in pngs)


@pytest.mark.parametrize(("data", "name", "said"), [
    (media_files.encrypted_pdf("hidden"), "locked.pdf", "protected with a password"),
    (b"%PDF-1.4\ngarbage", "broken.pdf", "damaged"),
    (b"PK\x03\x04garbage", "broken.docx", "damaged"),
    (b"\x00\x01binary", "tool.exe", "I read PDF, Word"),
])
def test_unreadable_documents_say_why(data: bytes, name: str, said: str) -> None:
    with pytest.raises(DocumentError) as caught:
        extract(data, name)
    assert said in caught.value.user_message and name in caught.value.user_message


def test_oversized_and_zip_bombs_are_refused_before_parsing() -> None:
    with pytest.raises(DocumentError) as caught:
        extract(b"x" * 200_000, "big.txt", max_bytes=100_000)
    assert caught.value.user_message == "big.txt is larger than 0.1 MB, so I did not read it."
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("word/document.xml", b"\x00" * (210 * 1024 * 1024))
    with pytest.raises(DocumentError) as caught:
        extract(bomb.getvalue(), "bomb.docx")
    assert "too large once unpacked" in caught.value.user_message
