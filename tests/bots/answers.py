"""Shared by the answer-cap tests: a huge answer and what the database kept of it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

# Paragraphs, as a model writes them: 300 paragraphs of ~700 characters, about 210 KB.
HUGE = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 25 for i in range(300))


def stored_answers(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute(
            "SELECT text FROM messages WHERE role = 'assistant' ORDER BY id")]
