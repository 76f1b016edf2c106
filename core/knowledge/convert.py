"""Turn files and web pages (Markdown, text, HTML, PDF, DOCX) into titled Markdown.

Converters: pypdf for PDF, python-docx for DOCX, markdownify (with BeautifulSoup) for
HTML. A file that cannot be read raises ``DocumentError`` (an ``InputError``) with one line
fit to print; the caller goes on with the other files.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from core.errors import InputError

__all__ = ["SUFFIXES", "Document", "DocumentError", "content_hash", "convert", "find_files"]

TEXT_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".pdf", ".docx"}


class DocumentError(InputError):
    """A document could not be read (encrypted or corrupt PDF, a binary file, …)."""

    kind = "bad_document"


@dataclass(frozen=True, slots=True)
class Document:
    """A source converted to Markdown, with the title people will see in citations."""

    source: str  # absolute path or URL
    title: str
    markdown: str


def content_hash(markdown: str) -> str:
    """What decides whether a document must be indexed again."""
    return hashlib.sha256(markdown.encode("utf-8")).hexdigest()


def find_files(root: Path) -> list[Path]:
    """The documents in a folder, recursively (hidden files and folders left out)."""
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).parts
        if any(part.startswith(".") for part in rel) or not path.is_file():
            continue
        if path.suffix.lower() in SUFFIXES:
            found.append(path)
    return found


def _first_heading(markdown: str) -> str:
    match = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.MULTILINE)
    return match.group(1).strip() if match else ""


def _stem(source: str) -> str:
    name = PurePosixPath(source.split("?", 1)[0].rstrip("/")).name
    return PurePosixPath(name).stem or source


def _text(data: bytes, source: str) -> str:
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{source}: a binary file, not a text document; not indexed")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError as err:
            raise DocumentError(f"{source}: not UTF-8 text; not indexed") from err


def _html(data: bytes, source: str) -> Document:
    from bs4 import BeautifulSoup
    from markdownify import markdownify

    soup = BeautifulSoup(data, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "nav", "header", "footer", "noscript", "template"]):
        tag.decompose()
    body = soup.body or soup
    markdown = markdownify(str(body), heading_style="ATX", strip=["img"])
    markdown = re.sub(r"\n{3,}", "\n\n", markdown).strip()
    return Document(source, title or _first_heading(markdown) or _stem(source), markdown)


def _pdf(data: bytes, source: str) -> Document:
    import logging

    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    # pypdf logs each oddity of a damaged file; the one line of DocumentError says enough.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{source}: an encrypted PDF (it needs a password); "
                                "not indexed")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        meta = reader.metadata
        title = str(meta.title).strip() if meta is not None and meta.title else ""
    except DocumentError:
        raise
    except FileNotDecryptedError as err:
        raise DocumentError(f"{source}: an encrypted PDF (it needs a password); "
                            "not indexed") from err
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        raise DocumentError(f"{source}: not a readable PDF ({type(err).__name__}); "
                            "not indexed") from err
    markdown = "\n\n".join(p for p in pages if p)
    if not markdown:
        raise DocumentError(f"{source}: the PDF has no text layer (scanned pages?); "
                            "not indexed")
    return Document(source, title or _stem(source), markdown)


def _docx(data: bytes, source: str) -> Document:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise DocumentError(f"{source}: not a readable DOCX file ({type(err).__name__}); "
                            "not indexed") from err
    lines: list[str] = []
    title = (document.core_properties.title or "").strip()
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        if style == "Title":
            title = title or text
            lines.append(f"# {text}")
        elif (level := re.fullmatch(r"Heading (\d)", style)) is not None:
            lines.append("#" * min(int(level.group(1)), 6) + f" {text}")
        else:
            lines.append(text)
    for table in document.tables:
        for row in table.rows:
            lines.append(" | ".join(cell.text.strip() for cell in row.cells))
    markdown = "\n\n".join(lines)
    if not markdown:
        raise DocumentError(f"{source}: the DOCX file has no text; not indexed")
    return Document(source, title or _first_heading(markdown) or _stem(source), markdown)


def convert(data: bytes, source: str, content_type: str = "") -> Document:
    """``data`` (from a file or a URL) as a ``Document``; ``DocumentError`` if unreadable."""
    suffix = PurePosixPath(source.split("?", 1)[0]).suffix.lower()
    ctype = content_type.split(";", 1)[0].strip().lower()
    if suffix == ".pdf" or ctype == "application/pdf" or data[:5] == b"%PDF-":
        return _pdf(data, source)
    if suffix == ".docx" or ctype.endswith("wordprocessingml.document"):
        return _docx(data, source)
    if suffix in HTML_SUFFIXES or ctype in ("text/html", "application/xhtml+xml"):
        return _html(data, source)
    if suffix in TEXT_SUFFIXES or ctype.startswith("text/") or not suffix:
        markdown = _text(data, source).strip()
        if not markdown:
            raise DocumentError(f"{source}: empty; not indexed")
        return Document(source, _first_heading(markdown) or _stem(source), markdown)
    raise DocumentError(f"{source}: {suffix} files are not supported (Markdown, text, HTML, "
                        "PDF and DOCX are); not indexed")
