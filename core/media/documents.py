"""Documents (PDF, DOCX, PPTX, XLSX, TXT, Markdown, CSV, HTML) converted to plain text.

The type is recognised from the bytes (a ZIP's parts tell DOCX/PPTX/XLSX apart), the name
only tells text formats apart. ZIP containers are checked before they are opened (total
unpacked size), so a zip bomb is refused rather than unpacked. Every failure is a
``DocumentError`` whose message is fit for the person: encrypted, corrupt, too large or of
a type we do not read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser

from core.errors import InputError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "DocumentError",
    "Extracted",
    "document_kind",
    "extract",
    "looks_like_document",
    "render_pages",
]

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
_MAX_UNPACKED = 200 * 1024 * 1024  # the parts of a DOCX/PPTX/XLSX together
_MAX_CHARS = 2_000_000  # extraction stops here; the context takes far less anyway
_TEXT_EXT = {".txt": "text", ".md": "text", ".markdown": "text", ".csv": "csv",
             ".html": "html", ".htm": "html", ".log": "text", ".json": "text"}
_TEXT_MIMES = {"text/plain": "text", "text/markdown": "text", "text/csv": "csv",
               "text/html": "html"}
LABELS = {"pdf": "PDF", "docx": "Word document", "pptx": "PowerPoint deck",
          "xlsx": "Excel workbook", "text": "text file", "csv": "CSV file", "html": "web page"}


class DocumentError(InputError):
    """A posted document cannot be read; the message says why, for the person."""

    kind = "bad_document"
    default_user_message = "I couldn't read that document."


@dataclass(frozen=True, slots=True)
class Extracted:
    """A document's text (empty for a scanned PDF), what it was and how many pages."""

    sha256: str
    name: str
    kind: str
    size: int
    pages: int
    text: str

    @property
    def scanned(self) -> bool:
        """A PDF with pages but no text layer (to be read as page images)."""
        return self.kind == "pdf" and self.pages > 0 and not self.text.strip()


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size < 10 * 1024 * 1024 else \
        f"{size // (1024 * 1024)} MB"


def _ext(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


_OFFICE_MIMES = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
_OFFICE_EXT = {".pdf": "pdf", ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx"}


def looks_like_document(name: str, mime: str = "") -> bool:
    """Whether a file of this name or declared type is one we read (before download)."""
    mime = mime.split(";")[0].strip().lower()
    ext = _ext(name)
    return mime in _OFFICE_MIMES or mime in _TEXT_MIMES or ext in _OFFICE_EXT \
        or ext in _TEXT_EXT


def document_kind(data: bytes, name: str, mime: str = "") -> str | None:
    """The document type of these bytes (``pdf``, ``docx``, …), or None if not one."""
    if data.startswith(b"%PDF-"):
        return "pdf"
    if data.startswith(b"PK\x03\x04"):
        ext = _ext(name)
        return {".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx"}.get(ext) or _zip_kind(data)
    kind = _TEXT_EXT.get(_ext(name)) or _TEXT_MIMES.get(mime.split(";")[0].strip().lower())
    if kind is not None and b"\x00" not in data[:4096]:
        return kind
    return None


def _zip_kind(data: bytes) -> str | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    for part, kind in (("word/document.xml", "docx"), ("ppt/presentation.xml", "pptx"),
                       ("xl/workbook.xml", "xlsx")):
        if part in names:
            return kind
    return None


def extract(data: bytes, name: str, mime: str = "", *,
            max_bytes: int = MAX_DOCUMENT_BYTES) -> Extracted:
    """Read a document's text; ``DocumentError`` says why it cannot be read."""
    label = name or "the document"
    if len(data) > max_bytes:
        raise DocumentError(f"document is {len(data)} bytes, limit {max_bytes}",
                            user_message=f"{label} is larger than {_mb(max_bytes)}, so I "
                            "did not read it.")
    kind = document_kind(data, name, mime)
    if kind is None:
        raise DocumentError("not a document type we read",
                            user_message=f"I can't read {label}: I read PDF, Word, "
                            "PowerPoint, Excel, text, Markdown, CSV and HTML files.")
    sha = hashlib.sha256(data).hexdigest()
    try:
        if kind == "pdf":
            pages, text = _pdf(data, label)
        elif kind in ("docx", "pptx", "xlsx"):
            _check_zip(data, label)
            pages, text = {"docx": _docx, "pptx": _pptx, "xlsx": _xlsx}[kind](data)
        else:
            pages, text = 0, _text(data, kind)
    except DocumentError:
        raise
    except Exception as err:  # parsers raise all sorts on damaged files
        raise DocumentError(f"{kind} parser failed: {type(err).__name__}",
                            user_message=f"{label} seems to be damaged; I couldn't read "
                            "it.") from err
    return Extracted(sha, name, kind, len(data), pages, _tidy(text)[:_MAX_CHARS])


def _tidy(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _check_zip(data: bytes, label: str) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        unpacked = sum(info.file_size for info in z.infolist())
        if any(info.flag_bits & 0x1 for info in z.infolist()):
            raise DocumentError("encrypted zip", user_message=f"{label} is protected with "
                                "a password, so I couldn't read it.")
    if unpacked > _MAX_UNPACKED:
        raise DocumentError(f"unpacks to {unpacked} bytes",
                            user_message=f"{label} is too large once unpacked, so I did "
                            "not read it.")


def _pdf(data: bytes, label: str) -> tuple[int, str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    if reader.is_encrypted:
        try:
            opened = reader.decrypt("") != 0  # an owner password only: still readable
        except Exception:  # an unsupported cipher
            opened = False
        if not opened:
            raise DocumentError("encrypted pdf", user_message=f"{label} is protected with "
                                "a password, so I couldn't read it.")
    parts: list[str] = []
    size = 0
    for number, page in enumerate(reader.pages, 1):
        text = (page.extract_text() or "").strip()
        if text:
            parts.append(f"[page {number}]\n{text}")
            size += len(text)
        if size > _MAX_CHARS:
            break
    return len(reader.pages), "\n\n".join(parts)


def _docx(data: bytes) -> tuple[int, str]:
    import docx

    document = docx.Document(io.BytesIO(data))
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    return 0, "\n".join(lines)


def _pptx(data: bytes) -> tuple[int, str]:
    from pptx import Presentation

    deck = Presentation(io.BytesIO(data))
    slides: list[str] = []
    for number, slide in enumerate(deck.slides, 1):
        texts = [shape.text_frame.text for shape in slide.shapes
                 if shape.has_text_frame and shape.text_frame.text.strip()]
        slides.append(f"[slide {number}]\n" + "\n".join(texts))
    return len(slides), "\n\n".join(slides)


def _xlsx(data: bytes) -> tuple[int, str]:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    try:
        sheets: list[str] = []
        size = 0
        for sheet in book.worksheets:
            rows = [f"[sheet {sheet.title}]"]
            for row in sheet.iter_rows(values_only=True):
                if any(v is not None for v in row):
                    line = " | ".join("" if v is None else str(v) for v in row)
                    rows.append(line)
                    size += len(line)
                if size > _MAX_CHARS:
                    break
            sheets.append("\n".join(rows))
        return len(book.worksheets), "\n\n".join(sheets)
    finally:
        book.close()


class _HTMLText(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
              "article", "table", "ul", "ol", "pre", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") \
            else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("cp1252", errors="replace")


def _text(data: bytes, kind: str) -> str:
    text = _decode(data)
    if kind == "html":
        parser = _HTMLText()
        parser.feed(text)
        parser.close()
        lines = (re.sub(r"[ \t]+", " ", line).strip() for line in "".join(parser.parts)
                 .splitlines())
        return "\n".join(line for line in lines if line)
    if kind == "csv":
        rows = csv.reader(io.StringIO(text))
        return "\n".join(" | ".join(row) for row in rows)
    return text


def render_pages(data: bytes, *, first: int = 0, count: int = 4,
                 max_side: int = 1600) -> list[bytes]:
    """PNG images of ``count`` pages of a PDF from page ``first`` (0-based), each scaled so
    its long side is at most ``max_side`` pixels (for a scanned PDF's vision model)."""
    import pypdfium2 as pdfium

    images: list[bytes] = []
    pdf = pdfium.PdfDocument(data)
    try:
        for index in range(first, min(first + count, len(pdf))):
            page = pdf[index]
            try:
                width, height = page.get_size()
                scale = min(max_side / max(width, height, 1.0), 200 / 72)
                bitmap = page.render(scale=scale)
                pil = bitmap.to_pil()
                out = io.BytesIO()
                pil.save(out, format="PNG")
                images.append(out.getvalue())
            finally:
                page.close()
    finally:
        pdf.close()
    return images
