"""The live markdown view re-renders only the unfinished block, and still matches a whole render.

``MarkdownStream`` keeps the HTML of blocks it considers final. The claim it rests on (text
appended to markdown changes only the last top-level block, unless a link reference definition
is involved) is checked here over generated documents built from the constructs where block
boundaries are subtle: lazy continuation, setext headings, loose and tight lists, indented
code, unclosed fences, tables that interrupt paragraphs, CR and CRLF line breaks.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aivvm_magic.rendering.incremental import MarkdownStream
from aivvm_magic.rendering.markdown import render_markdown

LINES = [
    "",
    "",
    "plain words here",
    "more *emphasis* and `code` and **strong**",
    "# Heading",
    "## Second",
    "===",
    "---",
    "***",
    "- item",
    "* star item",
    "+ plus",
    "-",
    "- ",
    "1. first",
    "2) second",
    "10. tenth",
    "  - nested",
    "    indented code",
    "\tTabbed",
    "   three spaces",
    "> quote",
    ">",
    "> - quoted item",
    "```",
    "```python",
    "~~~",
    "| a | b |",
    "|---|:-:|",
    "| 1 | 2 |",
    "a | b",
    "[link](https://example.com) and ![img](x.png)",
    "a [reference][ref] link",
    "[ref]: https://example.com/ref",
    "<div>raw html</div>",
    "line with trailing spaces  ",
    "text ending in backslash\\",
    "~~strike~~ and _under_",
    "- [ ] task",
    "    ",
]

lines = st.lists(st.sampled_from(LINES), min_size=1, max_size=30)
newlines = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r"])


@st.composite
def documents(draw: st.DrawFn) -> str:
    parts = draw(lines)
    text = ""
    for part in parts:
        text += part + draw(newlines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    return text


@st.composite
def chunked(draw: st.DrawFn) -> tuple[str, list[int]]:
    text = draw(documents())
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text))), max_size=25))))
    return text, [c for c in cuts if c < len(text)] + [len(text)]


@settings(deadline=None, max_examples=400)
@given(chunked())
# A paragraph after a list that grows into one of its items makes the whole list loose; a
# line after a quote that grows into "--" is a lazy continuation of the quote.
@example(("1. first\n\n1. first\n", [11, 19]))
@example(("- \n> - quoted item\n---\n", [20, 21, 23]))
def test_live_view_and_final_html_match_a_whole_render(case: tuple[str, list[int]]) -> None:
    text, cuts = case
    stream = MarkdownStream()
    for cut in cuts:
        prefix = text[:cut]
        assert stream.live(prefix) == render_markdown(prefix), repr(prefix)
    assert stream.html(text) == render_markdown(text), repr(text)


@settings(deadline=None, max_examples=200)
@given(chunked(), st.integers(8, 80))
def test_final_html_is_exact_when_long_blocks_were_shown_as_text(
    case: tuple[str, list[int]], limit: int
) -> None:
    text, cuts = case
    stream = MarkdownStream(open_limit=limit)
    for cut in cuts:
        stream.live(text[:cut])
    assert stream.html(text) == render_markdown(text), repr(text)


def test_a_reference_definition_anywhere_renders_the_whole_text() -> None:
    text = "See [the docs][d].\n\nMore text.\n\n[d]: https://example.com/docs\n"
    stream = MarkdownStream()
    for cut in range(1, len(text) + 1):
        assert stream.live(text[:cut]) == render_markdown(text[:cut])
    final = stream.html(text)
    assert final == render_markdown(text)
    assert 'href="https://example.com/docs"' in final


def test_final_blocks_are_not_parsed_again() -> None:
    paragraphs = [f"Paragraph {n} with *some* `markdown` in it." for n in range(2000)]
    text = "\n\n".join(paragraphs)
    stream = MarkdownStream()
    step = 500
    for cut in range(step, len(text), step):
        stream.live(text[:cut])
        # Everything but the paragraph being written and the one before it is final and kept.
        assert cut - stream.frozen_chars < 3 * len(paragraphs[-1])
    assert stream.html(text) == render_markdown(text)


def test_a_long_open_block_is_shown_as_plain_text_and_parsed_rarely() -> None:
    block = "word " * 40_000  # one 200 KB paragraph
    stream = MarkdownStream(open_limit=16_000)
    parses = 0
    original = stream._advance

    def counting(text: str):  # type: ignore[no-untyped-def]
        nonlocal parses
        result = original(text)
        parses += result is not None
        return result

    stream._advance = counting  # type: ignore[method-assign]
    views = [stream.live(block[:cut]) for cut in range(1_000, len(block), 1_000)]
    # Parsed at every update up to the limit, then only each time the block doubles.
    assert parses <= 16 + 5, parses
    assert "characters above" in views[-1] and "aivvm-text" in views[-1]
    assert stream.html(block) == render_markdown(block)


def test_text_must_only_grow() -> None:
    stream = MarkdownStream()
    stream.live("hello world")
    with pytest.raises(ValueError, match="only grow"):
        stream.live("hello")


def test_a_table_header_waits_for_its_delimiter_row_in_the_live_view() -> None:
    from aivvm_magic.rendering.replies import live_reply_html

    text = "Intro.\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n| 3 | 4 |\n\nAfter the table."
    stream = MarkdownStream()
    for cut in range(1, len(text) + 1):
        shown = live_reply_html(text[:cut], "markdown", stream)
        # Never a paragraph of pipes: the rows show once the table can be drawn.
        assert "<p>|" not in shown, repr(text[:cut])
        if cut >= text.index("--:|") + 4:
            assert "<table>" in shown
    assert stream.html(text) == render_markdown(text)
