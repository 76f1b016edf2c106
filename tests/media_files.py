"""Small real media written by the tests: a hand-written PDF, DOCX, PPTX, XLSX, a voice
note and a video clip (PyAV)."""

from __future__ import annotations

import io


def pdf(pages: list[str] | None = None, *, scanned: int = 0) -> bytes:
    """A PDF with one page per text in ``pages`` (Helvetica), or ``scanned`` pages that
    only draw (no text layer), xref offsets computed."""
    streams: list[bytes] = []
    for text in pages or []:
        safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        streams.append(f"BT /F1 14 Tf 72 720 Td ({safe}) Tj ET".encode("latin-1"))
    for i in range(scanned):
        streams.append(f"0.2 0.4 0.{i % 10} rg 72 400 300 200 re f".encode())
    return pdf_of_pages(streams)


def pdf_of_pages(streams: list[bytes]) -> bytes:
    """A PDF with one page per content stream (font /F1: Helvetica), xref offsets computed."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids: list[str] = []
    font = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for stream in streams:
        content = len(objects) + 1
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        page = len(objects) + 1
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents "
                       f"{content} 0 R /Resources << /Font << /F1 {font} 0 R >> >> >>"
                       .encode())
        kids.append(f"{page} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, xref))
    return out.getvalue()


def encrypted_pdf(text: str) -> bytes:
    """A PDF that needs a user password (written by pypdf)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf([text]))))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx(*paragraphs: str) -> bytes:
    """A Word document with these paragraphs."""
    import docx as python_docx

    document = python_docx.Document()
    for text in paragraphs:
        document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pptx(*slides: str) -> bytes:
    """A PowerPoint deck, one titled slide per text."""
    from pptx import Presentation

    deck = Presentation()
    for text in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = text
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def xlsx(rows: list[list[object]]) -> bytes:
    """An Excel workbook with one sheet of these rows."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def voice_note(seconds: float = 1.0, *, container: str = "ogg", codec: str = "libopus",
               rate: int = 48_000) -> bytes:
    """A real recording (a 440 Hz tone), written with PyAV: OGG/Opus like Telegram's."""
    import math

    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as box:
        stream = box.add_stream(codec, rate=rate)
        stream.layout = "mono"
        samples = int(seconds * rate)
        t = np.arange(samples) / rate
        tone = (0.3 * np.sin(2 * math.pi * 440 * t) * 32767).astype(np.int16)
        step = 960
        for start in range(0, samples, step):
            chunk = tone[start:start + step].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return out.getvalue()


COLOURS = ((230, 20, 20), (20, 160, 40), (30, 40, 220))  # red, green, blue


def video_clip(seconds: float = 3.0, *, fps: int = 10, size: tuple[int, int] = (96, 64),
               colours: tuple[tuple[int, int, int], ...] = COLOURS, container: str = "mp4",
               codec: str = "libx264", keyframe_every: int = 0) -> bytes:
    """A real video written with PyAV: ``seconds`` long, the screen one colour after the
    other (each an equal stretch of the clip), H.264 in MP4 by default."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as box:
        stream = box.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if keyframe_every:
            stream.codec_context.gop_size = keyframe_every
        total = max(int(seconds * fps), 1)
        for i in range(total):
            pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            pixels[:, :] = colours[i * len(colours) // total]
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    return out.getvalue()
