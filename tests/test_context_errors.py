"""The last error as bounded text: the user's frames first, library frames shortened, the
failing cell's code and the values on the failing line."""

from __future__ import annotations

import json
import sys
import time

from aivvm_magic.context import describe_error


def raised(function, *args):
    try:
        function(*args)
    except Exception as exc:  # noqa: BLE001 - the exception is the subject
        return exc
    raise AssertionError("nothing was raised")


def divide(a, b):
    return a / b


def parse_deep(depth, text):
    if depth:
        return parse_deep(depth - 1, text)
    return json.loads(text)


# -- the error as text --------------------------------------------------------------------------


def test_the_error_reads_as_a_traceback_with_the_values_on_the_failing_line():
    exc = raised(divide, 1, 0)
    text = describe_error(exc, 2_000)
    assert text.startswith("ZeroDivisionError: division by zero\n\nTraceback")
    assert 'test_context_errors.py", line ' in text and "in divide\n    return a / b" in text
    assert text.endswith(
        'Values on the failing line (File "tests/test_context_errors.py", '
        f"line {divide.__code__.co_firstlineno + 1}):\n  a = 1\n  b = 0"
    )


def test_library_frames_show_from_the_package_down():
    exc = raised(json.loads, "{bad")
    text = describe_error(exc, 2_000)
    assert text.startswith("json.decoder.JSONDecodeError: Expecting property name")
    assert 'File "json/decoder.py", line' in text
    assert sys.prefix not in text and sys.base_prefix not in text


def test_the_user_s_frames_are_kept_first_when_the_budget_is_small():
    exc = raised(parse_deep, 30, "{bad")
    text = describe_error(exc, 900)
    assert len(text) <= 900
    frames = [line for line in text.splitlines() if line.startswith("  File ")]
    # The outermost and innermost of the user's frames, then where the error was raised.
    assert "in raised" in frames[0]
    assert "in parse_deep" in frames[1] and "json/decoder.py" in frames[-1]
    assert "frames left out" in text
    assert text.count("in parse_deep") < 31


def test_a_huge_message_is_cut_in_bounded_time():
    exc = ValueError("y" * 10_000_000)
    started = time.perf_counter()
    text = describe_error(exc, 4_000)
    assert time.perf_counter() - started < 0.5
    assert len(text) <= 4_000 and "characters left out" in text


def test_a_syntax_error_names_its_cell_and_points_at_the_spot():
    exc = raised(compile, "x = (1 +\n", "<cell-7>", "exec")
    text = describe_error(exc, 1_000, cell_label=lambda f: "In[7]" if f == "<cell-7>" else None)
    # Its traceback is the compiler's, not the user's: the error says all there is.
    assert text == "Cell In[7], line 1\n    x = (1 +\n        ^\nSyntaxError: '(' was never closed"


def test_a_chained_error_names_what_it_was_raised_from():
    def lookup():
        try:
            {}["missing"]
        except KeyError as exc:
            raise RuntimeError("no such setting") from exc

    text = describe_error(raised(lookup), 2_000)
    assert text.startswith("RuntimeError: no such setting\nIt was raised from: KeyError: 'missing'")


def test_the_failing_cell_s_code_goes_with_the_error_cut_around_the_failing_line():
    code = "\n".join(f"step_{i} = {i}" for i in range(2_000)) + "\nboom()"
    exc = raised(divide, 1, 0)
    text = describe_error(exc, 1_200, code=code, code_label="In[4]")
    assert len(text) <= 1_200
    assert "The cell that failed (In[4]):\n```python\n" in text
    assert "lines left out" in text
