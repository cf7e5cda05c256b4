"""The notebook's context in a real kernel: ``%aivvm explain`` (with canary keys in the
configuration, the environment, a local variable and the exception's message), ``{df}`` and
``{arr}`` references, ``--cells``, and ``%aivvm last``; each reply streamed as any is."""

from __future__ import annotations

import json
import os

import pytest

from aivvm_magic.server import start_server
from tests.conftest import CANARY
from tests.kernel import WIDGET_VIEW, Kernel
from tests.test_secrets import forms

CONFIGURED = "cfgkey-kernel-3c8e1f0a9b"
FROM_ENV = "envtok-kernel-7d2b4e6f1a"


@pytest.fixture(scope="module")
def server():
    with start_server(engine="echo") as handle:
        yield handle


@pytest.fixture(scope="module")
def kernel(server):
    # The kernel inherits this environment: a secret-named variable it must never send.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIVVM_TEST_SERVICE_TOKEN", FROM_ENV)
        k = Kernel()
    setup = k.execute(
        "%load_ext aivvm_magic\n"
        f"%config AivvmMagics.base_url = {server.url!r}\n"
        f"%config AivvmMagics.api_key = {CONFIGURED!r}\n"
    )
    assert setup.status == "ok", setup.reply
    yield k
    k.close()


def prompt_sent(server) -> str:
    return server.requests[-1]["messages"][-1]["content"]


def assert_no_key_in(where: str, text: str) -> None:
    for secret in (CANARY, CONFIGURED, FROM_ENV):
        for form in forms(secret)[:3]:
            assert form not in text, f"{secret} appears in {where} as {form!r}"


def test_explain_before_any_error_says_so(kernel, server):
    before = len(server.requests)
    run = kernel.execute("%aivvm explain")
    assert run.status == "error"
    assert run.reply["content"]["ename"] == "UsageError"
    assert "No error to explain" in run.reply["content"]["evalue"]
    assert len(server.requests) == before


def test_explain_streams_an_explanation_and_no_key_leaves_the_kernel(kernel, server):
    define = kernel.execute(
        "import os\n"
        "def fetch(url):\n"
        f"    key = {CANARY!r}\n"
        "    token = os.environ['AIVVM_TEST_SERVICE_TOKEN']\n"
        f"    raise PermissionError(f'{{url}} refused {{key}} / {{token}} / {CONFIGURED}')\n"
    )
    assert define.status == "ok", define.reply
    failing = kernel.execute("fetch('https://api.example/v1')", cell_id="cell-fetch")
    assert failing.status == "error"
    number = failing.reply["content"]["execution_count"]
    run = kernel.execute("%aivvm explain", cell_id="cell-explain")
    assert run.status == "ok", run.reply
    assert WIDGET_VIEW in run.of_type("display_data")[0]["content"]["data"]  # it streamed
    prompt = prompt_sent(server)
    assert f"The last error in the notebook, from In[{number}]:\nPermissionError: " in prompt
    assert "https://api.example/v1 refused [redacted] / [redacted] / [redacted]" in prompt
    assert f"Cell In[{number - 1}], line 5, in fetch" in prompt
    assert "  url = 'https://api.example/v1'\n  key = '[redacted]'\n  token = '[redacted]'" in (
        prompt
    )
    assert "ipykernel" not in prompt and "/tmp/" not in prompt
    # The echo engine's reply is the prompt: what the cell shows is what was sent.
    assert run.final_bundle()["text/plain"] == prompt
    assert_no_key_in("the requests", json.dumps(list(server.requests)))
    assert_no_key_in("the cell's output", json.dumps([m["content"] for m in run.messages]))


def test_a_dataframe_and_an_array_are_sent_as_descriptions(kernel, server):
    pytest.importorskip("pandas")
    setup = kernel.execute(
        "import numpy as np, pandas as pd\n"
        "arr = np.arange(1_000_000).reshape(1000, 1000)\n"
        "df = pd.DataFrame({'n': range(100_000), 'half': [0.5] * 100_000})\n"
    )
    assert setup.status == "ok", setup.reply
    run = kernel.execute("%%aivvm --no-history\nCompare {df} with {arr}.")
    assert run.status == "ok", run.reply
    prompt = prompt_sent(server)
    assert prompt.startswith(
        "Compare pandas DataFrame, 100,000 rows × 2 columns\ncolumns: n int64, half float64\n"
        "first 5 rows:\n|  | n | half |\n|---|---|---|\n| 0 | 0 | 0.5 |"
    )
    assert "with array of shape (1000, 1000), dtype int64:\n[[     0      1      2 ..." in prompt
    assert len(prompt) < 1_500


def test_cells_asks_about_the_cell_above_and_last_shows_what_went(kernel, server):
    kernel.execute("values = [1, 2, 3]")
    failing = kernel.execute("values['first']")
    assert failing.status == "error"
    run = kernel.execute("%%aivvm --cells 1\nWhy does the cell above fail?")
    assert run.status == "ok", run.reply
    number = failing.reply["content"]["execution_count"]
    assert prompt_sent(server) == (
        "Why does the cell above fail?\n\n"
        "The cells that ran before this one, oldest first:\n\n"
        f"In[{number}]:\n```python\nvalues['first']\n```\n"
        "It failed: TypeError: list indices must be integers or slices, not str"
    )
    shown = kernel.execute("%aivvm last")
    assert shown.status == "ok", shown.reply
    out = shown.stdout()
    assert out.startswith(f"Sent to gpt-3.5-turbo at {server.url}, conversation 'default'")
    assert f"--- user · {len(prompt_sent(server)):,} characters ---" in out
    context = len(prompt_sent(server)) - len("Why does the cell above fail?\n\n")
    assert out.endswith(f"carries: 1 previous cell, {context:,} characters.\n")
    assert_no_key_in("%aivvm last", out)
    assert os.environ.get("AIVVM_TEST_SERVICE_TOKEN") is None
