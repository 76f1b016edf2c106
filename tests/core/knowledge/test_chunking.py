"""Splitting Markdown into passages by headings, with overlap."""

from __future__ import annotations

import itertools

from core.knowledge.chunking import split_markdown


def test_sections_carry_their_heading_path() -> None:
    chunks = split_markdown("intro line\n\n# Guide\n\ntext a\n\n## Setup\n\ntext b\n\n"
                            "### Linux\n\ntext c\n\n## Use\n\ntext d\n\n# Other\n\ntext e")
    assert [(c.heading, c.text) for c in chunks] == [
        ("", "intro line"), ("Guide", "text a"), ("Guide > Setup", "text b"),
        ("Guide > Setup > Linux", "text c"), ("Guide > Use", "text d"), ("Other", "text e"),
    ]


def test_a_heading_inside_a_code_fence_is_text() -> None:
    [chunk] = split_markdown("# Shell\n\n```sh\n# not a heading\nls\n```\n")
    assert chunk.heading == "Shell" and "# not a heading" in chunk.text


def test_long_sections_are_split_with_overlap() -> None:
    paras = [f"Paragraph {i} " + "word " * 60 for i in range(10)]
    chunks = split_markdown("# Long\n\n" + "\n\n".join(paras), size=800, overlap=100)
    assert len(chunks) > 1
    assert all(len(c.text) <= 800 + 100 for c in chunks)
    assert all(c.heading == "Long" for c in chunks)
    for before, after in itertools.pairwise(chunks):
        assert after.text.split("\n\n")[0] in before.text  # starts with the end of the last
    joined = " ".join(c.text for c in chunks)
    assert all(f"Paragraph {i} " in joined for i in range(10))


def test_one_huge_paragraph_is_cut_at_sentences() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = split_markdown(text, size=500, overlap=0)
    assert all(len(c.text) <= 500 for c in chunks)
    assert chunks[0].text.endswith(".")
