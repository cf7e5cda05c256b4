"""A referenced value as bounded text: ``{df}``, ``{arr}``, a long string or list, never a
10 MB repr; pandas and numpy used only when the notebook imported them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import OrderedDict
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from traitlets import TraitError

from aivvm_magic.context import cut, describe, excerpt_lines
from aivvm_magic.context.values import describe_safely
from aivvm_magic.magics import magics_for

ROOT = Path(__file__).resolve().parents[1]

# -- plain Python -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["tides", 42, 2.5, None, True, [1, "a", None], {"a": (1,)}, {1, 2}, frozenset({3}), (), b"x"],
)
def test_a_small_value_reads_as_its_str(value):
    assert describe(value) == str(value)


small = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        | st.frozensets(st.integers(), max_size=3)
    ),
    max_leaves=12,
)


@given(value=small)
def test_containers_that_fit_read_exactly_as_repr(value):
    assert describe(value, 10_000) == str(value)


@given(value=small, limit=st.integers(min_value=1, max_value=80))
def test_nothing_is_ever_longer_than_its_budget(value, limit):
    assert len(describe(value, limit)) <= limit


def test_a_recursive_list_reads_as_repr_does():
    loop: list = [1]
    loop.append(loop)
    assert describe(loop) == repr(loop)


def test_a_long_string_keeps_its_start_and_end_around_a_marker():
    text = "START " + "middle " * 10_000 + "END"
    got = describe(text, 500)
    assert len(got) <= 500
    assert got.startswith("START middle") and got.endswith("middle END")
    assert "characters left out" in got and f"of {len(text):,} characters" in got


def test_a_long_list_says_how_many_items_it_left_out():
    got = describe(list(range(100_000)), 200)
    assert got.startswith("[0, 1, 2, ") and got.endswith("more items]")
    assert len(got) <= 200
    shown = got.count(", ")
    assert f"{100_000 - shown:,} more items" in got


def test_a_long_dict_and_long_bytes_are_cut_with_a_marker():
    got = describe({i: "v" * 50 for i in range(10_000)}, 300)
    assert got.startswith("{0: 'vvv") and got.endswith("more items}") and len(got) <= 300
    raw = describe(b"\x00" * 1_000_000, 120)
    assert raw.startswith("b'\\x00") and raw.endswith("1,000,000 bytes in all")
    assert len(raw) <= 120


def test_other_objects_are_their_str_cut_to_the_budget():
    assert describe(OrderedDict(a=1)) == str(OrderedDict(a=1))

    class Chatty:
        def __str__(self) -> str:
            return "word " * 10_000

    got = describe(Chatty(), 100)
    assert len(got) <= 100 and "left out" in got


def test_a_value_whose_str_fails_raises_or_reads_as_a_placeholder():
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        describe(Broken())
    assert describe_safely(Broken()) == "<Broken: could not be shown>"


@pytest.mark.parametrize(
    "make",
    [
        lambda: "x" * 10_000_000,
        lambda: list(range(2_000_000)),
        lambda: {i: i for i in range(1_000_000)},
        lambda: b"y" * 10_000_000,
        lambda: [["z" * 1_000_000] * 10] * 10,
    ],
    ids=["str", "list", "dict", "bytes", "nested"],
)
def test_a_huge_value_is_described_in_bounded_time_and_size(make):
    value = make()
    started = time.perf_counter()
    got = describe(value, 4_000)
    elapsed = time.perf_counter() - started
    assert len(got) <= 4_000
    assert elapsed < 0.5, elapsed  # the work follows the budget, not the value


# -- numpy --------------------------------------------------------------------------------------


def test_a_numpy_array_gives_its_shape_dtype_and_a_few_values():
    np = pytest.importorskip("numpy")
    assert describe(np.arange(3)) == "array of shape (3,), dtype int64:\n[0 1 2]"
    got = describe(np.arange(1_000_000, dtype=np.float32).reshape(1000, 1000))
    assert got.startswith("array of shape (1000, 1000), dtype float32:\n[[")
    assert "..." in got and len(got) < 1_000
    many_axes = describe(np.zeros((10,) * 8))
    assert many_axes.startswith("array of shape (10, 10, 10, 10, 10, 10, 10, 10), dtype float64;")
    assert "99,999,988 more values" in many_axes
    assert describe(np.zeros((0, 3))) == "array of shape (0, 3), dtype float64, empty"


def test_a_huge_numpy_array_is_described_in_bounded_time():
    np = pytest.importorskip("numpy")
    array = np.zeros(20_000_000)  # 160 MB
    started = time.perf_counter()
    got = describe(array, 4_000)
    assert time.perf_counter() - started < 0.5
    assert got.startswith("array of shape (20000000,), dtype float64:") and len(got) < 200


# -- pandas -------------------------------------------------------------------------------------


def test_a_dataframe_gives_its_shape_dtypes_and_first_rows_as_a_markdown_table():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": [1, 2, 3, 4, 5, 6, 7], "y": [0.5] * 7, "flag": [True] * 7})
    assert describe(frame) == (
        "pandas DataFrame, 7 rows × 3 columns\n"
        "columns: x int64, y float64, flag bool\n"
        "first 5 rows:\n"
        "|  | x | y | flag |\n"
        "|---|---|---|---|\n"
        "| 0 | 1 | 0.5 | True |\n"
        "| 1 | 2 | 0.5 | True |\n"
        "| 2 | 3 | 0.5 | True |\n"
        "| 3 | 4 | 0.5 | True |\n"
        "| 4 | 5 | 0.5 | True |"
    )


def test_a_dataframe_s_cells_cannot_break_the_table():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"a|b": ["x|y", "line\nbreak", "w" * 500]})
    got = describe(frame)
    rows = got.splitlines()[3:]
    assert all(row.count(" | ") == 1 for row in rows[2:]), got  # index | value, escaped
    assert "x\\|y" in got and "line break" in got and "characters left out" in got


def test_a_huge_dataframe_is_described_in_bounded_time_and_size():
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    frame = pd.DataFrame(np.zeros((500_000, 300)))
    started = time.perf_counter()
    got = describe(frame, 2_000)
    assert time.perf_counter() - started < 0.5
    assert len(got) <= 2_000
    assert got.startswith("pandas DataFrame, 500,000 rows × 300 columns")
    assert "… 280 more columns" in got


def test_a_series_gives_its_length_dtype_and_first_rows():
    pd = pytest.importorskip("pandas")
    got = describe(pd.Series([3.5, 4.5], name="price"))
    assert got == (
        "pandas Series 'price', 2 rows, dtype float64\n"
        "rows:\n|  | price |\n|---|---|\n| 0 | 3.5 |\n| 1 | 4.5 |"
    )


def test_loading_the_extension_and_describing_plain_values_imports_neither():
    code = textwrap.dedent(
        """
        import sys
        # A plain shell: IPython's testing helpers import numpy themselves.
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "aivvm_magic")
        from aivvm_magic.context import describe
        describe([1, 2, 3]); describe("x" * 10_000)
        print(sorted(m for m in ("pandas", "numpy") if m in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "[]"


# -- bounds -------------------------------------------------------------------------------------


@given(text=st.text(max_size=300), limit=st.integers(min_value=1, max_value=200))
def test_cut_never_exceeds_its_limit_and_keeps_short_text(text, limit):
    got = cut(text, limit)
    assert len(got) <= limit
    if len(text) <= limit:
        assert got == text


def test_a_cut_falls_between_words():
    text = " ".join(f"word{i:04d}" for i in range(1_000))
    got = cut(text, 300)
    head, tail = got.split(" [… ")[0], got.split(" …] ")[1]
    assert all(w.startswith("word") and len(w) == 8 for w in (head + " " + tail).split())


def test_excerpt_lines_keeps_the_failing_line_and_its_neighbours():
    code = "\n".join(f"line {i}" for i in range(1, 1001))
    got = excerpt_lines(code, 200, around=500)
    assert len(got) <= 200
    assert "line 500" in got and "line 499" in got and "line 501" in got
    assert got.startswith("[… ") and got.endswith("lines left out …]")
    top = excerpt_lines(code, 200)
    assert top.startswith("line 1\nline 2") and top.endswith("line 1000")


# -- in a shell -----------------------------------------------------------------------------------


def test_a_reference_to_a_huge_value_sends_a_bounded_description(ip, reference):
    ip.user_ns["aivvm_test_big"] = "q" * 10_000_000
    ip.user_ns["aivvm_test_items"] = list(range(1_000_000))
    ip.run_cell_magic("aivvm", "--no-history", "Look: {aivvm_test_big} {aivvm_test_items}")
    sent = reference.requests[-1]["messages"][-1]["content"]
    assert len(sent) < 2 * 4_000 + 100
    assert "of 10,000,000 characters left out" in sent and "more items]" in sent


def test_the_per_reference_budget_is_configurable(ip, reference):
    ip.user_ns["aivvm_test_text"] = "abc " * 1_000
    ip.run_line_magic("config", "AivvmMagics.reference_chars = 200")
    ip.run_cell_magic("aivvm", "--no-history", "{aivvm_test_text}")
    sent = reference.requests[-1]["messages"][-1]["content"]
    assert len(sent) <= 200 and "left out" in sent
    with pytest.raises(TraitError, match="should not be less than 100"):
        magics_for(ip).reference_chars = 10


def test_a_dataframe_reference_reaches_the_server_as_a_table(ip, reference):
    pd = pytest.importorskip("pandas")
    ip.user_ns["aivvm_test_df"] = pd.DataFrame({"city": ["Oslo"], "pop": [0.7]})
    ip.run_cell_magic("aivvm", "--no-history", "Describe {aivvm_test_df}")
    sent = reference.requests[-1]["messages"][-1]["content"]
    assert sent.startswith("Describe pandas DataFrame, 1 row × 2 columns\n")
    assert "| 0 | Oslo | 0.7 |" in sent
