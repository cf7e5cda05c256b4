"""Shared fixtures (a real IPython shell with the extension loaded, real servers, a host that
never answers, and a fake provider in this process) and shared values: the canary key, and
turns made to order."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from IPython.testing.globalipapp import start_ipython

from aivvm_magic.conversation import Turn
from aivvm_magic.magics import magics_for
from aivvm_magic.providers import PROVIDERS
from aivvm_magic.server import start_server
from tests.fakeprovider import FakeProvider
from tests.faultserver import FaultServer

CANARY = "sk-canary-5b1d0e7a93"


def make_turn(**fields: object) -> Turn:
    """A valid turn: a short complete exchange, with any field given in ``fields``."""
    values: dict[str, object] = {
        "prompt": "What is 2 + 2?",
        "reply": "4",
        "model": "gpt-3.5-turbo",
        "temperature": 0.7,
        "system": "Be brief.",
        "started": "2024-05-01T10:00:00.000+00:00",
        "duration": 1.25,
        "complete": True,
        "source": "cell",
        "cell_id": None,
        "error": None,
    }
    values.update(fields)
    return Turn(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session", autouse=True)
def history_in_a_temporary_directory(tmp_path_factory):
    """Every session, in-process or in a kernel started by a test, logs its turns to a
    database in pytest's temporary directory, never the user's data directory."""
    path = tmp_path_factory.mktemp("history") / "history.db"
    saved = os.environ.get("AIVVM_HISTORY_PATH")
    os.environ["AIVVM_HISTORY_PATH"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("AIVVM_HISTORY_PATH", None)
    else:
        os.environ["AIVVM_HISTORY_PATH"] = saved


@pytest.fixture(scope="session")
def shell():
    """The process's test InteractiveShell (IPython keeps one per process)."""
    # start_ipython() returns the shell only on its first call in a process.
    from IPython import get_ipython

    return start_ipython() or get_ipython()


@pytest.fixture(scope="session")
def reference():
    """A reference server with the echo engine, for the whole session."""
    with start_server(engine="echo") as server:
        yield server


@pytest.fixture
def fault():
    with FaultServer() as server:
        yield server


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeProvider]:
    """A fake provider in this process, known as "fake" for this test: scripted replies, no
    HTTP (``TurnSettings(provider="fake")``, ``%config AivvmMagics.provider = "fake"``)."""
    provider = FakeProvider.fresh()
    monkeypatch.setitem(PROVIDERS, "fake", provider)
    return provider


@pytest.fixture
def ip(shell, reference):
    """The shell with a fresh extension instance, pointed at the reference server, text mode."""
    shell.run_line_magic("load_ext", "aivvm_magic")
    magics = magics_for(shell)
    magics.base_url = reference.url
    magics.display_mode = "text"
    magics.retries = 0
    yield shell
    shell.run_line_magic("unload_ext", "aivvm_magic")
    # %config writes to the shell's config, which the next instance would inherit.
    shell.config.pop("AivvmMagics", None)
    for name in [n for n in shell.user_ns if n.startswith("aivvm_test_")]:
        del shell.user_ns[name]


@pytest.fixture
def unresponsive() -> Iterator[str]:
    """A URL whose TCP connect hangs: a listener that never accepts, its backlog filled.

    Linux queues ``backlog + 1`` connections a listener has not accepted and drops further
    SYNs, so ``connect`` waits for a SYN-ACK that never comes, as with a firewalled host.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    idle: list[socket.socket] = []
    try:
        for _ in range(16):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.settimeout(0.2)
            try:
                probe.connect(address)
            except TimeoutError:
                probe.close()
                break
            idle.append(probe)
        else:
            pytest.fail("could not fill the listen backlog: connects never hang here")
        # The premise, checked on this machine: one more connect really hangs.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as check:
            check.settimeout(0.3)
            with pytest.raises(TimeoutError):
                check.connect(address)
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for sock in idle:
            sock.close()
        listener.close()
