"""The scrubbing rule: what looks like a key never goes into a prompt's context, and what only
resembles the words around keys stays readable."""

from __future__ import annotations

import pytest

from aivvm_magic.context import REDACTED, Scrubber
from aivvm_magic.context.scrub import secret_name
from tests.conftest import CANARY

CONFIGURED = "cfgkey-91d3a7f0c2e4"
FROM_ENV = "envtok-q8w7e6r5t4z"
FROM_NOTEBOOK = "hunter2hunter2"


@pytest.fixture
def scrub() -> Scrubber:
    return Scrubber.for_notebook(
        [CONFIGURED, ""],
        {"db_password": FROM_NOTEBOOK, "sort_key": "population", "count": 12345678},
        {"MY_SERVICE_TOKEN": FROM_ENV, "ANTHROPIC_KEY": "anthropic-zz-1", "HOME": "/home/user"},
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 1. values of configured keys, secret-named environment and notebook variables
        (f"connect({CONFIGURED!r})", "connect('[redacted]')"),
        (f"refused {FROM_ENV}!", "refused [redacted]!"),
        ("with anthropic-zz-1", "with [redacted]"),
        (f"login as {FROM_NOTEBOOK}", "login as [redacted]"),
        # 2. key shapes
        (f"ValueError: bad key {CANARY}", "ValueError: bad key [redacted]"),
        ("ghp_" + "a1" * 18, REDACTED),
        ("AKIAIOSFODNN7EXAMPLE", REDACTED),
        ("AIza" + "b" * 35, REDACTED),
        ("hf_" + "c3" * 16, REDACTED),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXNpZw", REDACTED),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", REDACTED),
        ("Authorization: Bearer abcdefghijklmnop123", "Authorization: Bearer [redacted]"),
        ("postgres://admin:s3cr3t@db/x", "postgres://admin:[redacted]@db/x"),
        # 3. values given to secret-named words
        ('api_key = "plainvalue12"', 'api_key = "[redacted]"'),
        ("token = '9f8e7d6c5b4a39281706'", "token = '[redacted]'"),
        ('{"password": "correct horse battery"}', '{"password": "[redacted]"}'),
        ("OPENAI_API_KEY=abc123def456ghi789", "OPENAI_API_KEY=[redacted]"),
        ('key = "a1b2c3d4e5f6g7h8i9"', 'key = "[redacted]"'),
        ("dict(key=abcdef1234567890abcd)", "dict(key=[redacted])"),
    ],
)
def test_secrets_are_redacted(scrub, text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        'key = "population"',  # a sort key, not a secret
        "sorted(rows, key=len)",
        'tokenizer_name = "bert-base-uncased"',
        "max_tokens = 1000",
        'api_key = os.environ["OPENAI_API_KEY"]',
        "token = get_token_v2()",
        'monkey = "banana12"',
        "sha = 'deadbeef'",
        "sorted by population, 12345678 rows",  # a sort_key value and a number: not secret
        "HOME is /home/user",
    ],
)
def test_what_only_resembles_a_secret_stays(scrub, text):
    assert scrub(text) == text


def test_a_key_containing_another_is_replaced_whole():
    scrub = Scrubber(["abcdefgh", "abcdefgh-longer"])
    assert scrub("abcdefgh-longer and abcdefgh") == "[redacted] and [redacted]"


def test_short_values_are_not_taken_for_secrets():
    assert Scrubber(["abc", "1234567"])("abc 1234567") == "abc 1234567"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("OPENAI_API_KEY", True),
        ("github_token", True),
        ("DB_PASSWORD", True),
        ("aws_secret_access_key", True),
        ("apikey", True),
        ("credentials", True),
        ("tokenizer", False),
        ("max_tokens", False),
        ("key", False),
        ("sort_key", False),
        ("authors", False),
        ("keyboard", False),
    ],
)
def test_which_names_say_they_hold_a_secret(name, secret):
    assert secret_name(name) is secret
