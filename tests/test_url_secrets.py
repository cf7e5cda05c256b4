"""A key written into the base URL (``http://user:KEY@host``) is sent, and shown nowhere.

Some servers take their key as the URL's password. The URL is the user's, so it reaches the
provider whole; every message, status line and saved output that names it must name only its
public part. A real ``InteractiveShell`` against a :class:`FaultServer` that fails in each way
that puts a URL into a message.
"""

from __future__ import annotations

import base64
import json

import pytest
from IPython.core.interactiveshell import InteractiveShell

from aivvm_magic.magics import AivvmError, magics_for
from aivvm_magic.secret_types import public_url
from tests.conftest import CANARY
from tests.faultserver import FaultServer, Redirect, Stall, closed_port, server_error
from tests.outputkit import final_output


def with_key(url: str) -> str:
    """``url`` with the canary as the password of its user info."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://user:{CANARY}@{rest}"


def assert_no_key(where: str, text: str) -> None:
    assert CANARY not in text, f"the key is in {where}: {text!r}"
    assert CANARY[len("sk-canary-") :] not in text, f"the key's tail is in {where}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("embedded server, echo engine", "embedded server, echo engine"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("https://u:p@example.com:8443/v1?key=k#f", "https://example.com:8443/v1"),
        ("http://[::1]:9/v1", "http://[::1]:9/v1"),
        ("http://user:secret@host:notaport/x", "http://host"),
    ],
)
def test_the_public_part_of_a_url(url: str, shown: str):
    assert public_url(url) == shown


@pytest.mark.parametrize("fault_kind", ["http-500", "read-timeout", "redirect-away", "refused"])
def test_an_error_names_the_url_without_its_key(
    ip: InteractiveShell, fault: FaultServer, fault_kind: str, capsys
):
    magics = magics_for(ip)
    magics.retries = 0
    magics.read_timeout = 0.5
    url = with_key(fault.url)
    if fault_kind == "http-500":
        fault.enqueue(server_error(b"upstream failed"))
    elif fault_kind == "read-timeout":
        fault.enqueue(Stall(2.0, before_headers=True))
    elif fault_kind == "redirect-away":
        fault.enqueue(Redirect("http://localhost:9/elsewhere"))
    else:
        url = with_key(closed_port())

    result = ip.run_cell(f"%%aivvm --base-url {url}\nhello", cell_id="cell-1")

    error = result.error_in_exec
    assert isinstance(error, AivvmError), error
    message = str(error)
    assert public_url(url) in message, message
    out = capsys.readouterr()
    assert_no_key("the error", message)
    assert_no_key("the cell's output", out.out + out.err)
    if fault_kind == "http-500":
        # The key did reach the server, as HTTP basic authentication.
        sent = fault.requests[-1].headers.get("authorization", "")
        assert base64.b64decode(sent.split()[-1]).decode() == f"user:{CANARY}"


def test_status_models_and_the_saved_reply_leave_the_key_out(
    ip: InteractiveShell, fault: FaultServer, capsys
):
    magics = magics_for(ip)
    magics.base_url = with_key(fault.url)
    output, error = final_output(ip, "", "hello")
    assert error is None
    ip.run_line_magic("aivvm", "status")
    ip.run_line_magic("aivvm", "models")
    ip.run_line_magic("aivvm", "last")
    out = capsys.readouterr()
    assert fault.url in out.out  # the target is named, without its key
    assert_no_key("the printed output", out.out + out.err)
    assert_no_key("the saved reply", json.dumps([output.data, output.metadata]))
