"""``errors.one_line``: the one short line every view shows for a failure."""

from __future__ import annotations

from aivvm_magic.errors import LINE_LIMIT, one_line
from aivvm_magic.providers import APIError, IncompleteReply


def test_one_line_of_each_kind_of_failure():
    assert one_line(None) == ""
    assert one_line(KeyboardInterrupt()) == "interrupted"
    assert one_line(IncompleteReply("stopped", "abc")) == "stopped"
    assert one_line(IncompleteReply("connection lost", "abc")) == "reply cut short: connection lost"
    assert one_line(APIError(500, "Error", "http://x/api/chat")) == (
        "HTTP 500 from http://x/api/chat: Error"
    )
    assert one_line(ValueError()) == "ValueError"


def test_one_line_is_one_short_line():
    text = one_line(RuntimeError("first line\n  second\tline  " + "x" * 1000))
    assert "\n" not in text and "  " not in text and text.startswith("first line second line")
    assert len(text) == LINE_LIMIT and text.endswith("…")
