"""Property-based tests (hypothesis) of the whole path: server, client, magic and files.

The units have their own properties elsewhere (``split_words`` in ``test_server.py``,
interpolation in ``test_interpolation.py``, ``Conversation`` export and import in
``test_conversation.py``). These run the same kinds of claims end to end, through real servers
on 127.0.0.1 and a real ``InteractiveShell``:

* any text, cut at any byte boundaries and sent in any framing, comes out of the client
  exactly; and any text sent to the reference server comes back exactly;
* any option line given to ``%%aivvm`` either works or raises ``UsageError``, nothing else;
* interpolation in a cell never evaluates anything: only ``str()`` of a referenced value runs;
* ``%aivvm export`` then ``%aivvm import`` gives back exactly the conversation.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from aivvm_magic import Aivvm
from aivvm_magic.magics import magics_for
from aivvm_magic.server import ServerHandle, start_server
from tests.faultserver import FaultServer, Gzip, Reply
from tests.tripwire import Tripwire

FRAMINGS = ("chunked", "length", "close")
# The shell fixture lives for the whole test; each example must leave it as it found it.
SHELL_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture(scope="module")
def echo() -> Iterator[ServerHandle]:
    with start_server(engine="echo") as server:
        yield server


# --------------------------------------------------------------------------------------------
# Text through the wire


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at each position in ``cuts`` (taken modulo its length), in order."""
    if not data:
        return []
    bounds = sorted({0, len(data), *(cut % len(data) for cut in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(deadline=None, max_examples=300)
@given(
    # Not "": an empty reply is an error of its own (test_chatbot_ui.py).
    text=st.text(min_size=1),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    framing=st.sampled_from(FRAMINGS),
    gzip=st.booleans(),
)
def test_any_text_cut_anywhere_comes_out_of_the_client_exactly(fault, text, cuts, framing, gzip):
    pieces = split_at(text.encode("utf-8"), cuts)
    behaviour = Gzip(pieces, framing=framing) if gzip else Reply(chunks=pieces, framing=framing)
    fault.enqueue(behaviour)
    reply = Aivvm.create_completion(
        "", [{"role": "user", "content": "x"}], True, base_url=fault.url, retries=0
    )
    chunks = list(reply)
    assert "".join(chunks) == text
    assert reply.complete and all(chunks)


@settings(deadline=None, max_examples=200)
@given(text=st.text(min_size=1))
def test_any_text_goes_through_the_reference_server_and_back_exactly(echo, text):
    messages = [{"role": "user", "content": text}]
    reply = Aivvm.create_completion("", messages, True, base_url=echo.url, retries=0)
    assert "".join(reply) == text
    assert echo.requests[-1]["messages"] == messages


# --------------------------------------------------------------------------------------------
# Option lines


FLAGS = [
    "-m",
    "--model",
    "-t",
    "--temperature",
    "-s",
    "--system",
    "-c",
    "--chat",
    "--new",
    "--no-history",
    "-o",
    "--output",
    "--no-stream",
    "--base-url",
    "-f",
    "--format",
    "--no-interpolate",
    "-p",
    "--provider",
    "-x",
    "--bogus",
    "--",
    "-",
]
VALUES = [
    "aivvm",
    "AIVVM",
    "no-such-provider",
    "gpt-4",
    "gpt-3.5-turbo",
    "gpt-9",
    "0",
    "0.5",
    "2",
    "2.5",
    "-1",
    "nan",
    "inf",
    "1e999",
    "abc",
    "markdown",
    "text",
    "code",
    "html",
    '""',
    "''",
    '"a quoted value"',
    "'single quoted'",
    '"unclosed',
    "'unclosed",
    "=",
    "x=y",
    "aivvm_test_v",
    "1x",
    "http://",
    "notaurl",
    "ftp://example",
    "http://[::1",
    "{aivvm_test_v}",
    "$HOME",
    "\\",
]


def option_lines(url: str) -> st.SearchStrategy[str]:
    """Lines of flags, values (the server's URL among them) and arbitrary text, joined up."""
    token = st.one_of(
        st.sampled_from(FLAGS),
        st.sampled_from([*VALUES, url, f"--base-url={url}"]),
        # Any text at all, but on one line: a cell's first line is the magic's line.
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n"), max_size=8),
    )
    return st.lists(token, max_size=7).flatmap(
        lambda tokens: st.sampled_from([" ", "  ", "\t"]).map(lambda sep: sep.join(tokens))
    )


def answered(server: ServerHandle) -> int:
    """Chat requests the server has answered (its request log keeps only the last 1000)."""
    stats = server.stats.snapshot()
    return stats["started"] + stats["rejected"]


@pytest.fixture
def quiet(ip: InteractiveShell) -> Iterator[InteractiveShell]:
    """The shell, with short timeouts so a stray --base-url cannot hang an example."""
    magics = magics_for(ip)
    magics.connect_timeout = 2.0
    magics.read_timeout = 5.0
    yield ip


@settings(SHELL_SETTINGS, max_examples=300)
@given(data=st.data())
def test_any_option_line_either_works_or_is_a_usage_error(quiet, reference, data, capsys):
    line = data.draw(option_lines(reference.url), label="line")
    namespace = dict(quiet.user_ns)
    requests_before = answered(reference)
    try:
        quiet.run_cell_magic("aivvm", line, "hello there")
    except UsageError as exc:
        # One short line, and nothing was sent.
        assert "\n" not in str(exc).strip() and len(str(exc)) < 300, str(exc)
        assert answered(reference) == requests_before
    else:
        assert answered(reference) == requests_before + 1
    finally:
        # -o may have written any identifier (In, _, ...): put the namespace back.
        for name in set(quiet.user_ns) - set(namespace):
            del quiet.user_ns[name]
        quiet.user_ns.update(namespace)
        quiet.rl_next_input = None
        capsys.readouterr()


# Found by the property above; kept as examples so they are always tried.
@pytest.mark.parametrize(
    "line",
    ['-c ""', "--chat=", '-m "gpt-4', "-s 'unclosed", "--base-url notaurl", "--base-url http://["],
)
def test_known_bad_option_lines_are_usage_errors(quiet, line):
    with pytest.raises(UsageError):
        quiet.run_cell_magic("aivvm", line, "hello there")


@pytest.mark.parametrize("line", ['status -c ""', "history --chat=", 'export "unclosed.json'])
def test_known_bad_line_magic_options_are_usage_errors(quiet, line):
    with pytest.raises(UsageError):
        quiet.run_line_magic("aivvm", line)


# --------------------------------------------------------------------------------------------
# Interpolation never evaluates


NAMES = ["aivvm_test_a", "aivvm_test_b", "aivvm_test_undefined"]
DEFINED = NAMES[:2]


def probe(name: str) -> st.SearchStrategy[tuple[str, str, bool]]:
    """A piece of cell text that mentions ``name``, what the sent text must hold instead, and
    whether it is a reference whose value must be converted."""
    value = f"<{name}>" if name in DEFINED else None
    plain = f"{{{name}}}"
    forms = [
        (plain, value),
        (f"{{{name}.upper()}}", None),
        (f"{{{name}.__class__}}", None),
        (f"{{{name}[0]}}", None),
        (f"{{{name}()}}", None),
        (f"{{{name}!r}}", None),
        (f"{{{name}:>9}}", None),
        (f"{{{{{name}}}}}", None),
        (f"{{{name} + {name}}}", None),
        (f"{{__import__('os').system('touch {name}')}}", None),
        (f"{{exec('{name} = 1')}}", None),
        ("{().__class__.__base__.__subclasses__()}", None),
        ("{In[999999]}", None),
        ("{Out[-1]}", None),
        ("{__builtins__}", None),
        (f"{{{name}", None),
        (f"{name}}}", None),
    ]
    return st.sampled_from(
        [(text, expected or text, expected is not None) for text, expected in forms]
    )


# Text between probes: no braces (so pieces cannot merge into a new reference) and no
# newlines at the edges (the magic strips those from the cell).
filler = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="{}\n"), max_size=6)


@settings(SHELL_SETTINGS, max_examples=200)
@given(
    pieces=st.lists(
        st.tuples(filler, st.sampled_from(NAMES).flatmap(probe)), min_size=1, max_size=6
    ),
)
def test_interpolation_in_a_cell_never_evaluates_anything(ip, reference, pieces, capsys):
    calls: list[str] = []
    cell = "".join(text + form for text, (form, _want, _converted) in pieces)
    expected = "".join(text + want for text, (_form, want, _converted) in pieces)
    converted = {form[1:-1] for _text, (form, _want, converted) in pieces if converted}
    assume(cell.strip())
    scope = {name: Tripwire(name, calls) for name in DEFINED}
    scope["__builtins__"] = Tripwire("__builtins__", calls)
    saved = {name: ip.user_ns.get(name) for name in scope}
    ip.user_ns.update(scope)
    try:
        ip.run_cell_magic("aivvm", "--no-history", cell)
    finally:
        for name, value in saved.items():
            if value is None:
                ip.user_ns.pop(name, None)
            else:
                ip.user_ns[name] = value
        capsys.readouterr()
    assert reference.requests[-1]["messages"][-1]["content"] == expected
    # str() ran once per referenced name, and nothing else ever ran.
    assert not [call for call in calls if call.startswith("FORBIDDEN")]
    assert sorted(calls) == sorted(converted)
    assert not any(Path(name).exists() for name in NAMES)


# --------------------------------------------------------------------------------------------
# Export then import


cell_text = st.text(min_size=1).filter(lambda text: text.strip("\n").strip())


@settings(SHELL_SETTINGS, max_examples=40)
@given(
    prompts=st.lists(cell_text, min_size=1, max_size=4),
    system=st.text(),
    suffix=st.sampled_from([".json", ".md"]),
)
def test_export_then_import_in_cells_is_the_identity(ip, prompts, system, suffix, capsys):
    magics = magics_for(ip)
    store = magics.chats
    for name in ("prop-src", "prop-copy"):
        if name in store:
            store.remove(name)
    magics.system_message = system
    try:
        for number, prompt in enumerate(prompts):
            # Cell ids as a notebook sends them; --no-interpolate keeps braces as written.
            result = ip.run_cell(
                f"%%aivvm -c prop-src --no-interpolate\n{prompt}", cell_id=f"prop-{number}"
            )
            assert result.success, result.error_in_exec
    finally:
        capsys.readouterr()
    source = store.get("prop-src")
    assert len(source) == len(prompts)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, f"chat{suffix}")
        ip.run_line_magic("aivvm", f'export "{path}" -c prop-src')
        first = Path(path).read_bytes()
        ip.run_line_magic("aivvm", f'import "{path}" -c prop-copy')
        copy = store.get("prop-copy")
        assert copy.to_dict()["turns"] == source.to_dict()["turns"]
        assert copy.system == source.system
        # Read back into the conversation it came from, it exports to the same bytes: nothing
        # drifts on a second round.
        ip.run_line_magic("aivvm", f'import "{path}" -c prop-src')
        ip.run_line_magic("aivvm", f'export "{path}" -c prop-src')
        assert Path(path).read_bytes() == first
    capsys.readouterr()
