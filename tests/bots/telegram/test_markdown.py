"""Markdown → Telegram HTML, and splitting it into messages; checked with the fake's parser."""

from __future__ import annotations

import re

import pytest

from bots.telegram.markdown import markdown_to_html, to_plain, visible_length
from bots.telegram.split import split_html
from tests.bots.telegram.fake_bot_api import EntityError, parse_html


def valid(html: str) -> str:
    """The visible text, asserting Telegram would accept the HTML."""
    return parse_html(html)


@pytest.mark.parametrize(("md", "html"), [
    ("**bold** and *it* and ~~gone~~", "<b>bold</b> and <i>it</i> and <s>gone</s>"),
    ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
    ("`x<y>` done", "<code>x&lt;y&gt;</code> done"),
    ("# Title\n\ntext", "<b>Title</b>\n\ntext"),
    ("- one\n- two", "• one\n• two"),
    ("3. three\n4. four", "3. three\n4. four"),
    ("- a\n  - b", "• a\n  • b"),
    ("> quoted\n> > deeper", "<blockquote>quoted\n\ndeeper</blockquote>"),
    ("```python\nif a < b:\n    pass\n```",
     '<pre><code class="language-python">if a &lt; b:\n    pass</code></pre>'),
    ("```\nplain\n```", "<pre>plain</pre>"),
    ('[site](https://x.org/?a=1&b="2")', '<a href="https://x.org/?a=1&amp;b=%222%22">site</a>'),
    ("[bad](javascript:alert(1))", "[bad](javascript:alert(1))"),
    ("<b>raw html</b> stays text", "&lt;b&gt;raw html&lt;/b&gt; stays text"),
    ("line one\nline two", "line one\nline two"),
    ("---", "——————"),
])
def test_converts(md: str, html: str) -> None:
    assert markdown_to_html(md) == html
    valid(html)


def test_table_becomes_monospaced() -> None:
    html = markdown_to_html("| name | n |\n|---|---|\n| apple | 3 |\n| kiwi | 12 |")
    assert html.startswith("<pre>") and "apple | 3" in html
    assert valid(html).splitlines()[1].startswith("------")


@pytest.mark.parametrize("partial", [
    "**bold but not closed", "_it", "`code", "```python\ndef f(x):\n    return x <",
    "[link](https://x.org", "[link", "# ", "**", "> ", "- ", "1. ", "| a | b |\n|--",
    "some text with a lone & and <", "```", "~~strike", "***both", "<", "&amp",
    "Answer:\n\n```js\nconst a = `tpl ${x}`", "**bold _nested* x**",
])
def test_partial_markdown_is_always_valid(partial: str) -> None:
    html = markdown_to_html(partial)
    valid(html)


def test_every_prefix_of_a_stream_is_valid() -> None:
    answer = ("# Plan\n\nFirst **do this** and _that_, see [docs](https://e.org/a?b=c&d).\n\n"
              "```python\nfor i in range(3):\n    print(i < 2 and '&')\n```\n\n"
              "| k | v |\n|---|---|\n| a | <1> |\n\n> note: `x` & ~~y~~\n\n1. one\n2. two\n")
    for end in range(len(answer) + 1):
        valid(markdown_to_html(answer[:end]))


def test_plain_text_and_length() -> None:
    assert to_plain("<b>a</b> &lt;&amp;&gt; <a href=\"https://x\">b</a>") == "a <&> b"
    assert visible_length("ab") == 2 and visible_length("😀") == 2


def test_fake_parser_rejects_what_telegram_rejects() -> None:
    for bad in ("<b>open", "a < b", "<div>x</div>", "<b><i>x</b></i>", "&nbsp;", "x & y",
                "<pre><b>x</b></pre>"):
        with pytest.raises(EntityError):
            parse_html(bad)


# ---------------------------------------------------------------- splitting

def test_short_text_is_one_part() -> None:
    assert split_html("<b>hi</b>") == ["<b>hi</b>"]
    assert split_html("") == []


def test_split_prefers_paragraphs_and_loses_nothing() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 40 for i in range(60)]
    html = markdown_to_html("\n\n".join(paragraphs))
    parts = split_html(html, 1000)
    assert len(parts) > 1
    for part in parts:
        assert len(valid(part)) <= 1000
        assert valid(part).startswith("Paragraph")  # cut between paragraphs
    words = re.findall(r"\S+", " ".join(valid(p) for p in parts))
    assert words == re.findall(r"\S+", valid(html))


def test_split_keeps_code_blocks_whole_on_each_side() -> None:
    code = "\n".join(f"x_{i} = {i} < {i + 1} & True" for i in range(400))
    html = markdown_to_html(f"Intro **bold**\n\n```python\n{code}\n```\n\nOutro")
    parts = split_html(html)
    assert len(parts) >= 3
    for part in parts[1:-1]:
        assert part.startswith('<pre><code class="language-python">')
        assert part.endswith("</code></pre>")
    lines = [line for p in parts for line in valid(p).splitlines()]
    for i in range(400):
        assert f"x_{i} = {i} < {i + 1} & True" in lines


def test_split_closes_and_reopens_inline_tags() -> None:
    html = "<b>" + "bold words " * 50 + "</b>"
    parts = split_html(html, 100)
    assert all(p.startswith("<b>") and p.endswith("</b>") for p in parts)
    assert " ".join(valid(p) for p in parts).split() == ["bold", "words"] * 50


def test_split_without_spaces_cuts_hard_and_keeps_entities_whole() -> None:
    html = "&amp;" * 250 + "x" * 250
    parts = split_html(html, 100)
    assert all(len(valid(p)) <= 100 for p in parts)
    assert "".join(valid(p) for p in parts) == "&" * 250 + "x" * 250


def test_split_counts_utf16_units() -> None:
    parts = split_html("😀" * 3000)
    assert len(parts) == 2
    assert all(visible_length(valid(p)) <= 4096 for p in parts)
    assert "".join(parts) == "😀" * 3000
