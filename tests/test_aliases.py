"""Aliases, through a real ``InteractiveShell``: ``%aivvm alias``, ``AivvmMagics.aliases``,
``-m NAME``, ``AivvmMagics.model = NAME``, the chat panel's model list; and which key goes
where (a canary key: never shown, never sent to an endpoint that did not name it).
"""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError
from traitlets import TraitError

from aivvm_magic.aliases import Alias, parse_aliases
from aivvm_magic.magics import magics_for
from tests.conftest import CANARY
from tests.faultserver import Reply, openai_sse
from tests.outputkit import final_output
from tests.test_secrets import assert_absent


@pytest.fixture
def magics(ip):
    return magics_for(ip)


def ask_fault(ip, fault, line: str = "-m remote") -> dict[str, str]:
    """Run a cell that the fault server answers; the headers of the request it got."""
    fault.enqueue(Reply(chunks=[openai_sse("ok")]))
    ip.run_cell_magic("aivvm", line, "hi")
    return fault.requests[-1].headers


def test_an_alias_names_provider_model_and_endpoint(ip, magics, reference, capsys):
    ip.run_line_magic("aivvm", f"alias local -p openai -m gpt-4 --base-url {reference.url}/v1/")
    shown = capsys.readouterr().out
    assert shown == f"  local  openai · gpt-4 · {reference.url}/v1 · key: none\n"
    assert magics.aliases == {
        "local": {"provider": "openai", "model": "gpt-4", "base_url": f"{reference.url}/v1"}
    }
    ip.run_cell_magic("aivvm", "-m local", "through the alias")
    request = reference.requests[-1]
    assert request["route"] == "openai" and request["model"] == "gpt-4"
    turn = magics.chats.get("default").last_turn
    assert (turn.model, turn.provider) == ("gpt-4", "openai")


def test_an_alias_is_usable_as_the_default_model(ip, magics, reference, capsys):
    magics.aliases = {
        "echo": {"provider": "openai", "model": "m", "base_url": reference.url + "/v1"}
    }
    ip.run_line_magic("config", 'AivvmMagics.model = "echo"')
    output, _ = final_output(ip, "", "by default")
    provenance = output.metadata["aivvm"]
    assert provenance["alias"] == "echo" and provenance["model"] == "m"
    assert provenance["target"] == f"{reference.url}/v1" and provenance["usage"] is not None
    ip.run_line_magic("aivvm", "status")
    status = capsys.readouterr().out
    assert "Model:        m (alias echo)" in status and "Provider:     openai" in status


def test_a_field_left_out_is_the_sessions(ip, magics, reference):
    magics.aliases = {"big": {"model": "gpt-4"}}
    ip.run_cell_magic("aivvm", "-m big", "same server, other model")
    assert reference.requests[-1]["model"]["id"] == "gpt-4"  # the Aivvm protocol's model


@pytest.mark.parametrize("line", ["-m local -p aivvm", "-m local --base-url http://127.0.0.1:9"])
def test_what_an_alias_sets_cannot_be_set_again_on_the_cell(ip, magics, reference, line):
    magics.aliases = {"local": {"provider": "openai", "model": "m", "base_url": reference.url}}
    before = len(reference.requests)
    with pytest.raises(UsageError, match="'local' is an alias with its own"):
        ip.run_cell_magic("aivvm", line, "hi")
    assert len(reference.requests) == before


def test_alias_show_remove_and_mistakes(ip, magics, capsys):
    ip.run_line_magic("aivvm", "alias")
    assert capsys.readouterr().out.startswith("No aliases yet")
    ip.run_line_magic("aivvm", "alias small -m gpt-3.5-turbo")
    ip.run_line_magic("aivvm", "alias small")
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        "  small  (the session's provider) · gpt-3.5-turbo · (the session's server) · "
        "key: the provider's"
    )
    for line, message in [
        ("alias missing", "no alias 'missing'"),
        ("alias -m gpt-4", "name the alias first"),
        ("alias x -p nope -m m", "Unknown provider 'nope'"),
        ("alias x -m m --base-url ftp://host", "must be an http:// or https:// URL"),
        ("alias x -p openai", "an alias needs -m MODEL"),
        ("alias missing --remove", "no alias 'missing'"),
    ]:
        with pytest.raises(UsageError, match=message):
            ip.run_line_magic("aivvm", line)
    ip.run_line_magic("aivvm", "alias small --remove")
    assert magics.aliases == {} and "removed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"provider": "openai"}, "alias 'x' needs a model"),
        ({"model": "m", "api_key": CANARY}, "unknown field.*'api_key'"),
        ({"model": "m", "key_from": CANARY}, "never holds a key itself"),
        ({"model": "m", "base_url": f"http://me:{CANARY}@host"}, "no user name, password"),
        ({"model": "m", "base_url": f"http://host/v1?key={CANARY}"}, "or query"),
        ({"model": 4}, "model must be a string"),
        ("gpt-4", "must be a dict"),
    ],
)
def test_a_bad_alias_is_refused_without_repeating_its_values(magics, entry, message):
    with pytest.raises(TraitError, match=message) as info:
        magics.aliases = {"x": entry}
    assert_absent("the error", str(info.value))
    assert magics.aliases == {}


def test_an_alias_name_is_one_word():
    with pytest.raises(ValueError, match="must be a word"):
        parse_aliases({"two words": {"model": "m"}})
    assert Alias.from_config("k", {"model": "m", "key_from": "env:K_1"}).key_env == "K_1"


# -- keys -----------------------------------------------------------------------------------


def test_an_endpoint_of_its_own_gets_no_key_it_did_not_name(ip, magics, fault):
    magics.openai_api_key = CANARY
    magics.aliases = {"remote": {"provider": "openai", "model": "m", "base_url": fault.url}}
    assert "authorization" not in ask_fault(ip, fault)


def test_key_from_an_environment_variable(ip, magics, fault, monkeypatch, capsys):
    monkeypatch.setenv("AIVVM_TEST_ALIAS_KEY", CANARY)
    magics.openai_api_key = "another-services-key"
    ip.run_line_magic(
        "aivvm",
        f"alias remote -p openai -m m --base-url {fault.url} --key-from env:AIVVM_TEST_ALIAS_KEY",
    )
    assert ask_fault(ip, fault)["authorization"] == f"Bearer {CANARY}"
    ip.run_line_magic("aivvm", "alias")
    ip.run_line_magic("config", "AivvmMagics")
    ip.run_line_magic("aivvm", "status")
    shown = capsys.readouterr().out
    assert "key: $AIVVM_TEST_ALIAS_KEY (set)" in shown
    assert_absent("the listings", shown)
    monkeypatch.delenv("AIVVM_TEST_ALIAS_KEY")
    ip.run_line_magic("aivvm", "alias remote")
    assert "(not set)" in capsys.readouterr().out


def test_key_from_a_key_setting(ip, magics, fault):
    magics.api_key = CANARY
    magics.aliases = {
        "remote": {"provider": "openai", "model": "m", "base_url": fault.url, "key_from": "api_key"}
    }
    assert ask_fault(ip, fault)["authorization"] == f"Bearer {CANARY}"


def test_without_an_endpoint_the_providers_own_key_goes(ip, magics, fault):
    magics.base_url = fault.url
    magics.openai_api_key = CANARY
    magics.aliases = {"remote": {"provider": "openai", "model": "m"}}
    assert ask_fault(ip, fault)["authorization"] == f"Bearer {CANARY}"


def test_no_key_in_the_export_or_the_provenance(ip, magics, fault, tmp_path, monkeypatch):
    monkeypatch.setenv("AIVVM_TEST_ALIAS_KEY", CANARY)
    magics.aliases = {
        "remote": {
            "provider": "openai",
            "model": "m",
            "base_url": fault.url,
            "key_from": "env:AIVVM_TEST_ALIAS_KEY",
        }
    }
    fault.enqueue(Reply(chunks=[openai_sse("ok")]))
    output, _ = final_output(ip, "-m remote", "hi")
    assert fault.requests[-1].headers["authorization"] == f"Bearer {CANARY}"
    assert_absent("the output", json.dumps([output.data, output.metadata]))
    for name in ("chat.json", "chat.md"):
        ip.run_line_magic("aivvm", f"export {tmp_path / name}")
        assert_absent(name, (tmp_path / name).read_text())


# -- the panel ------------------------------------------------------------------------------


def test_the_panels_model_list_offers_the_aliases(ip, magics, reference):
    from aivvm_magic import ChatPanel

    magics.aliases = {
        "local": {"provider": "openai", "model": "gpt-4", "base_url": reference.url + "/v1"}
    }
    panel = ChatPanel("aliased", session=magics.session)
    try:
        ids = panel.models_loaded.result(timeout=30)
        assert ids[0] == "local" and "gpt-3.5-turbo" in ids
        panel.model_picker.value = "local"
        assert panel.send("from the panel") == "from the panel"
        request = reference.requests[-1]
        assert request["route"] == "openai" and request["model"] == "gpt-4"
        turn = magics.chats.get("aliased").last_turn
        assert (turn.source, turn.provider, turn.model) == ("panel", "openai", "gpt-4")
    finally:
        panel.close()
