"""The ``html``, ``math`` and ``json`` display formats, through a real ``InteractiveShell``.

The echo engine repeats the cell, so each cell below is the reply it gets; its final output is
taken as a kernel would publish it (``tests/outputkit.py``). ``tests/test_browser_formats.py``
shows the same outputs in JupyterLab.
"""

from __future__ import annotations

import pytest

from aivvm_magic.magics import magics_for
from aivvm_magic.rendering.formats import (
    NotJSON,
    math_source,
    parse_json_reply,
    render_format,
    unfenced,
)
from aivvm_magic.rendering.replies import live_reply_html
from tests.faultserver import Reply, openai_sse
from tests.htmlcheck import assert_safe
from tests.outputkit import final_output

XSS = (
    "<script>window.pwned=1</script><img src=x onerror=window.pwned=1>"
    '<a href="javascript:alert(1)">a</a><svg onload=alert(1)></svg>'
    '<iframe src="https://example.com"></iframe><p style="color:red" onclick="x()">kept</p>'
    '<a href="https://example.com/">fine</a><table><tr><td>cell</td></tr></table>'
)
WRAPPERS = frozenset({"div", "small"})


# -- json -----------------------------------------------------------------------------------


def test_a_json_reply_is_parsed_into_the_variable_and_shown_pretty(ip):
    reply = '```json\n{"name": "Ada", "langs": ["en", "fr"], "born": 1815, "ok": true}\n```'
    output, error = final_output(ip, "-f json -o aivvm_test_data", reply)
    assert error is None
    value = {"name": "Ada", "langs": ["en", "fr"], "born": 1815, "ok": True}
    assert ip.user_ns["aivvm_test_data"] == value
    assert output.data["text/plain"].startswith('{\n  "name": "Ada",\n  "langs": [\n')
    html = output.data["text/html"]
    assert '<code class="language-json">' in html and "&quot;born&quot;: 1815" in html
    assert output.metadata["aivvm"]["format"] == "json"
    assert_safe(html, WRAPPERS)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("Sure! Here it is: {}", "Expecting value at line 1, column 1"),
        ('{"a": 1,}', "Expecting property name enclosed in double quotes at line 1"),
        ('{"x": NaN}', "NaN is not a JSON value"),
        ('Here you go:\n```json\n{"a": 1}\n```', "Expecting value"),
        ("```json\n{}\n```\n```json\n[]\n```", "Expecting value"),
    ],
)
def test_a_reply_that_is_not_json_is_an_error_and_keeps_its_text(ip, reply, why):
    ip.user_ns.pop("aivvm_test_value", None)
    output, error = final_output(ip, "-f json -o aivvm_test_value", reply)
    message = str(error)
    assert message.startswith("the reply is not JSON: ") and why in message
    assert message.endswith("; aivvm_test_value was not set") and "\n" not in message
    assert "aivvm_test_value" not in ip.user_ns
    # The text is shown as it came, the note in the status line, and the turn is kept.
    assert output.data["text/plain"] == reply
    assert "the reply is not JSON" in output.data["text/html"]
    turn = magics_for(ip).chats.get("default").last_turn
    assert turn.reply == reply and turn.complete


def test_json_in_a_terminal_streams_the_text_then_stores_the_value(ip, capsys):
    ip.run_cell_magic("aivvm", "-f json -o aivvm_test_list", "[1, 2, 3]")
    assert capsys.readouterr().out == "[1, 2, 3]\n"
    assert ip.user_ns["aivvm_test_list"] == [1, 2, 3]


def test_a_partial_json_reply_sets_nothing_and_says_why(ip, fault):
    fault.enqueue(Reply(chunks=[openai_sse('{"a": ', "1}", done=False)]))
    ip.user_ns.pop("aivvm_test_cut", None)
    _, error = final_output(
        ip, f"-p openai -m m --base-url {fault.url} -f json -o aivvm_test_cut", "x"
    )
    assert "without [DONE]" in str(error) and "aivvm_test_cut" not in ip.user_ns


def test_parse_json_reply_reads_one_value_or_one_fenced_block():
    assert parse_json_reply(" [1] \n") == [1]
    assert parse_json_reply('~~~\n{"a": null}\n~~~\n') == {"a": None}
    assert parse_json_reply('```JSON\n"text with ``` inside"\n```') == "text with ``` inside"
    with pytest.raises(NotJSON, match="it is empty"):
        parse_json_reply("```json\n\n```")
    with pytest.raises(NotJSON, match="nested too deeply"):
        parse_json_reply("[" * 100_000 + "]" * 100_000)


# -- html -----------------------------------------------------------------------------------


def test_an_html_reply_is_sanitised_like_every_other(ip):
    output, error = final_output(ip, "-f html", XSS)
    assert error is None and output.data["text/plain"] == XSS
    parsed = assert_safe(output.data["text/html"], WRAPPERS)
    assert {"p", "a", "table", "td"} <= parsed.tags
    assert "kept" in parsed.text and "cell" in parsed.text
    assert [a.attrs.get("href") for a in parsed.find("a")] == [None, "https://example.com/"]


def test_a_streaming_html_reply_is_safe_at_every_length():
    for end in range(len(XSS) + 1):
        assert_safe(live_reply_html(XSS[:end], "html", None))


# -- math -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "latex"),
    [
        (r"e^{i\pi} + 1 = 0", r"$$e^{i\pi} + 1 = 0$$"),
        ("```latex\n\\int_0^1 x\\,dx\n```", r"$$\int_0^1 x\,dx$$"),
        (r"The roots are $x_1$ and \(x_2\).", r"The roots are $x_1$ and \(x_2\)."),
        ("\\begin{align} a &= b \\end{align}", "\\begin{align} a &= b \\end{align}"),
    ],
)
def test_math_is_latex_for_the_frontend_with_delimiters(reply, latex):
    assert math_source(reply) == latex


def test_a_math_reply_carries_latex_and_escaped_html(ip):
    reply = r"a < b \implies \frac{1}{a} > \frac{1}{b}"
    output, error = final_output(ip, "-f math", reply)
    assert error is None
    assert output.data["text/latex"] == f"$${reply}$$"
    assert output.data["text/plain"] == reply
    html = output.data["text/html"]
    assert r'<p class="aivvm-math">$$a &lt; b \implies \frac{1}{a} &gt; \frac{1}{b}$$</p>' in html
    assert_safe(html, WRAPPERS)


def test_script_in_a_math_reply_stays_text():
    html = render_format("<script>alert(1)</script> $x$", "math")
    assert_safe(html)
    assert "&lt;script&gt;" in html


# -- the others are unchanged ---------------------------------------------------------------


def test_markdown_code_and_text_carry_no_extra_types(ip):
    for fmt in ("markdown", "code", "text"):
        output, _ = final_output(ip, f"-f {fmt}", "plain $x$")
        assert set(output.data) == {"text/plain", "text/html"}, fmt
        assert render_format("plain", fmt) is None


def test_unfenced_takes_off_only_a_fence_around_the_whole_text():
    assert unfenced("```\nbody\n```") == "body"
    assert unfenced("  ```py\nbody\n```  \n") == "body"
    assert unfenced("intro\n```\nbody\n```") == "intro\n```\nbody\n```"
    assert unfenced("````\n```\n````") == "```"  # a longer fence holds a shorter one
    assert unfenced("```\na\n```\n```\nb\n```") == "```\na\n```\n```\nb\n```"
