"""Tests of aivvm_magic.interpolation: which braces are replaced, and that nothing runs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aivvm_magic.interpolation import Interpolation, interpolate, interpolate_with_report
from tests.tripwire import Tripwire


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


@pytest.fixture
def namespace() -> dict[str, object]:
    return {
        "name": "Ada",
        "count": 3,
        "_": "last output",
        "_1": "output one",
        "__": "second to last",
        "_private": "p",
        "données": "unicode name",
        "data": {"a": 1},
        "In": ["", "x = 1", "print(x)"],
        "Out": {1: 42, 2: "two"},
        "__builtins__": "builtins!",
        "__import__": "import!",
        "broken": Unprintable(),
        "nothing": None,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello {name}!", "Hello Ada!"),
        ("{name}{name} x{count}", "AdaAda x3"),
        ("{_} / {_1} / {__} / {_private}", "last output / output one / second to last / p"),
        ("{données}", "unicode name"),
        ("{data}", "{'a': 1}"),
        ("{nothing}", "None"),
        ("{In[1]} then {In[2]}", "x = 1 then print(x)"),
        ("{In[0]}|{In[-1]}|{In[-3]}", "|print(x)|"),
        ("{Out[1]} and {Out[2]}", "42 and two"),
        ("{In}", "['', 'x = 1', 'print(x)']"),
    ],
)
def test_references_are_replaced(namespace, text, expected):
    assert interpolate(text, namespace) == expected


@pytest.mark.parametrize(
    "text",
    [
        "{undefined}",
        "{name.upper}",
        "{name.upper()}",
        "{data[a]}",
        "{data['a']}",
        "{name[0]}",
        "{name!r}",
        "{name!s}",
        "{name:>10}",
        "{ name }",
        "{name }",
        "{__builtins__}",
        "{__import__}",
        "{__import__('os').system('echo hi')}",
        "{In[3]}",
        "{In[-4]}",
        "{In[ 1]}",
        "{In[1] }",
        "{In[01]}",
        "{In[+1]}",
        "{In[1:2]}",
        "{In[x]}",
        "{Out[3]}",
        "{Out[-1]}",
        "{Out[0]}",
        "{Out['1']}",
        "{}",
        "{{}}",
        "{{name}}",
        "{{{name}}}",
        "{{name}",
        "{name}}",
        "{name",
        "name}",
        "}{name{",
        '{"name": "value"}',
        '{"a": {"b": [1, 2]}}',
        "def f(): return {1: 2}",
        "{1}",
        "{1name}",
        "{na-me}",
        "{class}",
        "{broken}",
        "",
        "no braces at all",
    ],
)
def test_everything_else_passes_through_unchanged(namespace, text):
    assert interpolate_with_report(text, namespace) == Interpolation(text, [])


def test_mixed_text_replaces_only_the_references(namespace):
    text = 'Given {"user": "{name}"} and f"{{x}}", call {name.lower()} with {count} items'
    assert interpolate(text, namespace) == (
        'Given {"user": "Ada"} and f"{{x}}", call {name.lower()} with 3 items'
    )


def test_replacement_happens_once_and_values_are_not_interpolated_again():
    namespace = {"a": "{b}", "b": "B"}
    assert interpolate("{a} {b}", namespace) == "{b} B"


def test_the_report_lists_each_replaced_reference_once_in_order(namespace):
    report = interpolate_with_report(
        "{count} {name} {missing} {count} {In[1]} {broken} {Out[2]} {name}", namespace
    )
    assert report.names == ["count", "name", "In[1]", "Out[2]"]
    assert report.text == "3 Ada {missing} 3 x = 1 {broken} two Ada"


def test_each_value_is_converted_once_per_call():
    calls: list[str] = []
    assert interpolate("{v}{v}{v}", {"v": Tripwire("v", calls)}) == "<v><v><v>"
    assert calls == ["v"]


def test_a_value_whose_str_raises_is_left_as_written():
    assert interpolate("a {bad} b {ok}", {"bad": Unprintable(), "ok": 1}) == "a {bad} b 1"


def test_history_must_be_a_real_list_or_dict():
    class SneakyList(list):
        def __getitem__(self, index):
            raise AssertionError("custom __getitem__ ran")

    class SneakyDict(dict):
        def __getitem__(self, key):
            raise AssertionError("custom __getitem__ ran")

        def __contains__(self, key):
            raise AssertionError("custom __contains__ ran")

    namespace = {"In": SneakyList(["", "code"]), "Out": SneakyDict({1: "out"})}
    assert interpolate("{In[1]} {Out[1]}", namespace) == "code out"
    assert interpolate("{In[1]} {Out[1]}", {"In": "not a list", "Out": [1, 2]}) == (
        "{In[1]} {Out[1]}"
    )
    assert interpolate("{In[1]}", {"In": ("", "from a tuple")}) == "from a tuple"
    assert interpolate("{In[1]} {Out[1]}", {}) == "{In[1]} {Out[1]}"


# ---- properties -----------------------------------------------------------------------------

# Text built from the characters that matter: braces, brackets, and the pieces of names.
reference_text = st.text(alphabet="{}[]()!:.'\"-_ab1 In Out\n", max_size=60)
NAMES = ["a", "b", "ab", "_", "__", "_a", "__a__", "__a", "In", "Out"]


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name[:2] == name[-2:] == "__" and name.strip("_") != ""


def expected_interpolation(text: str, values: dict[str, str]) -> str:
    """A plain, character-by-character reading of the rules for ``{name}`` references."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "{" and (i == 0 or text[i - 1] != "{"):
            end = text.find("}", i + 1)
            inner = text[i + 1 : end] if end >= 0 else ""
            doubled = end + 1 < len(text) and text[end + 1] == "}"
            if end >= 0 and inner in values and inner.isidentifier() and not doubled:
                out.append(values[inner])
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


@given(text=reference_text)
def test_text_without_defined_names_passes_through(text):
    assert interpolate_with_report(text, {}) == Interpolation(text, [])
    # Defined names that the text cannot spell change nothing either.
    assert interpolate(text, {"zz": 1, "Q": 2, "_z": 3}) == text


@given(text=reference_text, defined=st.sets(st.sampled_from(NAMES)))
def test_nothing_is_evaluated_and_only_references_are_converted(text, defined):
    calls: list[str] = []
    namespace = {name: Tripwire(name, calls) for name in defined}
    namespace["__builtins__"] = Tripwire("__builtins__", calls)
    result = interpolate_with_report(text, namespace)
    allowed = {name for name in defined if not is_dunder(name)}
    # str() ran only for names the text really references, each at most once.
    assert set(calls) <= allowed
    assert len(calls) == len(set(calls))
    assert all("{" + name + "}" in text for name in calls)
    assert sorted(result.names) == sorted(calls)
    assert result.text == expected_interpolation(text, {n: f"<{n}>" for n in allowed})


@given(text=st.text(max_size=80), value=st.text(alphabet="xyz", max_size=5))
def test_arbitrary_text_changes_only_where_a_reference_is(text, value):
    namespace = {"v": value}
    result = interpolate(text, namespace)
    if "{v}" not in text:
        assert result == text
    assert result == expected_interpolation(text, namespace)
