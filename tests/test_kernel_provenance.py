"""Provenance, token usage, aliases and formats in a real kernel, in a notebook saved to disk.

A notebook is executed by nbclient, as ``jupyter nbconvert --execute`` would, in a kernel
whose ``ipython_config.py`` defines an alias whose key comes from the environment. The
replies stream into live widgets, which the final bundles replace through display updates;
the saved file must keep each reply's provenance in its output's metadata, show the tokens in
the status line, and hold the key nowhere.
"""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from aivvm_magic.server import start_server
from tests.conftest import CANARY
from tests.test_secrets import assert_absent

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server():
    # It refuses any other key: a reply proves the alias's key was sent.
    with start_server(engine="echo", api_key=CANARY) as srv:
        yield srv


def test_a_saved_notebook_keeps_each_replys_provenance(server, tmp_path, monkeypatch):
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_config.py").write_text(
        "c.AivvmMagics.aliases = {'cfg': {'provider': 'openai', 'model': 'gpt-4', "
        f"'base_url': '{server.url}/v1', 'key_from': 'env:AIVVM_TEST_KERNEL_KEY'}}}}\n"
    )
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # The keys reach the kernel through the environment only.
    monkeypatch.setenv("AIVVM_TEST_KERNEL_KEY", CANARY)
    monkeypatch.setenv("AIVVM_API_KEY", CANARY)
    for name in ("AIVVM_BASE_URL", "AIVVM_MODEL", "AIVVM_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    sources = [
        f"%load_ext aivvm_magic\n%config AivvmMagics.base_url = {server.url!r}",
        "%%aivvm -m cfg\nfrom the config file",
        '%%aivvm -f json -o data\n{"a": [1, 2]}',
        "print(data['a'])",
        "%%aivvm -f math\nx^2",
        "%aivvm alias",
        "%aivvm history",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    path = tmp_path / "run.ipynb"
    nbformat.write(notebook, path)
    saved = nbformat.read(path, as_version=4)
    nbformat.validate(saved)

    replies = {index: saved.cells[index].outputs[-1] for index in (1, 2, 4)}
    aliased = replies[1].metadata["aivvm"]
    assert aliased["alias"] == "cfg" and aliased["provider"] == "openai"
    assert aliased["model"] == "gpt-4" and aliased["target"] == f"{server.url}/v1"
    usage = aliased["usage"]
    assert usage["completion_tokens"] == 4 and usage["prompt_tokens"] > 4
    status = f"tokens: {usage['prompt_tokens']} in, 4 out"
    assert status in replies[1].data["text/html"]
    assert [r.metadata["aivvm"]["format"] for r in replies.values()] == ["markdown", "json", "math"]
    for reply in replies.values():
        assert "application/vnd.jupyter.widget-view+json" not in reply.data
        assert reply.metadata["aivvm"]["complete"] is True

    assert json.loads(replies[2].data["text/plain"]) == {"a": [1, 2]}
    assert saved.cells[3].outputs[0].text == "[1, 2]\n"
    assert replies[4].data["text/latex"] == "$$x^2$$"
    listing = saved.cells[5].outputs[0].text
    assert "cfg  openai · gpt-4" in listing and "key: $AIVVM_TEST_KERNEL_KEY (set)" in listing
    assert f"Assistant ({status}):\nfrom the config file" in saved.cells[6].outputs[0].text
    assert_absent("the saved notebook", path.read_text())
